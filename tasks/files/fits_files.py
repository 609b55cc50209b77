"""The file layer under our FITS writer: one call writes one complete, verified file.

Layout. One image without compression is the primary HDU, as most CCD software
expects of a per-CCD file. Several images (a multi-extension file, one extension per
CCD), or any compression, give an empty primary HDU holding the shared cards, then one
IMAGE extension per image; tile compression exists only for extensions (a ZIMAGE
binary table, read back by astropy as a ``CompImageHDU``).

Two engines write the same layout and the same header cards (rendered once, see
``tasks.files.fits_cards``): astropy (pure Python, always installed) and fitsio (cfitsio,
the optional ``fitsio`` extra; faster for tile compression). Every HDU gets
CHECKSUM/DATASUM; for a compressed image they cover the stored binary table, which is
what a reader can verify without decompressing. The file is published atomically and
never over an existing one (``tasks.files.publish``).

Compression. RICE_1 is lossless for integer images: the raw 16-bit counts of a CCD
come back bit for bit. Float images cannot be Rice-coded directly, so they are
quantized first: each row tile is scaled so one integer step is 1/16 of the tile's
noise (``quantize_level=16``), with subtractive dithering (SUBTRACTIVE_DITHER_1) so the
rounding does not bias means. That is lossy: every pixel may move by up to half a step
(1/32 of the noise sigma), which adds about 0.03 % to the noise variance. The dither
seed is derived from the pixels, so the same image always gives the same file and
both engines quantize identically. Float tiles are single rows (the fpack default:
each row's noise sets its quantization). Integer tiles are bands of
``INTEGER_TILE_ROWS`` rows: lossless either way, and astropy spends Python time per
tile with the GIL held, so single-row tiles of a 4k x 4k CCD (4096 tiles) kept two
threads at the speed of one (107 MB/s for four CCDs at once here) where 16-row bands
reach 300 MB/s. A reader still decompresses a band of rows without the whole image.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits

from schemas.instrument import CompressionName, FitsEngineName
from tasks.files.fits_cards import Card, CardError, extname_card, render_cards
from tasks.files.manifest import append_manifest, verify_manifest
from tasks.files.publish import HashingWriter, WrittenFile, publish_by_path, publish_stream

__all__ = [
    "Card",
    "CardError",
    "Compression",
    "FitsEngine",
    "ImagePart",
    "WrittenFile",
    "append_manifest",
    "verify_manifest",
    "write_fits",
]

QUANTIZE_LEVEL = 16.0
"""Float tiles: one quantization step is the tile's noise sigma / 16 (cfitsio's default
is 4, i.e. sigma/4, which is visible in stacked faint sky; 16 costs little in size)."""

INTEGER_TILE_ROWS = 16
"""Rows per compression tile of an integer (raw) image."""

_INTEGER_DTYPES = frozenset(np.dtype(t).str[1:] for t in ("u1", "i2", "u2", "i4", "u4"))
_FLOAT_DTYPES = frozenset(np.dtype(t).str[1:] for t in ("f4", "f8"))
_UNCOMPRESSED_ONLY = frozenset({np.dtype("i8").str[1:]})  # Rice codes at most 32 bits


# The storage config names the engine and the compression; one enum each, shared.
FitsEngine = FitsEngineName
Compression = CompressionName


@dataclass(frozen=True)
class ImagePart:
    """One 2-D image with its own cards; ``extname`` names its HDU (EXTNAME)."""

    data: np.ndarray[Any, np.dtype[Any]]
    cards: Sequence[Card]
    extname: str | None = None


@dataclass(frozen=True, slots=True)
class _Hdu:
    """One HDU as both engines will write it."""

    data: np.ndarray[Any, np.dtype[Any]] | None
    cards: list[fits.Card]
    compressed: bool
    dither_seed: int


def write_fits(
    path: Path,
    parts: Sequence[ImagePart],
    *,
    primary_cards: Sequence[Card] = (),
    engine: FitsEngine = FitsEngine.ASTROPY,
    compression: Compression = Compression.NONE,
) -> WrittenFile:
    """Write ``parts`` to a new FITS file at ``path``; FileExistsError if it exists.

    Bad input (no parts, a non-2-D image, an unsupported dtype, an invalid or reserved
    card, duplicate EXTNAMEs) raises ValueError before anything touches the disk.
    """
    hdus = _layout(parts, primary_cards, Compression(compression))
    if FitsEngine(engine) is FitsEngine.ASTROPY:
        return publish_stream(path, lambda stream: _write_astropy(stream, hdus))
    return publish_by_path(path, lambda tmp: _write_fitsio(tmp, hdus))


def _layout(
    parts: Sequence[ImagePart], primary_cards: Sequence[Card], compression: Compression
) -> list[_Hdu]:
    if not parts:
        raise ValueError("a FITS file needs at least one image")
    compressed = compression is not Compression.NONE
    for index, part in enumerate(parts):
        _check_image(part.data, compressed, f"image {index}")
    names = [part.extname for part in parts if part.extname is not None]
    if len(set(names)) != len(names):
        raise ValueError(f"EXTNAMEs must differ: {names}")
    if len(parts) == 1 and not compressed:
        (part,) = parts
        cards = render_cards([*primary_cards, *part.cards], "primary HDU")
        return [_Hdu(part.data, _named(part.extname, cards), False, 0)]
    hdus = [_Hdu(None, render_cards(primary_cards, "primary HDU"), False, 0)]
    for index, part in enumerate(parts):
        cards = render_cards(part.cards, f"image {index}")
        hdus.append(
            _Hdu(part.data, _named(part.extname, cards), compressed, _dither_seed(part.data))
        )
    return hdus


def _check_image(data: object, compressed: bool, where: str) -> None:
    if not isinstance(data, np.ndarray):
        raise ValueError(f"{where}: expected a numpy array, got {type(data).__name__}")
    if data.ndim != 2 or data.size == 0:
        raise ValueError(f"{where}: expected a non-empty 2-D image, got shape {data.shape}")
    kind = data.dtype.str[1:]
    allowed = _INTEGER_DTYPES | _FLOAT_DTYPES | (set() if compressed else _UNCOMPRESSED_ONLY)
    if kind not in allowed:
        raise ValueError(f"{where}: dtype {data.dtype} cannot be written (use one of {allowed})")


def _named(extname: str | None, cards: list[fits.Card]) -> list[fits.Card]:
    if extname is None:
        return cards
    try:
        return [extname_card(extname), *cards]
    except CardError as exc:
        raise ValueError(str(exc)) from exc


def _dither_seed(data: np.ndarray[Any, np.dtype[Any]]) -> int:
    """A seed in 1..10000 (the range ZDITHER0 allows) that depends only on the pixels."""
    first_row = np.ascontiguousarray(data[0]).tobytes()
    return 1 + int.from_bytes(hashlib.sha256(first_row).digest()[:4], "big") % 10000


def _read_only(data: np.ndarray[Any, np.dtype[Any]]) -> np.ndarray[Any, np.dtype[Any]]:
    """A read-only view: astropy then byteswaps a copy instead of the caller's array
    in place (which another thread, e.g. the HDF5 archiver, may be reading)."""
    view = data.view()
    view.flags.writeable = False
    return view


def tile_shape(data: np.ndarray[Any, Any]) -> tuple[int, int]:
    """The compression tile of an image: a band of rows for integers, one row for
    floats (module docstring)."""
    rows, columns = data.shape[-2], data.shape[-1]
    if data.dtype.str[1:] in _INTEGER_DTYPES:
        return (max(1, min(INTEGER_TILE_ROWS, rows)), columns)
    return (1, columns)


def _write_astropy(stream: HashingWriter, hdus: list[_Hdu]) -> None:
    hdul = fits.HDUList()
    for index, hdu in enumerate(hdus):
        header = fits.Header(hdu.cards)
        data = None if hdu.data is None else _read_only(hdu.data)
        if index == 0:
            primary = fits.PrimaryHDU(data, header=header)
            if "EXTEND" not in primary.header:  # cfitsio always writes it: same headers
                axes = primary.header["NAXIS"]
                primary.header.set("EXTEND", True, after=f"NAXIS{axes or ''}")
            hdul.append(primary)
        elif hdu.compressed:
            assert data is not None
            hdul.append(
                fits.CompImageHDU(
                    data,
                    header=header,
                    compression_type="RICE_1",
                    tile_shape=tile_shape(data),
                    quantize_level=QUANTIZE_LEVEL,
                    quantize_method=1,  # SUBTRACTIVE_DITHER_1
                    dither_seed=hdu.dither_seed,
                )
            )
        else:
            hdul.append(fits.ImageHDU(data, header=header))
    hdul.writeto(stream, checksum=True)


def _write_fitsio(tmp: Path, hdus: list[_Hdu]) -> None:
    try:
        import fitsio
    except ImportError as exc:  # an optional extra: say how to get it
        raise RuntimeError("the fitsio engine needs the 'fitsio' extra installed") from exc
    # clobber: the empty file reserved for us is replaced by cfitsio's own (cfitsio
    # cannot open an empty file for writing).
    with fitsio.FITS(str(tmp), "rw", clobber=True) as fits_file:
        for number, hdu in enumerate(hdus, start=1):
            options: dict[str, Any] = {}
            if hdu.compressed:
                assert hdu.data is not None
                options = {
                    "compress": "RICE",
                    "tile_dims": tile_shape(hdu.data),
                    "qlevel": QUANTIZE_LEVEL,
                    "qmethod": "SUBTRACTIVE_DITHER_1",
                    "dither_seed": hdu.dither_seed,
                }
            # ``header`` only reserves room for the cards, written below verbatim.
            fits_file.create_image_hdu(hdu.data, header=hdu.cards, **options)
            if number == 1:
                _drop_cfitsio_comments(fits_file[0])
            for card in hdu.cards:
                # fitsio's write_key re-formats values through cfitsio; write_record
                # writes our 80-character image as it is.
                fits_file._FITS.write_record(number, card.image)
        for written in fits_file:
            written.write_checksum()


def _drop_cfitsio_comments(primary: Any) -> None:
    """cfitsio adds two COMMENT cards citing the FITS paper to every primary header;
    astropy does not. Dropped so both engines' headers hold exactly our cards."""
    count = sum(1 for record in primary.read_header_list() if record["name"] == "COMMENT")
    for _ in range(count):
        primary.delete_key("COMMENT")
