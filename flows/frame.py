"""One exposure on every controller of the instrument: the stages, in order.

An exposure is acquired (flush -> expose -> readout -> fetch, per stacked frame) and
then finished (post-process -> write -> archive). The split is the pipeline's
hand-over: once acquired, the controllers are free for the next exposure while this
one is finished. Device tasks are awaited on the flow's own event loop (never submitted to
threads: those ignore timeouts and cancellation). Telemetry is sampled at integration
start and end concurrently with the integration and the readout, within a bounded
time, so a slow source never delays the readout.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import numpy as np
import numpy.typing as npt
from prefect import get_run_logger
from prefect.runtime import flow_run

from devices.base import DeviceError, ExposureTimes
from schemas.errors import ConfigError
from schemas.exposure import ExposureSpec
from schemas.instrument import FailurePolicy, InstrumentConfig
from schemas.products import Product
from schemas.results import ExposureResult, FileRecord
from tasks.archive import SequenceArchiver, archive
from tasks.control.geometry import plan_readout
from tasks.control.instrument import ControllerPlan, ControllerSession
from tasks.durable.numbering import next_exposure_number
from tasks.durable.savepoint import (
    FrameIdentity,
    SavePoint,
    snapshot_values,
    write_savepoint,
)
from tasks.expose import expose
from tasks.fetch import fetch
from tasks.files.quicklook_png import QuickLook, write_quicklook
from tasks.flush import flush
from tasks.headers.header import ExposureFacts
from tasks.headers.telemetry import Reader, Snapshot, take_snapshot
from tasks.post_process import ReadoutNumbers, processed_shape
from tasks.processing.ccd_products import build_products
from tasks.processing.ccd_work import process_exposure_on_dask, supports_layout
from tasks.processing.masters import master_problems
from tasks.processing.quicklook import MosaicPlan, Thumbnail, plan_mosaic, thumbnails_of
from tasks.processing.stack import combine
from tasks.readout import readout
from tasks.write import CcdProduct, exposure_paths, write_exposure

if TYPE_CHECKING:
    from distributed import Client

T = TypeVar("T")
RawFrame = npt.NDArray[np.uint16] | npt.NDArray[np.uint32]

SNAPSHOT_TIMEOUT = 1.0
"""Seconds a telemetry source may take before its cards are marked missing."""


class StageClock:
    """Wall-clock seconds per stage, summed over stacked frames, in stage order."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    async def run(self, stage: str, work: Callable[[], Awaitable[T]]) -> T:
        start = time.perf_counter()
        try:
            return await work()
        finally:
            elapsed = time.perf_counter() - start
            self.seconds[stage] = round(self.seconds.get(stage, 0.0) + elapsed, 4)


@dataclass(frozen=True, slots=True)
class ExposurePlan:
    """Per camera: the plan (readout setup and the geometry post-processing will see)."""

    plans: dict[str, ControllerPlan]


def plan_exposure(
    spec: ExposureSpec, instrument: InstrumentConfig, plans: list[ControllerPlan]
) -> ExposurePlan:
    """Check ``spec`` against the instrument's configs and cameras (no device is asked);
    every problem in one ConfigError."""
    problems: list[str] = []
    if spec.filter is not None and spec.filter not in instrument.filters:
        known = ", ".join(instrument.filters) or "none configured"
        problems.append(f"filter: {spec.filter!r} is not a filter of {instrument.name} ({known})")
    if spec.lamp is not None:
        lamps = [d.name for d in instrument.devices if d.type.value == "covercalibrator"]
        if spec.lamp.device not in lamps:
            problems.append(
                f"lamp.device: {spec.lamp.device!r} is not a flat-field lamp (covercalibrator "
                f"device) of {instrument.name} ({', '.join(lamps) or 'none configured'})"
            )
    exposure_plans: dict[str, ControllerPlan] = {}
    for plan in plans:
        name = plan.config.name
        try:
            exposure_plans[name] = plan_readout(spec, plan)
        except ValueError as exc:
            problems.append(str(exc))
            continue
        able = plan.capabilities
        if spec.readout_delay and not able.readout_delay:
            problems.append(
                f"readout_delay: {name} cannot delay its readout ({able.reason('readout_delay')})"
            )
        if (
            spec.opens_shutter
            and name == instrument.shutter_controller_name
            and not able.opens_shutter
        ):
            problems.append(
                f"shutter: {name} cannot open a shutter ({able.reason('opens_shutter')})"
            )
    if not problems:
        problems += _master_problems(spec, instrument, list(exposure_plans.values()))
    if problems:
        raise ConfigError(f"exposure spec for {instrument.name}", problems)
    return ExposurePlan(exposure_plans)


