"""Stage 6: write an exposure's files: one FITS per CCD, or one multi-extension FITS.

Names come from the instrument's file-name template, in the folder of the observing
night; headers from tasks/header.py; the bytes from tasks/fits_files.py (astropy or
fitsio engine, optional RICE_1 compression, CHECKSUM/DATASUM, temp file + fsync +
link so an existing file is never overwritten). Each night's SHA256SUMS manifest
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
from schemas.results import FileRecord
from tasks.fits_cards import Card
from tasks.fits_files import ImagePart, write_fits
from tasks.header import ExposureFacts, ccd_cards, configured_cards, exposure_cards
from tasks.manifest import append_manifest
from tasks.post_process import CcdImage
from tasks.publish import WrittenFile


@dataclass(frozen=True, slots=True)
class CcdProduct:
    """One CCD's processed image and where it came from."""

    image: CcdImage
    ccd: CcdConfig
    controller: str
    buffer: int


def night_folder(instrument: InstrumentConfig, when: datetime) -> Path:
    return instrument.storage.data_root / instrument.storage.night_rule.folder(when)


def file_name(
    instrument: InstrumentConfig, spec: ExposureSpec, expnum: int, when: datetime, ccd: str
) -> str:
    return render(
        instrument.storage.file_template,
        instrument=instrument.name,
        ccd=ccd,
        expnum=expnum,
        mjd=int(mjd_of(when)),
        sjd=sjd_of(when),
        date=instrument.storage.night_rule.folder(when),
        imagetyp=spec.image_type.value,
        object=spec.object_name or "none",
    )


def exposure_files(
    instrument: InstrumentConfig, spec: ExposureSpec, expnum: int, when: datetime
) -> list[tuple[str, Path]]:
    """(CCD, path) of every file one exposure will write: one per CCD, or one
    multi-extension file (CCD "all")."""
    folder = night_folder(instrument, when)
    ccds = ["all"] if instrument.storage.layout is FileLayout.MEF else instrument.ccd_names
    return [(ccd, folder / file_name(instrument, spec, expnum, when, ccd)) for ccd in ccds]


def exposure_paths(
    instrument: InstrumentConfig, spec: ExposureSpec, expnum: int, when: datetime
) -> list[Path]:
    """Every file one exposure will write (one per CCD, or one multi-extension file)."""
    return [path for _, path in exposure_files(instrument, spec, expnum, when)]


def _ccd_part(
    product: CcdProduct, facts: ExposureFacts, instrument: InstrumentConfig, extname: str | None
) -> tuple[ImagePart, list[str]]:
    configured, warnings = configured_cards(
        instrument.header.cards, facts, instrument, product.ccd, product.controller
    )
    cards: list[Card] = [
        *ccd_cards(product.image, product.ccd, product.controller, product.buffer, facts),
        *configured,
    ]
    return ImagePart(data=product.image.data, cards=cards, extname=extname), warnings


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
    """Write every file of one exposure; return their records and header warnings."""
    storage = instrument.storage
    folder = night_folder(instrument, when)
    folder.mkdir(parents=True, exist_ok=True)
    common = exposure_cards(facts, instrument)
    written: list[tuple[WrittenFile, str]] = []
    warnings: list[str] = []
    if storage.layout is FileLayout.MEF:
        parts = []
        for product in products:
            part, notes = _ccd_part(product, facts, instrument, extname=product.ccd.name)
            parts.append(part)
            warnings += notes
        path = exposure_paths(instrument, facts.spec, facts.expnum, when)[0]
        written.append((_write_or_keep(path, parts, common, facts.expnum, storage), "all"))
    else:
        for product in products:
            part, notes = _ccd_part(product, facts, instrument, extname=None)
            warnings += notes
            path = folder / file_name(instrument, facts.spec, facts.expnum, when, product.ccd.name)
            written.append(
                (_write_or_keep(path, [part], common, facts.expnum, storage), product.ccd.name)
            )
    if storage.manifest:
        append_manifest(folder, [w for w, _ in written])
    records = [
        FileRecord(path=w.path, ccd=ccd, sha256=w.sha256, nbytes=w.nbytes) for w, ccd in written
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
