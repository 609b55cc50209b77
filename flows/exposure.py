"""The exposure flows users run: one kind of exposure, a sequence, a calibration set.

Parameters are pydantic models, so the Prefect UI shows validated forms and a bad
value is refused before a run exists. Only one run drives an instrument at a time
(tasks/durable/instrument_lock.py; bad input is refused before waiting for it). The
instrument is checked against its ACFs before any connection is made; each spec is
checked against the instrument before its exposure starts; the controllers are reset
(shutter closed) on the way out, whatever happened.
"""

# No `from __future__ import annotations` here: Prefect validates a deployed run's
# parameters against the flow's signature, and string annotations of pydantic models
# cannot be resolved when the engine loads this module from its entrypoint.
import asyncio
import contextlib
import functools
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from devices.observatory import DeviceSet
from flows.frame import Acquired, ExposurePlan, acquire, finish, plan_exposure
from flows.instrument_choice import DEFAULT_INSTRUMENT, InstrumentChoice, resolve_instrument
from flows.masters import build_masters
from flows.night_clock import NightClock
from flows.operator import Decision, ask_operator
from flows.recovery import recover_frames
from schemas.errors import ConfigError
from schemas.exposure import CalibrationSpec, ExposureSpec, NightPlan, SequenceSpec
from schemas.fits_rules import CardValue
from schemas.instrument import InstrumentConfig
from schemas.observation import ObservationSpec
from schemas.results import ExposureResult, SequenceResult
from tasks.archive import SequenceArchiver
from tasks.control.deadline import missed_deadline, paper_deadline_problem
from tasks.control.devices import open_devices
from tasks.control.filter_wheel import WheelFollower
from tasks.control.instrument import (
    ControllerPlan,
    ControllerSession,
    open_instrument,
    plan_instrument,
)
from tasks.control.lamps import LampControl
from tasks.control.shutdown import park_and_close, shutdown_settings
from tasks.control.sky_watch import SkyUnsafeError, watching
from tasks.durable.instrument_lock import instrument_lock
from tasks.durable.journal import SequenceJournal
from tasks.durable.savepoint import remove_savepoint
from tasks.processing.ccd_work import supports_layout
from tasks.processing.dask_cluster import open_client
from tasks.reporting.artifacts import (
    HELD_NOTICE_S,
    publish_results,
    start_progress,
    update_progress,
)
from tasks.send import send
from tasks.write import planned_files


def _current_flow_run_id() -> str | None:
    run_id = flow_run.get_id()
    return str(run_id) if run_id else None


async def _system_info(sessions: list[ControllerSession]) -> dict[str, Mapping[str, str]]:
    """Identity (an Archon's SYSTEM) of every camera, read once per run for header sources."""
    return {s.plan.config.name: await s.controller.identity() for s in sessions}


def check_all(
    specs: list[ExposureSpec], instrument: InstrumentConfig, plans: list[ControllerPlan]
) -> None:
    """Every spec of the run is checked before any controller is contacted."""
    problems: list[str] = []
    for index, spec in enumerate(specs):
        try:
            plan_exposure(spec, instrument, plans)
        except ConfigError as exc:
            problems += [f"exposures.{index}.{problem}" for problem in exc.problems]
    if instrument.archive.hdf5:
        shapes = {(spec.binning, spec.window) for spec in specs}
        if len(shapes) > 1:
            problems.append(
                "archive.hdf5: one HDF5 archive holds one geometry; this run mixes "
                "binnings or windows (archive them in separate runs)"
            )
    if problems:
        raise ConfigError(f"sequence for {instrument.name}", problems)


@dataclass(slots=True)
class RunPlan:
    """A planned run's journal and what an interrupted run of it already took."""

    journal: SequenceJournal
    done: dict[int, ExposureResult]

    @classmethod
    def open(
        cls, instrument: InstrumentConfig, name: str, specs: list[ExposureSpec], resume: bool
    ) -> "RunPlan":
        journal = SequenceJournal.for_plan(instrument, name, specs)
        if not resume:
            journal.close()
        night = instrument.storage.night_rule.folder(datetime.now(UTC))
        return cls(journal, journal.resume(night))


def _pixels(plan: ExposurePlan) -> int:
    """Pixels one readout of the exposure brings in, every camera together."""
    return sum(math.prod(p.buffer_shape) for p in plan.plans.values())