def _master_problems(
    spec: ExposureSpec, instrument: InstrumentConfig, plans: list[ControllerPlan]
) -> list[str]:
    """Masters that apply to ``spec`` but do not fit the images it will produce."""
    processing = instrument.processing
    shapes = {
        ccd.name: processed_shape(region, ReadoutNumbers.of(plan), processing.trim)
        for plan in plans
        for region, ccd in zip(plan.layout, plan.config.ccds, strict=True)
    }
    bunit = "electron" if processing.electrons else "adu"
    return master_problems(spec, processing.masters, shapes, bunit)


async def _apply_setups(sessions: list[ControllerSession], plan: ExposurePlan) -> None:
    for session in sessions:
        await session.controller.apply(plan.plans[session.plan.config.name].setup)


def _status_readers(
    sessions: list[ControllerSession],
) -> dict[str, Reader]:
    return {s.plan.config.name: s.controller.telemetry for s in sessions}


@dataclass(slots=True)
class ReadFrame:
    """One readout of every live controller: pixels, buffers, timing and telemetry."""

    raw: dict[str, RawFrame]
    buffers: dict[str, int]
    date_obs: datetime
    darktime: float
    start: Snapshot
    end: Snapshot
    failed: dict[str, str]
    times: ExposureTimes | None = None
    """The integration as the shutter controller measured it (None: not known)."""
    readout_end: float = 0.0
    """time.monotonic() when the last controller's readout ended: the files' deadline
    (readout end -> every file written and in the manifest) counts from here."""
    transfer: asyncio.Future[None] | None = None
    """The fetch, when it goes on while the next exposure integrates: ``raw``,
    ``buffers`` and ``failed`` are complete once it is done (see :meth:`transferred`)."""

    async def transferred(self) -> None:
        """Wait for the pixels (at once when they were fetched before returning)."""
        if self.transfer is not None:
            await self.transfer


async def _on_each(
    stage: str,
    work: Callable[[ControllerSession], Awaitable[T]],
    *,
    live: dict[str, ControllerSession],
    clock: StageClock,
    policy: FailurePolicy,
    failed: dict[str, str],
) -> dict[str, T]:
    """Run one stage on every live controller at once.

    With the ``fail`` policy the first error fails the exposure; with
    ``write_partial`` a failed controller is recorded and dropped for the rest of the
    exposure, and the others go on. Cancellation always propagates.
    """
    names = list(live)

    async def together() -> list[T | BaseException]:
        return await asyncio.gather(*(work(live[n]) for n in names), return_exceptions=True)

    results = await clock.run(stage, together)
    survivors: dict[str, T] = {}
    errors: list[Exception] = []
    for name, result in zip(names, results, strict=True):
        if isinstance(result, Exception):
            errors.append(result)
            failed[name] = f"{stage}: {type(result).__name__}: {result}"[:200]
            del live[name]
        elif isinstance(result, BaseException):
            raise result
        else:
            survivors[name] = result
    if errors and (policy is FailurePolicy.FAIL or not live):
        raise errors[0]
    return survivors


BeforeFetch = Callable[
    [
        dict[str, int],
        "ExposureTimes | None",
        datetime,
        float,
        "asyncio.Future[Snapshot]",
        dict[str, str],
    ],
    Awaitable[None],
]
"""Called with (buffers, times, date_obs, darktime, start snapshot, failed) between
readout and fetch: where the save-point is written."""


def _measured_times(live: Mapping[str, ControllerSession], shutter: str) -> ExposureTimes | None:
    """The integration as measured by the shutter controller (or, when it dropped out,
    the first controller left): all integrate together, the shutter's defines light."""
    session = live.get(shutter) or next(iter(live.values()), None)
    if session is None:
        return None
    try:
        return session.controller.exposure_times()
    except RuntimeError:
        return None


def _cleared_by_readout(session: ControllerSession, now: float) -> bool:
    """The camera's last readout ended within its ``readout_clears_s``: it left the
    CCDs clear, so flushing again before this integration would only cost time."""
    window = session.plan.config.readout_clears_s
    ended = session.last_readout.ended
    return window > 0 and ended is not None and now - ended <= window


