"""Bad weather in the middle of a light exposure, on alpaca-simulators: the exposure is
aborted (shutter closed within 1 s), the telescope parks and the dome closes, darks go
on, and light frames resume once the sky has been safe long enough. A safety monitor
that stops answering is as unsafe as one that says so."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from astropy.io import fits

from flows.exposure import run_sequence
from schemas.exposure import SequenceSpec
from schemas.instrument import InstrumentConfig, load_instrument

from .alpaca_sim import RunningSimulator, running_simulator
from .conftest import REPO

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]

SIM_ALPACA = REPO / "deploy" / "instruments" / "sim-alpaca.yaml"
EXPOSING, IDLE = 2, 0
DOME_CLOSED = 1


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSimulator]:
    with running_simulator(tmp_path_factory.mktemp("weather")) as sim:
        yield sim


def _instrument(sim: RunningSimulator, data: Path) -> InstrumentConfig:
    dump = load_instrument(SIM_ALPACA).with_overrides(port=sim.port, data_root=data).model_dump()
    dump["controllers"][0]["cooling"]["stable_s"] = 0.2
    dump["concurrency_name"] = f"instrument-weather-{uuid.uuid4().hex[:12]}"
    dump["site"] = None
    dump["devices"].append({"name": "safety", "type": "safetymonitor", "port": sim.port})
    dump["safety"] = {
        "monitors": ["safety"],
        "poll_s": 0.2,
        "max_age_s": 2.0,
        "resume_after_s": 1.0,
        "shutdown": "park_then_close",
    }
    return InstrumentConfig.model_validate(dump)


async def _get(client: httpx.AsyncClient, path: str) -> object:
    reply = await client.get(path, params={"ClientID": 1, "ClientTransactionID": 1})
    return reply.json()["Value"]


async def _until(check: object, timeout: float, what: str) -> float:
    start = time.monotonic()
    while not await check():  # type: ignore[operator]
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"{what} not within {timeout} s")
        await asyncio.sleep(0.02)
    return time.monotonic() - start


async def test_unsafe_mid_exposure_aborts_parks_closes_and_light_resumes(
    server: RunningSimulator, tmp_path: Path
) -> None:
    await asyncio.to_thread(server.reload)
    instrument = _instrument(server, tmp_path / "data")
    sequence = SequenceSpec.model_validate(
        {
            "name": "weather",
            "exposures": [
                {"image_type": "object", "exptime": 4.0, "object_name": "field"},
                {"image_type": "dark", "exptime": 0.2},
            ],
        }
    )
    api = "/api/v1"
    async with httpx.AsyncClient(base_url=server.base_url, trust_env=False) as client:
        run = asyncio.ensure_future(run_sequence(sequence, instrument))

        async def exposing() -> bool:
            return await _get(client, f"{api}/camera/0/camerastate") == EXPOSING

        await _until(exposing, 120, "the light exposure under way")
        await asyncio.sleep(0.5)
        form = {"IsSafe": "false", "ClientID": "1", "ClientTransactionID": "1"}
        (await client.put(f"{api}/safetymonitor/0/issafe", data=form)).raise_for_status()

        async def idle() -> bool:
            return await _get(client, f"{api}/camera/0/camerastate") == IDLE

        closed_after = await _until(idle, 5, "the exposure aborted")
        assert closed_after < 1.0, f"shutter closed {closed_after:.2f} s after unsafe"

        async def parked_and_closed() -> bool:
            parked = await _get(client, f"{api}/telescope/0/atpark")
            return (
                parked is True and await _get(client, f"{api}/dome/0/shutterstatus") == DOME_CLOSED
            )

        await _until(parked_and_closed, 60, "telescope parked and dome closed")
        await asyncio.sleep(1.0)
        assert not run.done()  # waiting for a safe sky, not failed
        form["IsSafe"] = "true"
        (await client.put(f"{api}/safetymonitor/0/issafe", data=form)).raise_for_status()
        result = await asyncio.wait_for(run, 120)
    kinds = [(e.image_type.value, e.expnum) for e in result.exposures]
    assert [k for k, _ in kinds] == ["object", "dark"]
    numbers = [n for _, n in kinds]
    assert numbers[0] >= 2  # the aborted exposure's number is never used again
    files = sorted((tmp_path / "data").rglob("*.fits"))
    assert len(files) == 2
    assert fits.getheader(result.exposures[0].files[0].path)["EXPMEAS"] == pytest.approx(
        4.0, abs=0.05
    )


@pytest.fixture(scope="module")
def safety_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSimulator]:
    """A second simulator for the safety monitor alone: frozen (SIGSTOP), it stops
    answering while the camera, the dome and the telescope go on."""
    with running_simulator(tmp_path_factory.mktemp("safety")) as sim:
        yield sim


async def test_a_stale_safety_reading_stops_light_until_it_answers_again(
    server: RunningSimulator, safety_server: RunningSimulator, tmp_path: Path
) -> None:
    await asyncio.to_thread(server.reload)
    await asyncio.to_thread(safety_server.reload)
    dump = _instrument(server, tmp_path / "data").model_dump()
    dump["devices"][-1]["port"] = safety_server.port  # the safety monitor, on its own
    instrument = InstrumentConfig.model_validate(dump)
    max_age = instrument.safety.max_age_s if instrument.safety else 0.0
    sequence = SequenceSpec.model_validate(
        {"name": "stale", "exposures": [{"image_type": "object", "exptime": 3.0}]}
    )
    api = "/api/v1"
    frozen = False
    try:
        async with httpx.AsyncClient(base_url=server.base_url, trust_env=False) as client:
            run = asyncio.ensure_future(run_sequence(sequence, instrument))

            async def exposing() -> bool:
                return await _get(client, f"{api}/camera/0/camerastate") == EXPOSING

            async def idle() -> bool:
                return await _get(client, f"{api}/camera/0/camerastate") == IDLE

            await _until(exposing, 120, "the light exposure under way")
            safety_server.process.send_signal(signal.SIGSTOP)
            frozen = True
            stopped_after = await _until(idle, max_age + 5, "the light exposure aborted")
            # Stale once older than max_age_s; the watch looks every poll_s.
            assert stopped_after < max_age + 1.5, f"aborted {stopped_after:.2f} s after freezing"
            await asyncio.sleep(1.0)
            assert not run.done()  # waiting for readings, not failed
            # (The simulator's camera goes on to READING after an abort: its exposure
            # task is not cancelled. Whether a new light exposure started is told by
            # the retaken frame's start time below.)
            thawed = datetime.now(UTC)
            safety_server.process.send_signal(signal.SIGCONT)
            frozen = False
            result = await asyncio.wait_for(run, 120)
    finally:
        if frozen:
            safety_server.process.send_signal(signal.SIGCONT)
    assert [e.image_type.value for e in result.exposures] == ["object"]
    # No light exposure started while the readings were stale.
    assert result.exposures[0].date_obs >= thawed
    assert fits.getheader(result.exposures[0].files[0].path)["EXPMEAS"] == pytest.approx(
        3.0, abs=0.05
    )
