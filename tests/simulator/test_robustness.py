"""The server survives any client: vanishing mid-FETCH, endless lines, garbage, fuzz."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devices.archon.acf import load_acf
from devices.archon.simulator import BUFFER_BASES, ArchonSimulator, CoreState

from .wire import QUIET, SIM_ACF, TIMEOUT, Conn, expose, fetch_request, wait_for


async def test_client_vanishing_mid_fetch(sim: ArchonSimulator, conn: Conn) -> None:
    await expose(conn, 1)
    blocks = 200_000  # 205 MB requested: far more than the client will read
    await fetch_request(conn, blocks)
    await asyncio.wait_for(conn.reader.readexactly(100 * 1028), TIMEOUT)
    conn.writer.transport.abort()  # RST, not a polite close
    await wait_for(lambda: sim.connections == 0)
    again = await Conn.open(sim)
    try:
        assert "POWER" in await again.kv("STATUS")
        assert await expose(again, 2) == 2  # the timing core is unharmed
        assert sim.core_state is CoreState.IDLE
    finally:
        await again.close()
    assert sim.internal_errors == 0


async def test_overlong_line_closes_only_that_connection(sim: ArchonSimulator) -> None:
    bystander, offender = await Conn.open(sim), await Conn.open(sim)
    try:
        await offender.write(b">01" + b"A" * 5000)  # no newline, ever
        assert await asyncio.wait_for(offender.reader.read(), TIMEOUT) == b""
        await offender.write(b">02STATUS\n" + b"B" * 5000 + b"\n")  # one long line
        assert (await bystander.cmd("TIMER")).startswith("TIMER=")
    finally:
        await offender.close()
        await bystander.close()
    await wait_for(lambda: sim.connections == 0)


async def test_garbage_is_survived(sim: ArchonSimulator, conn: Conn) -> None:
    await conn.write(bytes(range(256)) * 8 + b"\n\n\r\n>\n>0\n>00\n>GG\n\xff\xfe\n")
    assert await conn.line() == b"?00\n"  # the only line with an id: empty command
    assert (await conn.cmd("TIMER")).startswith("TIMER=")
    assert sim.internal_errors == 0


# ---------------------------------------------------------------- fuzzing
#
# Hypothesis drives blocking sockets while the simulator runs in its own thread and
# event loop, so one simulator takes every example and damage could accumulate.

_COMMANDS = (
    *("STATUS", "SYSTEM", "FRAME", "TIMER", "RCONFIG", "WCONFIG", "CLEARCONFIG"),
    *("APPLYALL", "APPLYCDS", "APPLYSYSTEM", "APPLYMOD", "LOADTIMING", "LOADPARAMS"),
    *("LOADPARAM", "FASTLOADPARAM", "HOLDTIMING", "RELEASETIMING", "RESETTIMING"),
    *("POWERON", "POWEROFF", "LOCK", "FETCHLOG", "FETCH", "POLLON"),
)
_HEXISH = "0123456789ABCDEFabcdefXZ-"


_HEX = "0123456789ABCDEF"
_NAMES = ("Exposures", "IntCS", "ReadOut", "DoFlush", "FlushCount", "Lines", "WaitCount", "X")


def _hex(n: int) -> st.SearchStrategy[str]:
    return st.text(_HEX, min_size=n, max_size=n)


def _arguments(name: str) -> st.SearchStrategy[str]:
    """Arguments shaped for ``name`` (so commands get past parsing), or junk."""
    junk = st.one_of(st.just(""), st.text(_HEXISH, max_size=20), st.text(max_size=40))
    key_value = st.from_regex(r"[A-Z/]{1,10}=-?[0-9]{0,6}", fullmatch=True)
    shaped: dict[str, st.SearchStrategy[str]] = {
        "RCONFIG": _hex(4),
        "WCONFIG": st.tuples(_hex(4), st.one_of(key_value, st.just(""))).map("".join),
        "FASTLOADPARAM": st.tuples(st.sampled_from(_NAMES), st.integers(-(2**40), 2**40)).map(
            lambda p: f" {p[0]} {p[1]}"
        ),
        "LOADPARAM": st.one_of(st.sampled_from(_NAMES), st.integers(-5, 40).map(str)).map(
            lambda p: f" {p}"
        ),
        "LOCK": st.integers(0, 9).map(str),
        "APPLYMOD": st.text(_HEX, min_size=1, max_size=2),
        "FETCH": st.tuples(
            st.one_of(st.sampled_from([f"{b:08X}" for b in BUFFER_BASES]), _hex(8)),
            st.integers(0, 3000).map(lambda n: f"{n:08X}"),
        ).map("".join),
    }
    if name in shaped:
        return st.one_of(shaped[name], junk)
    return junk


@st.composite
def _command_lines(draw: st.DrawFn) -> bytes:
    """Mostly well-formed requests with odd arguments, some with a broken frame."""
    marker = draw(st.one_of(st.just(">"), st.sampled_from("<?x")))
    cid = draw(st.one_of(_hex(2), st.text(_HEXISH, max_size=3)))
    name = draw(st.sampled_from(_COMMANDS))
    tail = draw(_arguments(name))
    return f"{marker}{cid}{name}{tail}\n".encode("utf-8", "replace")


_PAYLOADS = st.one_of(
    st.lists(_command_lines(), min_size=3, max_size=16, unique=True).map(b"".join),
    st.binary(max_size=600),
)


class _ThreadedSim:
    """A simulator serving from a thread of its own (its own event loop)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.sim = ArchonSimulator(load_acf(SIM_ACF), sensor=QUIET, pixel_rate_hz=20e6)
        asyncio.run_coroutine_threadsafe(self.sim.start(), self.loop).result(TIMEOUT)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.sim.stop(), self.loop).result(TIMEOUT)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(TIMEOUT)
        self.loop.close()

    def send(self, payload: bytes) -> None:
        """Send, then a TIMER sentinel; read until its reply (or the server hangs up).

        Waiting for the sentinel makes sure every line before it was executed before
        the test looks at the simulator.
        """
        with socket.create_connection((self.sim.host, self.sim.port), timeout=TIMEOUT) as s:
            s.sendall(payload + b"\n>7FTIMER\n")
            seen = b""
            while b"<7FTIMER=" not in seen[-(1 << 17) :]:
                chunk = s.recv(1 << 16)
                if not chunk:
                    return
                seen = seen[-64:] + chunk

    def status(self) -> bytes:
        with socket.create_connection((self.sim.host, self.sim.port), timeout=TIMEOUT) as s:
            s.sendall(b">7ESTATUS\n")
            return s.makefile("rb").readline()


@pytest.fixture(scope="module")
def threaded_sim() -> Iterator[_ThreadedSim]:
    served = _ThreadedSim()
    yield served
    served.close()


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(payload=_PAYLOADS)
def test_fuzzed_input_never_stops_the_server(threaded_sim: _ThreadedSim, payload: bytes) -> None:
    threaded_sim.send(payload)
    reply = threaded_sim.status()
    assert reply.startswith(b"<7EVALID=1 "), reply
    assert threaded_sim.sim.internal_errors == 0
