"""make-safe: the shutter closes, the controllers idle, an unreachable one is reported,
the instrument lock is not needed; the CLI command; the Prefect deployment file."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest
import typer
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import Artifact
from typer.testing import CliRunner

from devices.archon.camera import ArchonCamera
from devices.archon.controller import ArchonController
from devices.archon.errors import ArchonConnectionError
from devices.archon.simulator import ArchonSimulator
from devices.archon.simulator.core import CoreState
from flows.safety import make_safe, safety_markdown
from flows.safety_cli import safe_command
from schemas.instrument import InstrumentConfig, load_instrument
from schemas.safety import SafetyReport
from tasks.control.instrument import camera_for, plan_instrument
from tasks.control.safety import InstrumentNotSafeError
from tasks.durable.instrument_lock import lock_path

from .conftest import REPO, SIM_YAML

DUAL_YAML = REPO / "deploy" / "instruments" / "sim-dual.yaml"

slow = pytest.mark.slow
harness = pytest.mark.usefixtures("prefect_harness")


@pytest.fixture
def dead_port() -> Iterator[int]:
    """A loopback port bound but not listening: connecting to it is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def _archon(instrument: InstrumentConfig) -> ArchonController:
    """The Archon adapter under the instrument's first camera, unconnected."""
    camera = camera_for(plan_instrument(instrument)[0])
    assert isinstance(camera, ArchonCamera)
    return camera.controller


@contextlib.asynccontextmanager
async def _integrating(instrument: InstrumentConfig, sim: ArchonSimulator) -> AsyncIterator[None]:
    """A 30 s exposure with the shutter open, driven over its own connection and left
    running, as a stuck run would leave it; cleaned up on the way out."""
    stuck: ArchonController = _archon(instrument)
    await stuck.connect()
    exposing = asyncio.ensure_future(stuck.expose(30.0, open_shutter=True))
    try:
        await _until(lambda: sim.shutter_open, 5.0, "shutter open")
        yield
    finally:
        exposing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await exposing
        await stuck.close()


async def _until(condition: Any, timeout: float, what: str) -> float:
    """Poll ``condition()`` every millisecond; the seconds it took."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"{what} not within {timeout} s")
        await asyncio.sleep(0.001)
    return time.monotonic() - start


async def _seen_at(condition: Any) -> float:
    """The wall-clock time ``condition()`` was first seen true (polled every 1 ms)."""
    await _until(condition, 10.0, "condition")
    return time.time()


async def _reports_of(run_id: UUID) -> list[Artifact]:
    """A run's markdown artifacts (not the record of a failed run's persisted exception).

    A plain filter body: the client's own sends nulls this server refuses (see
    flows/history.py).
    """
    only = {"flow_run_id": {"any_": [str(run_id)]}, "type": {"any_": ["markdown"]}}
    body = {"artifacts": only, "limit": 10}
    async with get_client() as client:
        response = await client.request("POST", "/artifacts/filter", json=body)
    return [Artifact.model_validate(item) for item in response.json()]


def _assert_idle(sim: ArchonSimulator) -> None:
    assert not sim.shutter_open
    assert sim.core_state is CoreState.IDLE
    assert not sim.timing_held
    params = {name.lower(): value for name, value in sim.params.items()}
    assert (params["exposures"], params["openshutter"], params["abortexposure"]) == (0, 0, 0)


# --- the flow --------------------------------------------------------------------------


@slow
@harness
async def test_an_open_shutter_is_closed_within_a_second(
    archon_sim: ArchonSimulator, sim_instrument: InstrumentConfig
) -> None:
    """Measured from the flow's start (``checked_at``, taken first thing in its body) and,
    more loosely, from the call: the first flow run of a process spends most of a second
    in Prefect's own bookkeeping before the body runs."""
    async with _integrating(sim_instrument, archon_sim):
        called = time.time()
        watching = asyncio.ensure_future(_seen_at(lambda: not archon_sim.shutter_open))
        state = await make_safe(sim_instrument, return_state=True)
        took = time.time() - called
        closed_at = await watching
        _assert_idle(archon_sim)  # before the stuck exposure is cleaned up
    report = await state.aresult()
    assert isinstance(report, SafetyReport)
    after_start = closed_at - report.checked_at.timestamp()
    after_call = closed_at - called
    print(
        f"make-safe: shutter closed {after_start:.3f} s after the flow started, "
        f"{after_call:.3f} s after the call; the flow took {took:.3f} s"
    )
    assert after_start < 1.0
    assert after_call < 3.0
    assert state.is_completed()
    assert report.safe
    [item] = report.controllers
    assert (item.controller, item.reached, item.actions) == ("sim1", True, ["abort", "reset"])
    assert (item.power, item.power_good, item.idle, item.error) == ("ON", True, True, None)
    assert item.buffers == []  # the aborted integration was never read out
    assert item.seconds < 1.0
    assert report.checked_at.utcoffset() is not None
    [(opened, shut)] = archon_sim.shutter_log
    assert shut - opened < 30.0  # closed long before the integration would have ended
    [artifact] = await _reports_of(state.state_details.flow_run_id)
    assert artifact.key == "make-safe-ccdsim"
    assert artifact.data == safety_markdown(report)
    assert "# make-safe ccdsim: SAFE" in str(artifact.data)


