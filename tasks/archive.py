"""Stage 7: append each exposure to the sequence's HDF5 archive, as it completes.

One archive per run (sequence or calibration set), beside the night's FITS files:
a cube per CCD of the raw frames as read (their integer samples; or the processed
images, ``archive.product``) and a table of header values per frame
(tasks/files/hdf5_archive.py). It is
created at the first exposure, when the CCD shapes are known, and readable by others
while it grows (SWMR). The FITS files stay the primary product: they are written and
in the manifest before the archive is touched.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from schemas.instrument import InstrumentConfig
from schemas.naming import sanitize
from schemas.products import Product
from tasks.files.hdf5_archive import ColumnKind, SequenceArchive
from tasks.headers.header import ExposureFacts, software_version
from tasks.write import CcdProduct, night_folder

COLUMNS: list[tuple[str, ColumnKind]] = [
    ("imagetyp", "str"),
    ("exptime", "float"),
    ("exptime_measured", "float"),
    ("darktime", "float"),
    ("date_obs", "str"),
    ("date_end", "str"),
    ("time_source", "str"),
    ("filter", "str"),
    ("object", "str"),
    ("ncombine", "int"),
    ("spechash", "str"),
]


class SequenceArchiver:
    """Owns the archive of one run; call :meth:`close` when the run ends."""

    def __init__(self, instrument: InstrumentConfig, run_name: str, run_id: str | None) -> None:
        self.instrument = instrument
        self.run_name = run_name
        self.run_id = run_id
        self.path: Path | None = None
        self._archive: SequenceArchive | None = None

    def append(self, products: list[CcdProduct], facts: ExposureFacts, when: datetime) -> Path:
        frames = pixels_to_archive(products, self.instrument.archive.product)
        if self._archive is None:
            self.path = night_folder(self.instrument, when) / (
                f"{self.instrument.name}-{sanitize(self.run_name)}-{facts.expnum:08d}.h5"
            )
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._archive = SequenceArchive.create(
                self.path,
                {name: (data.shape[0], data.shape[1]) for name, data in frames.items()},
                dtype=next(iter(frames.values())).dtype,
                provenance={
                    "instrument": self.instrument.name,
                    "product": self.instrument.archive.product.value,
                    "run": self.run_name,
                    "flow_run_id": self.run_id or "",
                    "ccdflow_version": software_version(),
                },
                columns=COLUMNS,
            )
        self._archive.append(facts.expnum, frames, _row(facts))
        assert self.path is not None
        return self.path

    def close(self) -> None:
        if self._archive is not None:
            self._archive.close()
            self._archive = None


def pixels_to_archive(products: list[CcdProduct], product: Product) -> dict[str, Any]:
    """Each CCD's image of the archived product: the raw frame as read (its integer
    samples) or the processed image. ValueError for what one cube row cannot hold."""
    frames: dict[str, Any] = {}
    for item in products:
        if product is Product.PROCESSED:
            if item.image is None:
                raise ValueError(f"{item.ccd.name}: no processed image to archive")
            frames[item.ccd.name] = item.image.data
        else:
            if len(item.raw) != 1:
                raise ValueError(
                    f"{item.ccd.name}: {len(item.raw)} raw frames (a stacked exposure); the "
                    "raw archive keeps one frame per exposure, the FITS file keeps them all"
                )
            frames[item.ccd.name] = item.raw[0].data
    return frames


def _row(facts: ExposureFacts) -> dict[str, Any]:
    spec = facts.spec
    summary = facts.time_summary(0.0)
    return {
        "imagetyp": spec.image_type.value,
        "exptime": spec.exptime,
        "exptime_measured": summary.measured_s,
        "darktime": facts.darktime,
        "date_obs": summary.start.isoformat(),
        "date_end": summary.end.isoformat(),
        "time_source": summary.source,
        "filter": spec.filter or "none",
        "object": spec.object_name or "",
        "ncombine": facts.ncombine,
        "spechash": spec.spec_hash(),
    }


@task(name="archive", cache_policy=NO_CACHE, persist_result=False, retries=1, retry_delay_seconds=1)
async def archive(
    archiver: SequenceArchiver, products: list[CcdProduct], facts: ExposureFacts, when: datetime
) -> Path:
    """Append in a worker thread: HDF5 compression and checksums are CPU work.

    Retried once: a failed append leaves the archive as it was, so appending again is
    safe; an append that did land is refused the second time (its expnum is taken).
    """
    return await asyncio.to_thread(archiver.append, products, facts, when)
