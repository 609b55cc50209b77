"""The FITS guide file of a guide exposure, and both its files in the night's manifest.

Written once the frames are taken, from the HDF5 archive (the record made while the
exposure ran), in DESI's guide-file layout::

    HDU 0  GUIDE      no data; the exposure's cards: INSTRUME, EXPNUM, IMAGETYP,
                      DATE-OBS / MJD-OBS of the first frame, EXPTIME (per frame),
                      CADENCE, STAMPSZ, NFRAMES (frames in the file), FRAMASK,
                      FRAMLATE, FRAMDROP, NCAMERA, the spec's own cards
    per camera, in the exposure's order:
    <NAME>    IMAGE   the stamp cube [frames, nroi, size, size]; CAMERA, CCDNAME,
                      NFRAMES, NROI, ROInX / ROInY (0-based stamp centres)
    <NAME>T   BINTABLE one row per frame: FRAME, DATE-OBS, MJD-OBS, EXPTIME, READEND,
                      ARCHIVED, LATENCY, STARTLAG, LATE, CENTX / CENTY / FLUX (a value
                      per stamp) and the header values (CCDTEMP, ...)

Both files are named from the instrument and exposure number, in the night folder
beside the science files; the FITS file is published atomically (never over an
existing file) with CHECKSUM/DATASUM, and both are added to the night's SHA256SUMS.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from astropy.io import fits

from schemas.fits_rules import CardValue
from schemas.instrument import InstrumentConfig
from schemas.naming import mjd_of
from tasks.files.manifest import append_manifest
from tasks.files.publish import WrittenFile, publish_stream
from tasks.write import night_folder

_TABLE_NAMES = {
    "frame": "FRAME",
    "date_obs": "DATE-OBS",
    "mjd_obs": "MJD-OBS",
    "exptime": "EXPTIME",
    "readout_end": "READEND",
    "archived": "ARCHIVED",
    "latency_ms": "LATENCY",
    "start_lag_ms": "STARTLAG",
    "late": "LATE",
    "centroid_x": "CENTX",
    "centroid_y": "CENTY",
    "flux": "FLUX",
}
_UNITS = {
    "EXPTIME": "s",
    "READEND": "s",
    "ARCHIVED": "s",
    "LATENCY": "ms",
    "STARTLAG": "ms",
    "CENTX": "pixel",
    "CENTY": "pixel",
    "FLUX": "adu",
}
_CHUNK = 1 << 20


def guide_paths(instrument: InstrumentConfig, expnum: int, when: datetime) -> tuple[Path, Path]:
    """(HDF5 archive, FITS guide file) of guide exposure ``expnum``."""
    stem = night_folder(instrument, when) / f"{instrument.name}-guide-{expnum:08d}"
    return stem.with_suffix(".h5"), stem.with_suffix(".fits")


@dataclass(frozen=True, slots=True)
class GuideFacts:
    """The exposure's cards that the archive does not hold."""

    instrument: InstrumentConfig
    expnum: int
    exptime: float
    cadence_s: float
    stamp_size: int
    frames_asked: int
    frames_late: int
    frames_dropped: int
    date_obs: datetime | None
    flow_run_id: str | None
    header: Mapping[str, CardValue]


