"""Building master bias, dark and flat frames from a calibration set's files.

Each CCD is combined on its own Dask worker, which reads only that CCD's image from
every input file, in bands of rows (a median of 20 frames of 4k x 4k needs one band
of each in memory, not 20 whole images), and returns the combined image. The masters
are then written as one file per kind (and per filter, for flats) with one extension
per CCD, in the format :mod:`tasks.processing.masters` applies.

Inputs are the processed images, or the raw frames (``processing.masters_from``; by
default processed when they are written, else raw). A raw frame is first put through
the instrument's chain on the worker (assembly, overscan, trim, electrons: the chain
minus masters and user steps), read from the raw file's own header map
(tasks/processing/raw_frames.py). That needs each input whole in memory (frames x one CCD image,
float32) rather than bands of rows; processed inputs are read in bands.

Reduction, per input frame, before combining:

* bias: as written (overscan-corrected);
* dark: minus the master bias (unless the frame already had one, ZEROCOR), divided by
  its exposure time: the master dark is counts per second;
* flat: minus the master bias and the scaled master dark (unless already done,
  ZEROCOR/DARKCOR), divided by its own median so lamp drifts do not weigh; the
  master is normalized to a median of 1.

Provenance: the primary header lists every input (IMCMBnnn, as IRAF's imcombine
does) with its exposure number and the first 16 hex digits of its sha256, and the
flow's result lists the inputs in full.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
from astropy.io import fits

from schemas.exposure import ExposureSpec, ImageType, StackMethod
from schemas.instrument import CcdConfig, InstrumentConfig
from schemas.processing import MasterFrames, ProcessingConfig
from schemas.products import Product
from schemas.results import ExposureResult
from tasks.files.fits_cards import Card
from tasks.files.fits_files import ImagePart, write_fits
from tasks.files.manifest import append_manifest
from tasks.files.publish import WrittenFile
from tasks.processing.ccd_products import process_raw
from tasks.processing.masters import IMAGETYP
from tasks.write import night_folder

if TYPE_CHECKING:
    from distributed import Client

FloatImage = npt.NDArray[np.float32]

BAND_ROWS = 256
"""Rows combined at a time: bounds memory to frames x 256 rows."""

NAME_CHARS = 50
"""File names in cards keep their last 50 characters, so value and comment fit a card."""

MAX_LISTED = 999
"""IMCMBnnn has three digits."""


@dataclass(frozen=True, slots=True)
class MasterInput:
    """One CCD image that goes into a master."""

    path: Path
    ccd: str
    expnum: int
    exptime: float
    sha256: str


@dataclass(frozen=True, slots=True)
class CombinedCcd:
    """One CCD's master pixels and what went into them."""

    ccd: str
    data: FloatImage
    ccdsum: str
    bunit: str
    corrections: dict[str, str]
    """Header cards of the corrections applied to the inputs (ZEROCOR, DARKCOR)."""
    seconds: float


def _ccd_hdu(hdus: fits.HDUList, ccd: str, path: Path) -> fits.ImageHDU:
    """The HDU holding ``ccd``'s image, in any of our layouts (per CCD, MEF, compressed)."""
    for hdu in hdus:
        if hdu.is_image and hdu.header.get("NAXIS") == 2 and hdu.header.get("CCDNAME") == ccd:
            return hdu
    raise ValueError(f"{path.name}: no image of CCD {ccd}")


@dataclass(frozen=True, slots=True)
class RawChain:
    """How raw inputs become images a master can combine: the instrument's chain
    without masters and user steps, and each CCD's config (gains, saturation)."""

    processing: ProcessingConfig
    ccds: dict[str, CcdConfig]

    @classmethod
    def of(cls, instrument: InstrumentConfig) -> RawChain:
        chain = instrument.processing.model_copy(update={"masters": MasterFrames(), "steps": []})
        ccds = {ccd.name: ccd for c in instrument.controllers for ccd in c.ccds}
        return cls(chain, ccds)


