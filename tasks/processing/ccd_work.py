"""Build and write one CCD's products on a Dask worker; only metadata comes back.

Measured (shared/design/prefect.md): shipping pixels back and forth costs more than
the work, so each worker gets its own CCD's columns of the buffer (sliced here, on
the client: serialization then sends only those bytes), builds its raw frame and,
when configured, its processed image (tasks/processing/ccd_products.py), writes the CCD's files
with :func:`tasks.write.write_exposure_files` (the same names, headers, checksums and
manifest as the serial path: the same cards and pixels) and returns a
:class:`CcdOutcome` of a few hundred bytes, plus the CCD's quick-look thumbnail when
the instrument makes quick-looks (tasks/processing/quicklook.py: block-averaged to at
most ``storage.quicklook_size`` pixels across the whole mosaic).

Only the per-CCD file layout runs here. A multi-extension file holds every CCD of the
exposure in one file written atomically (temp file, fsync, link), so either the
pixels travel back to one writer (what this module exists to avoid) or several
workers write into one file (no safe way to). MEF instruments keep the serial path;
:func:`supports_layout` says which path applies. Stacked exposures (several readouts
combined before writing) also keep it, as the combination needs every frame's image;
so do instruments with an HDF5 archive, which stores the pixels from the flow.

Workers write to ``storage.data_root``; a relative root is made absolute on the
client first, so a worker started in another folder writes where the flow expects.
Workers on other machines must see that folder at the same path.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from schemas.instrument import FileLayout, InstrumentConfig
from schemas.results import FileRecord
from tasks.control.instrument import ControllerPlan
from tasks.headers.header import ExposureFacts
from tasks.processing.ccd_products import CcdSource, ccd_slice, products_of
from tasks.processing.quicklook import MosaicPlan, Thumbnail, ccd_thumbnail
from tasks.processing.raw_frames import region_in_slice
from tasks.write import CcdProduct, write_exposure_files

if TYPE_CHECKING:
    from distributed import Client, Future

__all__ = ["CcdOutcome", "process_exposure_on_dask", "region_in_slice", "supports_layout"]

RawPixels = npt.NDArray[np.uint16] | npt.NDArray[np.uint32]


@dataclass(frozen=True, slots=True)
class CcdOutcome:
    """What a worker reports for one CCD: its files and quick-look numbers, and no
    pixels but a small quick-look thumbnail when one was asked for."""

    files: tuple[FileRecord, ...]
    """One per product written (raw first)."""
    stats: dict[str, float]
    overscan_levels: dict[str, float]
    seconds: float
    warnings: tuple[str, ...]
    """Header cards left empty (missing telemetry), for the flow to log."""
    thumbnail: Thumbnail | None = None
    thumbnail_problem: str | None = None
    """Why no thumbnail was made when one was asked for (the files are written anyway)."""


def supports_layout(instrument: InstrumentConfig) -> bool:
    """True when each CCD's file can be written by the worker that processed it."""
    return instrument.storage.layout is FileLayout.PER_CCD


def require_supported_layout(instrument: InstrumentConfig) -> None:
    """ValueError naming the layout when workers cannot write this instrument's files."""
    if not supports_layout(instrument):
        raise ValueError(
            f"{instrument.name}: the {instrument.storage.layout.value} layout writes all CCDs "
            "into one file; use the serial post-process and write path for it"
        )


def process_and_write_ccd(
    raw: RawPixels,
    source: CcdSource,
    controller: str,
    buffer: int,
    facts: ExposureFacts,
    instrument: InstrumentConfig,
    when: datetime,
    quicklook: MosaicPlan | None = None,
) -> CcdOutcome:
    """Runs on a worker: build one CCD's products from its slice of the buffer
    (:func:`tasks.processing.ccd_products.ccd_slice`) and write their files; then,
    given a ``quicklook`` plan, its thumbnail (a failure there spares the files)."""
    require_supported_layout(instrument)
    start = time.perf_counter()
    raw_ccd, image = products_of(raw, source, facts.spec, instrument.storage, instrument.processing)
    product = CcdProduct(source.ccd, controller, buffer, raw=(raw_ccd,), image=image)
    records, warnings = write_exposure_files([product], facts, instrument, when)
    thumbnail, problem = None, None
    if quicklook is not None:
        try:
            thumbnail = ccd_thumbnail(product, quicklook)
        except Exception as exc:  # the CCD's files are written: they are what matters
            problem = f"{source.ccd.name}: {type(exc).__name__}: {exc}"
    return CcdOutcome(
        files=tuple(records),
        stats=product.stats,
        overscan_levels={amp.name: amp.overscan_level for amp in image.amplifiers}
        if image is not None
        else {},
        seconds=time.perf_counter() - start,
        warnings=tuple(warnings),
        thumbnail=thumbnail,
        thumbnail_problem=problem,
    )


