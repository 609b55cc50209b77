"""Failing safely with real processes: the flow runs in its own ``ccdflow`` process
against the simulator in this one, and is stopped the way Prefect and operators stop
it (SIGTERM on cancellation from the UI, SIGKILL on a crash). Loopback only."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import signal
import sys
import time
from collections.abc import Mapping
from functools import partial
from pathlib import Path

import psutil
import pytest
from astropy.io import fits
from prefect.settings import PREFECT_API_URL

from devices.archon.simulator import ArchonSimulator
from devices.archon.simulator.core import CoreState
from flows.reaper import GRACE_S, OWNER_VARIABLE

from .conftest import REPO

pytestmark = pytest.mark.slow

STARTUP_S = 120.0
"""A fresh process starts Prefect's embedded API (about 10 s, more on a busy machine)."""


async def _ccdflow(
    tmp_path: Path, *args: str, api: Mapping[str, str] | None = None
) -> asyncio.subprocess.Process:
    """``ccdflow ARGS`` in a fresh process (own Prefect home, or the API ``api`` names),
    output in files."""
    out = (tmp_path / "stdout.txt").open("wb")
    err = (tmp_path / "stderr.txt").open("wb")
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "flows.cli",
        *args,
        cwd=REPO,
        # Both products, so a recovery is seen to write raw frames and processed images.
        env={
            **os.environ,
            "PREFECT_HOME": str(tmp_path / "prefect"),
            "CCDFLOW_STORAGE__PROCESSED": "true",
            "CCDFLOW_REAPER_LOG": str(tmp_path / "reaper.log"),
            **(api or {}),
        },
        stdout=out,
        stderr=err,
    )


def _output(tmp_path: Path) -> str:
    return (tmp_path / "stdout.txt").read_text() + (tmp_path / "stderr.txt").read_text()


async def _until(condition: object, timeout: float, what: str) -> float:
    """Poll ``condition()`` every 5 ms; the seconds it took (TimeoutError naming it)."""
    start = time.monotonic()
    while not condition():  # type: ignore[operator]
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"{what} not within {timeout} s")
        await asyncio.sleep(0.005)
    return time.monotonic() - start


@pytest.mark.usefixtures("prefect_harness")
async def test_sigterm_mid_integration_closes_the_shutter_within_a_second(
    tmp_path: Path, archon_sim: ArchonSimulator
) -> None:
    # The session's test API: what is tested is the shutter, not an API's start.
    api = {"PREFECT_API_URL": str(PREFECT_API_URL.value())}
    proc = await _ccdflow(
        tmp_path,
        "expose",
        "--type",
        "object",
        "--exptime",
        "60",
        "--port",
        str(archon_sim.port),
        "--data",
        str(tmp_path / "data"),
        api=api,
    )
    try:
        await _until(lambda: archon_sim.shutter_open, STARTUP_S, "shutter open")
        await asyncio.sleep(0.5)  # well into the integration
        proc.send_signal(signal.SIGTERM)
        closed_after = await _until(lambda: not archon_sim.shutter_open, 5.0, "shutter closed")
        code = await asyncio.wait_for(proc.wait(), 60)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    output = _output(tmp_path)
    print(f"shutter closed {closed_after:.3f} s after SIGTERM; exit {code}")
    assert closed_after < 1.0, output
    assert archon_sim.core_state is CoreState.IDLE, output
    assert not archon_sim.timing_held
    assert code != 0, output
    assert list((tmp_path / "data").rglob("*.fits")) == []  # nothing half-written


def _fits_by_expnum(data: Path) -> dict[int, list[Path]]:
    found: dict[int, list[Path]] = {}
    for path in sorted(data.rglob("*.fits")):
        found.setdefault(int(fits.getheader(path)["EXPNUM"]), []).append(path)
    return found


def _oldest_age(folder: Path) -> float:
    """Seconds since the oldest save-point in ``folder`` was written (0 if none)."""
    ages = [0.0]
    for path in folder.glob("*.json"):
        try:
            ages.append(time.time() - path.stat().st_mtime)
        except FileNotFoundError:  # removed while we looked: its exposure is written
            continue
    return max(ages)


FILES_PER_EXPOSURE = 4
"""Two CCDs, each a raw frame and a processed image."""


def _complete(data: Path) -> int:
    return sum(len(paths) == FILES_PER_EXPOSURE for paths in _fits_by_expnum(data).values())


def _cmdline(process: psutil.Process) -> list[str]:
    try:
        return process.cmdline()
    except psutil.Error:
        return []