_KIND_TYPES = {"bias": ImageType.BIAS, "dark": ImageType.DARK, "flat": ImageType.FLAT}


def _from_raw(
    hdu: fits.ImageHDU, item: MasterInput, kind: str, chain: RawChain
) -> tuple[FloatImage, str]:
    """A raw input put through the chain (module docstring); its image and BUNIT."""
    # Read again without memory mapping: astropy cannot map BZERO-scaled (unsigned)
    # integers, and the whole frame is needed anyway.
    with fits.open(item.path, memmap=False) as again:
        pixels = np.asarray(_ccd_hdu(again, item.ccd, item.path).data)
    spec = ExposureSpec(
        image_type=_KIND_TYPES[kind], exptime=0.0 if kind == "bias" else max(item.exptime, 0.0)
    )
    image = process_raw(pixels, hdu.header, chain.ccds[item.ccd], spec, chain.processing)
    return image.data, image.bunit


def _band(array: FloatImage | fits.ImageHDU, rows: slice) -> FloatImage:
    if isinstance(array, np.ndarray):
        return array[rows].astype(np.float32)
    return np.asarray(array.section[rows, :], dtype=np.float32)


def _master_pixels(path: Path | None, ccd: str) -> FloatImage | None:
    if path is None:
        return None
    with fits.open(path) as hdus:
        return np.asarray(hdus[ccd].data, dtype=np.float32)


def combine_ccd(
    inputs: Sequence[MasterInput],
    kind: str,
    method: StackMethod,
    bias: Path | None = None,
    dark: Path | None = None,
    raw_chain: RawChain | None = None,
) -> CombinedCcd:
    """Runs on a worker: reduce and combine one CCD's input images (module docstring).

    Raw inputs (PRODUCT raw) need ``raw_chain``: they are put through it first.
    """
    start = time.perf_counter()
    if not inputs:
        raise ValueError(f"master {kind}: no input frames")
    ccd = inputs[0].ccd
    with contextlib.ExitStack() as files:
        opened = [files.enter_context(fits.open(i.path, memmap=True)) for i in inputs]
        hdus: list[FloatImage | fits.ImageHDU] = []
        shapes, sums, units = set(), set(), set()
        for handle, item in zip(opened, inputs, strict=True):
            hdu = _ccd_hdu(handle, ccd, item.path)
            sums.add(str(hdu.header.get("CCDSUM", "1 1")))
            if handle[0].header.get("PRODUCT") == Product.RAW.value:
                if raw_chain is None:
                    raise ValueError(f"{item.path.name}: a raw frame, and no chain to process it")
                image, unit = _from_raw(hdu, item, kind, raw_chain)
                hdus.append(image)
                shapes.add(image.shape)
                units.add(unit)
            else:
                hdus.append(hdu)
                shapes.add((hdu.header["NAXIS2"], hdu.header["NAXIS1"]))
                units.add(str(hdu.header.get("BUNIT", "adu")))
        if len(shapes) > 1 or len(sums) > 1 or len(units) > 1:
            raise ValueError(
                f"master {kind} of {ccd}: inputs differ in shape, binning or unit "
                f"({sorted(shapes)}, {sorted(sums)}, {sorted(units)})"
            )
        had_bias = all(not isinstance(h, np.ndarray) and "ZEROCOR" in h.header for h in hdus)
        had_dark = all(not isinstance(h, np.ndarray) and "DARKCOR" in h.header for h in hdus)
        bias_px = _master_pixels(bias, ccd) if kind != "bias" and not had_bias else None
        dark_px = _master_pixels(dark, ccd) if kind == "flat" and not had_dark else None
        corrections: dict[str, str] = {}
        if bias_px is not None and bias is not None:
            corrections["ZEROCOR"] = bias.name
        if dark_px is not None and dark is not None:
            corrections["DARKCOR"] = dark.name

        def reduced(index: int, rows: slice) -> FloatImage:
            band = _band(hdus[index], rows)
            if bias_px is not None:
                band -= bias_px[rows]
            if dark_px is not None:
                band -= dark_px[rows] * np.float32(inputs[index].exptime)
            if kind == "dark":
                band /= np.float32(inputs[index].exptime)
            return band

        height, width = next(iter(shapes))
        scales = [1.0] * len(inputs)
        if kind == "flat":
            scales = [float(np.median(reduced(i, slice(0, height)))) for i in range(len(inputs))]
            if any(scale <= 0 for scale in scales):
                raise ValueError(f"master flat of {ccd}: a frame has no positive signal")
        out = np.empty((height, width), dtype=np.float32)
        for r0 in range(0, height, BAND_ROWS):
            rows = slice(r0, min(r0 + BAND_ROWS, height))
            cube = np.stack([reduced(i, rows) / np.float32(scales[i]) for i in range(len(inputs))])
            out[rows] = _combine(cube, method)
    if kind == "flat":
        out /= np.float32(np.median(out))
    return CombinedCcd(
        ccd,
        out,
        sums.pop(),
        units.pop() + ("/s" if kind == "dark" else ""),
        corrections,
        time.perf_counter() - start,
    )


