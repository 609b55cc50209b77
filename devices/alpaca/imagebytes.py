"""Decoders of Alpaca image arrays: ImageBytes (binary) and the JSON fallback.

Pure functions from bytes (or a parsed JSON object) to numpy arrays, so every element
type, rank and truncation is tested without a server.

ImageBytes (``Accept: application/imagebytes``) is a 44-byte header of eleven
little-endian int32 — MetadataVersion, ErrorNumber, ClientTransactionID,
ServerTransactionID, DataStart, ImageElementType, TransmissionElementType, Rank,
Dim1, Dim2, Dim3 — then the pixels from DataStart on. Alpaca pixels are ``[x, y]``
(``[x, y, plane]`` for rank 3) with the last index fastest, so
``reshape(Dim1, Dim2).T`` is the (y, x) image that numpy, FITS and astropy expect.

The arrays returned are views of the received bytes (no copy, read-only, Fortran
ordered for rank 2): a 4096 x 4096 frame costs no more than its transfer. Call
``.copy()`` for a writable C-ordered array.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum

import numpy as np
import numpy.typing as npt

from devices.alpaca.errors import AlpacaProtocolError, error_for_number

HEADER = struct.Struct("<11i")
HEADER_SIZE = HEADER.size  # 44
METADATA_VERSION = 1


class ElementType(IntEnum):
    """ImageArrayElementType: what the device's pixels are (and what is sent)."""

    UNKNOWN = 0
    INT16 = 1
    INT32 = 2
    DOUBLE = 3
    SINGLE = 4
    UINT64 = 5
    BYTE = 6
    INT64 = 7
    UINT16 = 8
    UINT32 = 9


DTYPES: dict[ElementType, np.dtype[np.generic]] = {
    ElementType.INT16: np.dtype("<i2"),
    ElementType.INT32: np.dtype("<i4"),
    ElementType.DOUBLE: np.dtype("<f8"),
    ElementType.SINGLE: np.dtype("<f4"),
    ElementType.UINT64: np.dtype("<u8"),
    ElementType.BYTE: np.dtype("u1"),
    ElementType.INT64: np.dtype("<i8"),
    ElementType.UINT16: np.dtype("<u2"),
    ElementType.UINT32: np.dtype("<u4"),
}
"""Wire dtype of each element type (always little-endian)."""


@dataclass(frozen=True, slots=True)
class ImageHeader:
    """The 44-byte ImageBytes header (or the same facts for a JSON image)."""

    metadata_version: int
    error_number: int
    client_transaction_id: int
    server_transaction_id: int
    data_start: int
    image_element_type: int
    transmission_element_type: int
    rank: int
    dim1: int
    dim2: int
    dim3: int

    @classmethod
    def unpack(cls, data: bytes | bytearray | memoryview) -> ImageHeader:
        return cls(*HEADER.unpack_from(data, 0))

    def pack(self) -> bytes:
        return HEADER.pack(
            self.metadata_version,
            self.error_number,
            self.client_transaction_id,
            self.server_transaction_id,
            self.data_start,
            self.image_element_type,
            self.transmission_element_type,
            self.rank,
            self.dim1,
            self.dim2,
            self.dim3,
        )

    @property
    def alpaca_shape(self) -> tuple[int, ...]:
        """Dimensions in Alpaca order: (x, y) or (x, y, planes)."""
        return (self.dim1, self.dim2) if self.rank == 2 else (self.dim1, self.dim2, self.dim3)


@dataclass(frozen=True, slots=True)
class DecodedImage:
    """Pixels indexed (y, x), or (y, x, plane) for rank 3, with the header they came with."""

    pixels: npt.NDArray[np.generic]
    header: ImageHeader

    @property
    def image_element_type(self) -> ElementType | int:
        """The device's own pixel type (the array's dtype is the transmission type)."""
        try:
            return ElementType(self.header.image_element_type)
        except ValueError:
            return self.header.image_element_type


