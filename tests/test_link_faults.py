"""Link faults the adapter must survive, driven over real TCP on 127.0.0.1.

The peer here is a small controller that speaks the wire protocol correctly but
misbehaves the way real links and controllers do, when a test tells it to: it
rejects a FETCH with ``?xx``, cuts a block stream short, answers one command under
the wrong id (line noise), or stops listening. The fetch-lock test uses the full
simulator, whose RBUF reports the lock.
"""

from __future__ import annotations

import asyncio
import pickle
import re
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from devices.archon.acf import load_acf
from devices.archon.client import ArchonClient
from devices.archon.controller import ArchonController, ControllerTiming
from devices.archon.errors import (
    ArchonBusyError,
    ArchonCommandError,
    ArchonConnectionError,
    ArchonProtocolError,
    ArchonTimeoutError,
)
from devices.archon.protocol import BLOCK_PAYLOAD, MAX_COMMAND_ID, ReplyParser, TextReply
from devices.archon.simulator import ArchonSimulator
from devices.archon.status import FrameStatus

from .conftest import SIM_ACF

ACF = load_acf(SIM_ACF)
WIDTH, HEIGHT = 64, 32
"""The fake's frames: 4096 bytes of 16-bit pixels, four FETCH blocks."""
N_BLOCKS = WIDTH * HEIGHT * 2 // BLOCK_PAYLOAD
BASES = (0xA0000000, 0xC0000000, 0xE0000000)
TIMER_HZ = 100_000_000


