"""The ImageBytes and JSON image decoders: every element type, rank, orientation, fault.

Expected pixels are computed independently of the decoder: headers and pixel bytes
are packed by hand with ``struct`` in Alpaca order (x slowest, y fastest), and checked
against ``image[y, x] == value(x, y)``; the encoder in the module is used only for the
round-trip property test.
"""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devices.alpaca.errors import (
    AlpacaDriverError,
    AlpacaInvalidOperationError,
    AlpacaProtocolError,
)
from devices.alpaca.imagebytes import (
    DTYPES,
    HEADER_SIZE,
    ElementType,
    ImageHeader,
    decode_imagebytes,
    decode_json_imagearray,
    encode_imagebytes,
    encode_imagebytes_error,
)

STRUCT_CODES = {1: "h", 2: "i", 3: "d", 4: "f", 5: "Q", 6: "B", 7: "q", 8: "H", 9: "I"}


def _header(
    *,
    version: int = 1,
    error: int = 0,
    client_tid: int = 0,
    server_tid: int = 0,
    data_start: int = 44,
    image_type: int = 2,
    wire_type: int = 8,
    rank: int = 2,
    dims: tuple[int, int, int] = (3, 2, 0),
) -> bytes:
    return struct.pack(
        "<11i",
        version,
        error,
        client_tid,
        server_tid,
        data_start,
        image_type,
        wire_type,
        rank,
        *dims,
    )


def _value(x: int, y: int, plane: int = 0) -> int:
    """A pixel value that differs for every (x, y < 7, plane < 5), so a swap cannot pass;
    small enough for a byte while x < 6."""
    return 37 * x + 5 * y + plane


def _pixels_alpaca_order(wire_type: int, nx: int, ny: int, planes: int = 0) -> bytes:
    code = STRUCT_CODES[wire_type]
    values = []
    for x in range(nx):
        for y in range(ny):
            if planes:
                values.extend(_value(x, y, p) for p in range(planes))
            else:
                values.append(_value(x, y))
    return struct.pack(f"<{len(values)}{code}", *values)


# The first bytes of a real alpaca-simulators 1.3.2 frame: Int32 image sent as UInt16,
# transaction ids not echoed (0), 1024 x 1024.
SIMULATOR_HEADER = bytes.fromhex(
    "01000000" "00000000" "00000000" "00000000" "2c000000" "02000000"
    "08000000" "02000000" "00040000" "00040000" "00000000"
)  # fmt: skip


def test_the_simulator_header_reads_field_by_field() -> None:
    header = ImageHeader.unpack(SIMULATOR_HEADER)
    assert header == ImageHeader(1, 0, 0, 0, 44, 2, 8, 2, 1024, 1024, 0)
    assert header.pack() == SIMULATOR_HEADER
    assert HEADER_SIZE == 44


@pytest.mark.parametrize("wire_type", sorted(STRUCT_CODES))
def test_every_element_type_decodes_to_y_x(wire_type: int) -> None:
    nx, ny = 4, 3
    body = _header(image_type=wire_type, wire_type=wire_type, dims=(nx, ny, 0))
    body += _pixels_alpaca_order(wire_type, nx, ny)
    image = decode_imagebytes(body)
    assert image.pixels.shape == (ny, nx)
    assert image.pixels.dtype == DTYPES[ElementType(wire_type)]
    for x in range(nx):
        for y in range(ny):
            assert image.pixels[y, x] == _value(x, y)


def test_a_narrow_transmission_type_keeps_its_dtype_and_records_the_image_type() -> None:
    body = _header(image_type=2, wire_type=8, dims=(2, 5, 0)) + _pixels_alpaca_order(8, 2, 5)
    image = decode_imagebytes(body)
    assert image.pixels.dtype == np.uint16
    assert image.image_element_type == ElementType.INT32


def test_rank_3_is_y_x_plane() -> None:
    nx, ny, planes = 3, 2, 3
    body = _header(wire_type=2, rank=3, dims=(nx, ny, planes)) + _pixels_alpaca_order(
        2, nx, ny, planes
    )
    image = decode_imagebytes(body)
    assert image.pixels.shape == (ny, nx, planes)
    for x in range(nx):
        for y in range(ny):
            for p in range(planes):
                assert image.pixels[y, x, p] == _value(x, y, p)