def decode_imagebytes(
    body: bytes | bytearray | memoryview,
    *,
    device: str = "",
    member: str = "imagearray",
    client_transaction_id: int | None = None,
) -> DecodedImage:
    """Decode one ImageBytes answer into (y, x) pixels without copying them.

    A non-zero ErrorNumber in the header raises the typed error with the message the
    body carries after the header; a wrong length, type, rank or version raises
    :class:`AlpacaProtocolError`. ``client_transaction_id``, when given, must match a
    non-zero echo in the header (0 means not echoed; alpaca-simulators always sends 0).
    """

    def broken(message: str) -> AlpacaProtocolError:
        return AlpacaProtocolError(
            message, raw=bytes(body[:HEADER_SIZE]), device=device, member=member
        )

    if len(body) < HEADER_SIZE:
        raise broken(f"ImageBytes answer of {len(body)} bytes is shorter than its header")
    header = ImageHeader.unpack(body)
    if header.metadata_version != METADATA_VERSION:
        raise broken(f"unknown ImageBytes MetadataVersion {header.metadata_version}")
    if client_transaction_id is not None and header.client_transaction_id not in (
        0,
        client_transaction_id,
    ):
        raise broken(
            f"ImageBytes header echoes ClientTransactionID {header.client_transaction_id}, "
            f"but this call was {client_transaction_id}"
        )
    if header.error_number != 0:
        start = header.data_start if HEADER_SIZE <= header.data_start <= len(body) else HEADER_SIZE
        message = bytes(body[start:]).decode("utf-8", errors="replace")
        raise error_for_number(header.error_number, message, device=device, member=member)
    if header.rank not in (2, 3):
        raise broken(f"ImageBytes rank {header.rank}; only 2 and 3 exist")
    shape = header.alpaca_shape
    if any(dim <= 0 for dim in shape):
        raise broken(f"ImageBytes dimensions {shape} for rank {header.rank}")
    dtype = _dtype(header.transmission_element_type)
    if dtype is None:
        raise broken(f"unknown TransmissionElementType {header.transmission_element_type}")
    if _dtype(header.image_element_type) is None:
        raise broken(f"unknown ImageElementType {header.image_element_type}")
    if header.data_start < HEADER_SIZE:
        raise broken(f"DataStart {header.data_start} lies inside the header")
    count = int(np.prod(shape, dtype=np.int64))
    expected = count * dtype.itemsize
    got = len(body) - header.data_start
    if got != expected:
        what = "truncated" if got < expected else "too long"
        raise broken(
            f"ImageBytes {what}: {max(got, 0)} data bytes for {'x'.join(map(str, shape))} "
            f"{ElementType(header.transmission_element_type).name}, expected {expected}"
        )
    flat = np.frombuffer(body, dtype=dtype, count=count, offset=header.data_start)
    return DecodedImage(pixels=_to_yx(flat.reshape(shape)), header=header)


def _dtype(code: int) -> np.dtype[np.generic] | None:
    try:
        return DTYPES.get(ElementType(code))
    except ValueError:
        return None


def _to_yx(alpaca_order: npt.NDArray[np.generic]) -> npt.NDArray[np.generic]:
    """[x, y] -> (y, x); [x, y, plane] -> (y, x, plane). Views, never copies."""
    if alpaca_order.ndim == 2:
        return alpaca_order.T
    return alpaca_order.transpose(1, 0, 2)


_JSON_DTYPES: dict[int, np.dtype[np.generic]] = {
    ElementType.INT16: np.dtype(np.int16),
    ElementType.INT32: np.dtype(np.int32),
    ElementType.DOUBLE: np.dtype(np.float64),
}
"""JSON image arrays declare Int16, Int32 or Double (``Type``); 0 (unknown) is read as
Int32, the type the spec says integer images are sent as."""


