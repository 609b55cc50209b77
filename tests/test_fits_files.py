"""tasks.files.fits_files: layouts, both engines, compression, checksums, never overwrite."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy.io import fits
from astropy.utils.exceptions import AstropyUserWarning

from tasks.files import publish
from tasks.files.fits_files import (
    Card,
    Compression,
    FitsEngine,
    ImagePart,
    WrittenFile,
    write_fits,
)

from .fitscheck import assert_fitsverify_clean

pytest.importorskip("fitsio")

ENGINES = list(FitsEngine)
PRIMARY: list[Card] = [
    ("EXPNUM", 7, "exposure number"),
    ("OBJECT", "M31 field 3", "object name"),
    ("EXPTIME", 0.30000000000000004, "[s] cfitsio alone would write 0.3"),
    ("SHUTTER", True, "shutter opened"),
    ("HIERARCH ESO DET CHIP TEMP", -110.25, "[C] long keyword"),
    ("DET NAME", "sim1", "keyword with a space: HIERARCH"),
    ("COMMENT", "written by the tests", ""),
]
# Written by the engines from the data, in their own order; for an empty primary BITPIX
# is 8 in astropy and 16 in cfitsio. Everything else must be identical, in order.
ENGINE_CARDS = {"CHECKSUM", "DATASUM", "BITPIX"}
STRUCTURE = {"SIMPLE", "XTENSION", "NAXIS", "NAXIS1", "NAXIS2", "EXTEND", "PCOUNT", "GCOUNT"}
STRUCTURE |= {"BSCALE", "BZERO"}


def _images(count: int, dtype: str = "u2", shape: tuple[int, int] = (48, 64)) -> list[Any]:
    rng = np.random.default_rng(count)
    return [rng.normal(1000, 5, shape).astype(dtype) for _ in range(count)]


def _parts(images: list[Any]) -> list[ImagePart]:
    return [
        ImagePart(
            image,
            [("CCDNAME", f"r{i}", "CCD name"), ("GAIN", 1.5 + i, "[e-/ADU]")],
            extname=f"R{i}" if len(images) > 1 else None,
        )
        for i, image in enumerate(images)
    ]


def _assert_checksums(path: Path) -> int:
    """Every HDU, compressed ones as stored, has CHECKSUM/DATASUM matching its bytes."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", AstropyUserWarning)
        with fits.open(path, checksum=True, disable_image_compression=True) as hdul:
            for hdu in hdul:
                assert "CHECKSUM" in hdu.header, hdu.name
                assert "DATASUM" in hdu.header, hdu.name
                _ = hdu.data  # DATASUM is verified against the data when it is read
            return len(hdul)


