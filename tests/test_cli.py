"""The ``ccdflow`` command: clear errors for bad input, and the demo end to end.

Bad input must exit 2 before Prefect starts, so the tests of bad input replace
``start_prefect`` with a tripwire (the ``no_prefect`` fixture): reaching it would
mean the command got as far as starting a run.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from astropy.io import fits
from typer.testing import CliRunner

from flows.cli import app, parse_binning, parse_card_value
from flows.spec_files import load_spec_file
from schemas.exposure import CalibrationSpec, ExposureSpec, SequenceSpec, StackMethod
from schemas.instrument import InstrumentConfig
from schemas.results import SequenceResult
from tasks.files.verify import verify_fits_checksums

from .conftest import REPO, SIM_ACF, SIM_YAML, harness_api_env
from .fitscheck import assert_fitsverify_clean

runner = CliRunner()
EXAMPLES = REPO / "deploy" / "examples"


def test_negative_exposure_time_is_refused_with_the_field_name() -> None:
    result = runner.invoke(app, ["expose", "--type", "dark", "--exptime", "-1"])
    assert result.exit_code == 2
    assert "exptime: Input should be greater than or equal to 0" in result.output


def test_unknown_image_type_is_refused() -> None:
    result = runner.invoke(app, ["expose", "--type", "science"])
    assert result.exit_code == 2
    assert "science" in result.output


def test_missing_instrument_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    result = runner.invoke(app, ["expose", "--type", "bias", "--instrument", str(missing)])
    assert result.exit_code == 2
    assert "nope.yaml" in result.output
    assert "cannot read" in result.output


def test_bad_port_override_is_refused() -> None:
    result = runner.invoke(app, ["expose", "--type", "bias", "--port", "70000"])
    assert result.exit_code == 2
    assert "controllers.0.port" in result.output


def _ccdflow(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``ccdflow ARGS`` in a fresh process, with Prefect's home under ``tmp_path`` (its
    own embedded API), or in ``env``."""
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", *args],
        cwd=REPO,
        env=env or {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect")},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.mark.parametrize("server", ["closed", "silent"])
def test_a_server_that_does_not_answer_is_named_never_waited_for(
    tmp_path: Path, server: str
) -> None:
    """PREFECT_API_URL at a closed port, or at one that accepts and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        port = listener.getsockname()[1]
        if server == "silent":
            listener.listen()
        else:
            listener.close()
        url = f"http://127.0.0.1:{port}/api"
        started = time.monotonic()
        completed = subprocess.run(
            [sys.executable, "-m", "flows.cli", "history"],
            cwd=REPO,
            env={**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_API_URL": url},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        took = time.monotonic() - started
    assert completed.returncode == 1, completed.stdout + completed.stderr
    message = " ".join(completed.stderr.split())
    assert f"cannot reach the Prefect API at {url} (PREFECT_API_URL)" in message
    assert "Traceback" not in completed.stderr
    assert took < 30  # the 5 s health check, not Prefect's retries


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    # On the session's test API: an embedded API's first start on a new Prefect home
    # is tested by test_commands_started_together_on_a_new_prefect_home_all_work.
    data = tmp_path / "data"
    completed = _ccdflow(tmp_path, "demo", "--data", str(data), env=harness_api_env())
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output
    files = sorted(data.rglob("*.fits"))
    # 5 exposures x 2 controllers x 2 CCDs, each a raw frame and a processed image
    assert len(files) == 40, output
    products = [fits.getheader(f)["PRODUCT"] for f in files]
    assert products.count("raw") == products.count("processed") == 20
    types = sorted(fits.getheader(f)["IMAGETYP"] for f in files if f.stem.endswith("-proc"))
    assert types == ["bias"] * 8 + ["dark"] * 4 + ["flat"] * 4 + ["object"] * 4
    # One shutter for both controllers: sim2's CCDs saw the flat's light too.
    flats = [
        f for f in files if f.stem.endswith("-proc") and fits.getheader(f)["IMAGETYP"] == "flat"
    ]
    assert all(np.median(fits.getdata(f)[:, :512]) > 500 for f in flats)
    for path in files:
        verify_fits_checksums(path)
    assert "CHECKSUM/DATASUM verified" in completed.stdout
    assert "Run history" in completed.stdout
    # The hint names a command that works without uv on the PATH (a fresh machine).
    assert "List it: .venv/bin/ccdflow history" in " ".join(completed.stdout.split())
    assert_fitsverify_clean(files[-1])


@contextmanager
def _simulator() -> Iterator[tuple[subprocess.Popen[str], int]]:
    """`ccdflow sim --port 0` as a subprocess, with SIGINT ignored as a background
    process may inherit it. Yields it and the port read from its first line; stopped
    with SIGTERM on the way out."""
    process = subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "sim", "--port", "0"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        match = re.search(r"listening on 127\.0\.0\.1:(\d+)", first)
        assert match, first
        yield process, int(match.group(1))
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        finally:
            process.kill()
            process.wait()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_sim_serves_on_loopback_and_stops_on_signal(signum: int) -> None:
    with _simulator() as (process, port):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
            conn.sendall(b">01STATUS\n")
            assert conn.recv(4096).startswith(b"<01")
        process.send_signal(signum)
        assert process.wait(timeout=10) == 0


# --- bad input to `run` and to the new `expose` options: exit 2, field named ---------


@pytest.fixture
def no_prefect(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if the command gets as far as configuring Prefect."""

    def tripwire() -> Path:
        raise AssertionError("bad input reached start_prefect")

    monkeypatch.setattr("flows.cli.start_prefect", tripwire)


def _refused(args: list[str], *expected: str) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    for text in expected:
        assert text in result.output, result.output
    return result.output


@pytest.mark.usefixtures("no_prefect")
@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("neither.yaml", "name: x\nfoo: 1\n", ["neither a sequence", "keys found: name, foo"]),
        (
            "both.yaml",
            "exposures: [{image_type: bias}]\nbiases: 2\n",
            ["has both 'exposures'", "'biases'"],
        ),
        ("list.yaml", "- exposures\n- biases\n", ["(top level): must be a mapping"]),
        ("empty.yaml", "", ["(top level): must be a mapping"]),
        ("syntax.yaml", "exposures: [{image_type: bias\n", ["not valid YAML"]),
        ("syntax.json", '{"exposures": [}', ["not valid JSON"]),
        (
            "sequence.yaml",
            "name: bad name\nrepeats: 0\nexposures:\n"
            "  - {image_type: dark, exptime: -1}\n"
            "  - {image_type: object, binning: {x: 20}, colour: red}\n",
            [
                "invalid sequence file",
                "name: String should match pattern",
                "repeats: Input should be greater than or equal to 1",
                "exposures.0.exptime: Input should be greater than or equal to 0",
                "exposures.1.binning.x: Input should be less than or equal to 16",
                "exposures.1.colour: Extra inputs are not permitted",
            ],
        ),
        ("no-exposures.yaml", "exposures: []\n", ["exposures: List should have at least 1"]),
        (
            "calibrations.json",
            json.dumps(
                {
                    "biasses": 3,
                    "darks": [{"exptime": 0, "count": 1}],
                    "flats": [{"exptime": 1.0, "count": 0}],
                    "arcs": [{"exptime": 1.0, "count": 1}],
                }
            ),
            [
                "invalid calibration set file",
                "biasses: Extra inputs are not permitted",
                "darks.0.exptime: Input should be greater than 0",
                "flats.0.count: Input should be greater than or equal to 1",
                "arcs.0.lamp: Field required",
            ],
        ),
        ("nothing.yaml", "biases: 0\n", ["(top level): Value error, a calibration set needs"]),
        (
            "filters.yaml",
            "flats:\n  - {exptime: 1.0, count: 1}\n  - {filter: g, exptime: 1.0, count: 1}\n",
            ["flats.1.filter: 'g' is not a filter of ccdsim (none configured)"],
        ),
    ],
)
def test_run_refuses_bad_spec_files(
    tmp_path: Path, name: str, content: str, expected: list[str]
) -> None:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    _refused(["run", str(path)], str(path), *expected)


