"""Exposures, readout, shutter, flush and buffers, seen on the wire."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from devices.archon.acf import load_acf, tap_regions
from devices.archon.sensor import SensorModel
from devices.archon.simulator import ArchonSimulator, CoreState

from .wire import (
    QUIET,
    SIM_ACF,
    Conn,
    expose,
    fetch,
    set_params,
    wait_complete,
    wait_for,
)


async def test_bias_expose_readout_fetch(sim: ArchonSimulator, conn: Conn) -> None:
    n = await expose(conn, 1)
    _, status = await wait_complete(conn, 1)
    assert status["WBUF"] == str(n) == "1"
    assert (status["BUF1WIDTH"], status["BUF1HEIGHT"]) == ("1088", "1024")
    assert (status["BUF1SAMPLE"], status["BUF1MODE"]) == ("0", "2")
    assert status["BUF1LINES"] == "1024"
    assert status["BUF1PIXELS"] == "1088"
    assert int(status["BUF1TIMESTAMP"], 16) > 0
    assert sim.params["Exposures"] == 0
    assert sim.params["ReadOut"] == 1
    assert sim.frames_completed == 1
    assert not sim.shutter_log
    pixels = await fetch(conn, n, status)
    stored = sim.buffer_data(n)
    assert stored is not None
    assert np.array_equal(pixels, stored)
    acf = sim.acf
    for tap, (rows, cols) in enumerate(tap_regions(acf)):
        block = pixels[rows, cols].astype(float)
        assert abs(block.mean() - QUIET.bias_level(tap)) < 0.1
        assert block.std() == pytest.approx(QUIET.read_noise, rel=0.05)
    assert (await conn.kv("FRAME"))["RBUF"] == "0"


async def test_readout_takes_time_and_lines_grow(conn: Conn) -> None:
    await set_params(conn, WaitCount=50_000, IntCS=0, ReadOut=1, Exposures=1)
    await conn.cmd("RELEASETIMING")
    seen: list[int] = []
    start = time.monotonic()
    while True:
        frame = await conn.kv("FRAME")
        if frame["BUF1FRAME"] == "1":
            seen.append(int(frame["BUF1LINES"]))
            if frame["BUF1COMPLETE"] == "1":
                break
        await asyncio.sleep(0.01)
    elapsed = time.monotonic() - start
    # 512 lines x (544 px / 2 MHz + 50000 x 10 ns) = 0.40 s
    assert 0.35 < elapsed < 2.0
    assert seen == sorted(seen)
    assert seen[-1] == 1024
    assert any(0 < lines < 1024 for lines in seen)


async def test_shutter_only_with_open_shutter(sim: ArchonSimulator, conn: Conn) -> None:
    await set_params(conn, OpenShutter=0, IntCS=10, ReadOut=1, Exposures=1)
    await conn.cmd("RELEASETIMING")
    await wait_for(lambda: sim.core_state is CoreState.INTEGRATING)
    assert not sim.shutter_open
    n, status = await wait_complete(conn, 1)
    dark = await fetch(conn, n, status)
    assert sim.shutter_log == []

    await set_params(conn, OpenShutter=1, IntCS=20, Exposures=1)
    await conn.cmd("RELEASETIMING")
    await wait_for(lambda: sim.shutter_open)
    n, status = await wait_complete(conn, 2)
    assert not sim.shutter_open
    ((opened, closed),) = sim.shutter_log
    assert 0.19 < closed - opened < 0.4
    lit = await fetch(conn, n, status)
    bias = QUIET.bias_level(0)
    assert dark[:512, :512].mean() < bias + 10
    expected = QUIET.illumination * (closed - opened) / QUIET.gain
    assert lit[:512, :512].mean() - bias == pytest.approx(expected, rel=0.05)
    assert lit[:512, 512:544].mean() == pytest.approx(bias, abs=0.5)  # overscan


async def test_dark_time_accumulates_since_clear() -> None:
    sensor = SensorModel(dark_current=3000.0, cosmic_rate=0.0, read_noise=1.0)
    async with ArchonSimulator(load_acf(SIM_ACF), sensor=sensor) as sim:
        conn = await Conn.open(sim)
        levels = []
        for frame, int_cs in ((1, 5), (2, 40)):
            n = await expose(conn, frame, int_cs=int_cs)
            _, status = await wait_complete(conn, frame)
            levels.append(float((await fetch(conn, n, status))[:512, :512].mean()))
        await conn.close()
    # 0.35 s more dark at 3000 e-/s and 1.5 e-/ADU: about 700 ADU more.
    assert levels[1] - levels[0] == pytest.approx(700, rel=0.25)


async def test_abort_and_deferred_readout(sim: ArchonSimulator, conn: Conn) -> None:
    await set_params(conn, OpenShutter=1, IntCS=1000, ReadOut=0, Exposures=1)
    await conn.cmd("RELEASETIMING")
    await wait_for(lambda: sim.shutter_open)
    await asyncio.sleep(0.05)
    await set_params(conn, AbortExposure=1)
    await wait_for(lambda: sim.core_state is CoreState.WAITING_READOUT, within=1.0)
    assert not sim.shutter_open
    assert sim.params["Exposures"] == 0
    assert sim.params["AbortExposure"] == 1
    await asyncio.sleep(0.1)
    assert sim.frames_completed == 0  # ReadOut=0: waits for the client
    await set_params(conn, ReadOut=1)
    await conn.cmd("RELEASETIMING")
    await wait_complete(conn, 1)
    assert sim.shutter_log[0][1] - sim.shutter_log[0][0] < 1.0


async def test_hold_reset_release(sim: ArchonSimulator, conn: Conn) -> None:
    await conn.cmd("HOLDTIMING")
    await set_params(conn, OpenShutter=1, IntCS=1000, ReadOut=1, Exposures=1)
    await asyncio.sleep(0.1)
    assert sim.core_state is CoreState.IDLE
    assert not sim.shutter_open
    await conn.cmd("RELEASETIMING")
    await wait_for(lambda: sim.shutter_open)
    # The client's reset sequence ends the exposure: shutter closed, core idle.
    await conn.cmd("HOLDTIMING")
    await set_params(conn, AutoFlush=1, Exposures=0, ReadOut=0, AbortExposure=0, DoFlush=0)
    await conn.cmd("RESETTIMING")
    await conn.cmd("RELEASETIMING")
    assert not sim.shutter_open
    assert sim.core_state is CoreState.IDLE
    assert len(sim.shutter_log) == 1
    await asyncio.sleep(0.05)
    assert sim.frames_completed == 0


async def test_flush(sim: ArchonSimulator, conn: Conn) -> None:
    await set_params(conn, FlushCount=3, DoFlush=1)
    await conn.cmd("RELEASETIMING")
    await wait_for(lambda: sim.params["DoFlush"] == 0, within=1.0)
    assert sim.core_state is CoreState.IDLE
    assert sim.frames_completed == 0


async def test_locked_buffer_is_not_overwritten(sim: ArchonSimulator, conn: Conn) -> None:
    assert await expose(conn, 1) == 1
    kept = sim.buffer_data(1)
    assert kept is not None
    await conn.cmd("LOCK1")
    buffers = [await expose(conn, frame) for frame in (2, 3, 4)]
    assert buffers == [2, 3, 2]
    status = await conn.kv("FRAME")
    assert status["RBUF"] == "1"
    assert status["WBUF"] == "2"
    assert [status[f"BUF{n}FRAME"] for n in (1, 2, 3)] == ["1", "4", "3"]
    assert sim.buffer_data(1) is kept
    await conn.cmd("LOCK0")
    assert await expose(conn, 5) == 3


LVM_ACF = SIM_ACF.parents[3] / "shared" / "reference" / "lvm-100khz.acf"


async def test_lvm_frame_renders_off_the_event_loop() -> None:
    if not LVM_ACF.exists():
        pytest.skip("reference ACF not available")
    async with ArchonSimulator(load_acf(LVM_ACF), pixel_rate_hz=50e6) as sim:
        conn = await Conn.open(sim)
        await set_params(conn, IntCS=0, ReadOut=1, Exposures=1)
        await conn.cmd("RELEASETIMING")
        worst = 0.0
        while sim.frames_completed == 0:  # rendering 100 MB takes about a second
            start = time.monotonic()
            await conn.cmd("TIMER")
            worst = max(worst, time.monotonic() - start)
            await asyncio.sleep(0.01)
        assert worst < 0.1, f"a TIMER reply took {worst:.3f} s while a frame rendered"
        n, status = await wait_complete(conn, 1)
        assert (status[f"BUF{n}WIDTH"], status[f"BUF{n}HEIGHT"]) == ("12360", "4080")
        pixels = await fetch(conn, n, status)
        assert np.array_equal(pixels, sim.buffer_data(n))
        await conn.close()
