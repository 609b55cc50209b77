"""Queries, framing and configuration memory, in raw bytes over a real socket."""

from __future__ import annotations

import asyncio
import re

import pytest

from devices.archon.acf import AcfConfig, load_acf
from devices.archon.simulator import BUFFER_BASES, ArchonSimulator, CoreState

from .wire import (
    SIM_ACF,
    TIMEOUT,
    Conn,
    RefusedError,
    set_params,
    wait_complete,
    wait_for,
)


async def test_status_keys_and_count(conn: Conn) -> None:
    first = await conn.kv("STATUS")
    second = await conn.kv("STATUS")
    for key in ("VALID", "LOG", "OVERHEAT", "BACKPLANE_TEMP", "P2V5_V", "P2V5_I", "P5V_V"):
        assert key in first
    assert first["POWER"] == "4"
    assert first["POWERGOOD"] == "1"
    assert int(second["COUNT"]) == int(first["COUNT"]) + 1
    assert "MOD2/TEMPA" in first  # MOD2 is a heater module in sim.acf
    assert all(re.fullmatch(r"-?\d+(\.\d+)?", v) for v in first.values()), first


async def test_system_keys(conn: Conn) -> None:
    system = await conn.kv("SYSTEM")
    assert system["BACKPLANE_ID"] == "0000CCDF10050001"
    assert system["MOD_PRESENT"] == "117"
    assert system["MOD5_TYPE"] == "2"
    assert system["MOD4_TYPE"] == "0"
    for n in range(1, 13):
        for field in ("TYPE", "REV", "VERSION", "ID"):
            assert f"MOD{n}_{field}" in system
        assert system[f"MOD{n}_TYPE"] != "6"
    assert list(system)[:6] == [
        "BACKPLANE_TYPE",
        "BACKPLANE_REV",
        "BACKPLANE_VERSION",
        "BACKPLANE_ID",
        "POWER_ID",
        "MOD_PRESENT",
    ]


async def test_frame_keys_and_formats(conn: Conn) -> None:
    frame = await conn.kv("FRAME")
    fields = [
        *("SAMPLE", "COMPLETE", "MODE", "BASE", "FRAME", "WIDTH", "HEIGHT", "PIXELS", "LINES"),
        *("RAWBLOCKS", "RAWLINES", "RAWOFFSET", "TIMESTAMP", "RETIMESTAMP", "FETIMESTAMP"),
    ]
    expected = ["TIMER", "RBUF", "WBUF"] + [f"BUF{n}{f}" for n in (1, 2, 3) for f in fields]
    assert list(frame) == expected
    for key, value in frame.items():
        assert re.fullmatch(r"[0-9A-F]+" if "TIME" in key else r"\d+", value), (key, value)
    assert [int(frame[f"BUF{n}BASE"]) for n in (1, 2, 3)] == list(BUFFER_BASES)
    timer1 = int(frame["TIMER"], 16)
    await asyncio.sleep(0.05)
    timer2 = int((await conn.cmd("TIMER")).removeprefix("TIMER="), 16)
    assert 0.04e8 < timer2 - timer1 < 1e8  # 100 MHz ticks


async def test_unknown_and_malformed(conn: Conn) -> None:
    with pytest.raises(RefusedError):
        await conn.cmd("NOSUCHCOMMAND")
    with pytest.raises(RefusedError):
        await conn.cmd("")
    for bad in ("LOCK4", "FETCH12345678", "RCONFIG4000", "FASTLOADPARAM Nope 1", "APPLYMOD13"):
        with pytest.raises(RefusedError):
            await conn.cmd(bad)
    # No readable id: ignored.  A readable id with the wrong marker: refused.
    await conn.write(b"garbage\n>zzSTATUS\nx2ASTATUS\n")
    assert await conn.line() == b"?2A\n"
    assert (await conn.cmd("status")).startswith("VALID=1")  # case-insensitive


async def test_pipelined_and_split_requests(conn: Conn) -> None:
    await conn.write(b">01STATUS\n>A2SYSTEM\n>03FRAME\n>ffTIMER\n>05BOGUS\n>06POLLON\n")
    replies = [await conn.line() for _ in range(6)]
    assert [r[:3] for r in replies] == [b"<01", b"<A2", b"<03", b"<ff", b"?05", b"<06"]
    assert replies[3].startswith(b"<ffTIMER=")
    assert replies[5] == b"<06\n"
    for part in (b">0", b"7TIM", b"ER", b"\n>08POLL", b"OFF\n"):
        await conn.write(part)
        await asyncio.sleep(0.02)
    assert (await conn.line()).startswith(b"<07TIMER=")
    assert await conn.line() == b"<08\n"


async def test_overlong_line_closes_connection(sim: ArchonSimulator, conn: Conn) -> None:
    await conn.write(b">01" + b"X" * 5000)
    assert await asyncio.wait_for(conn.reader.read(), TIMEOUT) == b""
    await wait_for(lambda: sim.connections == 0)