def _checked(
    buffer: RawPixels, plan: ControllerPlan, facts: ExposureFacts, instrument: InstrumentConfig
) -> InstrumentConfig:
    """Refuse what workers cannot do; the instrument with an absolute data root."""
    require_supported_layout(instrument)
    if instrument.archive.hdf5:
        raise ValueError(
            f"{instrument.name} appends every exposure's images to an HDF5 archive, which "
            "needs the pixels in the flow; use the serial post-process and write path"
        )
    if facts.spec.frames_per_exposure > 1:
        raise ValueError(
            f"exposure {facts.expnum} stacks {facts.spec.frames_per_exposure} readouts: "
            "they are combined before writing, which needs every frame's images together"
        )
    if buffer.shape != plan.buffer_shape:
        raise ValueError(
            f"{plan.config.name}: buffer shape {buffer.shape} does not match the ACF's "
            f"{plan.buffer_shape}"
        )
    root = instrument.storage.data_root
    if root.is_absolute():
        return instrument
    return instrument.with_overrides(data_root=root.absolute())


def _submit(
    client: Client,
    buffer: RawPixels,
    plan: ControllerPlan,
    facts: ExposureFacts,
    instrument: InstrumentConfig,
    when: datetime,
    buffer_number: int,
    quicklook: MosaicPlan | None,
) -> list[Future[CcdOutcome]]:
    """Scatter each CCD's slice to a worker and submit its task there (blocking)."""
    sources = [CcdSource(i, ccd, plan) for i, ccd in enumerate(plan.config.ccds)]
    slices = [ccd_slice(buffer, source) for source in sources]
    # hash=False: tokenizing 32 MB per CCD to name the data would cost more than
    # sending it, and every buffer is new anyway.
    data = client.scatter(slices, direct=True, hash=False)  # type: ignore[no-untyped-call]
    tag = uuid.uuid4().hex[:8]
    return [
        client.submit(
            process_and_write_ccd,
            pixels,
            source,
            plan.config.name,
            buffer_number,
            facts,
            instrument,
            when,
            quicklook,
            # Readable in the dashboard; unique, because a retried exposure must run again.
            key=f"ccd-{instrument.name}-{facts.expnum:08d}-{source.ccd.name}-{tag}",
        )
        for pixels, source in zip(data, sources, strict=True)
    ]


async def process_exposure_on_dask(
    client: Client,
    buffer: RawPixels,
    plan: ControllerPlan,
    facts: ExposureFacts,
    instrument: InstrumentConfig,
    when: datetime,
    buffer_number: int,
    quicklook: MosaicPlan | None = None,
) -> list[CcdOutcome]:
    """Process and write every CCD of one controller's buffer on ``client``'s workers
    (and each one's quick-look thumbnail there, given a ``quicklook`` plan).

    ``client`` is a synchronous distributed.Client (see tasks/processing/dask_cluster.py): its
    calls block, so they run in a thread and the event loop stays free. Outcomes come
    in the config's CCD order. If this coroutine is cancelled or a CCD fails, the
    remaining tasks are cancelled (a CCD already running finishes its file).
    """
    instrument = _checked(buffer, plan, facts, instrument)
    futures = await asyncio.to_thread(
        _submit, client, buffer, plan, facts, instrument, when, buffer_number, quicklook
    )
    try:
        outcomes: list[CcdOutcome] = await asyncio.to_thread(client.gather, futures)
    except BaseException:
        client.cancel(futures)  # type: ignore[no-untyped-call]
        raise
    return outcomes
