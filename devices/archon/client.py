"""Asyncio transport for the Archon protocol: ids, timeouts, concurrent commands.

The framing lives in :mod:`devices.archon.protocol`; this module only owns the socket,
hands out command ids, and resolves one future per id. Every call has a timeout,
because a controller that stops answering must give an error, never a hang.
"""

from __future__ import annotations

import asyncio
from types import TracebackType

import numpy as np
import numpy.typing as npt

from devices.archon.errors import (
    ArchonBusyError,
    ArchonCommandError,
    ArchonConnectionError,
    ArchonProtocolError,
    ArchonTimeoutError,
)
from devices.archon.protocol import (
    MAX_COMMAND_ID,
    BinaryReply,
    ReplyParser,
    TextReply,
    encode_command,
)

DEFAULT_TIMEOUT = 5.0
"""Seconds a plain command may take; FETCH timeouts scale with the data size."""


class _ArchonStream(asyncio.Protocol):
    """Feeds received bytes to the parser and resolves the waiting futures."""

    def __init__(self, client: ArchonClient) -> None:
        self._client = client

    def connection_lost(self, exc: Exception | None) -> None:
        self._client._on_connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._client._on_data(data)


class ArchonClient:
    """One TCP connection to an Archon controller.

    Many commands may be in flight at once (the controller answers in order, but the
    client never relies on that: replies are matched by id). Use as an async context
    manager or call :meth:`connect` and :meth:`close`.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        connect_timeout: float = 5.0,
    ) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self._transport: asyncio.Transport | None = None
        self._parser = ReplyParser()
        self._waiting: dict[int, tuple[str, asyncio.Future[TextReply | BinaryReply]]] = {}
        self._free_ids: list[int] = list(range(MAX_COMMAND_ID, -1, -1))
        self._late_ids: set[int] = set()
        self._fault: Exception | None = None

    @property
    def connected(self) -> bool:
        """True while the socket is open and no protocol error has poisoned it."""
        return self._transport is not None and not self._transport.is_closing()

    async def connect(self) -> None:
        """Open the connection; a clear error if nobody answers in time."""
        if self.connected:
            return
        loop = asyncio.get_running_loop()
        try:
            transport, _ = await asyncio.wait_for(
                loop.create_connection(lambda: _ArchonStream(self), self.host, self.port),
                self.connect_timeout,
            )
        except TimeoutError as exc:
            raise ArchonConnectionError(
                f"no Archon controller answered at {self.host}:{self.port} "
                f"within {self.connect_timeout:g} s"
            ) from exc
        except OSError as exc:
            raise ArchonConnectionError(
                f"cannot connect to the Archon controller at {self.host}:{self.port}: {exc}"
            ) from exc
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._parser = ReplyParser()
        self._fault = None
        self._free_ids = list(range(MAX_COMMAND_ID, -1, -1))
        self._late_ids = set()

    async def close(self) -> None:
        """Close the socket; commands still waiting fail with a connection error."""
        self._drop_transport()
        await asyncio.sleep(0)

    def _drop_transport(self) -> None:
        transport, self._transport = self._transport, None
        if transport is not None:
            transport.close()
        self._fail_all(ArchonConnectionError("connection closed by the client"))

    async def reconnect(self) -> None:
        """Drop the connection (and any half-read reply) and open a fresh one."""
        await self.close()
        await self.connect()

    async def __aenter__(self) -> ArchonClient:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def send(self, command: str, *, timeout: float | None = None) -> str:
        """Send one command and return its reply payload.

        Raises :class:`ArchonCommandError` on ``?xx`` and :class:`ArchonTimeoutError`
        when no reply arrives within ``timeout`` (default: the client's timeout).
        """
        reply = await self._roundtrip(command, None, self.timeout if timeout is None else timeout)
        assert isinstance(reply, TextReply)
        if not reply.ok:
            raise ArchonCommandError(command)
        return reply.payload

    async def fetch_blocks(
        self, command: str, n_blocks: int, *, timeout: float
    ) -> npt.NDArray[np.uint8]:
        """Send a FETCH and collect its ``n_blocks`` binary blocks into one array.

        A stream that stops short leaves the connection mid-reply, so on timeout or
        cancellation the connection is closed: the caller reconnects and fetches the
        (locked) buffer again rather than reading the rest of a stream it can no
        longer trust.
        """
        try:
            reply = await self._roundtrip(command, n_blocks, timeout)
        except (ArchonTimeoutError, asyncio.CancelledError):
            self._drop_transport()
            raise
        if isinstance(reply, TextReply):
            raise ArchonCommandError(command)
        return reply.data

    async def _roundtrip(
        self, command: str, n_blocks: int | None, timeout: float
    ) -> TextReply | BinaryReply:
        if self._fault is not None:
            raise ArchonConnectionError(f"connection unusable: {self._fault}") from self._fault
        if self._transport is None or self._transport.is_closing():
            raise ArchonConnectionError(f"not connected to {self.host}:{self.port}")
        if not self._free_ids:
            raise ArchonBusyError(f"all {MAX_COMMAND_ID + 1} command ids are in flight")
        command_id = self._free_ids.pop()
        frame = encode_command(command_id, command)
        future: asyncio.Future[TextReply | BinaryReply] = asyncio.get_running_loop().create_future()
        self._waiting[command_id] = (command, future)
        if n_blocks is not None:
            self._parser.expect_blocks(command_id, n_blocks)
        self._transport.write(frame)
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError as exc:
            detail = ""
            if n_blocks is not None:
                got = self._parser.blocks_received(command_id)
                detail = f"{got} of {n_blocks} blocks received"
            raise ArchonTimeoutError(command, timeout, detail) from exc
        finally:
            self._waiting.pop(command_id, None)
            if n_blocks is not None:
                # However the FETCH ended (blocks, ``?xx``, timeout, cancellation), the
                # parser must not keep expecting blocks for an id that will be reused.
                self._parser.forget(command_id)
            if future.done() and not future.cancelled():
                self._free_ids.insert(0, command_id)
            else:
                # Timed out or cancelled: a late reply may still come. The id rests
                # until that reply or a reconnect, so a late answer can never be taken
                # for another command's.
                self._late_ids.add(command_id)

    def _on_data(self, data: bytes) -> None:
        try:
            replies = self._parser.feed(data)
        except ArchonProtocolError as exc:
            self._fault = exc
            self._fail_all(exc)
            if self._transport is not None:
                self._transport.close()
            return
        for reply in replies:
            waiting = self._waiting.get(reply.command_id)
            if waiting is None:
                if reply.command_id in self._late_ids:
                    self._late_ids.discard(reply.command_id)
                    self._free_ids.insert(0, reply.command_id)
                    continue
                stray = ArchonProtocolError(
                    f"reply for command id {reply.command_id:02X} that nobody sent",
                    reply.raw if isinstance(reply, TextReply) else b"",
                )
                self._fault = stray
                self._fail_all(stray)
                if self._transport is not None:
                    self._transport.close()
                return
            _, future = waiting
            if not future.done():
                future.set_result(reply)

    def _on_connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        reason = f": {exc}" if exc else ""
        self._fail_all(ArchonConnectionError(f"connection to {self.host}:{self.port} lost{reason}"))

    def _fail_all(self, exc: Exception) -> None:
        for _, future in list(self._waiting.values()):
            if not future.done():
                future.set_exception(exc)
        # A late reply can no longer arrive on a dead connection: its ids are free.
        self._free_ids[:0] = sorted(self._late_ids)
        self._late_ids.clear()
