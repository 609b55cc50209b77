"""Switchable faults: silence, delay, refusals, cut FETCH streams, power, bandwidth."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from devices.archon.acf import load_acf
from devices.archon.simulator import BUFFER_BASES, ArchonSimulator, CoreState

from .wire import (
    SIM_ACF,
    TIMEOUT,
    Conn,
    RefusedError,
    expose,
    fetch_request,
    set_params,
    wait_complete,
)


async def test_fetch_pads_with_zeros_and_checks_address(conn: Conn) -> None:
    await expose(conn, 1)
    cid = await fetch_request(conn, 3)
    raw = await asyncio.wait_for(conn.reader.readexactly(3 * 1028), TIMEOUT)
    assert raw[:4] == raw[1028:1032] == f"<{cid}:".encode()
    assert await conn.silent(0.1)
    with pytest.raises(RefusedError):
        await conn.cmd(f"FETCH{0x90000000:08X}00000001")  # below every buffer
    with pytest.raises(RefusedError):
        await conn.cmd(f"FETCH{BUFFER_BASES[0]:08X}00000000")


async def test_fetch_from_inside_a_buffer_streams_from_that_byte(
    sim: ArchonSimulator, conn: Conn
) -> None:
    """A client may read a buffer in pieces: a FETCH part-way in starts there, and one
    reaching past the buffer's memory is refused."""
    await expose(conn, 1)
    stored = sim.buffer_data(1)
    assert stored is not None
    whole = np.ascontiguousarray(stored.astype("<u2")).reshape(-1).view(np.uint8)
    cid = await fetch_request(conn, 2, address=BUFFER_BASES[0] + 5 * 1024)
    raw = await asyncio.wait_for(conn.reader.readexactly(2 * 1028), TIMEOUT)
    framed = np.frombuffer(raw, dtype=np.uint8).reshape(2, 1028)
    assert (framed[:, :4] == np.frombuffer(f"<{cid}:".encode(), np.uint8)).all()
    assert np.array_equal(framed[:, 4:].reshape(-1), whole[5 * 1024 : 7 * 1024])
    last = BUFFER_BASES[0] + 512 * 1024 * 1024 - 1024
    with pytest.raises(RefusedError):
        await conn.cmd(f"FETCH{last:08X}00000002")


async def test_large_fetch_is_framed_and_padded(sim: ArchonSimulator, conn: Conn) -> None:
    # Far more than fits a socket buffer, over several write chunks: the stream must
    # survive partial sends byte for byte.
    await expose(conn, 1)
    blocks = 12_000
    cid = await fetch_request(conn, blocks)
    raw = await asyncio.wait_for(conn.reader.readexactly(blocks * 1028), TIMEOUT)
    framed = np.frombuffer(raw, dtype=np.uint8).reshape(blocks, 1028)
    assert (framed[:, :4] == np.frombuffer(f"<{cid}:".encode(), np.uint8)).all()
    payload = framed[:, 4:].reshape(-1)
    stored = sim.buffer_data(1)
    assert stored is not None
    assert np.array_equal(payload[: stored.nbytes].view("<u2").reshape(stored.shape), stored)
    assert not payload[stored.nbytes :].any()
    assert await conn.silent(0.1)


async def test_fault_truncate_fetch(sim: ArchonSimulator, conn: Conn) -> None:
    await expose(conn, 1)
    sim.truncate_fetch(3)
    cid = await fetch_request(conn, 100)
    raw = await asyncio.wait_for(conn.reader.readexactly(3 * 1028), TIMEOUT)
    assert raw[1028:1032] == f"<{cid}:".encode()
    assert await conn.silent(0.2)
    assert (await conn.cmd("TIMER")).startswith("TIMER=")  # connection still usable
    cid = await fetch_request(conn, 100)  # one-shot: the next FETCH is whole
    await asyncio.wait_for(conn.reader.readexactly(100 * 1028), TIMEOUT)


async def test_fault_drop_during_fetch(sim: ArchonSimulator, conn: Conn) -> None:
    await expose(conn, 1)
    sim.drop_connection_during_fetch(2)
    await fetch_request(conn, 50)
    raw = await asyncio.wait_for(conn.reader.read(), TIMEOUT)
    assert len(raw) == 2 * 1028
    again = await Conn.open(sim)
    try:
        await fetch_request(again, 50)
        await asyncio.wait_for(again.reader.readexactly(50 * 1028), TIMEOUT)
    finally:
        await again.close()