def lag_note(result: ExposureResult) -> str | None:
    """How far an exposure's files lagged its readout, and how long its integration
    was held back by the previous exposure's finishing (the progress artifact's note)."""
    parts = []
    if result.files_after_readout_s is not None:
        parts.append(
            f"exposure {result.expnum} on disk {result.files_after_readout_s:.1f} s "
            "after its readout"
        )
    held = result.timings.get("held", 0.0)
    if held > HELD_NOTICE_S:
        parts.append(f"its integration held {held:.1f} s by finishing")
    return ", ".join(parts) or None


def _always() -> str | None:
    """A gate that never stops a run."""
    return None


BeforeExposure = Callable[[int, ExposureSpec, DeviceSet], Awaitable[None]]
"""Called before each exposure with its place in the run, its spec and the devices:
an observing flow points the telescope and sets the filter and focus there."""


@dataclass(frozen=True, slots=True)
class Verdict:
    """What a steered run decided about one frame, before its files are written."""

    cards: dict[str, CardValue]
    """Header cards that record the decision (kept or not, and what was measured)."""
    rejected: str | None = None
    """Why the frame is not kept (None: kept)."""


class FrameSteering(Protocol):
    """Sets each exposure as it comes and judges it once read out (twilight flats,
    whose times follow the fading sky)."""

    async def shape(self, position: int, spec: ExposureSpec) -> ExposureSpec | str:
        """The exposure to take now (``spec`` with its time set), or why it is skipped."""
        ...

    async def judge(self, acquired: Acquired) -> Verdict: ...


def _flat(specs: list[ExposureSpec]) -> list[ExposureSpec]:
    """One entry per exposure: the index in this list is the exposure's place in the plan."""
    return [spec for spec in specs for _ in range(spec.count)]


