"""The exposure flows: one kind of exposure (``take_exposure``) and a sequence.

Each frame runs the stages flush -> expose -> readout -> fetch -> post-process ->
write as Prefect tasks awaited on the flow's own event loop (device tasks must not be
submitted to threads: they would ignore timeouts and cancellation). All controllers
of the instrument run each stage together. Specs are checked against the instrument
before any connection is made.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TypeVar

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from schemas.exposure import ExposureSpec, SequenceSpec
from schemas.instrument import InstrumentConfig
from schemas.results import ExposureResult, FileRecord, SequenceResult
from tasks.expose import expose
from tasks.fetch import fetch
from tasks.flush import flush
from tasks.instrument import ControllerSession, open_instrument, plan_instrument
from tasks.numbering import next_exposure_number, night_folder_name
from tasks.post_process import post_process
from tasks.readout import readout
from tasks.write import ExposureFacts, exposure_path, write

T = TypeVar("T")

STAGES = ("flush", "expose", "readout", "fetch", "post_process", "write")


class _StageClock:
    """Collects wall-clock seconds per stage, in the order the stages ran."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    async def run(self, stage: str, work: Callable[[], Awaitable[T]]) -> T:
        start = time.perf_counter()
        try:
            return await work()
        finally:
            self.seconds[stage] = round(time.perf_counter() - start, 4)


def _current_flow_run_id() -> str | None:
    run_id = flow_run.get_id()
    return str(run_id) if run_id else None


async def take_frame(
    sessions: list[ControllerSession], spec: ExposureSpec, instrument: InstrumentConfig
) -> ExposureResult:
    """One frame of ``spec`` on every controller: all six stages, files on disk."""
    logger = get_run_logger()
    clock = _StageClock()
    night = night_folder_name(datetime.now(UTC))
    ccd_names = instrument.ccd_names
    expnum = next_exposure_number(
        instrument.storage.data_root,
        taken=lambda n: any(exposure_path(instrument, night, c, n).exists() for c in ccd_names),
    )
    controllers = [s.controller for s in sessions]

    await clock.run(
        "flush",
        lambda: asyncio.gather(
            *(
                flush(c, s.plan.config.flush_count)
                for c, s in zip(controllers, sessions, strict=True)
            )
        ),
    )
    integration_start = time.monotonic()
    starts = await clock.run(
        "expose",
        lambda: asyncio.gather(*(expose(c, spec.exptime, spec.opens_shutter) for c in controllers)),
    )
    darktime = time.monotonic() - integration_start
    buffers = await clock.run("readout", lambda: asyncio.gather(*(readout(c) for c in controllers)))
    frames = await clock.run(
        "fetch",
        lambda: asyncio.gather(*(fetch(c, b) for c, b in zip(controllers, buffers, strict=True))),
    )
    images = await clock.run(
        "post_process",
        lambda: asyncio.gather(
            *(post_process(f, s.plan) for f, s in zip(frames, sessions, strict=True))
        ),
    )
    run_id = _current_flow_run_id()
    date_obs = min(starts)

    async def write_all() -> list[list[FileRecord]]:
        return await asyncio.gather(
            *(
                write(
                    ccd_images,
                    session.plan.config.ccds,
                    ExposureFacts(
                        expnum=expnum,
                        image_type=spec.image_type.value,
                        exptime=spec.exptime,
                        darktime=darktime,
                        date_obs=date_obs,
                        object_name=spec.object_name,
                        controller=session.plan.config.name,
                        buffer=buffer,
                        flow_run_id=run_id,
                    ),
                    instrument,
                    night,
                )
                for ccd_images, session, buffer in zip(images, sessions, buffers, strict=True)
            )
        )

    records = await clock.run("write", write_all)
    files = [record for group in records for record in group]
    logger.info(
        "exposure %d (%s, %.3f s): %d files, %s",
        expnum,
        spec.image_type.value,
        spec.exptime,
        len(files),
        ", ".join(f"{k} {v:.3f} s" for k, v in clock.seconds.items()),
    )
    return ExposureResult(
        expnum=expnum,
        image_type=spec.image_type,
        exptime=spec.exptime,
        date_obs=date_obs,
        files=files,
        timings=clock.seconds,
    )


@flow(name="take-exposure")
async def take_exposure(spec: ExposureSpec, instrument: InstrumentConfig) -> list[ExposureResult]:
    """Take ``spec.count`` frames of one kind of exposure."""
    plans = plan_instrument(instrument)
    async with open_instrument(plans) as sessions:
        return [await take_frame(sessions, spec, instrument) for _ in range(spec.count)]


@flow(name="run-sequence")
async def run_sequence(sequence: SequenceSpec, instrument: InstrumentConfig) -> SequenceResult:
    """Take every exposure of ``sequence`` in order, on one connection per controller."""
    logger = get_run_logger()
    plans = plan_instrument(instrument)
    start = time.perf_counter()
    results: list[ExposureResult] = []
    async with open_instrument(plans) as sessions:
        for spec in sequence.expand():
            for _ in range(spec.count):
                results.append(await take_frame(sessions, spec, instrument))
                logger.info(
                    "sequence %s: %d of %d frames done",
                    sequence.name,
                    len(results),
                    sequence.total_frames,
                )
    return SequenceResult(
        name=sequence.name,
        flow_run_id=_current_flow_run_id(),
        exposures=results,
        elapsed_s=round(time.perf_counter() - start, 3),
    )