class FakeArchon:
    """A small Archon: STATUS, FRAME, TIMER, LOCKn, FETCH and the timing commands.

    It keeps three frame buffers (buffer 1 holds a complete frame from the start),
    integrates when RELEASETIMING finds Exposures > 0 (latching the edges in TIMER
    ticks, reported as BUFnRETIMESTAMP/FETIMESTAMP unless ``stamps`` is off, as an
    older timing script would) and reads out when it finds ReadOut > 0.

    Misbehaviour, each used up as it happens: ``fetch_faults`` says what each coming
    FETCH does ("reject": ``?xx``; "short": half its blocks, then silence); a
    command starting with ``glitch`` is answered under the wrong id.
    """

    def __init__(self, *, stamps: bool = True) -> None:
        self.stamps = stamps
        self.pixels = np.arange(WIDTH * HEIGHT, dtype="<u2").reshape(HEIGHT, WIDTH)
        self.fetch_faults: list[str] = []
        self.glitch: str | None = None
        self.lock = 0
        self.connections = 0
        self.params: dict[str, int] = {}
        self.frames = 0
        self.buffers = [dict.fromkeys(("frame", "complete", "ts", "re", "fe"), 0) for _ in BASES]
        self._edges = (0, 0)
        self._integrated = False
        self._t0 = time.monotonic()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._read_out()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        """Stop listening and hang up on every client: a controller that went away."""
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()
        if self._server is not None:
            await self._server.wait_closed()

    def ticks(self) -> int:
        return int((time.monotonic() - self._t0) * TIMER_HZ)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        try:
            while line := await reader.readline():
                await self._answer(writer, line[1:3].decode(), line[3:].strip().decode())
        except ConnectionError:
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _answer(self, writer: asyncio.StreamWriter, cid: str, command: str) -> None:
        if self.glitch is not None and command.startswith(self.glitch):
            self.glitch = None
            writer.write(b"<%02X\n" % ((int(cid, 16) + 1) % (MAX_COMMAND_ID + 1)))
        elif command.startswith("FETCH"):
            writer.write(self._fetch(cid, command))
        else:
            payload = self._text(command)
            writer.write((f"?{cid}\n" if payload is None else f"<{cid}{payload}\n").encode())
        await writer.drain()

    def _text(self, command: str) -> str | None:
        if command == "STATUS":
            return "POWER=4 POWERGOOD=1"
        if command == "FRAME":
            return self._frame()
        if command == "TIMER":
            return f"TIMER={self.ticks():X}"
        if lock := re.fullmatch(r"LOCK([0-3])", command):
            self.lock = int(lock[1])
            return ""
        if param := re.fullmatch(r"FASTLOADPARAM (\S+) (-?\d+)", command):
            self.params[param[1]] = int(param[2])
            return ""
        if command == "RELEASETIMING":
            self._release()
            return ""
        return "" if command in ("HOLDTIMING", "RESETTIMING") else None

    def _release(self) -> None:
        if self.params.get("Exposures", 0) > 0:
            start = self.ticks()
            length = self.params.get("IntMS", 0) * TIMER_HZ // 1000
            self._edges, self._integrated = (start, start + length), True
            self.params["Exposures"] = 0
        if self.params.get("ReadOut", 0) > 0 and self._integrated:
            self._integrated = False
            self._read_out()

    def _read_out(self) -> None:
        self.frames += 1
        rising, falling = self._edges
        self.buffers[(self.frames - 1) % len(BASES)] = {
            "frame": self.frames,
            "complete": 1,
            "ts": max(self.ticks(), falling),
            "re": rising,
            "fe": falling,
        }

    def _frame(self) -> str:
        items = [f"TIMER={self.ticks():X}", f"RBUF={self.lock}", "WBUF=1"]
        for n, (base, buf) in enumerate(zip(BASES, self.buffers, strict=True), start=1):
            items += [
                f"BUF{n}SAMPLE=0 BUF{n}COMPLETE={buf['complete']} BUF{n}MODE=0",
                f"BUF{n}BASE={base} BUF{n}FRAME={buf['frame']}",
                f"BUF{n}WIDTH={WIDTH} BUF{n}HEIGHT={HEIGHT} BUF{n}PIXELS={WIDTH}",
                f"BUF{n}LINES={HEIGHT} BUF{n}RAWBLOCKS=0 BUF{n}RAWLINES=0 BUF{n}RAWOFFSET=0",
                f"BUF{n}TIMESTAMP={buf['ts']:X}",
            ]
            if self.stamps:
                items.append(f"BUF{n}RETIMESTAMP={buf['re']:X} BUF{n}FETIMESTAMP={buf['fe']:X}")
        return " ".join(items)

    def _fetch(self, cid: str, command: str) -> bytes:
        fault = self.fetch_faults.pop(0) if self.fetch_faults else "whole"
        valid = {f"FETCH{base:08X}{N_BLOCKS:08X}" for base in BASES}
        if fault == "reject" or command not in valid:
            return f"?{cid}\n".encode()
        data = self.pixels.tobytes()
        blocks = N_BLOCKS if fault == "whole" else N_BLOCKS // 2
        header = f"<{cid}:".encode()
        return b"".join(
            header + data[i * BLOCK_PAYLOAD : (i + 1) * BLOCK_PAYLOAD] for i in range(blocks)
        )


FETCH_BUFFER_1 = f"FETCH{BASES[0]:08X}{N_BLOCKS:08X}"


@pytest.fixture
async def fake() -> AsyncIterator[FakeArchon]:
    peer = FakeArchon()
    yield peer
    await peer.stop()


TIMING = ControllerTiming(command_timeout=1.0, readout_timeout=5.0)


def _controller(port: int, **changes: Any) -> ArchonController:
    """The sim ACF's controller at ``port``, with short timeouts and ``changes``."""
    return ArchonController("127.0.0.1", port, ACF, timing=replace(TIMING, **changes))


def _assert_no_fetch_state(client: ArchonClient) -> None:
    """Nothing of an ended FETCH may survive: not in the parser, not among the ids."""
    assert client._parser._fetches == {}
    assert client._parser._streaming is None
    assert client._late_ids == set()
    assert sorted(client._free_ids) == list(range(MAX_COMMAND_ID + 1))


# -- 1. a rejected FETCH ------------------------------------------------------------


def test_the_parser_forgets_a_fetch_the_controller_rejected() -> None:
    parser = ReplyParser()
    parser.expect_blocks(0x05, 2)
    [rejected] = parser.feed(b"?05\n")
    assert isinstance(rejected, TextReply)
    assert not rejected.ok
    assert parser._fetches == {}
    # The id comes round again for an ordinary command: a text reply, no error.
    [reply] = parser.feed(b"<05TIMER=1F\n")
    assert isinstance(reply, TextReply)
    assert reply.payload == "TIMER=1F"