async def take_all(
    name: str,
    specs: list[ExposureSpec],
    instrument: InstrumentConfig,
    *,
    pipelined: bool,
    plan: RunPlan,
    first_index: int = 0,
    publish: bool = True,
    gate: Callable[[ExposureSpec], str | None] | None = None,
    before: BeforeExposure | None = None,
    steer: FrameSteering | None = None,
    close_at_end: bool = False,
) -> SequenceResult:
    """Take ``specs`` in order, skipping what ``plan`` says is already done.

    Pipelined, exposure N is fetched and finished (processed, written, archived) while
    N+1 is flushed, integrated and read out; at most two exposures are in memory. N is
    fetched from its own locked buffer (cameras that have one; others fetch before
    N+1 starts), and N+2 starts only once N is finished, so no readout ever targets a
    buffer still wanted.
    ``first_index`` is the place of the first exposure in the journal's plan (night
    plans journal all their steps together). ``steer`` sets each exposure's time as
    it comes and judges each frame (twilight flats): a rejected frame is written,
    marked, and its place taken again. ``close_at_end`` parks the telescope and
    closes the dome when the run ends, however it ends (a run that opened them).
    """
    logger = get_run_logger()
    plans = plan_instrument(instrument)
    check_all(specs, instrument, plans)
    if instrument.deadline is not None and specs:
        pixels = max(_pixels(plan_exposure(spec, instrument, plans)) for spec in specs)
        if (problem := paper_deadline_problem(instrument.deadline, pixels)) is not None:
            logger.warning("%s: %s", name, problem)
    start = time.perf_counter()
    planned = list(enumerate(_flat(specs), start=first_index))
    total = len(planned)
    results: dict[int, ExposureResult] = {i: plan.done[i] for i, _ in planned if i in plan.done}
    resumed = sorted(r.expnum for r in results.values())
    if resumed:
        logger.warning(
            "%s: resuming an interrupted run; %d of %d exposures are already on disk (%s)",
            name,
            len(resumed),
            total,
            ", ".join(map(str, resumed)),
        )
    progress = await start_progress(name, total)
    archiver = (
        SequenceArchiver(instrument, name, _current_flow_run_id())
        if instrument.archive.hdf5
        else None
    )
    pending: asyncio.Future[None] | None = None
    stopped: str | None = None
    rejected: list[ExposureResult] = []
    skipped: list[str] = []

    notifications: list[asyncio.Future[object]] = []

    async def done(index: int, result: ExposureResult) -> None:
        plan.journal.done(index, result)
        remove_savepoint(instrument, result.expnum)
        results[index] = result
        if instrument.receivers:
            # Durable (the outbox is on disk before this returns); delivery goes on in
            # the background so a slow receiver never holds up the next exposure.
            metadata = {
                "instrument": instrument.name,
                "sequence": name,
                "flow_run_id": _current_flow_run_id(),
                "exposure": result.model_dump(mode="json"),
            }
            files = [record.path for record in result.files]
            kinds = [record.product for record in result.files]
            notifications.append(
                asyncio.ensure_future(send(instrument, metadata, files, products=kinds))
            )
        late = missed_deadline(instrument.deadline, result) if instrument.deadline else None
        if late is not None:
            logger.warning("%s: %s", name, late)
        logger.info("%s: %d of %d exposures done", name, len(results), total)
        await update_progress(progress, len(results), total, note=lag_note(result))

    async def finished(index: int, job: Awaitable[ExposureResult]) -> None:
        """Journal the exposure the moment its files are written (the save-point goes)."""
        await done(index, await job)

    async def set_aside(job: Awaitable[ExposureResult]) -> None:
        """A frame that is written but not kept: its place in the plan is taken again."""
        result = await job
        remove_savepoint(instrument, result.expnum)
        rejected.append(result)

    held = 0.0
    """Seconds the next integration waited for the previous exposure's finishing."""

    async def hand_over(job: Awaitable[None]) -> None:
        """Start finishing an exposure (pipelined: while the next is taken); the one
        before it is finished first, and a failure there still lets this one write.

        This is the pipeline's backpressure: at most one exposure is finishing while
        the next is taken, so when finishing falls behind, the next integration waits
        here (memory stays bounded, nothing is dropped) and the wait is recorded as
        the next exposure's ``held`` stage and logged."""
        nonlocal pending, held
        if pending is not None:
            previous, pending = pending, None
            waiting = time.perf_counter()
            try:
                await previous
            except BaseException:
                await job
                raise
            finally:
                held = time.perf_counter() - waiting
            if held > HELD_NOTICE_S:
                logger.warning(
                    "%s: finishing is behind; the next integration waited %.2f s for it",
                    name,
                    held,
                )
        if pipelined:
            pending = asyncio.ensure_future(job)
        else:
            await job

    def numbered(index: int, spec: ExposureSpec) -> Callable[[int, datetime], None]:
        return lambda expnum, when: plan.journal.started(
            index,
            expnum,
            [(f.ccd, f.path, f.product) for f in planned_files(instrument, spec, expnum, when)],
        )

    def sequence_result() -> SequenceResult:
        return SequenceResult(
            name=name,
            flow_run_id=_current_flow_run_id(),
            exposures=[results[i] for i in sorted(results)],
            elapsed_s=round(time.perf_counter() - start, 3),
            resumed=resumed,
            stopped=stopped,
            rejected=sorted(rejected, key=lambda r: r.expnum),
            skipped=skipped,
        )

    workers = contextlib.ExitStack()
    dask_client = None
    dask_opening: asyncio.Future[Any] | None = None
    if supports_layout(instrument) and not instrument.archive.hdf5:
        # Opened in a thread (the synchronous client runs its own event loop there)
        # while the controllers are connected: both take about a second, and the
        # first exposure waits for neither longer than it must. A scheduler that
        # does not answer still fails the run before any exposure starts.
        dask_opening = asyncio.ensure_future(
            asyncio.to_thread(workers.enter_context, open_client(instrument.dask))
        )
    try:
        light = instrument.safety if any(s.needs_sky for s in specs) else None
        async with (
            open_instrument(plans) as sessions,
            open_devices(instrument) as devices,
            watching(light, devices.readers, devices.drivers, instrument.name) as watch,
        ):
            system = await _system_info(sessions)
            lamps = LampControl(devices.drivers.lamps)
            if before is None and devices.drivers.filters is not None:
                before = WheelFollower()
            for recovered in await recover_frames(sessions, instrument, system):
                if recovered.journal == plan.journal.path and recovered.index is not None:
                    results[recovered.index] = recovered.result
                    resumed.append(recovered.result.expnum)
            if dask_opening is not None:
                dask_client = await dask_opening
            try:
                for index, spec in planned:
                    if index in results:
                        continue
                    kept = False
                    while not kept:
                        guarded = watch is not None and spec.needs_sky
                        if gate is not None and (stopped := gate(spec)) is not None:
                            break
                        if watch is not None and guarded:
                            # Waits for a safe sky and an open dome; the gate is asked
                            # meanwhile (the night may end first).
                            still = functools.partial(gate, spec) if gate is not None else _always
                            if (stopped := await watch.ready_for_light(still)) is not None:
                                break
                        if before is not None:
                            # The devices are where this exposure wants them (and still):
                            # the previous exposure's finishing goes on meanwhile.
                            await before(index - first_index, spec, devices.drivers)
                        await lamps.set_for(spec)
                        take = spec
                        if steer is not None:
                            shaped = await steer.shape(index - first_index, spec)
                            if isinstance(shaped, str):
                                logger.warning("%s: exposure %d skipped: %s", name, index, shaped)
                                skipped.append(shaped)
                                break
                            take = shaped
                        work = acquire(
                            sessions,
                            take,
                            instrument,
                            numbered(index, take),
                            journal_entry=(plan.journal.path, index),
                            devices=devices.readers,
                            overlap_fetch=pipelined,
                        )
                        try:
                            acquired = await (watch.light(work) if watch and guarded else work)
                        except SkyUnsafeError as exc:
                            logger.warning(
                                "%s: a light exposure was aborted (%s); it is taken again "
                                "once the sky is safe",
                                name,
                                exc.reason,
                            )
                            continue
                        if held:
                            # First: the wait came before this exposure's flush.
                            stages = acquired.clock.seconds
                            acquired.clock.seconds = {"held": round(held, 4), **stages}
                            held = 0.0
                        kept = True
                        if steer is not None:
                            await acquired.transferred()
                            verdict = await steer.judge(acquired)
                            header = {**take.header, **verdict.cards}
                            acquired.spec = take.model_copy(update={"header": header})
                            if verdict.rejected is not None:
                                kept = False
                                logger.info(
                                    "%s: exposure %d is written but not kept: %s",
                                    name,
                                    acquired.expnum,
                                    verdict.rejected,
                                )
                        written = finish(
                            acquired, sessions, instrument, system, archiver, dask_client
                        )
                        await hand_over(finished(index, written) if kept else set_aside(written))
                    if stopped is not None:
                        logger.warning(
                            "%s: no further exposure (%d of %d taken): %s",
                            name,
                            len(results),
                            total,
                            stopped,
                        )
                        break
                if pending is not None:
                    previous, pending = pending, None
                    await previous
            finally:
                try:
                    await lamps.close()
                except Exception as exc:  # the run's own outcome is what to report
                    logger.error("%s: the flat-field lamp could not be turned off: %s", name, exc)
                if close_at_end:
                    await _close_observatory(name, instrument, devices.drivers)
                if pending is not None:
                    # Leaving early (an error, a cancellation): what was read out is written.
                    with contextlib.suppress(Exception):
                        await asyncio.shield(pending)
                if archiver is not None:
                    archiver.close()
                await asyncio.to_thread(workers.close)
    except BaseException:
        if publish:
            # A failed run still shows what it wrote.
            await asyncio.shield(publish_results(sequence_result()))
        raise
    finally:
        if dask_opening is not None:
            # The controllers failed while Dask was opening: close it once it is open.
            with contextlib.suppress(BaseException):
                await dask_opening
            await asyncio.to_thread(workers.close)
        for outcome in await asyncio.gather(*notifications, return_exceptions=True):
            if isinstance(outcome, BaseException):
                logger.error("a notification could not be queued: %s", outcome)
    result = sequence_result()
    if publish:
        await publish_results(result)
    return result