def _assert_published(written: WrittenFile) -> None:
    assert written.path.is_file()
    raw = written.path.read_bytes()
    assert written.nbytes == len(raw)
    assert written.sha256 == hashlib.sha256(raw).hexdigest()
    assert not list(written.path.parent.glob(".*.tmp")), "temporary file left behind"


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(
    ("count", "compression", "layout"),
    [
        (1, Compression.NONE, ["PrimaryHDU"]),
        (3, Compression.NONE, ["PrimaryHDU", "ImageHDU", "ImageHDU", "ImageHDU"]),
        (1, Compression.RICE_1, ["PrimaryHDU", "CompImageHDU"]),
        (2, Compression.RICE_1, ["PrimaryHDU", "CompImageHDU", "CompImageHDU"]),
    ],
)
def test_layout_checksums_fitsverify_and_exact_integers(
    tmp_path: Path, engine: FitsEngine, count: int, compression: Compression, layout: list[str]
) -> None:
    images = _images(count)
    path = tmp_path / "ccd.fits"
    written = write_fits(
        path, _parts(images), primary_cards=PRIMARY, engine=engine, compression=compression
    )
    _assert_published(written)
    assert _assert_checksums(path) == len(layout)
    assert_fitsverify_clean(path)
    with fits.open(path) as hdul:
        assert [type(hdu).__name__ for hdu in hdul] == layout
        assert hdul[0].header["EXPNUM"] == 7
        assert hdul[0].header["ESO DET CHIP TEMP"] == -110.25
        image_hdus = hdul[len(hdul) - count :]
        for i, (hdu, image) in enumerate(zip(image_hdus, images, strict=True)):
            assert hdu.header["CCDNAME"] == f"r{i}"
            if count > 1:
                assert hdu.name == f"R{i}"
            assert hdu.data.dtype == np.uint16
            np.testing.assert_array_equal(hdu.data, image)  # RICE_1 on integers: lossless


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("dtype", ["u1", "i2", "u2", "i4", "u4"])
def test_rice_round_trips_every_integer_type_exactly(
    tmp_path: Path, engine: FitsEngine, dtype: str
) -> None:
    info = np.iinfo(dtype)
    rng = np.random.default_rng(1)
    image = rng.integers(info.min, info.max, (32, 40), dtype=dtype, endpoint=True)
    image[0, :2] = (info.min, info.max)
    path = tmp_path / "ints.fits"
    write_fits(path, [ImagePart(image, [])], engine=engine, compression=Compression.RICE_1)
    with fits.open(path) as hdul:
        assert hdul[1].data.dtype == image.dtype
        np.testing.assert_array_equal(hdul[1].data, image)
    assert_fitsverify_clean(path)


@pytest.mark.parametrize("engine", [FitsEngine.ASTROPY, FitsEngine.FITSIO])
@pytest.mark.parametrize(("dtype", "rows_per_tile"), [("u2", 16), ("f4", 1)])
def test_integers_compress_in_bands_of_rows_floats_row_by_row(
    tmp_path: Path, engine: FitsEngine, dtype: str, rows_per_tile: int
) -> None:
    """Bands of 16 rows let astropy compress CCDs in parallel threads (one-row tiles
    keep it in Python, under the GIL, per row); floats keep one row per tile, as the
    row's noise sets its quantization. The last band of an odd height is short."""
    image = np.random.default_rng(2).normal(1000, 5, (37, 40)).astype(dtype)
    path = tmp_path / "tiles.fits"
    write_fits(path, [ImagePart(image, [])], engine=engine, compression=Compression.RICE_1)
    with fits.open(path, disable_image_compression=True) as hdul:
        assert (hdul[1].header["ZTILE1"], hdul[1].header["ZTILE2"]) == (40, rows_per_tile)
    with fits.open(path) as hdul:
        if dtype == "u2":
            np.testing.assert_array_equal(hdul[1].data, image)
    assert_fitsverify_clean(path)


@pytest.mark.parametrize(
    ("dtype", "count", "compression"),
    [
        ("u2", 1, Compression.NONE),
        ("u2", 2, Compression.NONE),
        ("u2", 2, Compression.RICE_1),
        ("f4", 2, Compression.RICE_1),
        ("f4", 1, Compression.NONE),
    ],
)
def test_both_engines_write_the_same_header_content_and_pixels(
    tmp_path: Path, dtype: str, count: int, compression: Compression
) -> None:
    images = _images(count, dtype)
    paths = {}
    for engine in ENGINES:
        paths[engine] = tmp_path / f"{engine}.fits"
        write_fits(
            paths[engine],
            _parts(images),
            primary_cards=PRIMARY,
            engine=engine,
            compression=compression,
        )
    with fits.open(paths[FitsEngine.ASTROPY]) as ours, fits.open(paths[FitsEngine.FITSIO]) as cf:
        assert len(ours) == len(cf)
        for a, b in zip(ours, cf, strict=True):
            assert _content(a.header) == _content(b.header)
            if a.data is not None:
                # Float quantization uses the same seed and level: identical pixels.
                np.testing.assert_array_equal(a.data, b.data)


