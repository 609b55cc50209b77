"""The third-party ``alpaca-simulators`` server, run offline on a free 127.0.0.1 port.

Used by tests/test_alpaca_simulator.py and bench/alpaca.py. Three things keep it
inside this machine and out of site-packages:

* ``--host 127.0.0.1`` always (its default listens on every interface);
* light frames draw stars from a synthetic SQLite catalogue written here (table
  ``gaia_sources(ra, dec, pmra, pmdec, phot_g_mean_mag)``), named by the config's
  ``tap_source``; without it the simulator queries an online Gaia service;
* ``--config`` is given an absolute path. The simulator looks the name up as
  ``<package>/config/<name>``, and pathlib joins a folder with an absolute path as
  that absolute path, so a config in a temporary folder is read in place; a missing
  file would instead be created by copying the package's template into
  site-packages, which an existing absolute path never triggers.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import math
import os
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import yaml

POINTING_RA_HOURS = 6.0
POINTING_DEC_DEG = 30.0
"""Where the simulated telescope points (tracking, so stars stay put and repeated
exposures are the same frame)."""

CATALOGUE_RADIUS_DEG = 0.5
"""Stars are spread over this radius around the pointing: wider than the field of a
4096 x 4096 frame of 10 um pixels at 8 m focal length (0.29 deg across)."""


def template_config() -> dict[str, Any]:
    """The simulator's own default configuration, as a dict (read, never written)."""
    spec = importlib.util.find_spec("alpaca_simulators")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("alpaca-simulators is not installed (uv sync installs it)")
    path = Path(next(iter(spec.submodule_search_locations))) / "config" / "template.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def write_catalogue(path: Path, *, stars: int = 3000, seed: int = 7) -> Path:
    """A synthetic Gaia-like catalogue around the pointing, reproducible by ``seed``."""
    rng = np.random.default_rng(seed)
    ra0, dec0 = math.radians(POINTING_RA_HOURS * 15.0), math.radians(POINTING_DEC_DEG)
    # Uniform on the tangent plane within the radius, deprojected (gnomonic).
    r = math.radians(CATALOGUE_RADIUS_DEG) * np.sqrt(rng.uniform(0, 1, stars))
    theta = rng.uniform(0, 2 * math.pi, stars)
    xi, eta = r * np.cos(theta), r * np.sin(theta)
    denominator = math.cos(dec0) - eta * math.sin(dec0)
    ra = np.degrees(ra0 + np.arctan2(xi, denominator)) % 360.0
    dec = np.degrees(np.arctan2(math.sin(dec0) + eta * math.cos(dec0), np.hypot(xi, denominator)))
    magnitude = rng.uniform(9.0, 17.0, stars)
    path.unlink(missing_ok=True)
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute(
            "CREATE TABLE gaia_sources (ra REAL, dec REAL, pmra REAL, pmdec REAL, "
            "phot_g_mean_mag REAL)"
        )
        db.executemany(
            "INSERT INTO gaia_sources VALUES (?, ?, 0.0, 0.0, ?)",
            zip(ra.tolist(), dec.tolist(), magnitude.tolist(), strict=True),
        )
        db.commit()
    return path


def write_config(folder: Path, catalogue: Path, camera: Mapping[str, Any] | None = None) -> Path:
    """The template with the offline catalogue, a fixed pointing and camera overrides."""
    config = copy.deepcopy(template_config())
    config["tap_source"] = str(catalogue)
    config["gaia_query_timeout"] = 5
    telescope = config["devices"]["telescope"][0]
    telescope.update(
        rightascension=POINTING_RA_HOURS,
        declination=POINTING_DEC_DEG,
        tracking=True,
        atpark=False,
    )
    config["devices"]["camera"][0].update(camera or {})
    path = folder / "alpaca-sim.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class RunningSimulator:
    """A started simulator: where it listens and the process to stop."""

    host: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path
    config: Path

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def reload(self) -> None:
        """``GET /reload``: every device back to its configured state."""
        httpx.get(f"{self.base_url}/reload", timeout=10, trust_env=False).raise_for_status()


def _wait_ready(sim: RunningSimulator, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    url = f"{sim.base_url}/api/v1/camera/0/name"
    while time.monotonic() < deadline:
        if sim.process.poll() is not None:
            raise RuntimeError(
                f"alpaca-simulators exited with {sim.process.returncode}:\n"
                + sim.log.read_text(errors="replace")[-3000:]
            )
        try:
            if httpx.get(url, timeout=1, trust_env=False).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise RuntimeError(
        f"alpaca-simulators gave no answer within {timeout:g} s:\n"
        + sim.log.read_text(errors="replace")[-3000:]
    )


STOP_GRACE_S = 2.0
"""SIGTERM stops an idle simulator in ~0.2 s; uvicorn waits on for clients' open
keep-alive connections, which a test server need not honour."""


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


@contextlib.contextmanager
def running_simulator(
    folder: Path,
    *,
    camera: Mapping[str, Any] | None = None,
    start_timeout: float = 60.0,
    attempts: int = 3,
) -> Iterator[RunningSimulator]:
    """Start ``alpaca-simulators`` on 127.0.0.1 in ``folder``; stop it on exit.

    A port taken between our probe and the server's bind makes the server exit at
    once; then another free port is tried.
    """
    folder.mkdir(parents=True, exist_ok=True)
    catalogue = write_catalogue(folder / "gaia-synthetic.db")
    config = write_config(folder, catalogue, camera)
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env["PYTHONUNBUFFERED"] = "1"
    for attempt in range(attempts):
        port = free_port()
        log = folder / f"alpaca-sim-{port}.log"
        with log.open("wb") as sink:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "alpaca_simulators.run_simulator",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--config",
                    str(config.resolve()),
                ],
                cwd=folder,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        sim = RunningSimulator("127.0.0.1", port, process, log, config)
        try:
            _wait_ready(sim, start_timeout)
        except RuntimeError:
            _stop(process)
            if attempt == attempts - 1:
                raise
            continue
        try:
            yield sim
        finally:
            _stop(process)
        return