@flow(name="take-exposure")
async def take_exposure(
    spec: ExposureSpec, instrument: InstrumentChoice = DEFAULT_INSTRUMENT
) -> list[ExposureResult]:
    """Take ``spec.count`` exposures of one kind (an interrupted call, repeated the same
    night, continues where it stopped)."""
    instrument = resolve_instrument(instrument)
    name = f"take-{spec.image_type.value}"
    check_all([spec], instrument, plan_instrument(instrument))
    async with instrument_lock(instrument):
        plan = RunPlan.open(instrument, name, [spec], resume=True)
        result = await take_all(name, [spec], instrument, pipelined=True, plan=plan)
        plan.journal.close()
    return result.exposures


@flow(name="run-sequence")
async def run_sequence(
    sequence: SequenceSpec,
    instrument: InstrumentChoice = DEFAULT_INSTRUMENT,
    pipelined: bool = True,
    resume: bool = True,
) -> SequenceResult:
    """Take every exposure of ``sequence`` in order, on one connection per controller.

    ``resume``: a sequence interrupted earlier the same night continues after the
    exposures already on disk (tasks/durable/journal.py); off, it starts again from the
    first. ``pipelined=False`` finishes each exposure before the next starts (for
    comparison and for debugging a stage in isolation).
    """
    instrument = resolve_instrument(instrument)
    specs = sequence.expand()
    check_all(specs, instrument, plan_instrument(instrument))
    async with instrument_lock(instrument):
        plan = RunPlan.open(instrument, sequence.name, specs, resume)
        result = await take_all(sequence.name, specs, instrument, pipelined=pipelined, plan=plan)
        plan.journal.close()
    return result


