"""The Archon simulator, driven with raw bytes over a real 127.0.0.1 socket."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import numpy as np
import pytest

from devices.archon.acf import AcfConfig, load_acf, tap_regions
from devices.archon.sensor import SensorModel
from devices.archon.simulator import BUFFER_BASES, ArchonSimulator, CoreState, run_simulator

REPO = Path(__file__).resolve().parents[1]
SIM_ACF = REPO / "deploy" / "instruments" / "sim.acf"
QUIET = SensorModel(cosmic_rate=0.0)
TIMEOUT = 5.0


class Conn:
    """A bare Archon connection: we write the bytes and check every byte that comes back."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.next_id = 0x10

    @classmethod
    async def open(cls, sim: ArchonSimulator) -> Conn:
        reader, writer = await asyncio.open_connection(sim.host, sim.port)
        return cls(reader, writer)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()

    async def write(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def line(self) -> bytes:
        return await asyncio.wait_for(self.reader.readuntil(b"\n"), TIMEOUT)

    async def cmd(self, command: str) -> str:
        """Send one command; return its payload, or raise on '?'."""
        cid = f"{self.next_id:02X}"
        self.next_id = (self.next_id + 1) % 0xFF
        await self.write(f">{cid}{command}\n".encode())
        reply = (await self.line()).decode()
        if reply == f"?{cid}\n":
            raise RefusedError(command)
        assert reply.startswith(f"<{cid}"), reply
        assert reply.endswith("\n"), reply
        return reply[3:-1]

    async def kv(self, command: str) -> dict[str, str]:
        return dict(item.split("=", 1) for item in (await self.cmd(command)).split())

    async def silent(self, seconds: float = 0.3) -> bool:
        """True if nothing arrives within ``seconds``."""
        try:
            data = await asyncio.wait_for(self.reader.read(1), seconds)
        except TimeoutError:
            return True
        assert not data, f"unexpected data {data!r}"
        return True


class RefusedError(Exception):
    pass


@pytest.fixture
async def sim() -> AsyncIterator[ArchonSimulator]:
    async with ArchonSimulator(load_acf(SIM_ACF), sensor=QUIET, seed=7) as simulator:
        yield simulator


@pytest.fixture
async def conn(sim: ArchonSimulator) -> AsyncIterator[Conn]:
    connection = await Conn.open(sim)
    yield connection
    await connection.close()


async def set_params(conn: Conn, **params: int) -> None:
    for name, value in params.items():
        await conn.cmd(f"FASTLOADPARAM {name} {value}")


async def wait_for(predicate: Callable[[], bool], within: float = TIMEOUT) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.005)


async def wait_complete(conn: Conn, frame: int) -> tuple[int, dict[str, str]]:
    """Poll FRAME until the buffer holding ``frame`` is COMPLETE; return (n, FRAME)."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        status = await conn.kv("FRAME")
        for n in (1, 2, 3):
            if status[f"BUF{n}FRAME"] == str(frame) and status[f"BUF{n}COMPLETE"] == "1":
                return n, status
        await asyncio.sleep(0.01)
    raise AssertionError(f"frame {frame} never completed")


async def expose(conn: Conn, frame: int, *, int_cs: int = 0, shutter: int = 0) -> int:
    """Run one exposure with readout; return the buffer number it completed in."""
    await set_params(conn, OpenShutter=shutter, IntCS=int_cs, ReadOut=1, Exposures=1)
    await conn.cmd("RELEASETIMING")
    n, _ = await wait_complete(conn, frame)
    return n


async def fetch(conn: Conn, n: int, status: dict[str, str]) -> np.ndarray:
    """LOCK, FETCH and LOCK0 as a client does; check the framing of every block."""
    width, height = int(status[f"BUF{n}WIDTH"]), int(status[f"BUF{n}HEIGHT"])
    bpp = 2 if status[f"BUF{n}SAMPLE"] == "0" else 4
    blocks = -(-width * height * bpp // 1024)
    await conn.cmd(f"LOCK{n}")
    cid = f"{conn.next_id:02X}"
    conn.next_id += 1
    base = int(status[f"BUF{n}BASE"])
    await conn.write(f">{cid}FETCH{base:08X}{blocks:08X}\n".encode())
    raw = await asyncio.wait_for(conn.reader.readexactly(blocks * 1028), TIMEOUT)
    framed = np.frombuffer(raw, dtype=np.uint8).reshape(blocks, 1028)
    assert (framed[:, :4] == np.frombuffer(f"<{cid}:".encode(), np.uint8)).all()
    await conn.cmd("LOCK0")
    payload = framed[:, 4:].reshape(-1)[: width * height * bpp]
    assert not framed[:, 4:].reshape(-1)[width * height * bpp :].any()  # zero padding
    return payload.view("<u2" if bpp == 2 else "<u4").reshape(height, width)


# ------------------------------------------------------------------- queries


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


# ------------------------------------------------------------ configuration


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
    assert (status["POWER"], status["POWERGOOD"], status["LOG"]) == ("2", "0", "1")
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


# ----------------------------------------------------------- exposures


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


# --------------------------------------------------------------- faults


async def fetch_request(conn: Conn, blocks: int) -> str:
    cid = f"{conn.next_id:02X}"
    conn.next_id += 1
    await conn.write(f">{cid}FETCH{BUFFER_BASES[0]:08X}{blocks:08X}\n".encode())
    return cid


async def test_fetch_pads_with_zeros_and_checks_address(conn: Conn) -> None:
    await expose(conn, 1)
    cid = await fetch_request(conn, 3)
    raw = await asyncio.wait_for(conn.reader.readexactly(3 * 1028), TIMEOUT)
    assert raw[:4] == raw[1028:1032] == f"<{cid}:".encode()
    assert await conn.silent(0.1)
    with pytest.raises(RefusedError):
        await conn.cmd(f"FETCH{0xB0000000:08X}00000001")
    with pytest.raises(RefusedError):
        await conn.cmd(f"FETCH{BUFFER_BASES[0]:08X}00000000")


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


async def test_run_simulator_announces(capsys: pytest.CaptureFixture[str]) -> None:
    task = asyncio.create_task(run_simulator(SIM_ACF, port=0))
    try:
        deadline = time.monotonic() + TIMEOUT
        out = ""
        while "listening" not in out:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
            out += capsys.readouterr().out
        match = re.search(
            r"Archon simulator listening on 127\.0\.0\.1:(\d+) \(ACF .*sim\.acf\)", out
        )
        assert match, out
        reader, writer = await asyncio.open_connection("127.0.0.1", int(match[1]))
        writer.write(b">01TIMER\n")
        assert (await asyncio.wait_for(reader.readline(), TIMEOUT)).startswith(b"<01TIMER=")
        writer.close()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


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