@slow
@harness
async def test_buffers_are_reported_and_left_for_recovery(
    archon_sim: ArchonSimulator, sim_instrument: InstrumentConfig
) -> None:
    async with _archon(sim_instrument) as controller:
        await controller.expose(0.0, open_shutter=False)
        number = await controller.readout()
    kept = archon_sim.buffer_data(number)
    assert kept is not None
    report = await make_safe(sim_instrument)
    [buffer] = report.controllers[0].buffers
    assert (buffer.number, buffer.frame, buffer.complete) == (number, 1, True)
    assert buffer.lines == buffer.height == kept.shape[0]
    assert buffer.age_s is not None
    assert 0 <= buffer.age_s < 10
    assert archon_sim.buffer_data(number) is kept  # the frame can still be fetched


@slow
@harness
async def test_an_unreachable_controller_fails_the_run_and_is_named(
    archon_sim: ArchonSimulator, dead_port: int, tmp_path: Path
) -> None:
    """Two controllers: the live one is still made safe, the dead one fails the run."""
    data = load_instrument(DUAL_YAML).model_dump()
    data["controllers"][0]["port"] = archon_sim.port
    data["controllers"][1]["port"] = dead_port
    data["storage"]["data_root"] = tmp_path
    instrument = InstrumentConfig.model_validate(data)
    async with _integrating(instrument, archon_sim):
        state = await make_safe(instrument, return_state=True)
        _assert_idle(archon_sim)
    assert state.is_failed()
    assert state.message is not None
    assert f"sim2 (127.0.0.1:{dead_port}) not reached" in state.message
    error = await state.aresult(raise_on_failure=False)
    assert isinstance(error, InstrumentNotSafeError)
    live, dead = error.report.controllers
    assert (live.controller, live.safe, live.actions) == ("sim1", True, ["abort", "reset"])
    assert (dead.controller, dead.safe, dead.reached, dead.actions) == ("sim2", False, False, [])
    assert dead.error is not None
    assert dead.error.startswith("connect: cannot connect")
    assert not error.report.safe
    async with get_client() as client:
        run = await client.read_flow_run(state.state_details.flow_run_id)
    assert run.state is not None
    assert run.state.is_failed()
    [artifact] = await _reports_of(run.id)  # published before the run failed
    assert "NOT SAFE" in str(artifact.data)
    with pytest.raises(InstrumentNotSafeError, match="sim2"):
        await make_safe(instrument)