async def _calibration_set(
    spec: CalibrationSpec,
    instrument: InstrumentConfig,
    plan: RunPlan,
    first_index: int = 0,
    gate: Callable[[ExposureSpec], str | None] | None = None,
) -> SequenceResult:
    specs = spec.expand()
    result = await take_all(
        spec.name,
        specs,
        instrument,
        pipelined=True,
        plan=plan,
        first_index=first_index,
        publish=False,
        gate=gate,
    )
    if spec.build_masters and result.stopped is None:
        masters = await build_masters(specs, result.exposures, instrument, spec.combine)
        result = result.model_copy(update={"masters": masters})
    elif spec.build_masters:
        get_run_logger().warning("%s: no masters from an incomplete set", spec.name)
    await publish_results(result)
    return result


@flow(name="calibrations")
async def calibrations(
    spec: CalibrationSpec, instrument: InstrumentChoice = DEFAULT_INSTRUMENT, resume: bool = True
) -> SequenceResult:
    """Take a calibration set (biases, darks, flats and arcs, in that order) and build
    master bias, dark and flat frames from it (unless ``build_masters`` is off)."""
    instrument = resolve_instrument(instrument)
    specs = spec.expand()
    check_all(specs, instrument, plan_instrument(instrument))
    async with instrument_lock(instrument):
        plan = RunPlan.open(instrument, spec.name, specs, resume)
        result = await _calibration_set(spec, instrument, plan)
        plan.journal.close()
    return result


@flow(name="observe-night")
async def observe_night(
    plan: NightPlan, instrument: InstrumentChoice = DEFAULT_INSTRUMENT, resume: bool = True
) -> list[SequenceResult]:
    """Take every step of a night plan in order; every step is checked before the first.

    A step waits for its window to open and is skipped once it has closed; a step
    with a question waits for the operator (the instrument released meanwhile); no
    light exposure starts after morning twilight (``plan.light_until``). A step that
    fails stops the night (the controllers are reset); the steps already taken keep
    their files and appear in the run history. Run again the same night, the plan
    continues where it stopped.
    """
    instrument = resolve_instrument(instrument)
    plans = plan_instrument(instrument)
    steps = [(step, step.expand()) for step in plan.steps]
    for _, specs in steps:
        check_all(specs, instrument, plans)
    clock = NightClock.for_plan(plan, instrument)
    logger = get_run_logger()
    if instrument.site is None and plan.light_until is not None:
        logger.warning(
            "%s has no site: light exposures are not stopped at twilight", instrument.name
        )
    every = [spec for _, specs in steps for spec in specs]
    results: list[SequenceResult] = []
    progress = RunPlan.open(instrument, plan.name, every, resume)
    try:
        async with _Holding(instrument) as holding:
            first = 0
            for step, specs in steps:
                count = len(_flat(specs))
                decision, reason = await _before_step(step.name, plan, clock, holding)
                if decision is Decision.STOP:
                    results.append(not_taken(step.name, reason))
                    break
                if decision is Decision.SKIP:
                    results.append(not_taken(step.name, reason))
                    first += count
                    continue
                await holding.hold()
                gate = clock.exposure_gate(step.name)
                if isinstance(step, CalibrationSpec):
                    result = await _calibration_set(step, instrument, progress, first, gate)
                elif isinstance(step, ObservationSpec):
                    # Here, not at the top: flows.observe builds on this module.
                    from flows.observe import observation_step

                    result = await observation_step(step, instrument, progress, first, gate)
                else:
                    result = await take_all(
                        step.name,
                        specs,
                        instrument,
                        pipelined=True,
                        plan=progress,
                        first_index=first,
                        gate=gate,
                    )
                results.append(result)
                first += count
    finally:
        if any(isinstance(step, ObservationSpec) for step in plan.steps):
            # The night is over, however it ended: the dome its observations opened
            # is closed and the telescope parked.
            try:
                async with open_devices(instrument) as devices:
                    await _close_observatory(plan.name, instrument, devices.drivers)
            except Exception as exc:  # logged; never raised over the night's own outcome
                logger.error("%s: the observatory could not be closed: %s", plan.name, exc)
    progress.journal.close()
    return results