async def _flush_unless_cleared(session: ControllerSession, cleared: bool) -> None:
    if not cleared:
        await flush(session.controller, session.plan.config.flush_count)


async def _read_one_frame(
    sessions: list[ControllerSession],
    spec: ExposureSpec,
    clock: StageClock,
    instrument: InstrumentConfig,
    before_fetch: BeforeFetch | None = None,
    devices: Mapping[str, Reader] | None = None,
    overlap_fetch: bool = False,
) -> ReadFrame:
    """flush -> expose -> readout -> fetch on every controller, telemetry alongside.

    Only the instrument's shutter controller opens the shutter; the others integrate
    in the dark for the same time, as their CCDs sit behind the same shutter. A camera
    whose previous readout ended within its ``readout_clears_s`` is not flushed.
    With ``overlap_fetch`` this returns once the frame is read out, its fetch going
    on in ``ReadFrame.transfer`` (the caller starts the next integration meanwhile).
    """
    live = {s.plan.config.name: s for s in sessions}
    failed: dict[str, str] = {}
    policy = instrument.on_controller_failure
    shutter = instrument.shutter_controller_name
    each = partial(_on_each, live=live, clock=clock, policy=policy, failed=failed)
    now = time.monotonic()
    cleared = {name: _cleared_by_readout(s, now) for name, s in live.items()}
    if not all(cleared.values()):
        await each("flush", lambda s: _flush_unless_cleared(s, cleared[s.plan.config.name]))
    for session in live.values():
        session.last_readout.ended = None  # charge from here on: no longer clear
    readers = {**_status_readers(list(live.values())), **(devices or {})}
    start_snapshot = asyncio.ensure_future(take_snapshot(readers, timeout=SNAPSHOT_TIMEOUT))
    integration_start = time.monotonic()
    starts = await each(
        "expose",
        lambda s: expose(
            s.controller, spec.exptime, spec.opens_shutter and s.plan.config.name == shutter
        ),
    )
    darktime = time.monotonic() - integration_start
    end_snapshot = asyncio.ensure_future(take_snapshot(readers, timeout=SNAPSHOT_TIMEOUT))
    buffers = await each("readout", lambda s: readout(s.controller, spec.readout_delay))
    readout_end = time.monotonic()
    for name in buffers:
        live[name].last_readout.ended = readout_end
    times = _measured_times(live, shutter)
    date_obs = times.start if times is not None else min(starts.values())
    if before_fetch is not None:
        hook = before_fetch
        await clock.run(
            "savepoint",
            lambda: hook(buffers, times, date_obs, darktime, start_snapshot, failed),
        )
    frame = ReadFrame(
        raw={},
        buffers={},
        date_obs=date_obs,
        darktime=darktime,
        start=await start_snapshot,
        end=await end_snapshot,
        failed=failed,
        times=times,
        readout_end=readout_end,
    )

    async def transfer() -> None:
        frames = await each("fetch", lambda s: fetch(s.controller, buffers[s.plan.config.name]))
        frame.raw.update(frames)
        frame.buffers.update({name: buffers[name] for name in frames})

    if overlap_fetch:
        frame.transfer = asyncio.ensure_future(transfer())
    else:
        await transfer()
    return frame


@dataclass(slots=True)
class Acquired:
    """An exposure read out and fetched, not yet processed: the hand-over point of the
    pipeline (the controllers are free for the next exposure from here on)."""

    spec: ExposureSpec
    plan: ExposurePlan
    expnum: int
    when: datetime
    clock: StageClock
    frames: list[ReadFrame]

    async def transferred(self) -> None:
        """Wait until every frame's pixels are here (a fetch may still be going on)."""
        for frame in self.frames:
            await frame.transferred()