@pytest.mark.usefixtures("no_prefect")
def test_run_refuses_missing_and_unreadable_files(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    _refused(["run", str(missing)], str(missing), "cannot read the file")
    _refused(["run", str(tmp_path)], str(tmp_path), "cannot read the file")
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00exposures")
    _refused(["run", str(binary)], str(binary), "cannot read the file", "utf-8")


@pytest.mark.usefixtures("no_prefect")
def test_run_names_bad_instrument_and_overrides(tmp_path: Path) -> None:
    spec = tmp_path / "biases.yaml"
    spec.write_text("biases: 1\n")
    _refused(["run", str(spec), "--port", "0"], "controllers.0.port")
    _refused(["run", str(spec), "--instrument", str(tmp_path / "nope.yaml")], "nope.yaml")


@pytest.mark.usefixtures("no_prefect")
def test_filters_the_instrument_lacks_are_named(tmp_path: Path) -> None:
    """The sim instrument has no filters: each flat that asks for one is named."""
    spec = tmp_path / "flats.yaml"
    spec.write_text(
        "flats: [{filter: g, exptime: 1, count: 1}, {filter: r, exptime: 1, count: 1}]\n"
    )
    _refused(
        ["run", str(spec)],
        "flats.0.filter: 'g' is not a filter of ccdsim",
        "flats.1.filter: 'r'",
    )


def test_spec_files_are_recognised_by_their_keys(tmp_path: Path) -> None:
    assert isinstance(load_spec_file(EXAMPLES / "sequence.yaml"), SequenceSpec)
    calibration = load_spec_file(EXAMPLES / "calibrations.yaml")
    assert isinstance(calibration, CalibrationSpec)
    as_json = tmp_path / "calibrations.json"
    as_json.write_text(calibration.model_dump_json())
    assert load_spec_file(as_json) == calibration


def test_bad_input_exits_before_prefect_is_imported(tmp_path: Path) -> None:
    """In a fresh interpreter: a refused file leaves Prefect unimported."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("exposures: [{image_type: dark, exptime: -1}]\n")
    script = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from flows.cli import app\n"
        f"result = CliRunner().invoke(app, ['run', {str(bad)!r}])\n"
        "print(result.exit_code, sorted(m for m in sys.modules if m.split('.')[0] == 'prefect'))\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert completed.stdout.split() == ["2", "[]"], completed.stdout + completed.stderr


@pytest.mark.usefixtures("no_prefect")
@pytest.mark.parametrize("value", ["2", "2x", "x2", "2x2x2", "axb", "-1x2", "2*2", ""])
def test_malformed_binning_is_refused(value: str) -> None:
    _refused(["expose", "--type", "bias", "--bin", value], f"binning: {value!r} is not XxY")


@pytest.mark.usefixtures("no_prefect")
@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--bin", "0x2"], "binning.x: Input should be greater than or equal to 1"),
        (["--bin", "2x17"], "binning.y: Input should be less than or equal to 16"),
        (["--stack", "1"], "stacking.frames: Input should be greater than or equal to 2"),
        (["--stack", "1001"], "stacking.frames: Input should be less than or equal to 1000"),
        (["--stack-method", "mean"], "stacking: --stack-method needs --stack N"),
        (["--stack", "3", "--stack-method", "max"], "--stack-method"),
        (["--filter", ""], "filter: String should have at least 1 character"),
        (["--filter", "r"], "filter: 'r' is not a filter of ccdsim (none configured)"),
        (["--header", "PROPOSER"], "header: 'PROPOSER' is not KEY=VALUE (--header)"),
        (["--header", "A=1", "--header", "A=2"], "header.A: given twice (--header)"),
        (["--header", "EXPTIME=3"], "header: Value error, keyword EXPTIME is written by ccdflow"),
        (["--header", "NAXIS1=3"], "header: Value error, keyword NAXIS1 is reserved"),
        (["--header", "LONG=" + "x" * 69], "header: Value error, LONG: value of 69 characters"),
        (["--header", "NOTE=caf\u00e9"], "header: Value error, NOTE: value must be printable"),
        (["--header", "=3"], "header: Value error, keyword '' is empty"),
    ],
)
def test_bad_expose_options_name_the_field(args: list[str], expected: str) -> None:
    _refused(["expose", "--type", "flat", "--exptime", "1", *args], expected)


@pytest.mark.usefixtures("no_prefect")
def test_expose_reports_every_problem_at_once() -> None:
    _refused(
        [
            *("expose", "--type", "dark", "--exptime", "-1", "--bin", "2by2"),
            *("--stack", "1", "--header", "X", "--header", "EXPNUM=1"),
        ],
        "exptime: Input should be greater than or equal to 0",
        "binning: '2by2' is not XxY",
        "stacking.frames",
        "header: 'X' is not KEY=VALUE",
        "keyword EXPNUM is written by ccdflow",
    )


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("42", 42),
        ("-3", -3),
        ("+7", 7),
        ("2.5", 2.5),
        ("-.5", -0.5),
        ("1e3", 1000.0),
        ("6.02E23", 6.02e23),
        ("true", True),
        ("False", False),
        ("nan", "nan"),
        ("inf", "inf"),
        ("1_000", "1_000"),
        ("0x10", "0x10"),
        ("NGC 1300", "NGC 1300"),
        ("", ""),
        ("a=b", "a=b"),
    ],
)
def test_header_values_are_typed_as_written(text: str, value: object) -> None:
    parsed = parse_card_value(text)
    assert parsed == value
    assert type(parsed) is type(value)


def test_binning_parses_x_by_y() -> None:
    assert parse_binning("2x2") == {"x": 2, "y": 2}
    assert parse_binning("1X4") == {"x": 1, "y": 4}
    assert parse_binning("2 x 1") == {"x": 2, "y": 1}
    assert parse_binning("2") is None


# --- good input reaches the right flow with the right spec (flows replaced) ----------


@pytest.fixture
def captured_flows(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Any]]:
    """Replace the flows with recorders so the command's spec is seen without a run."""
    calls: list[tuple[str, Any]] = []

    def recorder(name: str) -> Any:
        async def fake(spec: Any, instrument: InstrumentConfig) -> SequenceResult:
            calls.append((name, spec))
            return SequenceResult(name=name, flow_run_id=None, exposures=[], elapsed_s=0.0)

        return fake

    monkeypatch.setattr("flows.cli.start_prefect", lambda: Path("unused"))
    monkeypatch.setattr("flows.exposure.run_sequence", recorder("run_sequence"))
    monkeypatch.setattr("flows.exposure.calibrations", recorder("calibrations"))
    return calls


@pytest.fixture
def filter_instrument(tmp_path: Path) -> Path:
    """The sim instrument with filters r and g, written beside the test's files."""
    data = yaml.safe_load(SIM_YAML.read_text())
    data["filters"] = ["r", "g"]
    data["controllers"][0]["acf"] = str(SIM_ACF)
    path = tmp_path / "filters.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_expose_options_reach_the_exposure_spec(
    captured_flows: list[tuple[str, Any]], filter_instrument: Path
) -> None:
    result = runner.invoke(
        app,
        [
            *("expose", "--type", "object", "--exptime", "2", "--count", "3"),
            *("--filter", "r", "--bin", "2x1", "--stack", "4", "--stack-method", "sum"),
            *("--header", "PROPOSER=ccdflow team", "--header", "NIGHTS=3"),
            *("--header", "SEEING=0.8", "--header", "PHOTOM=true"),
            *("--instrument", str(filter_instrument)),
        ],
    )
    assert result.exit_code == 0, result.output
    [(name, sequence)] = captured_flows
    assert name == "run_sequence"
    [spec] = sequence.exposures
    assert isinstance(spec, ExposureSpec)
    assert spec.filter == "r"
    assert (spec.binning.x, spec.binning.y) == (2, 1)
    assert spec.stacking is not None
    assert (spec.stacking.frames, spec.stacking.method) == (4, StackMethod.SUM)
    assert spec.header == {"PROPOSER": "ccdflow team", "NIGHTS": 3, "SEEING": 0.8, "PHOTOM": True}


