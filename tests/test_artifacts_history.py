"""Artifacts a run publishes (progress, exposure table, summary) and ``ccdflow history``.

End to end against the real Prefect test API: a small flow publishes a handcrafted
result, then the artifacts are read back through the client and the history is
checked against them. Unreachable and silent APIs are real sockets on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import socket
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest
import typer
from prefect import flow
from prefect.artifacts import ProgressArtifact
from prefect.client.orchestration import PrefectClient, get_client
from prefect.client.schemas.objects import Artifact
from prefect.runtime import flow_run
from prefect.settings import PREFECT_API_URL, temporary_settings
from typer.testing import CliRunner

from flows.history import recent_runs, summarize_parameters, table_counts
from flows.history_cli import history_command
from schemas.exposure import CalibrationSpec, ExposureSpec, NightPlan, SequenceSpec
from schemas.instrument import InstrumentConfig, load_instrument
from schemas.products import Product
from schemas.results import ExposureResult, FileRecord, MasterRecord, SequenceResult
from tasks.reporting import artifacts
from tasks.reporting.artifacts import (
    artifact_key,
    exposure_rows,
    publish_results,
    start_progress,
    summary_markdown,
    update_progress,
)

from .conftest import SIM_YAML

SEQUENCE = SequenceSpec(
    name="Test_Seq.1",
    exposures=[ExposureSpec(image_type="bias", count=2), ExposureSpec(image_type="flat", count=1)],
)


def _record(folder: Path, name: str, ccd: str, product: Product = Product.RAW) -> FileRecord:
    path = folder / name
    data = f"pixels of {name}".encode()
    path.write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    return FileRecord(path=path, ccd=ccd, sha256=digest, nbytes=len(data), product=product)


def _result(folder: Path, name: str = SEQUENCE.name) -> SequenceResult:
    """Three exposures of two CCDs; the third lost a controller and has no stats, and
    also wrote processed images."""
    folder.mkdir(parents=True, exist_ok=True)
    exposures = []
    for expnum, kind in ((1, "bias"), (2, "bias"), (3, "flat")):
        ccds = ["r1", "b1"]
        exposures.append(
            ExposureResult(
                expnum=expnum,
                image_type=kind,
                exptime=1.5 if kind == "flat" else 0.0,
                date_obs=datetime(2025, 3, 1, 2, expnum, tzinfo=UTC),
                files=[_record(folder, f"ccdsim-{c}-{expnum:08d}.fits", c) for c in ccds]
                + [
                    _record(folder, f"ccdsim-{c}-{expnum:08d}-proc.fits", c, Product.PROCESSED)
                    for c in (ccds if expnum == 3 else [])
                ],
                exptime_flagged=expnum == 3,
                missing={"sim2": "timeout | no reply"} if expnum == 3 else {},
                timings={"flush": 0.05, "expose": 0.01 * expnum, "fetch": 0.2}
                if expnum < 3
                else {"flush": 0.05, "expose": 1.5},
                stats={} if expnum == 3 else {c: {"mean": 10.25, "std": 3.5} for c in ccds},
            )
        )
    return SequenceResult(name=name, flow_run_id=None, exposures=exposures, elapsed_s=4.3)


# --- pure functions ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("physics", "progress-physics"),
        ("Flat_V.2", "progress-flat-v-2"),
        ("__--..", "progress-unnamed"),
        ("Étoile-ÜBER", "progress-toile-ber"),
        ("x" * 100, "progress-" + "x" * 55),
        ("a" * 54 + "_b", "progress-" + "a" * 54),
    ],
)
def test_artifact_keys_use_only_what_prefect_accepts(name: str, key: str) -> None:
    assert artifact_key("progress", name) == key
    # Prefect's own key validator (lowercase letters, digits, dashes) takes it.
    assert ProgressArtifact(key=key, progress=0.0).key == key


def test_prefect_refuses_the_unsanitized_name() -> None:
    """Why the sanitizer exists: the raw sequence name is not a valid key."""
    with pytest.raises(ValueError, match="lowercase letters, numbers, and dashes"):
        ProgressArtifact(key="progress-Test_Seq.1", progress=0.0)


def test_progress_is_a_clamped_percentage() -> None:
    assert artifacts.progress_percent(0, 4) == 0.0
    assert artifacts.progress_percent(1, 4) == 25.0
    assert artifacts.progress_percent(9, 4) == 100.0
    assert artifacts.progress_percent(0, 0) == 100.0
    assert artifacts.progress_text(2, 5) == "exposure 2 of 5"


def test_exposure_rows_have_the_same_columns_and_short_digests(tmp_path: Path) -> None:
    result = _result(tmp_path)
    rows = exposure_rows(result)
    assert [row["expnum"] for row in rows] == [1, 2, 3]
    assert len({tuple(row) for row in rows}) == 1, "every row has the same columns"
    first = rows[0]
    assert first["files"] == "ccdsim-r1-00000001.fits, ccdsim-b1-00000001.fits"
    assert first["n_files"] == 2
    assert (first["n_processed"], rows[2]["n_processed"]) == (0, 2)
    digests = [record.sha256[:12] for record in result.exposures[0].files]
    assert first["sha256"] == ", ".join(digests)
    assert first["date_obs"] == "2025-03-01T02:01:00+00:00"
    assert (first["flush_s"], first["expose_s"], first["fetch_s"]) == (0.05, 0.01, 0.2)
    assert first["total_s"] == 0.26
    assert first["missing"] == ""
    assert rows[2]["fetch_s"] is None, "a stage the exposure did not run"
    assert rows[2]["missing"] == "sim2: timeout | no reply"
    assert rows[2]["type"] == "flat"
    assert rows[2]["exptime"] == 1.5


def test_summary_counts_stages_and_renders_stats(tmp_path: Path) -> None:
    text = summary_markdown(_result(tmp_path))
    assert "3 exposures, 8 files (2 processed, 6 raw; 0.0 MB) in 4.3 s" in text
    assert "differs from the requested time** in exposures 3" in text
    assert "| bias | 2 |" in text
    assert "| flat | 1 |" in text
    assert "**1 exposures without controllers**: sim2" in text
    assert "| expose | 0.020 | 1.500 |" in text  # median of 0.01, 0.02, 1.5
    assert "| fetch | 0.200 | 0.200 |" in text
    assert "| exp | ccd | mean | std |" in text
    assert "| 2 | b1 | 10.25 | 3.5 |" in text
    assert "| 3 |" not in text, "exposure 3 measured no statistics"


def test_summary_lists_the_masters_built(tmp_path: Path) -> None:
    result = _result(tmp_path)
    master = MasterRecord(
        kind="bias",
        filter="none",
        file=_record(tmp_path, "master-bias.fits", "r1"),
        inputs=[1, 2],
        seconds=0.5,
    )
    assert "#### Masters" not in summary_markdown(result)
    text = summary_markdown(result.model_copy(update={"masters": [master]}))
    assert "| bias | none | master-bias.fits | 2 |" in text


def test_summary_without_stats_or_exposures_has_no_empty_tables() -> None:
    empty = SequenceResult(name="nothing", flow_run_id=None, exposures=[], elapsed_s=0.0)
    text = summary_markdown(empty)
    assert "0 exposures, 0 files" in text
    assert "|" not in text


def test_table_cells_cannot_break_the_markdown_table(tmp_path: Path) -> None:
    base = _result(tmp_path).exposures[0]
    odd = base.model_copy(update={"stats": {"r|1": {"mean": 1.0}}})
    text = summary_markdown(
        SequenceResult(name="odd", flow_run_id=None, exposures=[odd], elapsed_s=1.0)
    )
    assert "| 1 | r\\|1 | 1 |" in text


def test_sequence_parameters_are_summarised_without_the_instrument() -> None:
    instrument = load_instrument(SIM_YAML)
    repeated = SEQUENCE.model_copy(update={"repeats": 2})
    summary = summarize_parameters(
        {
            "sequence": repeated.model_dump(mode="json"),
            "instrument": instrument.model_dump(mode="json"),
            "pipelined": False,
        }
    )
    assert summary.kind == "sequence"
    assert summary.spec == "Test_Seq.1"
    assert summary.planned == {"bias": 4, "flat": 2}
    assert summary.instrument == "ccdsim"
    assert summary.options == {"pipelined": "false"}
    assert "controllers" not in summary.model_dump_json()


def test_calibration_night_and_exposure_parameters() -> None:
    calib = CalibrationSpec(name="evening", biases=5, darks=[{"exptime": 10, "count": 3}])
    assert summarize_parameters({"spec": calib.model_dump(mode="json")}).model_dump() == {
        "kind": "calibrations",
        "spec": "evening",
        "planned": {"bias": 5, "dark": 3},
        "instrument": None,
        "options": {},
    }
    night = NightPlan(name="n1", steps=[SEQUENCE, calib])
    summary = summarize_parameters({"plan": night.model_dump(mode="json")})
    assert (summary.kind, summary.spec) == ("night", "n1")
    assert summary.planned == {"bias": 7, "flat": 1, "dark": 3}
    one = ExposureSpec(image_type="dark", exptime=2.0, count=4)
    summary = summarize_parameters({"spec": one.model_dump(mode="json")})
    assert (summary.kind, summary.spec, summary.planned) == ("exposure", None, {"dark": 4})


def test_parameters_that_are_no_current_spec_are_only_named() -> None:
    old = {"name": "legacy", "exposures": [{"image_type": "bias", "nframes": 3}]}
    summary = summarize_parameters({"sequence": old, "note": "seeing 0.8", "n": None})
    assert summary.kind is None
    assert summary.planned == {}
    assert summary.options == {"sequence": "...", "note": '"seeing 0.8"', "n": "null"}


def test_table_counts_read_prefect_table_data() -> None:
    rows = [{"expnum": 1, "n_files": 2}, {"expnum": 2, "n_files": 4, "n_processed": 2}]
    assert table_counts(json.dumps(rows)) == (2, 6, 2)
    assert table_counts(rows) == (2, 6, 2)
    assert table_counts("[]") == (0, 0, 0)
    assert table_counts("not json") is None
    assert table_counts('{"expnum": [1]}') is None
    assert table_counts('[{"expnum": 1}]') is None, "not an exposure table"


async def test_outside_a_flow_run_nothing_is_published(tmp_path: Path) -> None:
    """No run context: no API is contacted (none is running here) and nothing fails."""
    assert await start_progress("physics", 3) is None
    await update_progress(None, 1, 3)
    await publish_results(_result(tmp_path))


# --- end to end against the Prefect test API -----------------------------------------


@flow(name="ccdflow-test-publish")
async def publishing_flow(
    sequence: SequenceSpec, instrument: InstrumentConfig, result: SequenceResult
) -> dict[str, str | None]:
    total = sequence.total_frames
    progress = await start_progress(sequence.name, total)
    for done in range(1, total + 1):
        await update_progress(progress, done, total)
    run_id = flow_run.get_id()
    await publish_results(result.model_copy(update={"flow_run_id": run_id}))
    return {"run": run_id, "progress": str(progress) if progress else None}


class ShutterJammedError(RuntimeError):
    pass


@flow(name="ccdflow-test-fail")
async def failing_flow(spec: ExposureSpec) -> None:
    progress = await start_progress("doomed", spec.count)
    await update_progress(progress, 1, spec.count)
    raise ShutterJammedError("shutter jammed")


@flow(name="ccdflow-test-unreachable")
async def unreachable_flow(api_url: str, result: SequenceResult) -> str | None:
    """Every artifact call goes to ``api_url``, which does not answer properly."""
    async with PrefectClient(api_url) as client:
        progress = await start_progress(result.name, 3, client=client)
        await update_progress(uuid4(), 1, 3, client=client)
        await publish_results(result, client=client)
    return str(progress) if progress else None


@pytest.fixture(scope="module")
async def published(
    prefect_harness: None, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """Run the publishing flow once; what it returned and what it was given."""
    result = _result(tmp_path_factory.mktemp("published"))
    ids = await publishing_flow(SEQUENCE, load_instrument(SIM_YAML), result)
    assert ids["progress"] is not None
    return {"run": UUID(ids["run"]), "progress": UUID(ids["progress"]), "result": result}


async def _artifacts_of(run_id: UUID) -> dict[str, Artifact]:
    """The run's artifacts by type, read with a plain filter request.

    (``client.read_artifacts`` sends null for unset filters, which this server refuses.)
    """
    body = {"artifacts": {"flow_run_id": {"any_": [str(run_id)]}}, "limit": 50}
    async with get_client() as client:
        response = await client.request("POST", "/artifacts/filter", json=body)
    found = [Artifact.model_validate(item) for item in response.json()]
    return {artifact.type or "": artifact for artifact in found}


@pytest.mark.slow
async def test_a_run_publishes_progress_table_and_summary(published: dict[str, Any]) -> None:
    found = await _artifacts_of(published["run"])
    assert set(found) == {"progress", "table", "markdown"}

    progress = found["progress"]
    assert progress.id == published["progress"]
    assert progress.key == "progress-test-seq-1"
    assert progress.data == 100.0
    assert progress.description == "exposure 3 of 3"

    table = found["table"]
    assert table.key == "exposures-test-seq-1"
    rows = json.loads(table.data)
    assert rows == json.loads(json.dumps(exposure_rows(published["result"])))
    assert [row["expnum"] for row in rows] == [1, 2, 3]

    summary = found["markdown"]
    assert summary.key == "summary-test-seq-1"
    assert f"(flow run `{published['run']}`)" in summary.data
    assert "| 1 | r1 | 10.25 | 3.5 |" in summary.data


@pytest.mark.slow
async def test_history_shows_the_run_from_its_artifacts(published: dict[str, Any]) -> None:
    runs = await recent_runs(limit=5, flow_name="ccdflow-test-publish")
    assert [run.id for run in runs] == [published["run"]]
    run = runs[0]
    assert (run.flow, run.state, run.state_type) == (
        "ccdflow-test-publish",
        "Completed",
        "COMPLETED",
    )
    assert run.start is not None
    assert run.end is not None
    assert run.duration_s is not None
    assert 0 <= run.duration_s < 60
    assert run.parameters.kind == "sequence"
    assert run.parameters.spec == "Test_Seq.1"
    assert run.parameters.planned == {"bias": 2, "flat": 1}
    assert run.parameters.instrument == "ccdsim"
    assert run.parameters.options == {"result": "..."}
    assert (run.exposures, run.files, run.processed_files) == (3, 8, 2)


@pytest.mark.slow
async def test_history_shows_a_failed_run_as_failed() -> None:
    with pytest.raises(ShutterJammedError):
        await failing_flow(ExposureSpec(image_type="dark", exptime=1.0, count=2))
    runs = await recent_runs(limit=1, flow_name="ccdflow-test-fail")
    assert len(runs) == 1
    failed = runs[0]
    assert (failed.state, failed.state_type) == ("Failed", "FAILED")
    assert failed.parameters.planned == {"dark": 2}
    assert failed.exposures is None, "it published no exposure table"
    assert failed.files is None
    progress = (await _artifacts_of(failed.id))["progress"]
    assert (progress.data, progress.description) == (50.0, "exposure 1 of 2")


@pytest.mark.slow
async def test_history_limit_and_order(published: dict[str, Any]) -> None:
    runs = await recent_runs(limit=3)
    assert 1 <= len(runs) <= 3
    starts = [run.start for run in runs if run.start is not None]
    assert starts == sorted(starts, reverse=True)
    with pytest.raises(ValueError, match="between 1 and 200"):
        await recent_runs(limit=0)


@flow(name="ccdflow-test-scheduled")
async def scheduled_flow() -> None:
    return None


@pytest.mark.slow
async def test_scheduled_runs_never_push_finished_ones_off_the_history(
    prefect_harness: None,
) -> None:
    from datetime import timedelta

    from prefect.states import Scheduled

    await scheduled_flow()
    now = datetime.now(UTC)
    async with get_client() as client:
        for hours in range(7, 0, -1):  # created last-first: the order must come from the API
            due = Scheduled(scheduled_time=now + timedelta(hours=hours))
            await client.create_flow_run(scheduled_flow, state=due)
    runs = await recent_runs(limit=1, flow_name="ccdflow-test-scheduled")
    assert [run.state_type for run in runs] == ["COMPLETED"] + ["SCHEDULED"] * 5
    due_times = [run.expected_start for run in runs[1:]]
    assert due_times == sorted(due_times), "scheduled runs come soonest first"
    # The command runs its own event loop: in a thread, beside this test's.
    outcome = await asyncio.to_thread(
        runner.invoke,
        _cli(),
        ["history", "--flow", "ccdflow-test-scheduled"],
        env={"COLUMNS": "200"},
    )
    assert outcome.exit_code == 0, outcome.output
    text = outcome.stdout
    assert text.index("recent flow runs") < text.index("Completed")
    assert text.index("Completed") < text.index("scheduled (soonest first)")
    assert text.count("due ") == 5


@pytest.fixture
def run_warnings() -> Iterator[list[str]]:
    """Warnings the flows log through their run loggers."""
    messages: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.levelno >= logging.WARNING:
                messages.append(record.getMessage())

    handler = Collect()
    logger = logging.getLogger("prefect.flow_runs")
    logger.addHandler(handler)
    try:
        yield messages
    finally:
        logger.removeHandler(handler)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
async def silent_api() -> AsyncIterator[str]:
    """An API address that accepts connections and never answers."""
    held: list[asyncio.StreamWriter] = []

    async def hold(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/api"
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


def _assert_four_warnings(messages: list[str]) -> None:
    assert len(messages) == 4, messages
    for what in ("progress artifact", "update the progress", "exposure table", "summary"):
        assert any(what in message and "the run goes on" in message for message in messages)


@pytest.mark.slow
async def test_an_unreachable_api_never_fails_the_run(
    prefect_harness: None, tmp_path: Path, run_warnings: list[str]
) -> None:
    started = time.monotonic()
    progress = await unreachable_flow(f"http://127.0.0.1:{_closed_port()}/api", _result(tmp_path))
    assert progress is None
    assert time.monotonic() - started < artifacts.ARTIFACT_TIMEOUT_S
    _assert_four_warnings(run_warnings)


@pytest.mark.slow
async def test_a_silent_api_costs_one_timeout_per_call(
    prefect_harness: None,
    tmp_path: Path,
    silent_api: str,
    run_warnings: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(artifacts, "ARTIFACT_TIMEOUT_S", 0.5)
    started = time.monotonic()
    assert await unreachable_flow(silent_api, _result(tmp_path)) is None
    # start, update, then table and summary together: three timeouts, not four.
    assert time.monotonic() - started < 3 * 0.5 + 5.0
    _assert_four_warnings(run_warnings)
    assert all("TimeoutError" in message for message in run_warnings)


# --- the command ---------------------------------------------------------------------


def _cli() -> typer.Typer:
    app = typer.Typer()
    app.command("history")(history_command)

    @app.command("other")
    def _other() -> None:
        """A second command, so typer keeps ``history`` as a subcommand."""

    return app


runner = CliRunner()


@pytest.mark.slow
def test_history_command_prints_json(published: dict[str, Any]) -> None:
    outcome = runner.invoke(
        _cli(), ["history", "--limit", "5", "--flow", "ccdflow-test-publish", "--json"]
    )
    assert outcome.exit_code == 0, outcome.output
    runs = json.loads(outcome.stdout)
    assert [run["id"] for run in runs] == [str(published["run"])]
    assert runs[0]["state"] == "Completed"
    assert runs[0]["parameters"]["planned"] == {"bias": 2, "flat": 1}
    assert (runs[0]["exposures"], runs[0]["files"], runs[0]["processed_files"]) == (3, 8, 2)


@pytest.mark.slow
def test_history_command_prints_a_table(published: dict[str, Any]) -> None:
    outcome = runner.invoke(
        _cli(), ["history", "--flow", "ccdflow-test-publish"], env={"COLUMNS": "200"}
    )
    assert outcome.exit_code == 0, outcome.output
    line = next(line for line in outcome.stdout.splitlines() if "ccdflow-test-publish" in line)
    # files: raw + processed
    assert re.search(r"Completed .* Test_Seq\.1: 2 bias, 1 flat +ccdsim +3 +6\+2", line), line


@pytest.mark.slow
def test_history_command_without_runs(prefect_harness: None) -> None:
    outcome = runner.invoke(_cli(), ["history", "--flow", "no-such-flow"])
    assert outcome.exit_code == 0, outcome.output
    assert "no runs of flow no-such-flow yet" in outcome.stdout
    outcome = runner.invoke(_cli(), ["history", "--flow", "no-such-flow", "--json"])
    assert json.loads(outcome.stdout) == []


def test_history_command_reports_an_unreachable_api() -> None:
    url = f"http://127.0.0.1:{_closed_port()}/api"
    with temporary_settings(updates={PREFECT_API_URL: url}):
        outcome = runner.invoke(_cli(), ["history"])
    assert outcome.exit_code == 1
    assert f"cannot read the run history from the Prefect API at {url}" in outcome.stderr


def test_durations_read_as_seconds_or_hours() -> None:
    from flows.history import ParameterSummary, RunSummary
    from flows.history_cli import _duration

    def run(seconds: float | None) -> RunSummary:
        return RunSummary(
            id=uuid4(),
            name="r",
            flow="f",
            state=None,
            state_type=None,
            start=None,
            end=None,
            duration_s=seconds,
            parameters=ParameterSummary(),
            exposures=None,
            files=None,
        )

    assert [_duration(run(s)) for s in (None, 4.26, 59.9, 3725.4)] == [
        "",
        "4.3 s",
        "59.9 s",
        "1:02:05",
    ]


def test_history_command_refuses_a_bad_limit() -> None:
    outcome = runner.invoke(_cli(), ["history", "--limit", "0"])
    assert outcome.exit_code == 2
    assert "--limit" in outcome.output


def test_an_instrument_given_by_name_is_the_runs_instrument() -> None:
    summary = summarize_parameters({"spec": {"image_type": "bias"}, "instrument": "sim"})
    assert summary.instrument == "sim"
    assert "instrument" not in summary.options