@slow
@harness
async def test_works_while_another_run_holds_the_instrument(
    archon_sim: ArchonSimulator, sim_instrument: InstrumentConfig
) -> None:
    path = lock_path(sim_instrument)
    path.parent.mkdir(parents=True, exist_ok=True)
    holder = '{"flow_run_id": "stuck", "pid": 1}'
    with path.open("a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write(holder)
        held.flush()
        with path.open("a+") as other, pytest.raises(BlockingIOError):  # really taken
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        async with _integrating(sim_instrument, archon_sim):
            report = await asyncio.wait_for(make_safe(sim_instrument), 30)
            _assert_idle(archon_sim)
        assert report.safe
        assert path.read_text() == holder  # neither taken nor rewritten


@slow
@harness
async def test_an_artifact_that_cannot_be_made_does_not_fail_the_run(
    archon_sim: ArchonSimulator,
    sim_instrument: InstrumentConfig,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An API too slow to take the artifact in time: a warning, and the report stands."""
    monkeypatch.setattr("flows.safety.ARTIFACT_TIMEOUT_S", 0.0)
    state = await make_safe(sim_instrument, return_state=True)
    assert state.is_completed()
    report = await state.aresult()
    assert isinstance(report, SafetyReport)
    assert report.safe
    assert await _reports_of(state.state_details.flow_run_id) == []
    assert "could not create the make-safe artifact" in caplog.text


def test_a_controller_is_safe_only_when_reached_reset_and_seen_idle() -> None:
    from datetime import UTC, datetime

    from schemas.safety import ControllerSafety

    def item(**fields: Any) -> ControllerSafety:
        base = {"controller": "c", "address": "h:1", "seconds": 0.1, "reached": True}
        return ControllerSafety.model_validate({**base, **fields})

    reset = ["abort", "reset"]
    cases = {
        "safe": item(actions=reset, idle=True),
        "not reached: connect: refused": item(reached=False, error="connect: refused"),
        "not reset: reset: no answer": item(actions=["abort"], idle=True, error="reset: no answer"),
        "not confirmed idle after the reset": item(actions=reset),
        "still reading out after the reset": item(actions=reset, idle=False),
    }
    assert {why: c.reason() for why, c in cases.items()} == {why: why for why in cases}
    assert [c.safe for c in cases.values()] == [True, False, False, False, False]
    now = datetime.now(UTC)
    assert SafetyReport(instrument="i", checked_at=now, controllers=[cases["safe"]]).safe
    assert not SafetyReport(instrument="i", checked_at=now, controllers=[]).safe
    mixed = SafetyReport(instrument="i", checked_at=now, controllers=list(cases.values()))
    assert not mixed.safe
    assert mixed.problems()[0] == "c (h:1) not reached: connect: refused"
    assert len(mixed.problems()) == 4
    assert SafetyReport.model_validate_json(mixed.model_dump_json()) == mixed


@slow
@harness
async def test_works_while_a_real_run_is_stuck_in_an_integration(
    archon_sim: ArchonSimulator, sim_instrument: InstrumentConfig
) -> None:
    """A take-exposure run holds the instrument (host lock and Prefect slot) with the
    shutter open; make-safe, beside the run's own connection, closes it."""
    from flows.exposure import take_exposure
    from schemas.exposure import ExposureSpec

    spec = ExposureSpec(image_type="object", exptime=60.0)
    run = asyncio.ensure_future(take_exposure(spec, sim_instrument))
    try:
        await _until(lambda: archon_sim.shutter_open, 60.0, "the run's shutter open")
        assert lock_path(sim_instrument).read_text()  # the run holds the instrument
        report = await asyncio.wait_for(make_safe(sim_instrument), 30)
        _assert_idle(archon_sim)
        assert report.safe
        assert not run.done()  # the stuck run still holds the instrument
    finally:
        run.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await run
    [(opened, shut)] = archon_sim.shutter_log
    print(f"a stuck 60 s integration was closed after {shut - opened:.2f} s")
    async with get_client() as client:  # the cancelled run gave the instrument back
        limit = await client.read_global_concurrency_limit_by_name(
            sim_instrument.concurrency_limit_name
        )
    assert limit.active_slots == 0


async def test_timeout_must_be_positive(sim_instrument: InstrumentConfig) -> None:
    from tasks.control.safety import make_controller_safe

    with pytest.raises(ValueError, match="timeout_s must be > 0"):
        await make_controller_safe(plan_instrument(sim_instrument)[0], timeout_s=0)


@slow
@harness
async def test_a_silent_controller_is_bounded_by_the_step_timeout(
    archon_sim: ArchonSimulator, sim_instrument: InstrumentConfig
) -> None:
    """Connected, but it never answers: each step gives up after timeout_s."""
    archon_sim.inject_silence()
    started = time.monotonic()
    state = await make_safe(sim_instrument, timeout_s=0.2, return_state=True)
    took = time.monotonic() - started
    archon_sim.clear_faults()
    assert state.is_failed()
    error = await state.aresult(raise_on_failure=False)
    assert isinstance(error, InstrumentNotSafeError)
    [item] = error.report.controllers
    assert (item.reached, item.actions, item.idle) == (True, [], None)
    assert item.error is not None
    steps = [part.split(":")[0] for part in item.error.split("; ")]
    assert steps == ["abort", "reset", "status", "frame"]
    assert "no answer within 0.2 s" in item.error
    print(f"make-safe on a silent controller gave up after {took:.2f} s")
    assert item.seconds < 2.0


# --- the command -------------------------------------------------------------------------


def _cli() -> typer.Typer:
    app = typer.Typer()
    app.command()(safe_command)
    return app


@slow
@harness
async def test_safe_command_closes_the_shutter_before_prefect_then_reports(
    archon_sim: ArchonSimulator,
    sim_instrument: InstrumentConfig,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import flows.safety_cli

    configure = flows.safety_cli.start_prefect
    shutter_when_prefect_starts: list[bool] = []

    def watched() -> Path:
        shutter_when_prefect_starts.append(archon_sim.shutter_open)
        return configure()

    monkeypatch.setattr("flows.safety_cli.start_prefect", watched)
    args = ["--instrument", str(SIM_YAML), "--port", str(archon_sim.port)]
    args += ["--data", str(tmp_path)]
    async with _integrating(sim_instrument, archon_sim):
        # In a thread: the command runs its own event loop; this one serves the simulator.
        result = await asyncio.to_thread(CliRunner().invoke, _cli(), args)
        _assert_idle(archon_sim)
    assert result.exit_code == 0, result.output
    assert shutter_when_prefect_starts == [False]
    lines = result.output.splitlines()
    assert lines[0].startswith("sim1: abort, reset (")
    assert "make-safe ccdsim: SAFE" in result.output
    row = next(line for line in lines if line.lstrip().startswith("sim1 "))
    address = f"127.0.0.1:{archon_sim.port}"
    *cells, seconds = row.split()
    assert cells == ["sim1", address, "yes", "abort,", "reset", "ON", "yes"]
    assert 0 < float(seconds) < 1
    assert "sim1 buffers: empty" in lines


@slow
@harness
async def test_safe_command_exits_1_when_a_controller_is_not_safe(
    dead_port: int, tmp_path: Path
) -> None:
    args = ["--instrument", str(SIM_YAML), "--port", str(dead_port), "--data", str(tmp_path)]
    result = await asyncio.to_thread(CliRunner().invoke, _cli(), args)
    assert result.exit_code == 1, result.output
    assert "make-safe ccdsim: NOT SAFE" in result.output
    assert f"sim1: connect: cannot connect to the Archon controller at 127.0.0.1:{dead_port}" in (
        result.output
    )
    assert f"sim1 (127.0.0.1:{dead_port}) not reached" in result.output


def test_safe_command_refuses_a_bad_instrument_before_prefect(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def tripwire() -> Path:
        raise AssertionError("bad input reached start_prefect")

    monkeypatch.setattr("flows.safety_cli.start_prefect", tripwire)
    result = CliRunner().invoke(_cli(), ["--instrument", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2
    assert "nope.yaml" in result.output
    assert "cannot read the file" in result.output
    result = CliRunner().invoke(_cli(), ["--instrument", str(SIM_YAML), "--port", "70000"])
    assert result.exit_code == 2
    assert "controllers.0.port" in result.output


# --- the deployment file -------------------------------------------------------------------

PREFECT_YAML = REPO / "deploy" / "prefect.yaml"
ACQUISITION = {
    "take-exposure": "flows/exposure.py:take_exposure",
    "run-sequence": "flows/exposure.py:run_sequence",
    "calibrations": "flows/exposure.py:calibrations",
    "observe-night": "flows/exposure.py:observe_night",
    "observe": "flows/observe.py:observe",
    "twilight-flats": "flows/twilight.py:twilight_flats",
}


@pytest.fixture(scope="module")
def prefect_yaml() -> dict[str, Any]:
    loaded = yaml.safe_load(PREFECT_YAML.read_text())
    assert isinstance(loaded, dict)
    return loaded


def _deployments(prefect_yaml: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {d["name"]: d for d in prefect_yaml["deployments"]}


def test_prefect_yaml_deploys_every_flow_on_the_ccdflow_pool(prefect_yaml: dict[str, Any]) -> None:
    from prefect.cli.deploy._models import PrefectYamlModel
    from prefect.flows import load_flow_from_entrypoint

    model = PrefectYamlModel.model_validate(prefect_yaml)  # what `prefect deploy` reads
    expected = {
        **ACQUISITION,
        "make-safe": "flows/safety.py:make_safe",
        "plan-night": "flows/plan_night.py:plan_night",
        "guide": "flows/guide.py:guide",
    }
    assert {d.name for d in model.deployments} == set(expected)
    for deployment in model.deployments:
        assert deployment.name is not None
        assert deployment.entrypoint == expected[deployment.name]
        assert deployment.work_pool is not None
        assert deployment.work_pool.name == "ccdflow"
        flow = load_flow_from_entrypoint(str(REPO / deployment.entrypoint))
        assert flow.name == deployment.name
        # Defaults the flow accepts (a missing required one is given per run).
        flow.validate_parameters({**deployment.parameters, **_required_examples(deployment.name)})


def _required_examples(name: str) -> dict[str, Any]:
    """Values for the parameters a deployment leaves for each run to give."""
    examples = REPO / "deploy" / "examples"
    files = {
        "run-sequence": ("sequence", "sequence.yaml"),
        "calibrations": ("spec", "calibrations.yaml"),
        "observe-night": ("plan", "night.yaml"),
        "observe": ("spec", "observation.yaml"),
        "twilight-flats": ("spec", "twilight-flats.yaml"),
        "guide": ("spec", "guide.yaml"),
    }
    if name not in files:
        return {}
    key, file = files[name]
    return {key: yaml.safe_load((examples / file).read_text())}


def test_every_deployment_drives_the_sim_instrument_by_name(prefect_yaml: dict[str, Any]) -> None:
    from flows.instrument_choice import resolve_instrument

    # Also guide: a default of sim-guider made `ccdflow server` fail to deploy (422)
    # with an instruments folder that has no sim-guider.
    for name in [*ACQUISITION, "make-safe", "plan-night", "guide"]:
        chosen = _deployments(prefect_yaml)[name]["parameters"]["instrument"]
        assert chosen == "sim"
        assert resolve_instrument(chosen) == load_instrument(SIM_YAML)


def test_make_safe_runs_when_an_acquisition_run_fails_or_crashes(
    prefect_yaml: dict[str, Any],
) -> None:
    from prefect.events import DeploymentTriggerTypes
    from prefect.events.schemas.automations import Posture
    from pydantic import TypeAdapter

    [spec] = _deployments(prefect_yaml)["make-safe"]["triggers"]
    trigger = TypeAdapter(DeploymentTriggerTypes).validate_python(spec)  # as `prefect deploy`
    deployment_id = uuid4()
    trigger.set_deployment_id(deployment_id)  # as `prefect deploy` does once it exists
    automation = trigger.as_automation()
    event_trigger: Any = automation.trigger
    assert event_trigger.type == "event"
    assert event_trigger.expect == {
        "prefect.flow-run.Failed",
        "prefect.flow-run.Crashed",
        "prefect.flow-run.TimedOut",  # a device's TimeoutError fails a run this way
    }
    assert event_trigger.posture is Posture.Reactive
    assert (event_trigger.threshold, event_trigger.within.total_seconds()) == (1, 0)
    related = event_trigger.match_related
    assert related["prefect.resource.role"] == ["flow"]
    assert set(related["prefect.resource.name"]) == set(ACQUISITION)  # not make-safe: no loop
    [action] = automation.actions
    assert action.type == "run-deployment"
    assert action.deployment_id == deployment_id
    assert action.parameters is None  # the deployment's own instrument


@slow
@harness
async def test_prefect_deploy_creates_make_safe_and_a_failed_run_triggers_it(
    dead_port: int, tmp_path: Path
) -> None:
    """`prefect deploy` of the make-safe deployment against the test API, then a
    take-exposure run that fails: the automation schedules a make-safe run."""
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists
    from prefect.settings import PREFECT_API_URL

    from flows.exposure import take_exposure
    from schemas.exposure import ExposureSpec

    async with get_client() as client:
        with contextlib.suppress(ObjectAlreadyExists):
            await client.create_work_pool(WorkPoolCreate(name="ccdflow", type="process"))
    command = [sys.executable, "-m", "prefect", "--no-prompt", "deploy"]
    command += ["--prefect-file", str(PREFECT_YAML), "--name", "make-safe"]
    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value())}
    deploy = await asyncio.to_thread(
        subprocess.run, command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    output = deploy.stdout + deploy.stderr
    # Prefect 3.8.8's deploy, after creating the deployment and its automation, asks
    # for the pool's workers with null limit/offset, which this server refuses (422).
    assert deploy.returncode == 0 or "workers/filter' - Response" in output, output
    assert "Deployment 'make-safe/make-safe' successfully created" in output, output
    async with get_client() as client:
        deployment = await client.read_deployment_by_name("make-safe/make-safe")
    try:
        assert deployment.entrypoint == "flows/safety.py:make_safe"
        assert deployment.work_pool_name == "ccdflow"
        failing = load_instrument(SIM_YAML).with_overrides(port=dead_port, data_root=tmp_path)
        with pytest.raises(ArchonConnectionError):
            await take_exposure(ExposureSpec(image_type="bias"), failing)
        failed_at = time.monotonic()
        runs = await _runs_of(deployment.id, within=30.0)
        print(f"automation: make-safe run scheduled {time.monotonic() - failed_at:.1f} s after")
        [run] = runs
        assert run["parameters"]["instrument"] == "sim"
        assert run["state"]["type"] == "SCHEDULED"
    finally:  # leave the session's API as it was: other tests count runs
        async with get_client() as client:
            for run in await _runs_of(deployment.id, within=0.0):
                await client.delete_flow_run(UUID(run["id"]))
            await client.delete_resource_owned_automations(f"prefect.deployment.{deployment.id}")
            await client.delete_deployment(deployment.id)


async def _runs_of(deployment_id: UUID, within: float) -> list[dict[str, Any]]:
    """The deployment's flow runs, waiting up to ``within`` seconds for the first one."""
    body = {
        "deployments": {"id": {"any_": [str(deployment_id)]}},
        "sort": "EXPECTED_START_TIME_DESC",
        "limit": 10,
        "offset": 0,
    }
    deadline = time.monotonic() + within
    async with get_client() as client:
        while True:
            runs: list[dict[str, Any]] = (
                await client.request("POST", "/flow_runs/filter", json=body)
            ).json()
            if runs or time.monotonic() > deadline:
                return runs
            await asyncio.sleep(0.2)