async def _close_observatory(name: str, instrument: InstrumentConfig, drivers: DeviceSet) -> None:
    """Park and close at the end of a run (tasks/control/shutdown.py); a failure is
    logged, never hidden behind the run's own outcome or raised over it."""
    if drivers.mount is None and drivers.enclosure is None:
        return
    order, timeout = shutdown_settings(instrument)
    shutting = asyncio.ensure_future(park_and_close(drivers, order, timeout))
    cancelled = False
    try:
        failed = await asyncio.shield(shutting)
    except asyncio.CancelledError:
        # A cancelled run still closes the dome before its devices are let go.
        cancelled = True
        failed = await shutting
    except Exception as exc:
        failed = [str(exc)]
    logger = get_run_logger()
    for problem in failed:
        logger.error("%s: parking the telescope or closing the dome failed: %s", name, problem)
    if not failed:
        logger.info("%s: telescope parked and dome closed (%s)", name, order)
    if cancelled:
        raise asyncio.CancelledError


def not_taken(name: str, reason: str) -> SequenceResult:
    return SequenceResult(
        name=name, flow_run_id=_current_flow_run_id(), exposures=[], elapsed_s=0.0, stopped=reason
    )


async def _before_step(
    name: str, plan: NightPlan, clock: NightClock, holding: "_Holding"
) -> tuple[Decision, str]:
    """Wait for the step's window and its operator; take, skip or stop, and why.

    STOP: the operator's silence is configured to end the night.
    """
    logger = get_run_logger()
    if reason := clock.closed(name):
        logger.warning("%s: skipped, %s", name, reason)
        return Decision.SKIP, reason
    if wait := clock.wait_s(name):
        start, _ = clock.window(name)
        assert start is not None
        logger.info("%s: waiting %.0f s for its window (%s)", name, wait, clock.describe(start))
        await holding.release()  # nobody waits on an idle instrument
        await asyncio.sleep(wait)
    if (question := plan.ask.get(name)) is not None:
        await holding.release()
        key = f"{plan.name}-{name}-{clock.night or datetime.now(UTC).date()}"
        decision = await ask_operator(name, question, key)
        if decision is Decision.STOP:
            return Decision.STOP, "the night was stopped"
        if decision is Decision.SKIP:
            return Decision.SKIP, "the operator skipped it"
        if reason := clock.closed(name):
            logger.warning("%s: skipped, %s while waiting for the operator", name, reason)
            return Decision.SKIP, reason
    return Decision.TAKE, ""


class _Holding:
    """The instrument lock, held across steps and released while the run waits."""

    def __init__(self, instrument: InstrumentConfig) -> None:
        self.instrument = instrument
        self.stack: contextlib.AsyncExitStack | None = None

    async def hold(self) -> None:
        if self.stack is None:
            stack = contextlib.AsyncExitStack()
            await stack.enter_async_context(instrument_lock(self.instrument))
            self.stack = stack

    async def release(self) -> None:
        stack, self.stack = self.stack, None
        if stack is not None:
            await stack.aclose()

    async def __aenter__(self) -> "_Holding":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.release()
