"""Stage 6: write one FITS file per CCD, safely.

A file is written to a temporary name in the target folder, fsynced, then linked to
its final name; ``link`` fails if that name exists, so an existing file is never
overwritten, and a crash leaves either no file or a complete one (never a torn one).
CHECKSUM and DATASUM let any reader verify the file later.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from dataclasses import dataclass
from datetime import datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from astropy.io import fits
from astropy.time import Time
from prefect import task
from prefect.cache_policies import NO_CACHE

from schemas.instrument import CcdConfig, InstrumentConfig
from schemas.results import FileRecord
from tasks.post_process import CcdImage


def software_version() -> str:
    try:
        return version("ccdflow")
    except PackageNotFoundError:
        return "unknown"


@dataclass(frozen=True, slots=True)
class ExposureFacts:
    """Everything about the exposure that goes into every CCD's header."""

    expnum: int
    image_type: str
    exptime: float
    darktime: float
    date_obs: datetime
    object_name: str | None
    controller: str
    buffer: int
    flow_run_id: str | None


def build_header(
    image: CcdImage, ccd: CcdConfig, facts: ExposureFacts, instrument: InstrumentConfig
) -> fits.Header:
    """The header of one CCD's file. Values only; astropy adds the structural cards."""
    obs = Time(facts.date_obs, scale="utc")
    header = fits.Header()
    header["DATE-OBS"] = (obs.isot, "start of integration (UTC)")
    header["TIMESYS"] = ("UTC", "time scale of DATE-OBS")
    header["MJD-OBS"] = (round(float(obs.mjd), 8), "MJD of start of integration (UTC)")
    header["EXPTIME"] = (round(facts.exptime, 6), "[s] requested integration time")
    header["DARKTIME"] = (round(facts.darktime, 6), "[s] integration start to readout start")
    header["IMAGETYP"] = (facts.image_type, "bias, dark, flat or object")
    if facts.object_name:
        header["OBJECT"] = (facts.object_name, "object name")
    header["EXPNUM"] = (facts.expnum, "exposure number")
    header["OBSERVAT"] = (instrument.observatory, "observatory")
    header["TELESCOP"] = (instrument.telescope, "telescope")
    header["INSTRUME"] = (instrument.name, "instrument")
    header["DETECTOR"] = (ccd.name, "detector")
    header["CCDNAME"] = (ccd.name, "CCD name")
    header["CONTRLR"] = (facts.controller, "Archon controller")
    header["FRAMEBUF"] = (facts.buffer, "controller frame buffer read")
    header["GAIN"] = (ccd.gain, "[e-/ADU] gain")
    header["RDNOISE"] = (ccd.read_noise, "[e-] read noise")
    header["BUNIT"] = ("adu", "overscan-subtracted counts")
    if image.datasec is not None:
        header["DATASEC"] = (image.datasec.fits(), "science pixels")
        header["TRIMSEC"] = (image.datasec.fits(), "section to keep after trimming")
    if image.biassec is not None:
        header["BIASSEC"] = (image.biassec.fits(), "overscan pixels")
    header["NAMPS"] = (len(image.amplifiers), "amplifiers read")
    for amp in image.amplifiers:
        header[f"DATASEC{amp.name}"] = (amp.data.fits(), f"science pixels of amplifier {amp.name}")
        if amp.bias is not None:
            header[f"BIASSEC{amp.name}"] = (amp.bias.fits(), f"overscan of amplifier {amp.name}")
        header[f"OVRSCN{amp.name}"] = (
            round(amp.overscan_level, 3),
            f"[adu] median overscan subtracted, amp {amp.name}",
        )
    header["ORIGIN"] = ("ccdflow", "software that wrote this file")
    header["SWVERS"] = (software_version(), "ccdflow version")
    if facts.flow_run_id:
        header["RUNID"] = (facts.flow_run_id, "Prefect flow-run id")
    return header


def exposure_path(instrument: InstrumentConfig, night: str, ccd: str, expnum: int) -> Path:
    """Where one CCD's file of one exposure goes."""
    return instrument.storage.data_root / night / f"{instrument.name}-{ccd}-{expnum:08d}.fits"


def write_fits_no_overwrite(hdul: fits.HDUList, path: Path) -> FileRecord:
    """Write ``hdul`` to ``path`` atomically; FileExistsError if ``path`` exists."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        raise FileExistsError(f"refusing to overwrite {path}")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with os.fdopen(fd, "wb") as handle:
            hdul.writeto(handle, checksum=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.link(tmp, path)  # atomic, and fails instead of replacing an existing file
    finally:
        tmp.unlink(missing_ok=True)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return FileRecord(path=path, ccd="", sha256=digest.hexdigest(), nbytes=path.stat().st_size)


def write_ccd(
    image: CcdImage, ccd: CcdConfig, facts: ExposureFacts, instrument: InstrumentConfig, path: Path
) -> FileRecord:
    """Write one CCD's image with its header; return the file's record."""
    hdu = fits.PrimaryHDU(data=image.data, header=build_header(image, ccd, facts, instrument))
    record = write_fits_no_overwrite(fits.HDUList([hdu]), path)
    return record.model_copy(update={"ccd": ccd.name})


@task(name="write", cache_policy=NO_CACHE, persist_result=False, retries=1, retry_delay_seconds=1)
async def write(
    images: list[CcdImage],
    ccds: list[CcdConfig],
    facts: ExposureFacts,
    instrument: InstrumentConfig,
    night: str,
) -> list[FileRecord]:
    """Write every CCD of one controller. A retry skips files already complete."""
    records = []
    for image, ccd in zip(images, ccds, strict=True):
        path = exposure_path(instrument, night, ccd.name, facts.expnum)
        records.append(
            await asyncio.to_thread(_write_or_reuse, image, ccd, facts, instrument, path)
        )
    return records


def _write_or_reuse(
    image: CcdImage, ccd: CcdConfig, facts: ExposureFacts, instrument: InstrumentConfig, path: Path
) -> FileRecord:
    """On a retry, a file this exposure already wrote completely is kept, not rewritten."""
    if path.exists():
        with fits.open(path, checksum=True) as existing:
            header = existing[0].header
            if header.get("EXPNUM") == facts.expnum and header.get("CCDNAME") == ccd.name:
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                return FileRecord(
                    path=path, ccd=ccd.name, sha256=digest, nbytes=path.stat().st_size
                )
        raise FileExistsError(f"refusing to overwrite {path}")
    return write_ccd(image, ccd, facts, instrument, path)
