"""Applying master calibration frames (bias, dark, flat) to a processed CCD image.

Master files are the calibrations flow's output (tasks/processing/master_build.py): a primary
HDU naming the kind (IMAGETYP ``master_bias``, ``master_dark``, ``master_flat``), then
one float32 IMAGE extension per CCD named by CCDNAME, with the CCDSUM and BUNIT of
the frames that went in. Which master applies follows the usual reduction order:

* bias: to every image type but bias and test;
* dark (counts per second, scaled by EXPTIME): to flats, objects and arcs;
* flat (normalized to a median of 1, chosen by FILTER): to objects.

A master is checked against the exposure before it starts (:func:`master_problems`:
same CCDs, image shape, binning and unit), so a mismatch is refused before anything
moves, never found after the readout. Pixels are memory-mapped and cached per
process, so Dask workers read each master once and share the page cache.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from astropy.io import fits

from schemas.exposure import ExposureSpec, ImageType
from schemas.processing import MasterFrames

FloatImage = npt.NDArray[np.float32]

KINDS = ("bias", "dark", "flat")
IMAGETYP = {kind: f"master_{kind}" for kind in KINDS}
HEADER_KEY = {"bias": "ZEROCOR", "dark": "DARKCOR", "flat": "FLATCOR"}
"""IRAF ccdproc's keywords: the file each correction used."""

APPLIES_TO: dict[str, frozenset[ImageType]] = {
    "bias": frozenset({ImageType.DARK, ImageType.FLAT, ImageType.OBJECT, ImageType.ARC}),
    "dark": frozenset({ImageType.FLAT, ImageType.OBJECT, ImageType.ARC}),
    "flat": frozenset({ImageType.OBJECT}),
}


class MasterFrameError(ValueError):
    """A master calibration file that cannot be applied, with the file and the reason."""


@dataclass(frozen=True, slots=True)
class MasterCcd:
    """What a master holds for one CCD (from its header)."""

    shape: tuple[int, int]
    ccdsum: str
    bunit: str


@dataclass(frozen=True, slots=True)
class MasterInfo:
    """A master file's kind and per-CCD geometry, read from its headers only."""

    path: Path
    kind: str
    filter: str
    ccds: dict[str, MasterCcd]


def _stamp(path: Path) -> tuple[int, int]:
    """(mtime, size): a cached read is reused only while the file is unchanged."""
    stat = path.stat()
    return stat.st_mtime_ns, stat.st_size


def read_master_info(path: Path) -> MasterInfo:
    """The kind, filter and per-CCD geometry of a master file (MasterFrameError)."""
    try:
        return _read_info(path, _stamp(path))
    except OSError as exc:
        raise MasterFrameError(f"{path}: cannot read: {exc}") from exc


@functools.lru_cache(maxsize=64)
def _read_info(path: Path, stamp: tuple[int, int]) -> MasterInfo:
    try:
        with fits.open(path, memmap=True) as hdus:
            primary = hdus[0].header
            kind = str(primary.get("IMAGETYP", "")).removeprefix("master_")
            if kind not in KINDS:
                raise MasterFrameError(
                    f"{path}: IMAGETYP {primary.get('IMAGETYP')!r} is not a master "
                    f"({', '.join(IMAGETYP.values())})"
                )
            ccds = {
                str(hdu.header["EXTNAME"]): MasterCcd(
                    shape=(int(hdu.header["NAXIS2"]), int(hdu.header["NAXIS1"])),
                    ccdsum=str(hdu.header.get("CCDSUM", "1 1")),
                    bunit=str(hdu.header.get("BUNIT", "adu")),
                )
                for hdu in hdus
                if hdu.is_image and hdu.header.get("NAXIS") == 2 and "EXTNAME" in hdu.header
            }
            return MasterInfo(path, kind, str(primary.get("FILTER", "none")), ccds)
    except (OSError, KeyError, TypeError) as exc:
        raise MasterFrameError(f"{path}: not a master frame file: {exc}") from exc