def test_decoding_does_not_copy_the_pixels() -> None:
    body = _header(dims=(64, 32, 0)) + _pixels_alpaca_order(8, 64, 32)
    image = decode_imagebytes(body)
    assert np.shares_memory(image.pixels, np.frombuffer(body, dtype=np.uint8))
    assert not image.pixels.flags.writeable


def test_data_may_start_after_a_longer_header() -> None:
    body = _header(data_start=48, dims=(2, 2, 0)) + b"\xee" * 4 + _pixels_alpaca_order(8, 2, 2)
    assert decode_imagebytes(body).pixels[1, 0] == _value(0, 1)


def test_an_error_in_the_header_raises_the_typed_error_with_the_body_text() -> None:
    body = _header(error=0x40B, rank=0, dims=(0, 0, 0)) + "No image taken ✓".encode()
    with pytest.raises(AlpacaInvalidOperationError) as info:
        decode_imagebytes(body, device="camera 0 at 127.0.0.1:1", member="imagearray")
    assert info.value.number == 0x40B
    assert info.value.message == "No image taken ✓"
    assert "camera 0 at 127.0.0.1:1: imagearray" in str(info.value)


def test_a_driver_error_in_the_header() -> None:
    with pytest.raises(AlpacaDriverError, match="readout failed"):
        decode_imagebytes(encode_imagebytes_error(0x501, "readout failed"))


@pytest.mark.parametrize("cut", [0, 10, 43, 44, 45, 44 + 2 * 6 - 1])
def test_truncated_answers_are_protocol_errors(cut: int) -> None:
    body = (_header(dims=(3, 2, 0)) + _pixels_alpaca_order(8, 3, 2))[:cut]
    with pytest.raises(AlpacaProtocolError, match=r"shorter than its header|truncated") as info:
        decode_imagebytes(body, device="camera 0 at h:1")
    assert info.value.device == "camera 0 at h:1"


def test_extra_bytes_are_a_protocol_error_too() -> None:
    body = _header(dims=(3, 2, 0)) + _pixels_alpaca_order(8, 3, 2) + b"\x00\x00"
    with pytest.raises(AlpacaProtocolError, match="too long"):
        decode_imagebytes(body)


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"version": 2}, "MetadataVersion 2"),
        ({"rank": 1}, "rank 1"),
        ({"rank": 4}, "rank 4"),
        ({"dims": (0, 2, 0)}, "dimensions"),
        ({"dims": (-3, 2, 0)}, "dimensions"),
        ({"rank": 3, "dims": (3, 2, 0)}, "dimensions"),
        ({"wire_type": 0}, "TransmissionElementType 0"),
        ({"wire_type": 10}, "TransmissionElementType 10"),
        ({"image_type": 12}, "ImageElementType 12"),
        ({"data_start": 40}, "inside the header"),
    ],
)
def test_impossible_headers_are_protocol_errors(fields: dict[str, object], match: str) -> None:
    body = _header(**fields) + _pixels_alpaca_order(8, 3, 2)  # type: ignore[arg-type]
    with pytest.raises(AlpacaProtocolError, match=match):
        decode_imagebytes(body)


def test_a_crossed_image_is_refused_and_zero_is_not_an_echo() -> None:
    body = _header(client_tid=41, dims=(3, 2, 0)) + _pixels_alpaca_order(8, 3, 2)
    with pytest.raises(AlpacaProtocolError, match="echoes ClientTransactionID 41"):
        decode_imagebytes(body, client_transaction_id=42)
    assert decode_imagebytes(body, client_transaction_id=41).pixels.shape == (2, 3)
    unechoed = _header(client_tid=0, dims=(3, 2, 0)) + _pixels_alpaca_order(8, 3, 2)
    assert decode_imagebytes(unechoed, client_transaction_id=42).pixels.shape == (2, 3)


