"""The third-party ``alpaca-simulators`` server, run offline on 127.0.0.1.

``ccdflow sim --observatory`` and the tests start it through here. Three things keep
it inside this machine and out of site-packages:

* ``--host 127.0.0.1`` always (its default listens on every interface);
* light frames draw stars from a synthetic SQLite catalogue written here (table
  ``gaia_sources(ra, dec, pmra, pmdec, phot_g_mean_mag)``) around the fields asked
  for, named by the config's ``tap_source``; without it the simulator queries an
  online Gaia service (elsewhere on the sky the frames show an empty sky);
* ``--config`` is given an absolute path. The simulator looks the name up as
  ``<package>/config/<name>``, and pathlib joins a folder with an absolute path as
  that absolute path, so a config in our folder is read in place; a missing file
  would instead be created by copying the package's template into site-packages,
  which an existing absolute path never triggers.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import math
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import yaml

HOST = "127.0.0.1"
DEFAULT_POINTING = (90.0, 30.0)
"""Where the simulated telescope points at start (RA, Dec degrees), tracking."""
FIELD_RADIUS_DEG = 0.5
"""Stars are spread over this radius around each field: wider than a 4096^2 frame of
10 um pixels at the simulator's 8 m focal length (0.29 deg across)."""
STOP_GRACE_S = 2.0
"""SIGTERM stops an idle simulator in ~0.2 s; uvicorn waits on for clients' open
keep-alive connections, which a simulator need not honour."""


def template_config() -> dict[str, Any]:
    """The simulator's own default configuration, as a dict (read, never written)."""
    spec = importlib.util.find_spec("alpaca_simulators")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("alpaca-simulators is not installed (make installs it)")
    path = Path(next(iter(spec.submodule_search_locations))) / "config" / "template.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise RuntimeError(f"unexpected simulator template {path}")
    return data


def write_catalogue(
    path: Path,
    fields: Sequence[tuple[float, float]] = (DEFAULT_POINTING,),
    *,
    stars: int = 3000,
    seed: int = 7,
) -> Path:
    """A synthetic Gaia-like catalogue of ``stars`` per field (RA, Dec degrees),
    reproducible by ``seed``; the file is replaced."""
    rng = np.random.default_rng(seed)
    rows: list[tuple[float, float, float]] = []
    for ra_deg, dec_deg in fields:
        ra0, dec0 = math.radians(ra_deg), math.radians(dec_deg)
        # Uniform on the tangent plane within the radius, deprojected (gnomonic).
        r = math.radians(FIELD_RADIUS_DEG) * np.sqrt(rng.uniform(0, 1, stars))
        theta = rng.uniform(0, 2 * math.pi, stars)
        xi, eta = r * np.cos(theta), r * np.sin(theta)
        below = math.cos(dec0) - eta * math.sin(dec0)
        ra = np.degrees(ra0 + np.arctan2(xi, below)) % 360.0
        dec = np.degrees(np.arctan2(math.sin(dec0) + eta * math.cos(dec0), np.hypot(xi, below)))
        magnitude = rng.uniform(9.0, 17.0, stars)
        rows += zip(ra.tolist(), dec.tolist(), magnitude.tolist(), strict=True)
    path.unlink(missing_ok=True)
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute(
            "CREATE TABLE gaia_sources (ra REAL, dec REAL, pmra REAL, pmdec REAL, "
            "phot_g_mean_mag REAL)"
        )
        db.executemany("INSERT INTO gaia_sources VALUES (?, ?, 0.0, 0.0, ?)", rows)
        db.commit()
    return path


def write_config(
    folder: Path,
    catalogue: Path,
    *,
    camera: Mapping[str, Any] | None = None,
    pointing: tuple[float, float] = DEFAULT_POINTING,
    site: tuple[float, float, float] | None = None,
) -> Path:
    """The template with the offline catalogue, a tracking telescope at ``pointing``
    (RA, Dec degrees), the site (latitude, longitude, elevation), camera overrides,
    and a flat panel whose lamp is present (Off)."""
    config = copy.deepcopy(template_config())
    config["tap_source"] = str(catalogue)
    config["gaia_query_timeout"] = 5
    telescope = config["devices"]["telescope"][0]
    telescope.update(
        rightascension=pointing[0] / 15.0, declination=pointing[1], tracking=True, atpark=False
    )
    if site is not None:
        telescope.update(sitelatitude=site[0], sitelongitude=site[1], siteelevation=site[2])
    config["devices"]["camera"][0].update(camera or {})
    # The template's panel has a cover and no lamp (NotPresent); ours is a flat panel.
    config["devices"]["covercalibrator"][0].update(calibratorstate=1, brightness=0)
    path = folder / "alpaca-sim.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


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


def start(config: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    """Start the simulator on 127.0.0.1:``port`` with ``config``, output to ``log``."""
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env["PYTHONUNBUFFERED"] = "1"
    command = [sys.executable, "-m", "alpaca_simulators.run_simulator", "--host", HOST]
    command += ["--port", str(port), "--config", str(config.resolve())]
    with log.open("wb") as sink:
        return subprocess.Popen(
            command,
            cwd=config.parent,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )


def wait_ready(sim: RunningSimulator, timeout: float) -> None:
    """Return once the camera answers; RuntimeError with the log's tail otherwise."""
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


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after STOP_GRACE_S."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


@contextlib.contextmanager
def running(
    folder: Path, config: Path, port: int, *, start_timeout: float = 60.0
) -> Iterator[RunningSimulator]:
    """The simulator on ``port`` until the block ends (stopped on the way out)."""
    log = folder / f"alpaca-sim-{port}.log"
    sim = RunningSimulator(HOST, port, start(config, port, log), log, config)
    try:
        wait_ready(sim, start_timeout)
        yield sim
    finally:
        stop(sim.process)