async def acquire(
    sessions: list[ControllerSession],
    spec: ExposureSpec,
    instrument: InstrumentConfig,
    numbered: Callable[[int, datetime], None] | None = None,
    journal_entry: tuple[Path, int] | None = None,
    devices: Mapping[str, Reader] | None = None,
    overlap_fetch: bool = False,
) -> Acquired:
    """Number the exposure, set the window, and read its frame(s) into memory.

    ``numbered(expnum, when)`` is called once the number is reserved, before the
    integration starts (the sequence journal records it there). A single-frame
    exposure leaves a save-point before its fetch (tasks/durable/savepoint.py), naming
    ``journal_entry`` (journal file, index) so a recovery can complete the journal.
    ``devices`` (tasks/control/devices.py) are read with the cameras' telemetry.
    Stacked exposures combine several readouts and cannot be recovered from one buffer,
    and cameras without frame buffers (``recoverable``) leave nothing to recover.

    With ``overlap_fetch`` (a pipelined run), a single-frame exposure on cameras that
    keep it in a buffer of its own (``fetch_overlaps_next``) returns once read out: its
    fetch goes on while the caller starts the next integration, and
    :meth:`Acquired.transferred` waits for it. The fetch then costs no dead time.
    """
    plan = plan_exposure(spec, instrument, [s.plan for s in sessions])
    clock = StageClock()
    if any(s.plan.capabilities.cooled for s in sessions):
        # A cooled camera must be stable at its set point before the frame is numbered.
        await clock.run("settle", lambda: _settle(sessions))
    await _apply_setups(sessions, plan)
    now = datetime.now(UTC)
    expnum = next_exposure_number(
        instrument.storage.data_root,
        taken=lambda n: any(p.exists() for p in exposure_paths(instrument, spec, n, now)),
    )
    if numbered is not None:
        numbered(expnum, now)
    hook = None
    if spec.frames_per_exposure == 1 and recoverable(sessions):
        hook = partial(_save_point, sessions, instrument, spec, expnum, now, journal_entry)
    overlap = (
        overlap_fetch
        and spec.frames_per_exposure == 1
        and all(s.plan.capabilities.fetch_overlaps_next for s in sessions)
    )
    frames = [
        await _read_one_frame(sessions, spec, clock, instrument, hook, devices, overlap)
        for _ in range(spec.frames_per_exposure)
    ]
    return Acquired(spec, plan, expnum, now, clock, frames)


async def _settle(sessions: list[ControllerSession]) -> None:
    await asyncio.gather(*(s.controller.settle() for s in sessions))


def recoverable(sessions: list[ControllerSession]) -> bool:
    """Every camera keeps its frames after the host dies, so a save-point is worth
    writing (an Alpaca camera does not: a killed run's frame is gone with it)."""
    return all(s.plan.capabilities.buffered_frames > 0 for s in sessions)


async def _save_point(
    sessions: list[ControllerSession],
    instrument: InstrumentConfig,
    spec: ExposureSpec,
    expnum: int,
    when: datetime,
    journal_entry: tuple[Path, int] | None,
    buffers: dict[str, int],
    times: ExposureTimes | None,
    date_obs: datetime,
    darktime: float,
    start: asyncio.Future[Snapshot],
    failed: dict[str, str],
) -> None:
    """Record what the files need besides the pixels, before fetching them.

    Best effort: an exposure is never failed for want of a save-point (the fetch
    would meet the same broken link and fail or be recorded by the failure policy).
    """
    live = [s for s in sessions if s.plan.config.name in buffers]
    try:
        held = await asyncio.gather(
            *(s.controller.held_frame(buffers[s.plan.config.name]) for s in live)
        )
    except DeviceError as exc:
        get_run_logger().warning("exposure %d: no save-point (%s)", expnum, exc)
        return
    frames = {
        session.plan.config.name: FrameIdentity(
            buffer=info.buffer, frame=info.frame, timestamp=info.timestamp
        )
        for session, info in zip(live, held, strict=True)
    }
    run_id = flow_run.get_id()
    point = SavePoint(
        instrument=instrument.name,
        expnum=expnum,
        spec=spec,
        when=when,
        date_obs=date_obs,
        times=times,
        darktime=darktime,
        flow_run_id=str(run_id) if run_id else None,
        frames=frames,
        status_start=snapshot_values(start.result().values) if start.done() else {},
        failed=dict(failed),
        journal=journal_entry[0] if journal_entry else None,
        index=journal_entry[1] if journal_entry else None,
    )
    await asyncio.to_thread(write_savepoint, instrument, point)


