"""The sans-IO protocol core, fed real wire bytes split at every possible boundary."""

from __future__ import annotations

import numpy as np
import pytest

from devices.archon.errors import ArchonProtocolError
from devices.archon.protocol import (
    BLOCK_PAYLOAD,
    BinaryReply,
    ReplyParser,
    TextReply,
    encode_command,
    parse_key_values,
)


def test_encode_command_frames_with_upper_hex_id() -> None:
    assert encode_command(0x1F, "STATUS") == b">1FSTATUS\n"
    assert encode_command(0, "LOCK0") == b">00LOCK0\n"


@pytest.mark.parametrize(
    ("command_id", "command"),
    [(-1, "STATUS"), (0xFF, "STATUS"), (1, ""), (1, "A\nB"), (1, "TEMP=°C")],
)
def test_encode_command_rejects_what_the_controller_cannot_parse(
    command_id: int, command: str
) -> None:
    with pytest.raises(ValueError, match=r"command|outside"):
        encode_command(command_id, command)


WIRE_TEXT = b"<01STATUS=1 POWER=4\n?02\n<03\n<04FRAME=7\n"


def _collect(parser: ReplyParser, chunks: list[bytes]) -> list[TextReply | BinaryReply]:
    replies: list[TextReply | BinaryReply] = []
    for chunk in chunks:
        replies.extend(parser.feed(chunk))
    return replies


@pytest.mark.parametrize("split", range(1, len(WIRE_TEXT)))
def test_text_replies_survive_any_two_way_split(split: int) -> None:
    replies = _collect(ReplyParser(), [WIRE_TEXT[:split], WIRE_TEXT[split:]])
    assert [(r.command_id, r.ok) for r in replies if isinstance(r, TextReply)] == [
        (1, True),
        (2, False),
        (3, True),
        (4, True),
    ]
    first = replies[0]
    assert isinstance(first, TextReply)
    assert first.payload == "STATUS=1 POWER=4"


def test_text_replies_byte_by_byte() -> None:
    replies = _collect(ReplyParser(), [bytes([b]) for b in WIRE_TEXT])
    assert len(replies) == 4


def _fetch_stream(command_id: int, payload: bytes) -> bytes:
    padded = payload + b"\0" * (-len(payload) % BLOCK_PAYLOAD)
    header = b"<%02X:" % command_id
    return b"".join(
        header + padded[i : i + BLOCK_PAYLOAD] for i in range(0, len(padded), BLOCK_PAYLOAD)
    )


def test_binary_blocks_split_at_every_boundary_are_reassembled() -> None:
    payload = bytes(np.arange(3 * BLOCK_PAYLOAD - 100, dtype=np.uint32).astype(np.uint8))
    stream = _fetch_stream(0x2A, payload) + b"<2B\n"
    for split in range(1, len(stream), 97):
        parser = ReplyParser()
        parser.expect_blocks(0x2A, 3)
        replies = _collect(parser, [stream[:split], stream[split:]])
        assert len(replies) == 2, split
        binary, text = replies
        assert isinstance(binary, BinaryReply)
        assert binary.data.tobytes()[: len(payload)] == payload
        assert isinstance(text, TextReply)
        assert text.command_id == 0x2B


def test_binary_blocks_in_odd_chunks() -> None:
    payload = np.random.default_rng(3).integers(0, 256, 5 * BLOCK_PAYLOAD, dtype=np.uint8)
    stream = _fetch_stream(7, payload.tobytes())
    parser = ReplyParser()
    parser.expect_blocks(7, 5)
    replies = _collect(parser, [stream[i : i + 333] for i in range(0, len(stream), 333)])
    assert len(replies) == 1
    reply = replies[0]
    assert isinstance(reply, BinaryReply)
    np.testing.assert_array_equal(reply.data, payload)


def test_fetch_progress_is_counted() -> None:
    parser = ReplyParser()
    parser.expect_blocks(9, 4)
    parser.feed(_fetch_stream(9, b"x" * (2 * BLOCK_PAYLOAD)))
    assert parser.blocks_received(9) == 2


@pytest.mark.parametrize(
    ("wire", "message"),
    [
        (b"garbage\n", "does not start"),
        (b"<ZZSTATUS\n", "hex command id"),
        (b"?01extra\n", "failure reply with a payload"),
        (b"<05:" + b"\xff" * BLOCK_PAYLOAD + b"\n", "non-ASCII"),
    ],
)
def test_malformed_replies_raise_with_raw_bytes(wire: bytes, message: str) -> None:
    with pytest.raises(ArchonProtocolError, match=message) as info:
        ReplyParser().feed(wire)
    assert info.value.raw


def test_over_long_line_is_an_error_not_unbounded_buffering() -> None:
    parser = ReplyParser(max_line=100)
    with pytest.raises(ArchonProtocolError, match="longer than 100"):
        parser.feed(b"<01" + b"A" * 200)


def test_foreign_block_header_inside_a_fetch_is_detected() -> None:
    parser = ReplyParser()
    parser.expect_blocks(1, 2)
    stream = _fetch_stream(1, b"a" * BLOCK_PAYLOAD) + _fetch_stream(2, b"b" * BLOCK_PAYLOAD)
    with pytest.raises(ArchonProtocolError):
        parser.feed(stream)


def test_parse_key_values() -> None:
    assert parse_key_values("POWER=4 MOD2/TEMPA=21.5") == {"POWER": "4", "MOD2/TEMPA": "21.5"}
    with pytest.raises(ArchonProtocolError):
        parse_key_values("POWER")