async def test_fault_silence_and_delay(sim: ArchonSimulator, conn: Conn) -> None:
    sim.inject_silence("status")
    await conn.write(b">01STATUS\n")
    assert await conn.silent(0.2)
    assert (await conn.cmd("TIMER")).startswith("TIMER=")
    sim.inject_silence(None)
    await conn.write(b">02TIMER\n")
    assert await conn.silent(0.2)
    sim.clear_faults()
    sim.inject_reply_delay(0.2)
    start = time.monotonic()
    await conn.cmd("TIMER")
    assert time.monotonic() - start >= 0.2
    sim.clear_faults()
    start = time.monotonic()
    await conn.cmd("TIMER")
    assert time.monotonic() - start < 0.2


async def test_command_failure_refuses_without_executing(sim: ArchonSimulator, conn: Conn) -> None:
    sim.inject_command_failure("fastloadparam")
    with pytest.raises(RefusedError):
        await conn.cmd("FASTLOADPARAM FlushCount 7")
    assert sim.params["FlushCount"] == 2  # refused, so not executed
    assert (await conn.cmd("TIMER")).startswith("TIMER=")  # others still answered
    sim.clear_faults()
    await conn.cmd("FASTLOADPARAM FlushCount 7")
    assert sim.params["FlushCount"] == 7


async def test_command_failure_times_and_all_commands(sim: ArchonSimulator, conn: Conn) -> None:
    sim.inject_command_failure("FRAME", times=2)
    for _ in range(2):
        with pytest.raises(RefusedError):
            await conn.cmd("FRAME")
    assert "WBUF" in await conn.kv("FRAME")  # the third one is answered
    sim.inject_command_failure(None)
    for command in ("STATUS", "TIMER", f"FETCH{BUFFER_BASES[0]:08X}00000001"):
        with pytest.raises(RefusedError):
            await conn.cmd(command)
    sim.clear_faults()
    assert "POWER" in await conn.kv("STATUS")


async def test_power_bad_is_reported_and_blocks_exposures(sim: ArchonSimulator, conn: Conn) -> None:
    healthy = await conn.kv("STATUS")
    sim.set_power_bad(True)
    status = await conn.kv("STATUS")
    assert (status["POWER"], status["POWERGOOD"]) == ("3", "0")
    assert float(status["P6V_V"]) < float(healthy["P6V_V"])
    assert float(status["P5V_V"]) == float(healthy["P5V_V"])  # digital side unaffected
    assert await conn.cmd("FETCHLOG") == "power supply fault"
    await set_params(conn, IntCS=0, ReadOut=1, Exposures=1)
    await conn.cmd("RELEASETIMING")
    await asyncio.sleep(0.1)
    assert sim.core_state is CoreState.IDLE
    assert sim.frames_completed == 0
    sim.set_power_bad(False)
    status = await conn.kv("STATUS")
    assert (status["POWER"], status["POWERGOOD"]) == ("4", "1")
    await wait_complete(conn, 1)


async def test_bandwidth_limit_paces_fetch(sim: ArchonSimulator, conn: Conn) -> None:
    await expose(conn, 1)
    blocks = 2000  # 2.06 MB on the wire
    sim.bandwidth_limit_bps = 80e6  # 10 MB/s: at least 0.206 s
    start = time.monotonic()
    await fetch_request(conn, blocks)
    await asyncio.wait_for(conn.reader.readexactly(blocks * 1028), TIMEOUT)
    paced = time.monotonic() - start
    assert 0.2 < paced < 0.5
    sim.bandwidth_limit_bps = None
    start = time.monotonic()
    await fetch_request(conn, blocks)
    await asyncio.wait_for(conn.reader.readexactly(blocks * 1028), TIMEOUT)
    assert time.monotonic() - start < 0.1
    with pytest.raises(ValueError, match="bandwidth"):
        sim.bandwidth_limit_bps = 0


async def test_bandwidth_limit_from_constructor() -> None:
    async with ArchonSimulator(load_acf(SIM_ACF), bandwidth_limit_bps=40e6) as sim:
        assert sim.bandwidth_limit_bps == 40e6
        conn = await Conn.open(sim)
        start = time.monotonic()
        await fetch_request(conn, 500)  # 514 kB at 5 MB/s: at least 0.103 s
        await asyncio.wait_for(conn.reader.readexactly(500 * 1028), TIMEOUT)
        assert 0.1 < time.monotonic() - start < 0.4
        await conn.close()


async def test_pixel_rate_is_settable(sim: ArchonSimulator, conn: Conn) -> None:
    sim.pixel_rate_hz = 5e6
    start = time.monotonic()
    await expose(conn, 1)
    fast = time.monotonic() - start
    sim.pixel_rate_hz = 1e6  # 512 x 544 / 1 MHz = 0.28 s
    start = time.monotonic()
    await expose(conn, 2)
    slow = time.monotonic() - start
    assert slow > 0.27
    assert slow > fast + 0.15
    with pytest.raises(ValueError, match="pixel_rate_hz"):
        sim.pixel_rate_hz = 0
