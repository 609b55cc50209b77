"""Several controllers in one process, and the "listening" lines operators wait for."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time

import pytest

from devices.archon.acf import load_acf
from devices.archon.simulator import MultiSimulator, run_simulator, run_simulators

from .wire import QUIET, SIM_ACF, TIMEOUT, Conn, expose

LISTENING = re.compile(r"Archon simulator listening on 127\.0\.0\.1:(\d+) \(ACF (.*)\)")


async def test_two_controllers_are_independent() -> None:
    acf = load_acf(SIM_ACF)
    async with MultiSimulator([acf, acf], sensor=QUIET) as group:
        first, second = group
        assert len(set(group.ports)) == 2
        one, two = await Conn.open(first), await Conn.open(second)
        try:
            before = await two.kv("FRAME")
            await two.cmd("FASTLOADPARAM FlushCount 5")
            assert await expose(one, 1) == 1
            assert first.frames_completed == 1
            assert second.frames_completed == 0
            assert second.params["Exposures"] == 0
            assert second.params["ReadOut"] == 0
            assert first.params["FlushCount"] == 2
            after = await two.kv("FRAME")
            assert after["BUF1FRAME"] == before["BUF1FRAME"] == "0"
            assert second.buffer_data(1) is None
            assert first.connections == second.connections == 1
        finally:
            await one.close()
            await two.close()


async def test_multi_checks_ports() -> None:
    acf = load_acf(SIM_ACF)
    with pytest.raises(ValueError, match="2 ACFs but 1 ports"):
        MultiSimulator([acf, acf], ports=[0])
    with pytest.raises(ValueError, match="ports must differ"):
        MultiSimulator([acf, acf], ports=[5000, 5000])
    async with MultiSimulator([acf]) as taken:
        clash = MultiSimulator([acf, acf], ports=[0, taken.ports[0]])
        with pytest.raises(OSError, match="in use"):
            await clash.start()


async def _listening_ports(capsys: pytest.CaptureFixture[str], count: int) -> list[str]:
    deadline = time.monotonic() + TIMEOUT
    out = ""
    while len(LISTENING.findall(out)) < count:
        assert time.monotonic() < deadline, out
        await asyncio.sleep(0.01)
        out += capsys.readouterr().out
    return [port for port, _ in LISTENING.findall(out)]


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _timer(port: str) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", int(port))
    writer.write(b">01TIMER\n")
    reply = await asyncio.wait_for(reader.readline(), TIMEOUT)
    writer.close()
    return reply


async def test_run_simulator_announces(capsys: pytest.CaptureFixture[str]) -> None:
    task = asyncio.create_task(run_simulator(SIM_ACF, port=0))
    try:
        (port,) = await _listening_ports(capsys, 1)
        assert (await _timer(port)).startswith(b"<01TIMER=")
    finally:
        await _stop(task)


async def test_run_simulators_announces_each(capsys: pytest.CaptureFixture[str]) -> None:
    task = asyncio.create_task(run_simulators([SIM_ACF, SIM_ACF]))
    try:
        ports = await _listening_ports(capsys, 2)
        assert len(set(ports)) == 2
        for port in ports:
            assert (await _timer(port)).startswith(b"<01TIMER=")
    finally:
        await _stop(task)
