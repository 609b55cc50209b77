"""Helpers for driving the Archon simulator with raw bytes over a real socket.

Tests speak the wire protocol byte for byte here, not through our client, so a client
bug cannot hide a simulator bug (or the other way round).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from devices.archon.sensor import SensorModel
from devices.archon.simulator import BUFFER_BASES, ArchonSimulator

REPO = Path(__file__).resolve().parents[2]
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

    def take_id(self) -> str:
        """The next command id, 00..FE as the protocol allows."""
        cid = f"{self.next_id:02X}"
        self.next_id = (self.next_id + 1) % 0xFF
        return cid

    async def cmd(self, command: str) -> str:
        """Send one command; return its payload, or raise on '?'."""
        cid = self.take_id()
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
    cid = conn.take_id()
    base = int(status[f"BUF{n}BASE"])
    await conn.write(f">{cid}FETCH{base:08X}{blocks:08X}\n".encode())
    raw = await asyncio.wait_for(conn.reader.readexactly(blocks * 1028), TIMEOUT)
    framed = np.frombuffer(raw, dtype=np.uint8).reshape(blocks, 1028)
    assert (framed[:, :4] == np.frombuffer(f"<{cid}:".encode(), np.uint8)).all()
    await conn.cmd("LOCK0")
    payload = framed[:, 4:].reshape(-1)[: width * height * bpp]
    assert not framed[:, 4:].reshape(-1)[width * height * bpp :].any()  # zero padding
    return payload.view("<u2" if bpp == 2 else "<u4").reshape(height, width)


async def fetch_request(conn: Conn, blocks: int, address: int = BUFFER_BASES[0]) -> str:
    cid = conn.take_id()
    await conn.write(f">{cid}FETCH{address:08X}{blocks:08X}\n".encode())
    return cid