def masters_for(spec: ExposureSpec, masters: MasterFrames) -> dict[str, Path]:
    """kind -> master file that applies to an exposure of ``spec`` (by image type)."""
    chosen: dict[str, Path] = {}
    if masters.bias is not None and spec.image_type in APPLIES_TO["bias"]:
        chosen["bias"] = masters.bias
    if masters.dark is not None and spec.image_type in APPLIES_TO["dark"]:
        chosen["dark"] = masters.dark
    flat = masters.flats.get(spec.filter or "none")
    if flat is not None and spec.image_type in APPLIES_TO["flat"]:
        chosen["flat"] = flat
    return chosen


def master_problems(
    spec: ExposureSpec,
    masters: MasterFrames,
    shapes: dict[str, tuple[int, int]],
    bunit: str,
) -> list[str]:
    """Why the masters that apply to ``spec`` cannot be applied to its images.

    ``shapes`` maps each CCD to the shape post-processing will give it.
    """
    problems: list[str] = []
    ccdsum = f"{spec.binning.x} {spec.binning.y}"
    for kind, path in masters_for(spec, masters).items():
        where = f"processing.masters.{kind if kind != 'flat' else 'flats'}"
        try:
            info = read_master_info(path)
        except MasterFrameError as exc:
            problems.append(f"{where}: {exc}")
            continue
        if info.kind != kind:
            problems.append(f"{where}: {path.name} is a master {info.kind}, not a {kind}")
            continue
        for ccd, shape in shapes.items():
            held = info.ccds.get(ccd)
            if held is None:
                problems.append(f"{where}: {path.name} has no extension for CCD {ccd}")
            elif held.shape != shape or held.ccdsum != ccdsum:
                problems.append(
                    f"{where}: {path.name} is {held.shape} binned {held.ccdsum} for {ccd}; this "
                    f"exposure's images are {shape} binned {ccdsum}"
                )
            elif held.bunit != (expected := f"{bunit}/s" if kind == "dark" else bunit):
                problems.append(
                    f"{where}: {path.name} is in {held.bunit}; this exposure needs {expected}"
                )
    return problems


def load_master_image(path: Path, ccd: str) -> FloatImage:
    """One CCD's master pixels (read-only, memory-mapped when uncompressed)."""
    return _load_image(path, ccd, _stamp(path))


@functools.lru_cache(maxsize=32)
def _load_image(path: Path, ccd: str, stamp: tuple[int, int]) -> FloatImage:
    # Kept big-endian as stored: converting would copy the whole image into each
    # process; numpy swaps bytes on the fly. The mapping outlives the `with` (astropy
    # closes the file only when the array is gone).
    with fits.open(path, memmap=True) as hdus:
        data: FloatImage = hdus[ccd].data
    data.flags.writeable = False
    return data


def apply_masters(
    image: FloatImage, ccd: str, spec: ExposureSpec, masters: MasterFrames
) -> list[tuple[str, str, str]]:
    """Subtract bias and scaled dark, divide by the flat (in place); return the cards.

    Flat pixels that are not positive leave the image pixel as it is (a dead column
    in the flat must not become infinite in the science frame).
    """
    cards: list[tuple[str, str, str]] = []
    for kind, path in masters_for(spec, masters).items():
        master = load_master_image(path, ccd)
        if master.shape != image.shape:
            raise MasterFrameError(
                f"{path.name}: {ccd} master is {master.shape}, image is {image.shape}"
            )
        if kind == "bias":
            image -= master
        elif kind == "dark":
            image -= master * np.float32(spec.exptime)
        else:
            np.divide(image, master, out=image, where=master > 0)
        # The file name's end (exposure numbers) is what tells masters apart.
        cards.append((HEADER_KEY[kind], path.name[-50:], f"master {kind}"))
    return cards