def _combine(cube: FloatImage, method: StackMethod) -> FloatImage:
    if method is StackMethod.MEDIAN:
        return np.median(cube, axis=0).astype(np.float32)
    if method is StackMethod.MEAN:
        return np.asarray(cube.mean(axis=0, dtype=np.float32))
    return np.asarray(cube.sum(axis=0, dtype=np.float32))


@dataclass(frozen=True, slots=True)
class BuiltMaster:
    """A master file on disk and the exposures that went into it."""

    kind: str
    filter: str
    file: WrittenFile
    expnums: tuple[int, ...]
    seconds: float


def master_name(
    instrument: InstrumentConfig, kind: str, filter_name: str, expnums: Sequence[int]
) -> str:
    """``{instrument}-master-{kind}[-{filter}]-{first}-{last}.fits``: exposure numbers are
    never reused, so the name of a new master never collides with an older one."""
    label = f"{kind}-{filter_name}" if kind == "flat" else kind
    return f"{instrument.name}-master-{label}-{min(expnums):08d}-{max(expnums):08d}.fits"


def _provenance_cards(inputs: Sequence[MasterInput]) -> list[Card]:
    """IMCMBnnn per input file (one CCD's list stands for all: same exposures)."""
    cards: list[Card] = []
    for number, item in enumerate(inputs[:MAX_LISTED], start=1):
        comment = f"EXPNUM {item.expnum} sha256 {item.sha256[:16]}"
        cards.append((f"IMCMB{number:03d}", item.path.name[-40:], comment))
    if len(inputs) > MAX_LISTED:
        cards.append(("COMMENT", f"{len(inputs) - MAX_LISTED} more inputs not listed", ""))
    return cards


def write_master(
    instrument: InstrumentConfig,
    kind: str,
    filter_name: str,
    method: StackMethod,
    combined: Sequence[CombinedCcd],
    inputs: dict[str, list[MasterInput]],
    when: datetime,
) -> WrittenFile:
    """One master file: primary header with the provenance, one extension per CCD."""
    first_ccd = inputs[combined[0].ccd]
    expnums = [item.expnum for item in first_ccd]
    folder = night_folder(instrument, when)
    folder.mkdir(parents=True, exist_ok=True)
    primary: list[Card] = [
        ("IMAGETYP", IMAGETYP[kind], "master calibration frame"),
        ("INSTRUME", instrument.name, "instrument"),
        ("FILTER", filter_name, "filter of the inputs"),
        ("NCOMBINE", len(first_ccd), "frames combined"),
        ("COMBMETH", method.value, "how the frames were combined"),
        ("DATE", when.strftime("%Y-%m-%dT%H:%M:%S"), "UTC time the master was built"),
        ("ORIGIN", "ccdflow", "software that wrote this file"),
        *_provenance_cards(first_ccd),
    ]
    parts = []
    for ccd in combined:
        cards: list[Card] = [
            ("CCDNAME", ccd.ccd, "CCD name"),
            ("CCDSUM", ccd.ccdsum, "binning of the inputs"),
            ("BUNIT", ccd.bunit, "unit of the pixel values"),
            ("QMEDIAN", round(float(np.median(ccd.data)), 6), "median of the master"),
            ("QSTD", round(float(np.std(ccd.data)), 6), "standard deviation of the master"),
        ]
        cards += [(key, name[-NAME_CHARS:], "master used") for key, name in ccd.corrections.items()]
        parts.append(ImagePart(data=ccd.data, cards=cards, extname=ccd.ccd))
    path = folder / master_name(instrument, kind, filter_name, expnums)
    written = write_fits(path, parts, primary_cards=primary)
    if instrument.storage.manifest:
        append_manifest(folder, [written])
    return written