def _content(header: fits.Header) -> tuple[dict[str, object], list[tuple[str, object]]]:
    """(structural keywords, in any order; our cards, in order)."""
    cards = [(c.keyword, c.value) for c in header.cards if c.keyword not in ENGINE_CARDS]
    structure = {key: value for key, value in cards if key in STRUCTURE}
    return structure, [(key, value) for key, value in cards if key not in STRUCTURE]


@pytest.mark.parametrize("engine", ENGINES)
def test_float_rice_is_lossy_within_half_a_quantization_step(
    tmp_path: Path, engine: FitsEngine
) -> None:
    (image,) = _images(1, "f4", (40, 50))
    path = tmp_path / "float.fits"
    write_fits(path, [ImagePart(image, [])], engine=engine, compression=Compression.RICE_1)
    with fits.open(path, disable_image_compression=True) as raw:
        header = raw[1].header
        steps = np.asarray(raw[1].data["ZSCALE"], dtype=float)  # one step per row tile
        assert header["ZQUANTIZ"] == "SUBTRACTIVE_DITHER_1"
        assert 1 <= header["ZDITHER0"] <= 10000
    with fits.open(path) as hdul:
        error = np.abs(hdul[1].data.astype(float) - image.astype(float))
    assert not np.array_equal(hdul[1].data, image), "float RICE_1 is expected to quantize"
    assert np.all(error <= steps[:, None] / 2 * (1 + 1e-6))
    # quantize_level 16: a step is about sigma / 16 of the 5-ADU noise.
    assert 0.1 < float(np.median(steps)) < 0.6


def test_astropy_engine_never_byteswaps_the_callers_array(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """astropy swaps a writable native-endian array in place while writing it; another
    thread reading the same frame (the HDF5 archiver) would see garbage."""
    (image,) = _images(1, "f4")
    original = image.copy()
    real_write = publish.HashingWriter.write

    def checking_write(self: publish.HashingWriter, data: Any) -> int:
        np.testing.assert_array_equal(image, original)
        return real_write(self, data)

    monkeypatch.setattr(publish.HashingWriter, "write", checking_write)
    write_fits(tmp_path / "f.fits", [ImagePart(image, [])], primary_cards=PRIMARY)
    with fits.open(tmp_path / "f.fits") as hdul:
        np.testing.assert_array_equal(hdul[0].data, original)


@pytest.mark.parametrize("engine", ENGINES)
def test_an_existing_file_is_never_overwritten(tmp_path: Path, engine: FitsEngine) -> None:
    path = tmp_path / "ccd.fits"
    path.write_bytes(b"precious")
    with pytest.raises(FileExistsError, match=f"refusing to overwrite {path}"):
        write_fits(path, _parts(_images(1)), engine=engine)
    assert path.read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ccd.fits"]


def test_a_file_that_appears_while_writing_is_not_replaced(tmp_path: Path) -> None:
    path = tmp_path / "late.fits"

    def fill(stream: publish.HashingWriter) -> None:
        stream.write(b"x" * 2880)
        path.write_bytes(b"another writer was faster")

    with pytest.raises(FileExistsError, match=str(path)):
        publish.publish_stream(path, fill)
    assert path.read_bytes() == b"another writer was faster"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["late.fits"]


@pytest.mark.parametrize("streaming", [True, False])
def test_a_failed_write_leaves_neither_file_nor_temporary(tmp_path: Path, streaming: bool) -> None:
    path = tmp_path / "broken.fits"

    def fail(_: object) -> None:
        raise RuntimeError("disk full")

    publish_file = publish.publish_stream if streaming else publish.publish_by_path
    with pytest.raises(RuntimeError, match="disk full"):
        publish_file(path, fail)
    assert list(tmp_path.iterdir()) == []


def test_a_crash_mid_write_leaves_no_file_under_the_final_name(tmp_path: Path) -> None:
    path = tmp_path / "crash.fits"
    script = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from tasks.files.publish import publish_stream\n"
        "def fill(stream):\n"
        "    stream.write(b'SIMPLE  =' + b' ' * 2871)\n"
        "    os._exit(9)  # the process dies: no finally, no cleanup\n"
        "publish_stream(Path(sys.argv[1]), fill)\n"
    )
    result = subprocess.run([sys.executable, "-c", script, str(path)], check=False)
    assert result.returncode == 9
    assert not path.exists()
    # Only the temporary name, which no reader looks for, holds the partial bytes.
    (left,) = tmp_path.iterdir()
    assert re.fullmatch(r"\.crash\.fits\.\d+\.tmp", left.name)


