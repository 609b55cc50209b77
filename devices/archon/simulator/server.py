"""The network side: TCP framing, one command loop per connection, fault hooks.

Requests are ``>xxCOMMAND\\n``; a connection may pipeline as many as it likes and
they are answered strictly in order, each reply (or FETCH block stream) written
whole before the next request is read, so nothing is ever interleaved inside a
stream.  The server must survive any client: garbage bytes, a request line that
never ends (that connection is closed), a client that vanishes mid-FETCH (its task
ends; the timing core and other connections never notice), or a simulator bug in one
handler (logged, counted, answered ``?xx``).
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

from devices.archon.simulator.buffers import buffer_capacity
from devices.archon.simulator.commands import CommandTable
from devices.archon.simulator.errors import CommandError
from devices.archon.simulator.faults import Faults
from devices.archon.simulator.fetch import BLOCK_SIZE, as_le_bytes, stream_blocks
from devices.archon.simulator.state import ControllerState

__all__ = ["MAX_LINE", "ArchonServer"]

log = logging.getLogger(__name__)

MAX_LINE = 4096
"""Longest request line accepted; longer ones close the connection."""
_READ_SIZE = 65536
_FETCH_RE = re.compile(r"FETCH([0-9A-F]{8})([0-9A-F]{8})", re.IGNORECASE)
_HEX = frozenset("0123456789abcdefABCDEF")


def _bandwidth(value: float | None) -> float | None:
    if value is not None and not value > 0:
        raise ValueError("bandwidth_limit_bps must be > 0 or None")
    return None if value is None else float(value)


class ArchonServer:
    """Serves one controller's command set on one TCP port."""

    def __init__(
        self, state: ControllerState, host: str, port: int, bandwidth_limit_bps: float | None
    ) -> None:
        self._state = state
        self._commands = CommandTable(state)
        self.host = host
        self._requested_port = port
        self._bandwidth = _bandwidth(bandwidth_limit_bps)
        self.faults = Faults()
        self.connections = 0
        self.internal_errors = 0
        self._server: asyncio.Server | None = None
        self._handlers: dict[asyncio.Task[Any], asyncio.StreamWriter] = {}

    @property
    def bandwidth_limit_bps(self) -> float | None:
        return self._bandwidth

    @bandwidth_limit_bps.setter
    def bandwidth_limit_bps(self, value: float | None) -> None:
        self._bandwidth = _bandwidth(value)

    @property
    def port(self) -> int:
        if self._server is None or not self._server.sockets:
            return self._requested_port
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def serving(self) -> bool:
        return self._server is not None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self._requested_port)

    async def close(self) -> None:
        """Stop listening and close every connection (their tasks end on their own)."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        handlers = dict(self._handlers)
        # Closing the transports lets each handler end on its own; cancelling them
        # instead makes Python 3.11's stream callback log a spurious CancelledError.
        for writer in handlers.values():
            writer.close()
        if handlers:
            _, late = await asyncio.wait(handlers, timeout=1.0)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        if server is not None:
            await server.wait_closed()

    # ---------------------------------------------------------- connections

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One connection: split the byte stream into lines and run them in order."""
        task = asyncio.current_task()
        if task is not None:
            self._handlers[task] = writer
        self.connections += 1
        try:
            await self._read_loop(reader, writer)
        except (ConnectionError, OSError):
            pass  # the client went away; nothing to answer
        finally:
            self.connections -= 1
            if task is not None:
                self._handlers.pop(task, None)
            writer.close()

    async def _read_loop(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        pending = bytearray()
        while True:
            chunk = await reader.read(_READ_SIZE)
            if not chunk:
                return
            pending += chunk
            start = 0
            while (end := pending.find(b"\n", start)) >= 0:
                line = bytes(pending[start:end])
                start = end + 1
                if len(line) > MAX_LINE or not await self._handle_line(line, writer):
                    return
            del pending[:start]
            if len(pending) > MAX_LINE:
                return  # a line that never ends: protect ourselves, drop the client

    async def _handle_line(self, raw: bytes, writer: asyncio.StreamWriter) -> bool:
        """Execute one request line and answer it; False closes the connection."""
        text = raw.decode("latin-1").rstrip("\r")
        if len(text) < 3 or not set(text[1:3]) <= _HEX:
            return True  # no readable id: nothing we could answer
        marker, cid, command = text[0], text[1:3], text[3:]
        if marker != ">":
            await self._reply(writer, f"?{cid}\n")
            return True
        faults = self.faults
        if faults.silenced(command):
            return True
        if faults.refused(command):
            await self._reply(writer, f"?{cid}\n")
            return True
        fetch = _FETCH_RE.fullmatch(command)
        if fetch:
            return await self._fetch(writer, cid, int(fetch[1], 16), int(fetch[2], 16))
        try:
            payload = await self._commands.execute(command)
        except CommandError as exc:
            log.debug("refused %r: %s", command, exc)
            await self._reply(writer, f"?{cid}\n")
        except Exception:
            self.internal_errors += 1
            log.exception("Archon simulator failed on %r", command)
            await self._reply(writer, f"?{cid}\n")
        else:
            await self._reply(writer, f"<{cid}{payload}\n")
        return True

    async def _reply(self, writer: asyncio.StreamWriter, text: str) -> None:
        if self.faults.reply_delay:
            await asyncio.sleep(self.faults.reply_delay)
        writer.write(text.encode("latin-1"))
        await writer.drain()

    async def _fetch(
        self, writer: asyncio.StreamWriter, cid: str, address: int, blocks: int
    ) -> bool:
        """Stream ``blocks`` blocks of memory from ``address`` (a buffer's base or a place
        inside it); False if we drop the link."""
        capacity = buffer_capacity(self._state.acf)
        found = self._state.bank.containing(address, capacity)
        if found is None or blocks == 0 or found[1] + blocks * BLOCK_SIZE > capacity:
            await self._reply(writer, f"?{cid}\n")
            return True
        buf, offset = found
        raw = as_le_bytes(buf.data)[offset:]
        send, drop = self.faults.fetch_limits(blocks)
        if self.faults.reply_delay:
            await asyncio.sleep(self.faults.reply_delay)
        await stream_blocks(writer, raw, cid, send, lambda: self._bandwidth)
        if drop:
            writer.close()
            return False
        return True
