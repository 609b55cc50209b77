"""``ccdflow sim --observatory`` runs the README's example observation and dome flats,
and stops."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml
from astropy.io import fits

from flows.reaper import GRACE_S

from .alpaca_sim import free_port
from .conftest import REPO, SIM_ACF, harness_api_env

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]

OBSERVATORY = REPO / "deploy" / "instruments" / "sim-observatory.yaml"
EXAMPLE = REPO / "deploy" / "examples" / "observation.yaml"
DOME_FLATS = REPO / "deploy" / "examples" / "dome-flats.yaml"


def _instrument_on(tmp_path: Path, archon_port: int, alpaca_port: int) -> Path:
    """sim-observatory.yaml with the test's ports (and its ACF by absolute path)."""
    data = yaml.safe_load(OBSERVATORY.read_text())
    data["controllers"][0].update(port=archon_port, acf=str(SIM_ACF))
    for device in data["devices"]:
        device["port"] = alpaca_port
    path = tmp_path / "observatory.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_the_simulated_observatory_runs_the_example_observation_and_dome_flats(
    tmp_path: Path,
) -> None:
    alpaca_port = free_port()
    command = [sys.executable, "-m", "flows.cli", "sim", "--observatory", "--port", "0"]
    command += ["--acf", str(SIM_ACF), "--alpaca-port", str(alpaca_port)]
    env = {**harness_api_env(), "PYTHONPATH": str(REPO)}
    sim = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, text=True)
    started = []
    try:
        assert sim.stdout is not None
        lines = [sim.stdout.readline(), sim.stdout.readline()]
        assert f"Alpaca simulators listening on http://127.0.0.1:{alpaca_port}" in lines[0]
        found = re.search(r"listening on 127\.0\.0\.1:(\d+)", lines[1])
        assert found, lines
        started = psutil.Process(sim.pid).children(recursive=True)
        instrument = _instrument_on(tmp_path, int(found.group(1)), alpaca_port)
        data = tmp_path / "data"
        observe = [sys.executable, "-m", "flows.cli", "observe", str(EXAMPLE)]
        observe += ["--instrument", str(instrument), "--data", str(data)]
        done = subprocess.run(
            observe,
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        files = sorted(data.glob("*/ccdobs-r1-*.fits"))
        assert len(files) == 4  # Red and Blue, at 2 dithers
        # The newcomer's observatory writes a quick-look beside each exposure.
        assert len(sorted(data.glob("*/ccdobs-*.png"))) == 4
        header = fits.getheader(files[0])
        assert header["OBJECT"] == "Polaris field"
        assert header["FILTPOS"] == header["FILTER"] == "Red"
        assert 30 < header["ALT"] < 36  # Polaris from APO
        assert header["DOMEAZ"] == pytest.approx(header["AZ"], abs=1.0)  # the dome followed
        # The README's dome flats, on the same observatory: the panel lit for the flats.
        flats = tmp_path / "flats"
        run = [sys.executable, "-m", "flows.cli", "run", str(DOME_FLATS)]
        run += ["--instrument", str(instrument), "--data", str(flats)]
        done = subprocess.run(run, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
        lit = {}
        for path in flats.glob("*/ccdobs-r1-*.fits"):
            card = fits.getheader(path)
            lit.setdefault(card["IMAGETYP"], []).append((card["FILTER"], card.get("LAMPBRT")))
        assert sorted(lit["flat"]) == [("Blue", 100)] * 3 + [("Red", 50)] * 3
        assert lit["bias"] == [("none", None)] * 3
        assert "master flat (Red)" in done.stdout
    finally:
        sim.send_signal(signal.SIGTERM)
        code = sim.wait(15)
    assert code == 0
    # The simulator, and the reaper, which may outlive the command by its grace period.
    deadline = time.monotonic() + GRACE_S + 5
    while [p for p in started if _running(p)] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [p for p in started if _running(p)]


def _running(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