def _primary(facts: GuideFacts, frames: int, cameras: int, archive: str) -> fits.PrimaryHDU:
    inst = facts.instrument
    cards: list[tuple[str, Any, str]] = [
        ("EXTNAME", "GUIDE", "guide exposure"),
        ("INSTRUME", inst.name, "instrument"),
        ("OBSERVAT", inst.observatory, "observatory"),
        ("TELESCOP", inst.telescope, "telescope"),
        ("EXPNUM", facts.expnum, "exposure number"),
        ("IMAGETYP", "guide", "guide and focus frames"),
        ("EXPTIME", facts.exptime, "[s] integration per frame"),
        ("CADENCE", facts.cadence_s, "[s] frame period"),
        ("STAMPSZ", facts.stamp_size, "[pixel] stamp side"),
        ("NFRAMES", frames, "frames in this file"),
        ("FRAMASK", facts.frames_asked, "frames asked for"),
        ("FRAMLATE", facts.frames_late, "frames that started late"),
        ("FRAMDROP", facts.frames_dropped, "frames not archived for every camera"),
        ("NCAMERA", cameras, "guide cameras"),
        ("ARCHIVE", archive, "HDF5 archive of the same frames"),
    ]
    if facts.date_obs is not None:
        cards += [
            ("DATE-OBS", facts.date_obs.isoformat(timespec="milliseconds")[:23], "first frame"),
            ("MJD-OBS", round(mjd_of(facts.date_obs), 9), "MJD of DATE-OBS"),
        ]
    if facts.flow_run_id:
        cards.append(("FLOWRUN", facts.flow_run_id, "Prefect flow run"))
    header = fits.Header([fits.Card(*card) for card in cards])
    for keyword, value in facts.header.items():
        header[keyword] = value
    return fits.PrimaryHDU(header=header)


def _camera_hdus(name: str, group: h5py.Group) -> list[fits.hdu.base.ExtensionHDU]:
    stamps = group["stamps"][:]
    table = group["frames"][:]
    extname = name.upper()
    image = fits.ImageHDU(stamps, name=extname)
    image.header["CAMERA"] = (name, "guide camera (controller)")
    image.header["CCDNAME"] = (str(group.attrs["ccd"]), "its CCD")
    image.header["NFRAMES"] = (int(stamps.shape[0]), "frames of this camera")
    image.header["NROI"] = (int(stamps.shape[1]), "stamps per frame")
    for index, (x, y) in enumerate(zip(group.attrs["roi_x"], group.attrs["roi_y"], strict=True)):
        image.header[f"ROI{index + 1}X"] = (int(x), "stamp centre x (0-based pixel)")
        image.header[f"ROI{index + 1}Y"] = (int(y), "stamp centre y (0-based line)")
    columns = []
    for field in table.dtype.names:
        column = _TABLE_NAMES.get(field, field.upper())
        data = table[field]
        shape = data.shape[1:]
        kind = data.dtype.kind
        if kind == "S":
            fmt = f"{data.dtype.itemsize}A"
        elif kind in "iu":
            fmt = "K" if data.dtype.itemsize == 8 else "B"
        else:
            fmt = f"{int(np.prod(shape)) if shape else ''}D"
        columns.append(fits.Column(name=column, format=fmt, array=data, unit=_UNITS.get(column)))
    return [image, fits.BinTableHDU.from_columns(columns, name=f"{extname}T")]


def build_guide_hdus(archive: Path, cameras: Sequence[str], facts: GuideFacts) -> fits.HDUList:
    """The guide file's HDUs, read from the (closed) archive."""
    with h5py.File(archive, "r") as h5:
        groups = {name: h5[f"cameras/{name}"] for name in cameras if f"cameras/{name}" in h5}
        frames = min((int(g["frames"].shape[0]) for g in groups.values()), default=0)
        hdus: list[Any] = [_primary(facts, frames, len(groups), archive.name)]
        for name, group in groups.items():
            hdus += _camera_hdus(name, group)
    return fits.HDUList(hdus)


def _sha256(path: Path) -> WrittenFile:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return WrittenFile(path=path, sha256=digest.hexdigest(), nbytes=path.stat().st_size)


def publish_guide_files(
    archive: Path, fits_path: Path, cameras: Sequence[str], facts: GuideFacts
) -> list[WrittenFile]:
    """Write the FITS guide file from the closed archive; list both in the manifest."""
    hdus = build_guide_hdus(archive, cameras, facts)
    written = publish_stream(fits_path, lambda stream: hdus.writeto(stream, checksum=True))
    files = [_sha256(archive), written]
    if facts.instrument.storage.manifest:
        append_manifest(archive.parent, files)
    return files