# --- round trip (property) --------------------------------------------------------------------

_TYPES = st.sampled_from(sorted(DTYPES))


@settings(max_examples=150, deadline=None)
@given(
    wire=_TYPES,
    ny=st.integers(1, 9),
    nx=st.integers(1, 9),
    planes=st.sampled_from([0, 1, 3]),
    seed=st.integers(0, 2**32 - 1),
)
def test_any_image_survives_encode_then_decode(
    wire: ElementType, ny: int, nx: int, planes: int, seed: int
) -> None:
    dtype = DTYPES[wire]
    rng = np.random.default_rng(seed)
    shape = (ny, nx, planes) if planes else (ny, nx)
    if dtype.kind == "f":
        pixels = rng.normal(0, 1e3, shape).astype(dtype)
    else:
        info = np.iinfo(dtype)
        pixels = rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)
    image = decode_imagebytes(encode_imagebytes(pixels, transmission_type=wire))
    assert image.pixels.shape == shape
    assert image.pixels.dtype == dtype
    np.testing.assert_array_equal(image.pixels, pixels)


@settings(max_examples=60, deadline=None)
@given(nx=st.integers(1, 6), ny=st.integers(1, 6), wire=_TYPES)
def test_the_encoder_writes_x_slowest_like_a_hand_packed_body(
    nx: int, ny: int, wire: ElementType
) -> None:
    # Both directions checked against the hand-packed layout, so the pair cannot share
    # a transposition mistake.
    hand = _header(image_type=wire, wire_type=wire, dims=(nx, ny, 0)) + _pixels_alpaca_order(
        wire, nx, ny
    )
    pixels = np.array([[_value(x, y) for x in range(nx)] for y in range(ny)], dtype=DTYPES[wire])
    assert encode_imagebytes(pixels, transmission_type=wire) == hand


# --- JSON fallback ----------------------------------------------------------------------------


def test_a_json_image_array_is_x_major_like_imagebytes() -> None:
    nx, ny = 3, 2
    document = {
        "Type": 2,
        "Rank": 2,
        "Value": [[_value(x, y) for y in range(ny)] for x in range(nx)],
        "ClientTransactionID": 5,
        "ServerTransactionID": 9,
        "ErrorNumber": 0,
        "ErrorMessage": "",
    }
    image = decode_json_imagearray(document)
    assert image.pixels.shape == (ny, nx)
    assert image.pixels.dtype == np.int32
    assert image.pixels[1, 2] == _value(2, 1)
    assert (image.header.dim1, image.header.dim2, image.header.client_transaction_id) == (3, 2, 5)


def test_a_json_colour_image_and_a_double_image() -> None:
    value = [[[_value(x, y, p) for p in range(3)] for y in range(2)] for x in range(4)]
    image = decode_json_imagearray({"Type": 2, "Rank": 3, "Value": value})
    assert image.pixels.shape == (2, 4, 3)
    assert image.pixels[1, 3, 2] == _value(3, 1, 2)
    doubles = decode_json_imagearray({"Type": 3, "Rank": 2, "Value": [[0.5, 1.5]]})
    assert doubles.pixels.dtype == np.float64
    assert doubles.pixels.shape == (2, 1)


@pytest.mark.parametrize(
    ("document", "match"),
    [
        ({"Type": 2, "Rank": 2, "Value": [[1, 2], [3]]}, "rectangular|shape"),
        ({"Type": 2, "Rank": 3, "Value": [[1, 2], [3, 4]]}, "Rank is 3"),
        ({"Type": 2, "Rank": 2, "Value": []}, "non-empty"),
        ({"Type": 2, "Rank": 1, "Value": [1, 2]}, "Rank 1"),
        ({"Type": 9, "Rank": 2, "Value": [[1]]}, "Type 9"),
        ({"Type": 2, "Rank": 2, "Value": [["a"]]}, "rectangular"),
    ],
)
def test_broken_json_images_are_protocol_errors(document: dict[str, object], match: str) -> None:
    with pytest.raises(AlpacaProtocolError, match=match):
        decode_json_imagearray(document)