async def finish(
    acquired: Acquired,
    sessions: list[ControllerSession],
    instrument: InstrumentConfig,
    system: Mapping[str, Mapping[str, str]],
    archiver: SequenceArchiver | None = None,
    dask_client: Client | None = None,
) -> ExposureResult:
    """Process, write and archive an acquired exposure; no controller is touched.

    With a Dask client (and one file per CCD, one frame, no HDF5 archive, which needs
    the pixels here), each CCD is processed and written on a worker that receives only
    that CCD's pixels and returns metadata; otherwise here, in worker threads. A
    quick-look PNG (``storage.quicklook``) comes last, from thumbnails made where the
    pixels are.
    """
    logger = get_run_logger()
    await acquired.transferred()
    spec, plan, clock, expnum, now = (
        acquired.spec,
        acquired.plan,
        acquired.clock,
        acquired.expnum,
        acquired.when,
    )
    frames = acquired.frames
    # A controller is written only if every stacked frame has it.
    names = [
        s.plan.config.name for s in sessions if all(s.plan.config.name in f.raw for f in frames)
    ]
    missing_controllers = {name: why for f in frames for name, why in f.failed.items()}
    for name, why in missing_controllers.items():
        logger.error("controller %s missing from exposure %d: %s", name, expnum, why)

    first = frames[0]
    missing = {**first.start.missing, **first.end.missing}
    for source, reason in missing.items():
        logger.warning(
            "telemetry from %s missing: %s; its header cards are left empty", source, reason
        )
    run_id = flow_run.get_id()
    facts = ExposureFacts(
        spec=spec,
        expnum=expnum,
        date_obs=first.date_obs,
        darktime=sum(f.darktime for f in frames) / len(frames),
        flow_run_id=str(run_id) if run_id else None,
        ncombine=len(frames),
        status_start=first.start.values,
        status_end=frames[-1].end.values,
        missing=missing,
        system=system,
        missing_controllers=missing_controllers,
        times=tuple(f.times for f in frames if f.times is not None)
        if all(f.times is not None for f in frames)
        else (),
    )
    archive_path = None
    mosaic = _mosaic_plan(plan, spec, instrument)
    products: list[CcdProduct] = []
    thumbnails: list[Thumbnail] = []
    on_workers = len(frames) == 1 and archiver is None and supports_layout(instrument)
    if dask_client is not None and on_workers:
        client = dask_client
        records, stats, thumbnails = await clock.run(
            "process_write",
            lambda: _process_and_write_on_dask(
                client, first, names, plan, facts, instrument, now, mosaic
            ),
        )
    else:
        products = await _ccd_products(names, frames, plan, spec, clock, instrument)
        stats = {p.ccd.name: p.stats for p in products}
        records = await clock.run("write", lambda: write_exposure(products, facts, instrument, now))
        if archiver is not None and missing_controllers:
            # The archive's cubes hold every CCD of every frame; a partial exposure is
            # in its FITS files (the missing controllers named) but not in the archive.
            logger.error("exposure %d not archived: controllers missing", expnum)
        elif archiver is not None and len(frames) > 1 and instrument.archive.product is Product.RAW:
            # One cube row per exposure: a stack's several raw frames are in its FITS
            # file (one extension per frame), not in the raw archive.
            logger.warning("exposure %d not archived: %d raw frames stacked", expnum, len(frames))
        elif archiver is not None:
            archive_path = await clock.run(
                "archive", lambda: archive(archiver, products, facts, now)
            )
    quicklook_url = None
    if mosaic is not None:
        cut = mosaic
        made = await clock.run(
            "quicklook", lambda: _quick_look(products, thumbnails, cut, facts, instrument, now)
        )
        if made is not None:
            records, quicklook_url = [*records, made.record], made.url
    summary = facts.time_summary(instrument.exptime_tolerance_s)
    if summary.flagged:
        logger.warning(
            "exposure %d: integration measured %.4f s, asked %.4f s (tolerance %g s)",
            expnum,
            summary.measured_s,
            summary.requested_s,
            instrument.exptime_tolerance_s,
        )
    logger.info(
        "exposure %d (%s, %.3f s): %d files, %s",
        expnum,
        spec.image_type.value,
        spec.exptime,
        len(records),
        ", ".join(f"{k} {v:.3f} s" for k, v in clock.seconds.items()),
    )
    return ExposureResult(
        expnum=expnum,
        image_type=spec.image_type,
        exptime=spec.exptime,
        date_obs=summary.start,
        date_end=summary.end,
        exptime_measured=round(summary.measured_s, 6),
        time_source=summary.source,
        time_uncertainty_s=summary.uncertainty_s,
        exptime_flagged=summary.flagged,
        files=records,
        archive=archive_path,
        missing=missing_controllers,
        finished_at=datetime.now(UTC),
        files_after_readout_s=round(time.monotonic() - frames[-1].readout_end, 4),
        timings=clock.seconds,
        stats=stats,
        quicklook_url=quicklook_url,
    )


