"""Failing safely with real processes: the flow runs in its own ``ccdflow`` process
against the simulator in this one, and is stopped the way Prefect and operators stop
it (SIGTERM on cancellation from the UI, SIGKILL on a crash). Loopback only."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from devices.archon.simulator import ArchonSimulator
from devices.archon.simulator.core import CoreState

from .conftest import REPO

pytestmark = pytest.mark.slow

STARTUP_S = 120.0
"""A fresh process starts Prefect's embedded API (about 10 s, more on a busy machine)."""


async def _ccdflow(tmp_path: Path, *args: str) -> asyncio.subprocess.Process:
    """``ccdflow ARGS`` in a fresh process (own Prefect home), output in files."""
    out = (tmp_path / "stdout.txt").open("wb")
    err = (tmp_path / "stderr.txt").open("wb")
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "flows.cli",
        *args,
        cwd=REPO,
        env={**os.environ, "PREFECT_HOME": str(tmp_path / "prefect")},
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


async def test_sigterm_mid_integration_closes_the_shutter_within_a_second(
    tmp_path: Path, archon_sim: ArchonSimulator
) -> None:
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
