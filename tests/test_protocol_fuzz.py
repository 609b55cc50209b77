"""Property tests of the reply parser: any byte stream ends in replies or a clear error.

Valid streams (text replies and FETCH block streams, interleaved as a controller may
send them) split at arbitrary points must parse to exactly what was sent; arbitrary
bytes must never raise anything but ArchonProtocolError, and never loop.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from devices.archon.errors import ArchonProtocolError
from devices.archon.protocol import BLOCK_PAYLOAD, BinaryReply, ReplyParser, TextReply

PAYLOAD_TEXT = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=60)


@st.composite
def replies(draw: st.DrawFn) -> tuple[list[tuple[int, str, bytes | None]], bytes]:
    """A list of (id, kind, payload) and the wire bytes a controller would send."""
    items: list[tuple[int, str, bytes | None]] = []
    wire = b""
    used: set[int] = set()
    for _ in range(draw(st.integers(1, 8))):
        command_id = draw(st.integers(0, 0xFE).filter(lambda i: i not in used))
        used.add(command_id)
        kind = draw(st.sampled_from(["ok", "fail", "fetch"]))
        if kind == "ok":
            text = draw(PAYLOAD_TEXT)
            items.append((command_id, kind, text.encode()))
            wire += b"<%02X" % command_id + text.encode() + b"\n"
        elif kind == "fail":
            items.append((command_id, kind, None))
            wire += b"?%02X\n" % command_id
        else:
            blocks = draw(st.integers(1, 3))
            data = draw(st.binary(min_size=blocks * BLOCK_PAYLOAD, max_size=blocks * BLOCK_PAYLOAD))
            items.append((command_id, kind, data))
            header = b"<%02X:" % command_id
            for i in range(blocks):
                wire += header + data[i * BLOCK_PAYLOAD : (i + 1) * BLOCK_PAYLOAD]
    return items, wire


@settings(max_examples=150, deadline=None)
@given(replies(), st.lists(st.integers(1, 3000), min_size=1, max_size=20))
def test_valid_streams_parse_exactly_whatever_the_chunking(
    case: tuple[list[tuple[int, str, bytes | None]], bytes], cuts: list[int]
) -> None:
    items, wire = case
    parser = ReplyParser()
    for command_id, kind, data in items:
        if kind == "fetch":
            assert data is not None
            parser.expect_blocks(command_id, len(data) // BLOCK_PAYLOAD)
    got: list[TextReply | BinaryReply] = []
    position = 0
    for cut in cuts:
        got.extend(parser.feed(wire[position : position + cut]))
        position += cut
    got.extend(parser.feed(wire[position:]))
    assert len(got) == len(items)
    for reply, (command_id, kind, data) in zip(got, items, strict=True):
        assert reply.command_id == command_id
        if kind == "fetch":
            assert isinstance(reply, BinaryReply)
            assert reply.data.tobytes() == data
        else:
            assert isinstance(reply, TextReply)
            assert reply.ok is (kind == "ok")
            if kind == "ok":
                assert reply.payload.encode() == data
    assert parser.buffered == 0


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=2000), max_size=10), st.booleans())
def test_arbitrary_bytes_give_replies_or_a_protocol_error(
    chunks: list[bytes], expect_fetch: bool
) -> None:
    parser = ReplyParser(max_line=512)
    if expect_fetch:
        parser.expect_blocks(0x01, 2)
    try:
        for chunk in chunks:
            for reply in parser.feed(chunk):
                assert 0 <= reply.command_id <= 0xFF
    except ArchonProtocolError as exc:
        raw = exc.raw
        assert isinstance(raw, bytes)
        return
    # What is left is one partial reply: a short text line or part of one block.
    assert parser.buffered <= max(512, BLOCK_PAYLOAD + 4)