def _mosaic_plan(
    plan: ExposurePlan, spec: ExposureSpec, instrument: InstrumentConfig
) -> MosaicPlan | None:
    """How this exposure's quick-look is cut; None when the instrument makes none."""
    if not instrument.storage.quicklook:
        return None
    placements = [p for camera in plan.plans.values() for p in camera.placements]
    binning = (spec.binning.x, spec.binning.y)
    return plan_mosaic(placements, binning, instrument.storage.quicklook_size)


async def _quick_look(
    products: list[CcdProduct],
    thumbnails: list[Thumbnail],
    mosaic: MosaicPlan,
    facts: ExposureFacts,
    instrument: InstrumentConfig,
    when: datetime,
) -> QuickLook | None:
    """The exposure's PNG, in a thread, once its FITS files are written: from the
    workers' ``thumbnails``, or from ``products`` here. A failure is logged and the
    exposure goes on without it: the FITS files are what matter."""

    def make() -> QuickLook:
        every = [*thumbnails, *thumbnails_of(products, mosaic)]
        kind = facts.spec.image_type.value
        return write_quicklook(every, mosaic, instrument, facts.expnum, kind, when)

    try:
        return await asyncio.to_thread(make)
    except Exception as exc:
        get_run_logger().error(
            "exposure %d: no quick-look PNG (%s: %s)", facts.expnum, type(exc).__name__, exc
        )
        return None


async def _ccd_products(
    names: list[str],
    frames: list[ReadFrame],
    plan: ExposurePlan,
    spec: ExposureSpec,
    clock: StageClock,
    instrument: InstrumentConfig,
) -> list[CcdProduct]:
    """Every CCD's products here (threads, controllers at once): each frame's raw image,
    and the processed image (stacked frames combined) when storage writes it."""

    async def build(frame: ReadFrame) -> list[list[CcdProduct]]:
        return await asyncio.gather(
            *(
                build_products(frame.raw[n], plan.plans[n], spec, instrument, frame.buffers[n])
                for n in names
            )
        )

    built = [await clock.run("post_process", partial(build, frame)) for frame in frames]
    # Per frame, every CCD in controller order; a stack's frames are then combined.
    flat = [[p for per_controller in frame for p in per_controller] for frame in built]
    method = spec.stacking.method if spec.stacking else None
    products = []
    for index, first in enumerate(flat[0]):
        per_frame = [frame[index] for frame in flat]
        images = [p.image for p in per_frame if p.image is not None]
        image = (combine(images, method) if method else images[0]) if images else None
        raws = tuple(raw for p in per_frame for raw in p.raw)
        products.append(dataclasses.replace(first, raw=raws, image=image))
    return products


async def _process_and_write_on_dask(
    client: Client,
    frame: ReadFrame,
    names: list[str],
    plan: ExposurePlan,
    facts: ExposureFacts,
    instrument: InstrumentConfig,
    when: datetime,
    mosaic: MosaicPlan | None,
) -> tuple[list[FileRecord], dict[str, dict[str, float]], list[Thumbnail]]:
    """Every controller's CCDs on the Dask workers; the files' records and each CCD's
    quick-look statistics (and thumbnail, given a ``mosaic``) come back."""
    logger = get_run_logger()
    outcomes = await asyncio.gather(
        *(
            process_exposure_on_dask(
                client,
                frame.raw[name],
                plan.plans[name],
                facts,
                instrument,
                when,
                frame.buffers[name],
                mosaic,
            )
            for name in names
        )
    )
    records: list[FileRecord] = []
    stats = {}
    thumbnails: list[Thumbnail] = []
    for outcome in (o for per_controller in outcomes for o in per_controller):
        for warning in outcome.warnings:
            logger.warning("header card left empty: %s", warning)
        records += outcome.files
        stats[outcome.files[0].ccd] = outcome.stats
        if outcome.thumbnail is not None:
            thumbnails.append(outcome.thumbnail)
        if outcome.thumbnail_problem is not None:
            logger.error("quick-look thumbnail left blank: %s", outcome.thumbnail_problem)
    # Raw files first, then processed, as the serial path lists them.
    records.sort(key=lambda record: list(instrument.storage.products).index(record.product))
    return records, stats, thumbnails