def test_stack_method_defaults_to_the_models(captured_flows: list[tuple[str, Any]]) -> None:
    result = runner.invoke(app, ["expose", "--type", "bias", "--stack", "5"])
    assert result.exit_code == 0, result.output
    [(_, sequence)] = captured_flows
    assert sequence.exposures[0].stacking.method is StackMethod.MEDIAN


def test_run_picks_the_flow_by_the_files_keys(
    captured_flows: list[tuple[str, Any]], filter_instrument: Path
) -> None:
    instrument = ["--instrument", str(filter_instrument)]
    for example in ("sequence.yaml", "calibrations.yaml"):
        result = runner.invoke(app, ["run", str(EXAMPLES / example), *instrument])
        assert result.exit_code == 0, result.output
    [(first, sequence), (second, calibration)] = captured_flows
    assert (first, type(sequence)) == ("run_sequence", SequenceSpec)
    assert (second, type(calibration)) == ("calibrations", CalibrationSpec)
    assert sequence.name == "standard-field"
    assert calibration.biases == 5


# --- end to end: `ccdflow run` against `ccdflow sim` ---------------------------------


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_run_takes_a_calibration_file_end_to_end(tmp_path: Path) -> None:
    api_env = harness_api_env()  # the session's test API: no embedded API to start
    spec = tmp_path / "calibrations.yaml"
    spec.write_text(
        "name: cli-calibrations\n"
        "biases: 2\n"
        "darks: [{exptime: 0.2, count: 1}]\n"
        "flats: [{exptime: 0.2, count: 1}]\n"  # the sim instrument has no filters
    )
    data = tmp_path / "data"
    with _simulator() as (_, port):
        completed = _ccdflow(
            tmp_path, "run", str(spec), "--port", str(port), "--data", str(data), env=api_env
        )
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output
    files = sorted(data.rglob("*.fits"))
    assert len(files) == 8 + 3, output  # 4 exposures x 2 CCDs, and 3 masters
    types = sorted(fits.getheader(f)["IMAGETYP"] for f in files)
    assert types == ["bias"] * 4 + ["dark"] * 2 + ["flat"] * 2 + [
        "master_bias",
        "master_dark",
        "master_flat",
    ]
    assert "sequence cli-calibrations: 4 exposures" in completed.stdout
    assert "8 FITS files" in completed.stdout
    assert "master flat (none) from 1 exposures (4-4)" in completed.stdout