@pytest.mark.parametrize(
    ("parts", "primary", "compression", "message"),
    [
        ([], [], Compression.NONE, "at least one image"),
        ([ImagePart(np.zeros((2, 3, 4), "u2"), [])], [], Compression.NONE, "2-D"),
        ([ImagePart(np.zeros((2, 3), "i8"), [])], [], Compression.RICE_1, "dtype"),
        ([ImagePart(np.zeros((2, 3), "c8"), [])], [], Compression.NONE, "dtype"),
        (
            [
                ImagePart(np.zeros((2, 3), "u2"), [], "A"),
                ImagePart(np.zeros((2, 3), "u2"), [], "A"),
            ],
            [],
            Compression.NONE,
            "EXTNAMEs must differ",
        ),
        ([ImagePart(np.zeros((2, 3), "u2"), [])], [("gain", 1, "")], Compression.NONE, "uppercase"),
        ([ImagePart(np.zeros((2, 3), "u2"), [])], [("BITPIX", 8, "")], Compression.NONE, "engine"),
        (
            [ImagePart(np.zeros((2, 3), "u2"), [])],
            [("ZQUANTIZ", "x", "")],
            Compression.NONE,
            "engine",
        ),
        (
            [ImagePart(np.zeros((2, 3), "u2"), [])],
            [("X", float("nan"), "")],
            Compression.NONE,
            "NaN",
        ),
        ([ImagePart(np.zeros((2, 3), "u2"), [])], [("X", "é", "")], Compression.NONE, "ASCII"),
        ([ImagePart(np.zeros((2, 3), "u2"), [])], [("X", None, "")], Compression.NONE, "undefined"),
        ([ImagePart(np.zeros((2, 3), "u2"), [])], [("X", "a" * 69, "")], Compression.NONE, "one"),
        (
            [ImagePart(np.zeros((2, 3), "u2"), [("X", 1, "")])],
            [("X", 2, "")],
            Compression.NONE,
            "given twice",
        ),
    ],
)
def test_bad_input_is_refused_before_anything_is_written(
    tmp_path: Path,
    parts: list[ImagePart],
    primary: list[Card],
    compression: Compression,
    message: str,
) -> None:
    with pytest.raises(ValueError, match=message):
        write_fits(tmp_path / "x.fits", parts, primary_cards=primary, compression=compression)
    assert list(tmp_path.iterdir()) == []


def test_names_cfitsio_or_sha256sum_would_misread_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="file names"):
        write_fits(tmp_path / "a[1].fits", _parts(_images(1)), engine=FitsEngine.FITSIO)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("engine", ENGINES)
def test_a_flipped_bit_in_compressed_data_fails_the_checksum(
    tmp_path: Path, engine: FitsEngine
) -> None:
    path = tmp_path / "c.fits"
    write_fits(path, _parts(_images(1)), engine=engine, compression=Compression.RICE_1)
    with fits.open(path, disable_image_compression=True) as hdul:
        header = hdul[1].header
        heap = hdul.fileinfo(1)["datLoc"] + header["NAXIS1"] * header["NAXIS2"]
    raw = bytearray(path.read_bytes())
    raw[heap + 100] ^= 0x01  # inside the compressed tiles
    path.write_bytes(bytes(raw))
    with pytest.raises(AstropyUserWarning, match=r"[Cc]hecksum"):
        _assert_checksums(path)
