"""Sans-IO core of the STA Archon wire protocol: commands to bytes, bytes to replies.

Nothing here touches a socket or an event loop, so every framing rule can be tested
by feeding wire bytes in arbitrary chunk sizes (the PandABlocks-client model). The
asyncio transport in ``client.py`` only moves bytes between a socket and this parser.

Wire format (see shared/design/archon-protocol.md):

* request ``>`` + two upper-case hex digits (the command id) + COMMAND + ``\\n``;
* success ``<`` + id + payload + ``\\n``; failure ``?`` + id + ``\\n``;
* FETCH only: n binary blocks, each ``<`` + id + ``:`` + exactly 1024 raw bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from devices.archon.errors import ArchonProtocolError

BLOCK_PAYLOAD = 1024
"""Raw bytes carried by one FETCH block."""

BLOCK_RECORD = BLOCK_PAYLOAD + 4
"""One FETCH block on the wire: ``<xx:`` plus the payload."""

MAX_COMMAND_ID = 0xFE
"""Ids run 00..FE; FF is never handed out."""

_OK, _FAIL, _COLON = ord("<"), ord("?"), ord(":")
_LEADS = (_OK, _FAIL)

MAX_LINE = 65536
"""A text reply longer than this is a framing error, not something to buffer forever."""


def encode_command(command_id: int, command: str) -> bytes:
    """Frame one request. Rejects what the controller could not parse.

    The command must be printable ASCII without a newline: a stray newline would
    split it into two commands on the controller, with the second one un-numbered.
    """
    if not 0 <= command_id <= MAX_COMMAND_ID:
        raise ValueError(f"command id {command_id} is outside 0..{MAX_COMMAND_ID}")
    if not command or "\n" in command or "\r" in command:
        raise ValueError(f"invalid Archon command {command!r}")
    try:
        body = command.encode("ascii")
    except UnicodeEncodeError as exc:
        raise ValueError(f"Archon commands are ASCII only: {command!r}") from exc
    return b">%02X" % command_id + body + b"\n"


@dataclass(frozen=True, slots=True)
class TextReply:
    """A complete ``<xx...`` or ``?xx`` reply."""

    command_id: int
    ok: bool
    payload: str
    raw: bytes


@dataclass(frozen=True, slots=True)
class BinaryReply:
    """All blocks of one FETCH, concatenated (padding included)."""

    command_id: int
    data: npt.NDArray[np.uint8]


Reply = TextReply | BinaryReply


@dataclass(slots=True)
class _PendingFetch:
    command_id: int
    header: bytes
    data: npt.NDArray[np.uint8]
    blocks_total: int
    blocks_done: int = 0


@dataclass(slots=True)
class ReplyParser:
    """Incremental parser for everything a controller sends.

    A FETCH must be announced with :meth:`expect_blocks` before its request is sent,
    because the stream itself does not say how many blocks follow; the parser then
    copies block payloads straight into one preallocated array, many blocks per
    numpy operation rather than one Python step per block.
    """

    max_line: int = MAX_LINE
    _buffer: bytearray = field(default_factory=bytearray)
    _fetches: dict[int, _PendingFetch] = field(default_factory=dict)
    _streaming: _PendingFetch | None = None

    def expect_blocks(self, command_id: int, n_blocks: int) -> None:
        """Announce that ``command_id`` will be answered by ``n_blocks`` binary blocks."""
        if n_blocks <= 0:
            raise ValueError("a FETCH needs at least one block")
        self._fetches[command_id] = _PendingFetch(
            command_id=command_id,
            header=b"<%02X:" % command_id,
            data=np.empty(n_blocks * BLOCK_PAYLOAD, dtype=np.uint8),
            blocks_total=n_blocks,
        )

    def forget(self, command_id: int) -> None:
        """Drop an announced FETCH: rejected, timed out or cancelled, it sends no blocks.

        Harmless for an id that is not (or no longer) a FETCH, so callers may forget
        every FETCH they end without asking how it ended.
        """
        pending = self._fetches.pop(command_id, None)
        if pending is not None and pending is self._streaming:
            self._streaming = None

    def blocks_received(self, command_id: int) -> int:
        """How many blocks of an announced FETCH have arrived (for progress and errors)."""
        pending = self._fetches.get(command_id)
        return pending.blocks_done if pending else 0

    @property
    def buffered(self) -> int:
        """Bytes received but not yet part of a complete reply."""
        return len(self._buffer)

    def feed(self, data: bytes | bytearray | memoryview) -> list[Reply]:
        """Take bytes from the wire; return every reply they complete, in order."""
        self._buffer += data
        replies: list[Reply] = []
        while True:
            reply = self._next_reply()
            if reply is None:
                break
            if not isinstance(reply, _Progress):
                replies.append(reply)
        return replies

    def _next_reply(self) -> Reply | _Progress | None:
        buf = self._buffer
        if len(buf) < 4:
            if buf and buf[0] not in _LEADS:
                self._raise_garbage()
            return None
        lead = buf[0]
        if lead not in _LEADS:
            self._raise_garbage()
        streaming = self._streaming
        if streaming is not None and bytes(buf[:4]) != streaming.header:
            # Nothing may interleave with a block stream once it has begun.
            raise ArchonProtocolError(
                f"foreign bytes inside the block stream of command {streaming.command_id:02X}",
                bytes(buf[:8]),
            )
        if lead == _OK and buf[3] == _COLON and _parse_id(bytes(buf[:3])) in self._fetches:
            # Only an announced FETCH makes ``<xx:`` a binary block; otherwise it is
            # a text reply whose payload starts with a colon.
            return self._take_blocks()
        newline = buf.find(b"\n")
        if newline < 0:
            if len(buf) > self.max_line:
                raise ArchonProtocolError(
                    f"reply longer than {self.max_line} bytes without a newline", bytes(buf[:64])
                )
            return None
        raw = bytes(buf[: newline + 1])
        del buf[: newline + 1]
        command_id = _parse_id(raw)
        if lead != _OK:
            if len(raw) != 4:
                raise ArchonProtocolError("failure reply with a payload", raw)
            # A rejected FETCH (bad address or length) sends no blocks: forget it, or
            # the recycled id's next, ordinary reply would be taken for a missing
            # block stream and fail the whole connection.
            self.forget(command_id)
            return TextReply(command_id, ok=False, payload="", raw=raw)
        if command_id in self._fetches:
            raise ArchonProtocolError("text reply to a FETCH that expects binary blocks", raw)
        try:
            payload = raw[3:-1].decode("ascii")
        except UnicodeDecodeError as exc:
            raise ArchonProtocolError("non-ASCII bytes in a text reply", raw) from exc
        return TextReply(command_id, ok=True, payload=payload, raw=raw)

    def _take_blocks(self) -> BinaryReply | _Progress | None:
        buf = self._buffer
        command_id = _parse_id(bytes(buf[:4]))
        pending = self._fetches.get(command_id)
        if pending is None:
            raise ArchonProtocolError(
                "binary block for a command that is not a FETCH", bytes(buf[:4])
            )
        available = min(len(buf) // BLOCK_RECORD, pending.blocks_total - pending.blocks_done)
        if available == 0:
            return None
        records = np.frombuffer(buf, dtype=np.uint8, count=available * BLOCK_RECORD).reshape(
            available, BLOCK_RECORD
        )
        expected = np.frombuffer(pending.header, dtype=np.uint8)
        good = np.all(records[:, :4] == expected, axis=1)
        if not good.all():
            # Keep the blocks before the first bad header; the bad one is reported below.
            available = int(np.argmin(good))
            if available == 0:
                raise ArchonProtocolError(
                    "binary block with a foreign header inside a FETCH stream", bytes(buf[:8])
                )
            records = records[:available]
        start = pending.blocks_done * BLOCK_PAYLOAD
        pending.data[start : start + available * BLOCK_PAYLOAD] = records[:, 4:].reshape(-1)
        pending.blocks_done += available
        del records
        del buf[: available * BLOCK_RECORD]
        if pending.blocks_done == pending.blocks_total:
            del self._fetches[command_id]
            self._streaming = None
            return BinaryReply(command_id, pending.data)
        self._streaming = pending
        return _PROGRESS

    def _raise_garbage(self) -> None:
        raise ArchonProtocolError("reply does not start with '<' or '?'", bytes(self._buffer[:64]))


class _Progress:
    """Marker: blocks were consumed but the FETCH is not complete yet."""


_PROGRESS = _Progress()


def _parse_id(raw: bytes) -> int:
    digits = raw[1:3]
    if len(digits) != 2 or not all(c in b"0123456789ABCDEFabcdef" for c in digits):
        raise ArchonProtocolError("reply without a two-digit hex command id", raw)
    return int(digits, 16)


def parse_key_values(payload: str) -> dict[str, str]:
    """Split a ``KEY=VALUE KEY=VALUE`` payload (STATUS, SYSTEM, FRAME) into a dict.

    Keys are upper-cased: the controller's own spelling is upper case, and module keys
    such as ``MOD2/TEMPA`` keep their slash.
    """
    values: dict[str, str] = {}
    for item in payload.split():
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ArchonProtocolError(f"item {item!r} is not KEY=VALUE", payload.encode())
        values[key.upper()] = value
    return values
