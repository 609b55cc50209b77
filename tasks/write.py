"""Stage 6: write an exposure's files: per product, one FITS per CCD or one MEF.

The raw frame as read is written first (by default the only product), then the
processed image when the instrument asks for it; each processed file names its raw
file and that file's sha256 (RAWFILE, RAWSHA). Names come from the product's template,
in the folder of the observing night; headers from tasks/headers/header.py; the bytes from
tasks/files/fits_files.py (astropy or fitsio engine, optional RICE_1 compression, lossless
for the raw integers, CHECKSUM/DATASUM, temp file + fsync + link so an existing file is
never overwritten). Each night's SHA256SUMS manifest
gets the new files. Retried once: files of this exposure already complete are kept.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from astropy.io import fits
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from schemas.exposure import ExposureSpec
from schemas.instrument import CcdConfig, FileLayout, InstrumentConfig, StorageConfig
from schemas.naming import mjd_of, render, sjd_of
from schemas.products import Product
from schemas.results import FileRecord
from tasks.files.fits_cards import Card
from tasks.files.fits_files import ImagePart, write_fits
from tasks.files.manifest import append_manifest
from tasks.files.publish import WrittenFile
from tasks.headers.header import (
    ExposureFacts,
    ccd_cards,
    configured_cards,
    exposure_cards,
    raw_ccd_cards,
)
from tasks.post_process import CcdImage
from tasks.processing.raw_frames import RawCcd


@dataclass(frozen=True, slots=True)
class CcdProduct:
    """One CCD of an exposure: its raw frame(s) as read and/or its processed image.

    ``raw`` holds one frame per readout (a stacked exposure has several); ``image`` is
    the processed image (stacked frames combined), None when it is not written.
    """

    ccd: CcdConfig
    controller: str
    buffer: int
    raw: tuple[RawCcd, ...] = ()
    image: CcdImage | None = None

    @property
    def stats(self) -> dict[str, float]:
        """Quick-look statistics: of the processed image when there is one."""
        if self.image is not None:
            return dict(self.image.stats)
        return dict(self.raw[0].stats) if self.raw else {}


def night_folder(instrument: InstrumentConfig, when: datetime) -> Path:
    return instrument.storage.data_root / instrument.storage.night_rule.folder(when)


def file_name(
    instrument: InstrumentConfig,
    spec: ExposureSpec,
    expnum: int,
    when: datetime,
    ccd: str,
    product: Product = Product.RAW,
) -> str:
    return render(
        instrument.storage.template(product),
        instrument=instrument.name,
        ccd=ccd,
        expnum=expnum,
        mjd=int(mjd_of(when)),
        sjd=sjd_of(when),
        date=instrument.storage.night_rule.folder(when),
        imagetyp=spec.image_type.value,
        object=spec.object_name or "none",
    )


@dataclass(frozen=True, slots=True)
class PlannedFile:
    """A file an exposure will write: its product, its CCD ("all" for a MEF), its path."""

    product: Product
    ccd: str
    path: Path


def planned_files(
    instrument: InstrumentConfig, spec: ExposureSpec, expnum: int, when: datetime
) -> list[PlannedFile]:
    """Every file one exposure will write, raw before processed: one per CCD and
    product, or one multi-extension file per product (CCD "all")."""
    folder = night_folder(instrument, when)
    ccds = ["all"] if instrument.storage.layout is FileLayout.MEF else instrument.ccd_names
    return [
        PlannedFile(product, ccd, folder / file_name(instrument, spec, expnum, when, ccd, product))
        for product in instrument.storage.products
        for ccd in ccds
    ]


def exposure_paths(
    instrument: InstrumentConfig, spec: ExposureSpec, expnum: int, when: datetime
) -> list[Path]:
    """Every file one exposure will write (every product)."""
    return [planned.path for planned in planned_files(instrument, spec, expnum, when)]


def _configured(
    product: CcdProduct, facts: ExposureFacts, instrument: InstrumentConfig
) -> tuple[list[Card], list[str]]:
    return configured_cards(
        instrument.header.cards, facts, instrument, product.ccd, product.controller
    )


def _raw_parts(
    product: CcdProduct, facts: ExposureFacts, instrument: InstrumentConfig, mef: bool
) -> tuple[list[ImagePart], list[str]]:
    """One image per frame read: EXTNAME the CCD in a MEF, FRAMEn for stacked frames."""
    configured, warnings = _configured(product, facts, instrument)
    stacked = len(product.raw) > 1
    parts = []
    for index, raw in enumerate(product.raw, start=1):
        cards = [
            *raw_ccd_cards(raw, product.ccd, product.controller, product.buffer, facts),
            *configured,
        ]
        if stacked:
            cards.insert(1, ("FRAMENUM", index, f"frame {index} of {len(product.raw)} read"))
        name = None
        if mef or stacked:
            name = product.ccd.name if not stacked else f"{product.ccd.name}.{index}"
        parts.append(ImagePart(data=raw.data, cards=cards, extname=name))
    return parts, warnings


def _processed_part(
    product: CcdProduct,
    facts: ExposureFacts,
    instrument: InstrumentConfig,
    extname: str | None,
) -> tuple[ImagePart, list[str]]:
    assert product.image is not None
    configured, warnings = _configured(product, facts, instrument)
    cards: list[Card] = [
        *ccd_cards(product.image, product.ccd, product.controller, product.buffer, facts),
        *configured,
    ]
    return ImagePart(data=product.image.data, cards=cards, extname=extname), warnings


def _provenance(raw_file: WrittenFile | None) -> list[Card]:
    """The raw file a processed image was made from, and its sha256 (whole digest)."""
    if raw_file is None:
        return [("RAWFILE", "none", "no raw frame written (storage.raw false)")]
    return [
        ("RAWFILE", raw_file.path.name[-50:], "raw frame this image was made from"),
        ("RAWSHA", raw_file.sha256, ""),
    ]


def _write_or_keep(
    path: Path, parts: list[ImagePart], primary: list[Card], expnum: int, storage: StorageConfig
) -> WrittenFile:
    """Write ``path``; on a retry keep a complete file of this same exposure.

    Exposure numbers are never reused, so a file that already carries this EXPNUM was
    written by an earlier attempt of this very write; anything else is refused.
    """
    if path.exists():
        if _expnum_of(path) == expnum:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            return WrittenFile(path=path, sha256=digest, nbytes=path.stat().st_size)
        raise FileExistsError(f"refusing to overwrite {path}")
    return write_fits(
        path,
        parts,
        primary_cards=primary,
        engine=storage.engine,
        compression=storage.compression,
    )


def _expnum_of(path: Path) -> object:
    """EXPNUM of an existing FITS file; None for anything else (never ours)."""
    try:
        with fits.open(path) as existing:
            return existing[0].header.get("EXPNUM")
    except (OSError, ValueError):
        return None


def write_exposure_files(
    products: list[CcdProduct],
    facts: ExposureFacts,
    instrument: InstrumentConfig,
    when: datetime,
) -> tuple[list[FileRecord], list[str]]:
    """Write every file of one exposure, raw first (each processed file names its raw
    file and that file's sha256); return their records and header warnings."""
    storage = instrument.storage
    folder = night_folder(instrument, when)
    folder.mkdir(parents=True, exist_ok=True)
    common = exposure_cards(facts, instrument)
    mef = storage.layout is FileLayout.MEF
    written: list[tuple[WrittenFile, str, Product]] = []
    warnings: list[str] = []

    def path_of(ccd: str, product: Product) -> Path:
        return folder / file_name(instrument, facts.spec, facts.expnum, when, ccd, product)

    groups = [("all", products)] if mef else [(p.ccd.name, [p]) for p in products]
    raw_files: dict[str, WrittenFile] = {}
    if storage.raw:
        for ccd, group in groups:
            parts = []
            for product in group:
                if not product.raw:
                    raise ValueError(f"{product.ccd.name}: no raw frame to write")
                more, notes = _raw_parts(product, facts, instrument, mef)
                parts += more
                warnings += notes
            primary = [*common, ("PRODUCT", Product.RAW.value, "raw frame(s) as read")]
            file = _write_or_keep(path_of(ccd, Product.RAW), parts, primary, facts.expnum, storage)
            raw_files[ccd] = file
            written.append((file, ccd, Product.RAW))
    if storage.processed:
        for ccd, group in groups:
            parts = []
            for product in group:
                if product.image is None:
                    raise ValueError(f"{product.ccd.name}: no processed image to write")
                part, notes = _processed_part(
                    product, facts, instrument, product.ccd.name if mef else None
                )
                parts.append(part)
                warnings += notes
            primary = [
                *common,
                ("PRODUCT", Product.PROCESSED.value, "processed image(s)"),
                *_provenance(raw_files.get(ccd)),
            ]
            path = path_of(ccd, Product.PROCESSED)
            written.append(
                (
                    _write_or_keep(path, parts, primary, facts.expnum, storage),
                    ccd,
                    Product.PROCESSED,
                )
            )
    if storage.manifest:
        append_manifest(folder, [w for w, _, _ in written])
    records = [
        FileRecord(path=w.path, ccd=ccd, sha256=w.sha256, nbytes=w.nbytes, product=product)
        for w, ccd, product in written
    ]
    return records, sorted(set(warnings))


@task(name="write", cache_policy=NO_CACHE, persist_result=False, retries=1, retry_delay_seconds=1)
async def write_exposure(
    products: list[CcdProduct],
    facts: ExposureFacts,
    instrument: InstrumentConfig,
    when: datetime,
) -> list[FileRecord]:
    """Write the exposure's files in a worker thread (the event loop stays free)."""
    records, warnings = await asyncio.to_thread(
        write_exposure_files, products, facts, instrument, when
    )
    logger = get_run_logger()
    for warning in warnings:
        logger.warning("header card left empty: %s", warning)
    return records