def _running(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _describe(process: psutil.Process) -> str:
    """A process as a failure message needs it: pid, state, tag and command."""
    try:
        tag = process.environ().get(OWNER_VARIABLE)
        return f"{process.pid} ({process.status()}, owner {tag}): {' '.join(_cmdline(process))}"
    except psutil.Error as exc:
        return f"{process.pid} ({exc})"


def _kill_all(processes: list[psutil.Process]) -> None:
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()


async def test_kill_9_mid_sequence_then_resume_takes_every_exposure_once(
    tmp_path: Path, archon_sim: ArchonSimulator, request: pytest.FixtureRequest
) -> None:
    """Killed while a frame is being fetched: the frame is recovered from the
    controller's buffer, the rest of the sequence is taken, nothing twice."""
    planned = 4  # two written, one killed in its fetch, one after the resume
    sequence = tmp_path / "sequence.yaml"
    sequence.write_text(
        f"name: kill-test\nexposures:\n  - {{image_type: dark, exptime: 1.0, count: {planned}}}\n"
    )
    data = tmp_path / "data"
    savepoints = data / ".ccdflow" / "savepoints"
    args = ("run", str(sequence), "--port", str(archon_sim.port), "--data", str(data))
    first = await _ccdflow(tmp_path, *args)
    try:
        await _until(lambda: _complete(data) >= 2, STARTUP_S, "two exposures written")
        # Slow the link so the next fetch takes seconds, then kill the run inside it:
        # the frame is then only in the controller (and in the save-point's notes).
        archon_sim.bandwidth_limit_bps = 4e6
        await _until(lambda: _oldest_age(savepoints) > 0.3, 30, "a save-point 0.3 s old")
        # What the run started (its embedded Prefect API, its watcher) must not
        # outlive it: flows/reaper.py stops it. Killed here too if that fails.
        started = psutil.Process(first.pid).children(recursive=True)
        request.addfinalizer(partial(_kill_all, started))
        first.send_signal(signal.SIGKILL)
        await first.wait()
        servers = [p for p in started if "uvicorn" in " ".join(_cmdline(p))]
        assert servers, "the run started no embedded Prefect API"
        try:
            # The grace period, plus room for a loaded machine (a process in an
            # uninterruptible write dies only when the write ends).
            await _until(lambda: not any(_running(p) for p in started), GRACE_S + 20, "gone")
        except TimeoutError:
            left = [_describe(p) for p in started if _running(p)]
            log = tmp_path / "reaper.log"
            said = log.read_text() if log.exists() else "(the reaper wrote nothing)"
            raise AssertionError(
                f"the killed run's processes outlived it: {left}; reaper: {said}"
            ) from None
    finally:
        if first.returncode is None:
            first.kill()
            await first.wait()
    archon_sim.bandwidth_limit_bps = None
    killed_with = _fits_by_expnum(data)
    (interrupted,) = [int(p.stem.rsplit("-", 1)[1]) for p in savepoints.glob("*.json")]
    # its files were not all written
    assert len(killed_with.get(interrupted, [])) < FILES_PER_EXPOSURE
    second = await _ccdflow(tmp_path, *args)
    code = await asyncio.wait_for(second.wait(), STARTUP_S + 60)
    output = _output(tmp_path)
    assert code == 0, output
    assert f"exposure {interrupted} recovered from the controllers' buffers" in output
    assert "resuming an interrupted run" in output
    # The killed run's slot of the concurrency limit stayed taken (the embedded API
    # reclaims no leases); the resumed run released it instead of waiting forever.
    assert "held by a run that no longer exists; released it" in output, output
    exposures = _fits_by_expnum(data)
    complete = {n: paths for n, paths in exposures.items() if len(paths) == FILES_PER_EXPOSURE}
    print(
        f"planned {planned}; written when killed {len(killed_with)}; exposure {interrupted} "
        f"recovered; after resume {len(complete)} complete: {sorted(complete)}"
    )
    assert len(complete) == planned, output  # every planned exposure, once
    assert complete.keys() == exposures.keys()  # no exposure with a file missing
    assert interrupted in complete  # recovered, not taken again
    # Nothing rewritten: files on disk before the kill are the same files now.
    assert all(set(killed_with[n]) <= set(complete[n]) for n in killed_with)
    assert list(savepoints.glob("*.json")) == []
    # The recovered exposure has both products, the processed ones naming their raw
    # frames by sha256, and its times from the save-point.
    headers = {path.name: fits.getheader(path) for path in complete[interrupted]}
    raw = {h["CCDNAME"]: name for name, h in headers.items() if h["PRODUCT"] == "raw"}
    for name, header in headers.items():
        assert header["TIMESRC"] == "controller timer"
        if header["PRODUCT"] == "processed":
            raw_path = data / complete[interrupted][0].parent.name / raw[header["CCDNAME"]]
            assert header["RAWSHA"] == hashlib.sha256(raw_path.read_bytes()).hexdigest(), name