async def test_several_connections(sim: ArchonSimulator, conn: Conn) -> None:
    other = await Conn.open(sim)
    try:
        await wait_for(lambda: sim.connections == 2)
        assert (await other.cmd("TIMER")).startswith("TIMER=")
        assert (await conn.cmd("TIMER")).startswith("TIMER=")
    finally:
        await other.close()


async def test_rconfig_wconfig(sim: ArchonSimulator, conn: Conn) -> None:
    acf = load_acf(SIM_ACF)
    assert await conn.cmd("RCONFIG0000") == acf.wire_lines()[0]
    index = next(i for i, line in enumerate(acf.wire_lines()) if line.startswith("TAPLINE0="))
    assert await conn.cmd(f"RCONFIG{index:04X}") == "TAPLINE0=AD1L, 1, 1000"
    assert await conn.cmd(f"RCONFIG{len(acf.config):04X}") == ""
    assert await conn.cmd("RCONFIG3FFF") == ""
    line = next(i for i, line in enumerate(acf.wire_lines()) if line.startswith("LINECOUNT="))
    await conn.cmd(f"WCONFIG{line:04X}LINECOUNT=256")
    assert await conn.cmd(f"RCONFIG{line:04X}") == "LINECOUNT=256"
    assert sim.acf.line_count == 512  # not applied yet
    await conn.cmd("APPLYCDS")
    assert sim.acf.line_count == 256
    assert sim.acf.buffer_shape == (512, 1088)
    with pytest.raises(RefusedError):
        await conn.cmd(f"WCONFIG{line:04X}NOEQUALS")
    await conn.cmd("CLEARCONFIG")
    assert await conn.cmd("RCONFIG0000") == ""
    with pytest.raises(RefusedError):
        await conn.cmd("APPLYALL")  # empty memory is not a configuration
    assert sim.acf.line_count == 256  # the applied one survives


async def test_upper_cased_config_and_params(sim: ArchonSimulator, conn: Conn) -> None:
    # sdss-archon upper-cases whole commands, keys and parameter names included.
    acf = load_acf(SIM_ACF)
    await conn.cmd("CLEARCONFIG")
    for i, line in enumerate(acf.wire_lines()):
        await conn.cmd(f"WCONFIG{i:04X}{line.upper()}")
    await conn.cmd("APPLYALL")
    assert sim.acf.buffer_shape == (1024, 1088)
    await conn.cmd("FASTLOADPARAM EXPOSURES 0")
    assert sim.params["Exposures"] == 0  # names keep their first spelling
    await conn.cmd("FASTLOADPARAM LINES 5")
    await conn.cmd("LOADPARAM lines")
    assert sim.params["Lines"] == 512
    await conn.cmd("FASTLOADPARAM Lines 7")
    await conn.cmd("LOADPARAM 15")  # PARAMETER15 is Lines
    assert sim.params["Lines"] == 512
    await conn.cmd("FASTLOADPARAM FlushCount 9")
    await conn.cmd("LOADPARAMS")
    assert sim.params["FlushCount"] == 2
    for command in ("APPLYSYSTEM", "APPLYDIO", "APPLYMOD5", "APPLYMOD12", "LOADTIMING"):
        await conn.cmd(command)


async def test_fetchlog_and_power(sim: ArchonSimulator, conn: Conn) -> None:
    assert await conn.cmd("FETCHLOG") == "(null)"
    await conn.cmd("POWEROFF")
    status = await conn.kv("STATUS")
    assert (status["POWER"], status["POWERGOOD"], status["LOG"]) == ("2", "1", "1")
    assert float(status["P6V_V"]) == 0.0
    assert float(status["P5V_V"]) == 5.0
    assert await conn.cmd("FETCHLOG") == "power off"
    assert await conn.cmd("FETCHLOG") == "(null)"
    # Powered off, the core does not act on Exposures.
    await set_params(conn, Exposures=1, IntCS=0, ReadOut=1)
    await conn.cmd("RELEASETIMING")
    await asyncio.sleep(0.1)
    assert sim.core_state is CoreState.IDLE
    assert sim.frames_completed == 0
    await conn.cmd("POWERON")
    assert (await conn.kv("STATUS"))["POWER"] == "4"
    await wait_complete(conn, 1)


def test_refuses_module_type_six() -> None:
    acf = load_acf(SIM_ACF)
    bad = AcfConfig(
        source="x",
        config=acf.config,
        system={**acf.system, "MOD3_TYPE": "6"},
        parameters=acf.parameters,
        taps=acf.taps,
        line_count=acf.line_count,
        pixel_count=acf.pixel_count,
        frame_mode=acf.frame_mode,
        sample_mode=acf.sample_mode,
        bigbuf=acf.bigbuf,
    )
    with pytest.raises(ValueError, match="MOD3_TYPE=6"):
        ArchonSimulator(bad)