@pytest.mark.usefixtures("no_prefect")
def test_night_refuses_a_bad_plan_naming_the_step(tmp_path: Path) -> None:
    plan = tmp_path / "night.yaml"
    plan.write_text("steps:\n  - {name: cal, biases: -1}\n")
    _refused(["night", str(plan)], str(plan), "steps.0")


@pytest.mark.slow
def test_commands_started_together_on_a_new_prefect_home_all_work(tmp_path: Path) -> None:
    """The first start creates the embedded API's database. Without the lock in
    configure_prefect, concurrent first starts race in its migrations (seen here as
    "duplicate column name" and "UNIQUE constraint failed" errors)."""
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "new-home")}
    env.pop("PREFECT_API_URL", None)
    data = tmp_path / "data"
    with _simulator() as (_, port):
        command = [sys.executable, "-m", "flows.cli", "expose", "--type", "bias"]
        command += ["--port", str(port), "--data", str(data)]
        procs = [
            subprocess.Popen(
                command,
                cwd=REPO,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for _ in range(2)  # two first starts at once are a race already
        ]
        outputs = [proc.communicate(timeout=300)[0] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], outputs
    for output in outputs:
        assert "OperationalError" not in output
        assert "UNIQUE constraint failed" not in output
    numbers = sorted({fits.getheader(f)["EXPNUM"] for f in data.rglob("*.fits")})
    assert numbers == [1, 2]
