"""Post-process and write one CCD on a Dask worker; only metadata comes back.

Measured (shared/design/prefect.md): shipping pixels back and forth costs more than
the work, so each worker gets its own CCD's columns of the buffer (sliced here, on
the client: serialization then sends only those bytes), processes them with
:func:`tasks.post_process.process_ccd`, writes the CCD's FITS file with
:func:`tasks.write.write_exposure_files` (the same names, headers, checksums and
manifest as the serial path: the files are byte-identical) and returns a
:class:`CcdOutcome` of a few hundred bytes.

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
import dataclasses
import time
import uuid
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import numpy.typing as npt
from distributed import Client, Future

from devices.archon.acf import CcdRegion
from schemas.instrument import CcdConfig, FileLayout, InstrumentConfig
from schemas.results import FileRecord
from tasks.header import ExposureFacts
from tasks.instrument import ControllerPlan
from tasks.post_process import ProcessingInputs, ReadoutNumbers, process_ccd
from tasks.write import CcdProduct, write_exposure_files

RawPixels = npt.NDArray[np.uint16] | npt.NDArray[np.uint32]


@dataclass(frozen=True, slots=True)
class CcdOutcome:
    """What a worker reports for one CCD: its file and quick-look numbers, no pixels."""

    file: FileRecord
    stats: dict[str, float]
    overscan_levels: dict[str, float]
    seconds: float
    warnings: tuple[str, ...]
    """Header cards left empty (missing telemetry), for the flow to log."""


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


def _span(part: slice, what: str) -> tuple[int, int]:
    if part.step not in (None, 1) or part.start is None or part.stop is None:
        raise ValueError(f"{what} {part} is not a plain slice with a start and a stop")
    start, stop = int(part.start), int(part.stop)
    if not 0 <= start <= stop:
        raise ValueError(f"{what} {part} is not a forward slice of non-negative indices")
    return start, stop


def _within(part: slice, outer: tuple[int, int], what: str) -> slice:
    start, stop = _span(part, what)
    if not outer[0] <= start <= stop <= outer[1]:
        raise ValueError(f"{what} {start}:{stop} are outside the CCD's {outer[0]}:{outer[1]}")
    return slice(start - outer[0], stop - outer[0])


def region_in_slice(region: CcdRegion) -> CcdRegion:
    """``region`` as seen in its own slice ``buffer[region.buffer_rows, region.buffer_cols]``.

    Amplifier positions in the buffer move by the slice's origin; their places in the
    assembled CCD image do not change. ValueError when an amplifier lies outside the
    CCD's slice (the slice would not hold its pixels).
    """
    rows = _span(region.buffer_rows, "CCD rows")
    cols = _span(region.buffer_cols, "CCD columns")
    amplifiers = tuple(
        dataclasses.replace(
            amp,
            buffer_rows=_within(amp.buffer_rows, rows, f"amplifier {amp.name} rows"),
            buffer_cols=_within(amp.buffer_cols, cols, f"amplifier {amp.name} columns"),
        )
        for amp in region.amplifiers
    )
    return dataclasses.replace(
        region,
        buffer_rows=slice(0, rows[1] - rows[0]),
        buffer_cols=slice(0, cols[1] - cols[0]),
        amplifiers=amplifiers,
    )


def process_and_write_ccd(
    raw: RawPixels,
    region: CcdRegion,
    ccd: CcdConfig,
    controller: str,
    buffer: int,
    numbers: ReadoutNumbers,
    facts: ExposureFacts,
    instrument: InstrumentConfig,
    when: datetime,
) -> CcdOutcome:
    """Runs on a worker: correct one CCD's pixels and write its file.

    ``raw`` is the CCD's slice of the buffer and ``region`` is relative to it (see
    :func:`region_in_slice`).
    """
    require_supported_layout(instrument)
    start = time.perf_counter()
    image = process_ccd(
        raw,
        region,
        ccd.name,
        pixels=numbers.pixels,
        overscan=numbers.overscan,
        lines=numbers.lines,
        inputs=ProcessingInputs(ccd, facts.spec, instrument.processing),
    )
    product = CcdProduct(image, ccd, controller, buffer)
    records, warnings = write_exposure_files([product], facts, instrument, when)
    return CcdOutcome(
        file=records[0],
        stats=dict(image.stats),
        overscan_levels={amp.name: amp.overscan_level for amp in image.amplifiers},
        seconds=time.perf_counter() - start,
        warnings=tuple(warnings),
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
    if buffer.shape != plan.acf.buffer_shape:
        raise ValueError(
            f"{plan.config.name}: buffer shape {buffer.shape} does not match the ACF's "
            f"{plan.acf.buffer_shape}"
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
) -> list[Future[CcdOutcome]]:
    """Scatter each CCD's slice to a worker and submit its task there (blocking)."""
    slices = [buffer[region.buffer_rows, region.buffer_cols] for region in plan.layout]
    # hash=False: tokenizing 32 MB per CCD to name the data would cost more than
    # sending it, and every buffer is new anyway.
    data = client.scatter(slices, direct=True, hash=False)  # type: ignore[no-untyped-call]
    tag = uuid.uuid4().hex[:8]
    return [
        client.submit(
            process_and_write_ccd,
            pixels,
            region_in_slice(region),
            ccd,
            plan.config.name,
            buffer_number,
            ReadoutNumbers.of(plan),
            facts,
            instrument,
            when,
            # Readable in the dashboard; unique, because a retried exposure must run again.
            key=f"ccd-{instrument.name}-{facts.expnum:08d}-{ccd.name}-{tag}",
        )
        for pixels, region, ccd in zip(data, plan.layout, plan.config.ccds, strict=True)
    ]


async def process_exposure_on_dask(
    client: Client,
    buffer: RawPixels,
    plan: ControllerPlan,
    facts: ExposureFacts,
    instrument: InstrumentConfig,
    when: datetime,
    buffer_number: int,
) -> list[CcdOutcome]:
    """Process and write every CCD of one controller's buffer on ``client``'s workers.

    ``client`` is a synchronous distributed.Client (see tasks/dask_cluster.py): its
    calls block, so they run in a thread and the event loop stays free. Outcomes come
    in the config's CCD order. If this coroutine is cancelled or a CCD fails, the
    remaining tasks are cancelled (a CCD already running finishes its file).
    """
    instrument = _checked(buffer, plan, facts, instrument)
    futures = await asyncio.to_thread(
        _submit, client, buffer, plan, facts, instrument, when, buffer_number
    )
    try:
        outcomes: list[CcdOutcome] = await asyncio.to_thread(client.gather, futures)
    except BaseException:
        client.cancel(futures)  # type: ignore[no-untyped-call]
        raise
    return outcomes
