"""The ``ccdflow`` command: clear errors for bad input, and the demo end to end."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from astropy.io import fits
from typer.testing import CliRunner

from flows.cli import app
from tasks.verify import verify_fits_checksums

from .conftest import REPO
from .fitscheck import assert_fitsverify_clean

runner = CliRunner()


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


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect")}
    data = tmp_path / "data"
    completed = subprocess.run(
        [sys.executable, "-m", "flows.cli", "demo", "--data", str(data)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output
    files = sorted(data.rglob("*.fits"))
    assert len(files) == 10, output  # 5 exposures x 2 CCDs
    types = sorted(fits.getheader(f)["IMAGETYP"] for f in files)
    assert types == ["bias"] * 4 + ["dark"] * 2 + ["flat"] * 2 + ["object"] * 2
    for path in files:
        verify_fits_checksums(path)
    assert "CHECKSUM/DATASUM verified" in completed.stdout
    assert "Run history" in completed.stdout
    assert_fitsverify_clean(files[-1])


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_sim_serves_on_loopback_and_stops_on_signal(signum: int) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "sim", "--port", "0"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        # A background process may inherit an ignored SIGINT: the sim must still stop.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        match = re.search(r"listening on 127\.0\.0\.1:(\d+)", first)
        assert match, first
        with socket.create_connection(("127.0.0.1", int(match.group(1))), timeout=5) as conn:
            conn.sendall(b">01STATUS\n")
            assert conn.recv(4096).startswith(b"<01")
        process.send_signal(signum)
        assert process.wait(timeout=10) == 0
    finally:
        process.kill()
        process.wait()