def decode_json_imagearray(
    document: Mapping[str, object], *, device: str = "", member: str = "imagearray"
) -> DecodedImage:
    """Decode the JSON fallback: ``Value`` nested as [x][y] (or [x][y][plane]).

    ``document`` is an answer already checked by :func:`protocol.parse_reply`
    (ErrorNumber 0). Slow by nature (a Python list per column); servers that speak
    ImageBytes never get here.
    """

    def broken(message: str) -> AlpacaProtocolError:
        return AlpacaProtocolError(message, device=device, member=member)

    rank = document.get("Rank")
    kind = document.get("Type", 0)
    value = document.get("Value")
    if rank not in (2, 3):
        raise broken(f"JSON image Rank {rank!r}; only 2 and 3 exist")
    assert isinstance(rank, int)
    if not isinstance(kind, int) or isinstance(kind, bool):
        raise broken(f"JSON image Type {kind!r} is not an integer")
    dtype = _JSON_DTYPES.get(kind, np.dtype(np.int32) if kind == 0 else None)
    if dtype is None:
        raise broken(f"JSON image Type {kind}; expected 0 (unknown), 1, 2 or 3")
    if not isinstance(value, list) or not value:
        raise broken("JSON image without a non-empty Value list")
    try:
        array = np.array(value, dtype=dtype)
    except (ValueError, TypeError, OverflowError) as exc:
        raise broken(f"JSON image Value is not a rectangular array of numbers ({exc})") from exc
    if array.ndim != rank or 0 in array.shape:
        raise broken(f"JSON image Value has shape {array.shape}, but Rank is {rank}")
    dims = (*array.shape, 0) if rank == 2 else array.shape
    header = ImageHeader(
        metadata_version=METADATA_VERSION,
        error_number=0,
        client_transaction_id=_int_or_zero(document.get("ClientTransactionID")),
        server_transaction_id=_int_or_zero(document.get("ServerTransactionID")),
        data_start=0,
        image_element_type=kind if kind else ElementType.INT32,
        transmission_element_type=kind if kind else ElementType.INT32,
        rank=rank,
        dim1=dims[0],
        dim2=dims[1],
        dim3=dims[2],
    )
    return DecodedImage(pixels=_to_yx(array), header=header)


def _int_or_zero(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def encode_imagebytes(
    pixels_yx: npt.NDArray[np.generic],
    *,
    transmission_type: ElementType | None = None,
    image_type: ElementType | None = None,
    client_transaction_id: int = 0,
    server_transaction_id: int = 0,
) -> bytes:
    """The ImageBytes a server would send for a (y, x) or (y, x, plane) image.

    The inverse of :func:`decode_imagebytes`, for tests and fakes: a decoder checked
    against its own encoder alone could share its mistake, so the tests also use
    bytes written out by hand and bytes from a third-party server.
    """
    if transmission_type is None:
        matches = [code for code, dt in DTYPES.items() if dt == pixels_yx.dtype.newbyteorder("<")]
        if not matches:
            raise ValueError(f"no ImageBytes element type for dtype {pixels_yx.dtype}")
        transmission_type = matches[0]
    wire = DTYPES[transmission_type]
    alpaca_order = (
        pixels_yx.T if pixels_yx.ndim == 2 else pixels_yx.transpose(1, 0, 2)
    )  # (x, y[, p])
    dims = (*alpaca_order.shape, 0) if alpaca_order.ndim == 2 else alpaca_order.shape
    header = ImageHeader(
        metadata_version=METADATA_VERSION,
        error_number=0,
        client_transaction_id=client_transaction_id,
        server_transaction_id=server_transaction_id,
        data_start=HEADER_SIZE,
        image_element_type=image_type or transmission_type,
        transmission_element_type=transmission_type,
        rank=alpaca_order.ndim,
        dim1=dims[0],
        dim2=dims[1],
        dim3=dims[2],
    )
    return header.pack() + np.ascontiguousarray(alpaca_order, dtype=wire).tobytes()


def encode_imagebytes_error(number: int, message: str, *, client_transaction_id: int = 0) -> bytes:
    """An ImageBytes answer that carries an error: header, then the UTF-8 message."""
    header = ImageHeader(
        metadata_version=METADATA_VERSION,
        error_number=number,
        client_transaction_id=client_transaction_id,
        server_transaction_id=0,
        data_start=HEADER_SIZE,
        image_element_type=0,
        transmission_element_type=0,
        rank=0,
        dim1=0,
        dim2=0,
        dim3=0,
    )
    return header.pack() + message.encode("utf-8")