async def test_a_rejected_fetch_leaves_nothing_behind_when_its_id_comes_round(
    fake: FakeArchon,
) -> None:
    """``?xx`` to a FETCH, then more commands than there are ids: all succeed."""
    fake.fetch_faults = ["reject"]
    async with ArchonClient("127.0.0.1", await fake.start(), timeout=2) as client:
        with pytest.raises(ArchonCommandError, match="FETCH"):
            await client.fetch_blocks(FETCH_BUFFER_1, N_BLOCKS, timeout=2)
        for _ in range(300):  # the rejected FETCH's id is reused after 254 of these
            assert (await client.send("TIMER")).startswith("TIMER=")
        _assert_no_fetch_state(client)
        data = await client.fetch_blocks(FETCH_BUFFER_1, N_BLOCKS, timeout=2)
        np.testing.assert_array_equal(data.view("<u2").reshape(HEIGHT, WIDTH), fake.pixels)
        _assert_no_fetch_state(client)
        assert client.connected
    assert fake.connections == 1


@pytest.mark.parametrize("how", ["timeout", "cancel"])
async def test_an_abandoned_fetch_leaves_nothing_behind(fake: FakeArchon, how: str) -> None:
    """A stream cut short, given up by timeout or cancellation: no state survives."""
    fake.fetch_faults = ["short"]
    async with ArchonClient("127.0.0.1", await fake.start(), timeout=2) as client:
        fetching = client.fetch_blocks(FETCH_BUFFER_1, N_BLOCKS, timeout=0.3)
        if how == "timeout":
            with pytest.raises(ArchonTimeoutError, match=r"2 of 4 blocks"):
                await fetching
        else:
            task = asyncio.ensure_future(fetching)
            await asyncio.sleep(0.1)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        _assert_no_fetch_state(client)
        await client.reconnect()
        for _ in range(300):
            await client.send("TIMER")
        assert len(await client.fetch_blocks(FETCH_BUFFER_1, N_BLOCKS, timeout=2)) == 4096


# -- 2. the controller reconnects on its next command ------------------------------


async def test_after_a_protocol_error_the_next_command_reconnects(fake: FakeArchon) -> None:
    fake.glitch = "FRAME"
    async with _controller(await fake.start()) as ctrl:
        with pytest.raises(ArchonProtocolError, match="nobody sent"):
            await ctrl.frame()
        assert (await ctrl.status()).power_good
        assert (await ctrl.frame()).buffer(1).complete
        np.testing.assert_array_equal(await ctrl.fetch(1), fake.pixels)
    assert fake.connections == 2


async def test_after_a_fetch_gives_up_the_next_command_reconnects(fake: FakeArchon) -> None:
    fake.fetch_faults = ["short"] * 2
    async with _controller(await fake.start(), command_timeout=0.2, fetch_attempts=2) as ctrl:
        with pytest.raises(ArchonTimeoutError):
            await ctrl.fetch(1)
        assert not ctrl.client.connected
        assert (await ctrl.status()).power_good
        np.testing.assert_array_equal(await ctrl.fetch(1), fake.pixels)


async def test_reconnecting_is_bounded_and_says_how_often_it_failed(fake: FakeArchon) -> None:
    async with _controller(await fake.start(), reconnect_backoff=0.05) as ctrl:
        await ctrl.status()
        await fake.stop()  # the controller goes away for good
        await asyncio.sleep(0.05)
        started = time.monotonic()
        with pytest.raises(ArchonConnectionError, match="3 reconnect attempts failed"):
            await ctrl.status()
        assert time.monotonic() - started < 2.0  # 0.05 + 0.1 s of backoff, refusals


async def test_a_closed_controller_does_not_reopen_by_itself(fake: FakeArchon) -> None:
    ctrl = _controller(await fake.start())
    async with ctrl:
        await ctrl.status()
    with pytest.raises(ArchonConnectionError, match=r"call connect\(\)"):
        await ctrl.status()
    assert fake.connections == 1