async def build_master(
    client: Client,
    instrument: InstrumentConfig,
    kind: str,
    filter_name: str,
    method: StackMethod,
    inputs: dict[str, list[MasterInput]],
    when: datetime,
    *,
    bias: Path | None = None,
    dark: Path | None = None,
) -> BuiltMaster:
    """Combine every CCD on the Dask workers, then write the master file here."""
    start = time.perf_counter()
    chain = RawChain.of(instrument)
    futures = [
        client.submit(combine_ccd, items, kind, method, bias, dark, chain, pure=False)
        for items in inputs.values()
    ]
    try:
        combined: list[CombinedCcd] = await asyncio.to_thread(client.gather, futures)
    except BaseException:
        client.cancel(futures)  # type: ignore[no-untyped-call]
        raise
    written = await asyncio.to_thread(
        write_master, instrument, kind, filter_name, method, combined, inputs, when
    )
    expnums = tuple(item.expnum for item in next(iter(inputs.values())))
    return BuiltMaster(kind, filter_name, written, expnums, time.perf_counter() - start)


@dataclass(frozen=True, slots=True)
class MasterGroup:
    """The exposures that make one master: a kind and, for flats, a filter."""

    kind: str
    filter: str
    inputs: dict[str, list[MasterInput]]
    """CCD -> its images, in exposure order."""


def master_groups(
    specs: Sequence[ExposureSpec],
    results: Sequence[ExposureResult],
    ccds: Sequence[str],
    product: Product = Product.PROCESSED,
) -> list[MasterGroup]:
    """Group a calibration set's exposures into masters: bias, dark, then flats by filter.

    ``results`` are in the order ``specs`` expand to (``count`` exposures each); only
    their files of ``product`` are inputs. Arcs make no master. A CCD missing from an
    exposure (a controller that failed) is left out of that exposure's inputs only.
    """
    kinds = {ImageType.BIAS: "bias", ImageType.DARK: "dark", ImageType.FLAT: "flat"}
    expected = [spec for spec in specs for _ in range(spec.count)]
    if len(expected) != len(results):
        raise ValueError(f"{len(results)} results for {len(expected)} planned exposures")
    groups: dict[tuple[str, str], dict[str, list[MasterInput]]] = {}
    for spec, result in zip(expected, results, strict=True):
        kind = kinds.get(spec.image_type)
        if kind is None:
            continue
        filter_name = (spec.filter or "none") if kind == "flat" else "none"
        group = groups.setdefault((kind, filter_name), {ccd: [] for ccd in ccds})
        for record in (r for r in result.files if r.product is product):
            for ccd in ccds if record.ccd == "all" else [record.ccd]:
                group[ccd].append(
                    MasterInput(
                        record.path.absolute(), ccd, result.expnum, result.exptime, record.sha256
                    )
                )
    order = {"bias": 0, "dark": 1, "flat": 2}
    return [
        MasterGroup(kind, filter_name, {ccd: items for ccd, items in inputs.items() if items})
        for (kind, filter_name), inputs in sorted(groups.items(), key=lambda g: order[g[0][0]])
    ]
