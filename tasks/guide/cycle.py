"""One guide frame on every guide camera at once: flush, expose, read out, fetch.

Plain coroutines, not Prefect tasks: a guide exposure takes hundreds of frames a few
hundred milliseconds apart, and a task run per frame (or per stamp) would cost more
than the frame. Each camera runs its own chain concurrently with the others, so a
camera's frame is fetched the moment its readout ends. Its STATUS is read while it
integrates, within a bound, for the per-frame table (a slow reply leaves the values
empty rather than delaying the frame). Every camera opens its own shutter: guide
cameras each sit behind their own.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy.typing as npt

from devices.base import DeviceError, ExposureTimes
from devices.camera import Camera
from devices.telemetry import Reading
from tasks.control.instrument import ControllerSession

STATUS_TIMEOUT_S = 0.5
"""Longest wait for a camera's STATUS during a frame."""


@dataclass(frozen=True, slots=True)
class CameraFrame:
    """One camera's frame: pixels, when it integrated, when its readout ended."""

    raw: npt.NDArray[Any]
    buffer: int
    date_obs: datetime
    """The integration's start (the camera's measured times when it has them)."""
    exptime: float
    """The integration as measured (or as asked when not measured)."""
    readout_end: float
    """UNIX time the readout was seen complete."""
    readout_end_clock: float
    """The same moment on ``time.perf_counter`` (for latencies)."""
    status: Mapping[str, Reading]
    """The camera's STATUS during the integration (empty when it did not answer)."""


async def _status(camera: Camera) -> Mapping[str, Reading]:
    try:
        return await asyncio.wait_for(camera.telemetry(), STATUS_TIMEOUT_S)
    except (DeviceError, TimeoutError):
        return {}


def _times(camera: Camera) -> ExposureTimes | None:
    try:
        return camera.exposure_times()
    except RuntimeError:
        return None


async def read_camera(session: ControllerSession, exptime: float) -> CameraFrame:
    """flush -> expose (shutter open) -> readout -> fetch on one camera."""
    camera = session.controller
    await camera.flush(session.plan.config.flush_count)
    status = asyncio.ensure_future(_status(camera))
    try:
        started = datetime.now(UTC)
        await camera.expose(exptime, open_shutter=True)
        buffer = await camera.readout()
        readout_end, readout_end_clock = time.time(), time.perf_counter()
        raw = await camera.fetch(buffer)
    except BaseException:
        status.cancel()
        raise
    readings = await status
    times = _times(camera)
    return CameraFrame(
        raw=raw,
        buffer=buffer,
        date_obs=times.start if times is not None else started,
        exptime=times.measured_s if times is not None else exptime,
        readout_end=readout_end,
        readout_end_clock=readout_end_clock,
        status=readings,
    )


AfterFetch = Callable[[str, CameraFrame], Awaitable[float | None]]
"""Called in a camera's own chain with its frame, the moment it is fetched (the flow
archives the stamps there: a camera never waits for the others' fetches)."""


@dataclass(frozen=True, slots=True)
class CameraOutcome:
    """A camera's frame and what ``after`` returned for it (the flow: its latency)."""

    frame: CameraFrame
    after: float | None


async def _chain(
    session: ControllerSession, exptime: float, after: AfterFetch | None
) -> CameraOutcome:
    frame = await read_camera(session, exptime)
    done = None if after is None else await after(session.plan.config.name, frame)
    return CameraOutcome(frame, done)


async def read_all(
    sessions: list[ControllerSession], exptime: float, after: AfterFetch | None = None
) -> dict[str, CameraOutcome | Exception]:
    """Every camera's frame (or the error it met), all cameras at once, each followed
    by ``after`` in its own chain.

    Cancellation propagates (each camera's expose aborts, shutter closed); an error of
    one camera does not stop the others' frames: the caller applies the instrument's
    failure policy.
    """
    outcomes = await asyncio.gather(
        *(_chain(session, exptime, after) for session in sessions), return_exceptions=True
    )
    frames: dict[str, CameraOutcome | Exception] = {}
    for session, outcome in zip(sessions, outcomes, strict=True):
        if isinstance(outcome, Exception | CameraOutcome):
            frames[session.plan.config.name] = outcome
        else:
            raise outcome
    return frames