async def test_a_link_lost_while_setting_up_an_exposure_leaves_it_ready_for_another(
    fake: FakeArchon,
) -> None:
    """A failure before the integration starts aborts the half-written set-up."""
    fake.glitch = "FASTLOADPARAM OpenShutter"
    async with _controller(await fake.start()) as ctrl:
        with pytest.raises(ArchonProtocolError):
            await ctrl.expose(0.05, open_shutter=True)
        assert fake.params["Exposures"] == 0  # the abort reached it over a new link
        try:
            await ctrl.expose(0.05, open_shutter=True)
        except ArchonBusyError:
            pytest.fail("the failed set-up left the controller busy")
        assert await ctrl.readout() == 2


# -- 3. a given-up fetch leaves no buffer locked ----------------------------------


async def _rbuf(port: int) -> int:
    """The controller's lock as another client sees it."""
    async with ArchonClient("127.0.0.1", port, timeout=2) as probe:
        return FrameStatus.parse(await probe.send("FRAME")).rbuf


@pytest.mark.parametrize("next_contact", ["command", "connect"])
async def test_a_given_up_fetch_leaves_no_buffer_locked(
    archon_sim: ArchonSimulator, next_contact: str
) -> None:
    timing = {"command_timeout": 0.3, "fetch_attempts": 2, "readout_timeout": 20.0}
    async with _controller(archon_sim.port, **timing) as ctrl:
        await ctrl.reset()
        await ctrl.expose(0.0, open_shutter=False)
        buffer = await ctrl.readout()
        archon_sim.truncate_fetch(10, times=None)
        # Cut short, a piece times out, or (the next piece asked for already) the next
        # piece's blocks arrive where its own were due: the link is dropped either way.
        with pytest.raises((ArchonTimeoutError, ArchonConnectionError)):
            await ctrl.fetch(buffer)
        archon_sim.clear_faults()
        assert await _rbuf(archon_sim.port) == buffer  # the link dropped before LOCK0
        if next_contact == "connect":
            await ctrl.connect()
            assert await _rbuf(archon_sim.port) == 0
        assert (await ctrl.frame()).rbuf == 0
        # Every buffer, the once-locked one included, takes a frame again.
        seen = set()
        for _ in range(3):
            await ctrl.expose(0.0, open_shutter=False)
            seen.add(await ctrl.readout())
        assert seen == {1, 2, 3}


# -- 4. a retried timeout says what it waited in all -------------------------------


async def test_a_given_up_fetch_says_how_long_it_waited_in_all(fake: FakeArchon) -> None:
    fake.fetch_faults = ["short"] * 3
    async with _controller(await fake.start(), command_timeout=0.2, fetch_attempts=3) as ctrl:
        with pytest.raises(ArchonTimeoutError) as info:
            await ctrl.fetch(1)
    error = info.value
    said = re.fullmatch(
        rf"Archon command '{FETCH_BUFFER_1}' timed out after 0\.2 s per attempt, "
        r"(\d+\.\d) s in all over 3 attempts \(2 of 4 blocks received\)",
        str(error),
    )
    assert said, str(error)
    assert (error.timeout, error.attempts) == (0.2, 3)
    assert 0.6 <= error.total < 2.0
    assert said[1] == f"{error.total:.1f}"
    copy = pickle.loads(pickle.dumps(error))
    assert (str(copy), copy.timeout, copy.attempts, copy.total) == (
        str(error),
        0.2,
        3,
        error.total,
    )


async def test_a_single_attempt_timeout_keeps_its_short_message(fake: FakeArchon) -> None:
    fake.fetch_faults = ["short"]
    async with _controller(await fake.start(), command_timeout=0.2, fetch_attempts=1) as ctrl:
        with pytest.raises(ArchonTimeoutError) as info:
            await ctrl.fetch(1)
    assert "timed out after 0.2 s (2 of 4 blocks received)" in str(info.value)
    assert info.value.attempts == 1
