"""Recovering frames that were read out but never written (``ccdflow recover``).

A run that dies between the readout and its files leaves a save-point
(tasks/durable/savepoint.py). At the start of the next run on the instrument, once the
controllers are connected and before anything new is read out, each save-point is
checked against the controllers: if every buffer it names still holds the same frame
(same frame counter and timestamp), the frame is fetched again and finished as the
dead run would have (post-processed and written; files it had already written are
kept), and its sequence journal is told, so a resumed sequence does not take it
again. A frame that is gone (overwritten, or the controller was power-cycled) is
reported, and its save-point is set aside in ``savepoints/lost/`` with the reason.
"""

# No `from __future__ import annotations` here: Prefect validates a deployed run's
# parameters against the flow's signature, and string annotations of pydantic models
# cannot be resolved when the engine loads this module from its entrypoint.
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from prefect import flow, get_run_logger

from devices.base import DeviceError
from flows.frame import Acquired, ReadFrame, StageClock, finish, plan_exposure, recoverable
from schemas.errors import ConfigError
from schemas.instrument import InstrumentConfig
from schemas.results import ExposureResult
from tasks.control.instrument import ControllerSession, open_instrument, plan_instrument
from tasks.durable.instrument_lock import instrument_lock
from tasks.durable.journal import SequenceJournal
from tasks.durable.savepoint import SavePoint, pending_savepoints, remove_savepoint, set_aside
from tasks.fetch import fetch
from tasks.headers.telemetry import Snapshot

NOT_SAVED = "not saved before the run was interrupted"


@dataclass(frozen=True, slots=True)
class Recovered:
    """A frame written from a controller buffer, and the journal entry it completes."""

    result: ExposureResult
    journal: Path | None
    index: int | None


async def _still_there(point: SavePoint, sessions: Mapping[str, ControllerSession]) -> str | None:
    """None if every buffer still holds the save-point's frame, else why not."""
    for name, identity in point.frames.items():
        session = sessions.get(name)
        if session is None:
            return f"controller {name} is no longer in the instrument"
        held = await session.controller.held_frame(identity.buffer)
        if not held.complete or (held.frame, held.timestamp) != (
            identity.frame,
            identity.timestamp,
        ):
            return f"buffer {identity.buffer} of {name} now holds another frame"
    return None


async def _recover_one(
    point: SavePoint,
    sessions: list[ControllerSession],
    instrument: InstrumentConfig,
    system: Mapping[str, Mapping[str, str]],
) -> ExposureResult:
    plan = plan_exposure(point.spec, instrument, [s.plan for s in sessions])
    by_name = {s.plan.config.name: s for s in sessions}
    raw = {
        name: await fetch(by_name[name].controller, identity.buffer)
        for name, identity in point.frames.items()
    }
    frame = ReadFrame(
        raw=raw,
        buffers={name: identity.buffer for name, identity in point.frames.items()},
        date_obs=point.date_obs,
        darktime=point.darktime,
        start=Snapshot(values=dict(point.status_start)),
        end=Snapshot(missing={name: NOT_SAVED for name in point.frames}),
        failed=dict(point.failed),
        times=point.times,
    )
    acquired = Acquired(point.spec, plan, point.expnum, point.when, StageClock(), [frame])
    return await finish(acquired, sessions, instrument, system)


async def recover_frames(
    sessions: list[ControllerSession],
    instrument: InstrumentConfig,
    system: Mapping[str, Mapping[str, str]],
) -> list[Recovered]:
    """Write every frame a dead run left in the controllers (module docstring)."""
    logger = get_run_logger()
    recovered: list[Recovered] = []
    by_name = {s.plan.config.name: s for s in sessions}
    points = pending_savepoints(instrument)
    if points and not recoverable(sessions):
        # Left by an earlier config of this instrument whose cameras kept their frames.
        logger.warning(
            "%d save-point(s) not checked: %s cannot keep frames for a recovery (%s)",
            len(points),
            instrument.name,
            "; ".join(
                f"{s.plan.config.name}: {s.plan.capabilities.reason('buffered_frames')}"
                for s in sessions
                if not s.plan.capabilities.buffered_frames
            ),
        )
        return recovered
    for point in points:
        try:
            gone = await _still_there(point, by_name)
        except (DeviceError, ValueError) as exc:
            gone = f"cannot check the buffers: {exc}"
        if gone is not None:
            where = set_aside(instrument, point.expnum, gone)
            logger.error("exposure %d cannot be recovered: %s (%s)", point.expnum, gone, where)
            continue
        try:
            result = await _recover_one(point, sessions, instrument, system)
        except ConfigError as exc:
            where = set_aside(instrument, point.expnum, str(exc))
            logger.error("exposure %d cannot be recovered: %s (%s)", point.expnum, exc, where)
            continue
        if point.journal is not None and point.index is not None:
            SequenceJournal(point.journal).done(point.index, result)
        remove_savepoint(instrument, point.expnum)
        logger.warning(
            "exposure %d recovered from the controllers' buffers: %s",
            point.expnum,
            ", ".join(record.path.name for record in result.files),
        )
        recovered.append(Recovered(result, point.journal, point.index))
    return recovered


@flow(name="recover")
async def recover(instrument: InstrumentConfig) -> list[ExposureResult]:
    """Write the frames interrupted runs left in the controllers' buffers.

    Runs also do this by themselves when they start; this flow is for an operator who
    wants the frames now, without taking new exposures.
    """
    plans = plan_instrument(instrument)
    async with instrument_lock(instrument), open_instrument(plans) as sessions:
        system = {s.plan.config.name: await s.controller.identity() for s in sessions}
        return [r.result for r in await recover_frames(sessions, instrument, system)]
