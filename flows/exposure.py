"""The exposure flows users run: one kind of exposure, a sequence, a calibration set.

Parameters are pydantic models, so the Prefect UI shows validated forms and a bad
value is refused before a run exists. The instrument is checked against its ACFs
before any connection is made; each spec is checked against the instrument before
its exposure starts; the controllers are reset (shutter closed) on the way out,
whatever happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from flows.frame import acquire, finish, plan_exposure
from flows.masters import build_masters
from schemas.errors import ConfigError
from schemas.exposure import CalibrationSpec, ExposureSpec, NightPlan, SequenceSpec
from schemas.instrument import InstrumentConfig
from schemas.results import ExposureResult, SequenceResult
from tasks.archive import SequenceArchiver
from tasks.ccd_work import supports_layout
from tasks.dask_cluster import open_client
from tasks.instrument import ControllerPlan, ControllerSession, open_instrument, plan_instrument


def _current_flow_run_id() -> str | None:
    run_id = flow_run.get_id()
    return str(run_id) if run_id else None


async def _system_info(sessions: list[ControllerSession]) -> dict[str, Mapping[str, str]]:
    """SYSTEM of every controller, read once per run for header sources."""
    return {s.plan.config.name: (await s.controller.system()).values for s in sessions}


def _check_all(
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


async def _take_all(
    name: str, specs: list[ExposureSpec], instrument: InstrumentConfig, *, pipelined: bool
) -> SequenceResult:
    """Take ``specs`` in order. Pipelined, exposure N is finished (processed, written,
    archived) while N+1 is flushed, integrated and read out; at most two exposures are
    in memory. N+1's readout never targets a buffer N still needs: N is fetched before
    N+1 starts."""
    logger = get_run_logger()
    plans = plan_instrument(instrument)
    _check_all(specs, instrument, plans)
    start = time.perf_counter()
    total = sum(spec.count for spec in specs)
    results: list[ExposureResult] = []
    archiver = (
        SequenceArchiver(instrument, name, _current_flow_run_id())
        if instrument.archive.hdf5
        else None
    )
    pending: asyncio.Task[ExposureResult] | None = None

    def done(result: ExposureResult) -> None:
        results.append(result)
        logger.info("%s: %d of %d exposures done", name, len(results), total)

    workers = contextlib.ExitStack()
    dask_client = None
    if supports_layout(instrument) and not instrument.archive.hdf5:
        # Opened in a thread: the synchronous client runs its own event loop there.
        dask_client = await asyncio.to_thread(workers.enter_context, open_client(instrument.dask))
    async with open_instrument(plans) as sessions:
        system = await _system_info(sessions)
        try:
            for spec in specs:
                for _ in range(spec.count):
                    acquired = await acquire(sessions, spec, instrument)
                    if pending is not None:
                        previous, pending = pending, None
                        try:
                            done(await previous)
                        except BaseException:
                            # The frame just read out is still written before failing.
                            await finish(
                                acquired, sessions, instrument, system, archiver, dask_client
                            )
                            raise
                    job = finish(acquired, sessions, instrument, system, archiver, dask_client)
                    if pipelined:
                        pending = asyncio.ensure_future(job)
                    else:
                        done(await job)
            if pending is not None:
                previous, pending = pending, None
                done(await previous)
        finally:
            if pending is not None:
                # Leaving early (an error, a cancellation): what was read out is written.
                with contextlib.suppress(Exception):
                    await asyncio.shield(pending)
            if archiver is not None:
                archiver.close()
            await asyncio.to_thread(workers.close)
    return SequenceResult(
        name=name,
        flow_run_id=_current_flow_run_id(),
        exposures=results,
        elapsed_s=round(time.perf_counter() - start, 3),
    )


@flow(name="take-exposure")
async def take_exposure(spec: ExposureSpec, instrument: InstrumentConfig) -> list[ExposureResult]:
    """Take ``spec.count`` exposures of one kind."""
    result = await _take_all(f"take-{spec.image_type.value}", [spec], instrument, pipelined=True)
    return result.exposures


@flow(name="run-sequence")
async def run_sequence(
    sequence: SequenceSpec, instrument: InstrumentConfig, pipelined: bool = True
) -> SequenceResult:
    """Take every exposure of ``sequence`` in order, on one connection per controller.

    ``pipelined=False`` finishes each exposure before the next starts (for comparison
    and for debugging a stage in isolation).
    """
    return await _take_all(sequence.name, sequence.expand(), instrument, pipelined=pipelined)


async def _calibration_set(spec: CalibrationSpec, instrument: InstrumentConfig) -> SequenceResult:
    specs = spec.expand()
    result = await _take_all(spec.name, specs, instrument, pipelined=True)
    if not spec.build_masters:
        return result
    masters = await build_masters(specs, result.exposures, instrument, spec.combine)
    return result.model_copy(update={"masters": masters})


@flow(name="calibrations")
async def calibrations(spec: CalibrationSpec, instrument: InstrumentConfig) -> SequenceResult:
    """Take a calibration set (biases, darks, flats and arcs, in that order) and build
    master bias, dark and flat frames from it (unless ``build_masters`` is off)."""
    return await _calibration_set(spec, instrument)


@flow(name="observe-night")
async def observe_night(plan: NightPlan, instrument: InstrumentConfig) -> list[SequenceResult]:
    """Take every step of a night plan in order; every step is checked before the first.

    A step that fails stops the night (the controllers are reset); the steps already
    taken keep their files and appear in the run history.
    """
    plans = plan_instrument(instrument)
    for step in plan.steps:
        _check_all(step.expand(), instrument, plans)
    results = []
    for step in plan.steps:
        if isinstance(step, CalibrationSpec):
            results.append(await _calibration_set(step, instrument))
        else:
            results.append(await _take_all(step.name, step.expand(), instrument, pipelined=True))
    return results
