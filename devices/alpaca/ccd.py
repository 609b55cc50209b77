"""An Alpaca camera as a CCD controller: the exposure life cycle the stage tasks use.

The stage tasks (flush, expose, readout, fetch, abort) are typed against
devices.base.CCDController; this adapter gives an Alpaca camera that shape, so the
same stages drive it. What the two families do differently is said here once:

* an Alpaca camera has no separate flush: it clears its sensor when an exposure
  starts, so :meth:`flush` only makes sure it is idle;
* ``StartExposure`` integrates and reads out by itself: :meth:`expose` returns when
  the integration has ended (the camera left Exposing), :meth:`readout` when the
  image is ready, and :meth:`fetch` downloads it (ImageBytes) as one frame buffer;
* the times come from the camera (LastExposureStartTime and Duration), which the
  ASCOM standard gives to the millisecond at best.

The frame is one CCD read by one amplifier with no overscan (Alpaca cameras do not
expose theirs), returned as unsigned integers of the sensor's width.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import timedelta

import numpy as np
import numpy.typing as npt

from devices.alpaca.camera import AlpacaCamera, CameraState
from devices.alpaca.errors import AlpacaCameraFailedError
from devices.base import DeviceStateError, DeviceTimeoutError, ExposureTimes

POLL_S = 0.01
"""How often the camera's state is asked while integrating (a GET costs ~1.5 ms)."""
READY_MARGIN_S = 30.0
"""Beyond the exposure time: how long a camera may take to read out and be ready."""
CAMERA_TIME_UNCERTAINTY_S = 0.001
"""LastExposureStartTime is given to the millisecond (ISO 8601 with fraction)."""


class AlpacaCcdCamera:
    """CCDController over one :class:`AlpacaCamera` (which must be connected)."""

    def __init__(self, camera: AlpacaCamera, *, ready_margin_s: float = READY_MARGIN_S) -> None:
        self.camera = camera
        self.ready_margin_s = ready_margin_s
        self._requested = 0.0
        self._times: ExposureTimes | None = None

    def __repr__(self) -> str:
        return f"AlpacaCcdCamera({self.camera.address})"

    async def flush(self, count: int = 1) -> None:
        """The camera clears its sensor at each exposure start; be idle for it."""
        del count
        state = await self.camera.camera_state()
        if state is CameraState.ERROR:
            raise AlpacaCameraFailedError(
                "CameraState says Error", device=str(self.camera.address), member="camerastate"
            )
        if state is not CameraState.IDLE:
            raise DeviceStateError(f"{self.camera.address}: camera is {state.name}, not idle")

    async def expose(self, exptime: float, *, open_shutter: bool) -> float:
        """StartExposure, then wait while the camera integrates; the monotonic start.

        Leaving early (a cancellation, an error) aborts the exposure, so an
        interrupted exposure leaves the camera idle.
        """
        self._requested = exptime
        self._times = None
        started = time.monotonic()
        await self.camera.start_exposure(exptime, light=open_shutter)
        deadline = started + exptime + self.ready_margin_s
        try:
            while True:
                state = await self.camera.camera_state()
                if state is CameraState.ERROR:
                    raise AlpacaCameraFailedError(
                        "CameraState says Error during the exposure",
                        device=str(self.camera.address),
                        member="camerastate",
                    )
                elapsed = time.monotonic() - started
                if state is CameraState.IDLE and elapsed < exptime:
                    # Idle before the time was up: ended by someone else (an operator's
                    # make-safe) unless the image is there after all.
                    if await self.camera.image_ready():
                        return started
                    raise DeviceStateError(
                        f"{self.camera.address}: the exposure was ended from outside after "
                        f"{elapsed:.2f} s of {exptime:g} s (camera idle, no image)"
                    )
                if state is not CameraState.EXPOSING and (
                    elapsed >= exptime or state is CameraState.IDLE
                ):
                    return started
                if time.monotonic() > deadline:
                    raise DeviceTimeoutError(
                        f"{self.camera.address}: still exposing {exptime + self.ready_margin_s:g}"
                        f" s after StartExposure({exptime:g})"
                    )
                await asyncio.sleep(POLL_S)
        except BaseException:
            await asyncio.shield(self._abort_quietly())
            raise

    async def readout(self, *, delay: int = 0) -> int:
        """Wait until the image is ready; the camera's one frame buffer is number 1."""
        if delay:
            raise DeviceStateError("an Alpaca camera has no readout delay")
        await self.camera.wait_image_ready(timeout=self.ready_margin_s)
        start = await self.camera.last_exposure_start_time()
        duration = await self.camera.last_exposure_duration()
        self._times = ExposureTimes(
            start=start,
            end=start + timedelta(seconds=duration),
            source="camera clock",
            uncertainty_s=CAMERA_TIME_UNCERTAINTY_S,
            requested_s=self._requested,
        )
        return 1

    async def fetch(self, buffer: int = -1) -> npt.NDArray[np.uint16] | npt.NDArray[np.uint32]:
        """Download the image (ImageBytes) as unsigned integers, (y, x)."""
        if buffer not in (-1, 1):
            raise ValueError(f"an Alpaca camera has one frame buffer (1), not {buffer}")
        pixels = await self.camera.download(timeout=self.ready_margin_s)
        if pixels.ndim != 2:
            raise DeviceStateError(f"{self.camera.address}: colour planes are not supported")
        return as_unsigned(pixels)

    async def abort(self) -> None:
        """AbortExposure and wait until the camera is idle."""
        await self.camera.abort_exposure()
        await self.camera.wait_idle(timeout=self.ready_margin_s)

    async def _abort_quietly(self) -> None:
        # The camera may already have finished: idle is what matters.
        with contextlib.suppress(Exception):
            await self.camera.abort_exposure()

    def exposure_times(self) -> ExposureTimes:
        """The last readout's times, from the camera's own clock."""
        if self._times is None:
            raise DeviceStateError("no exposure has been read out yet")
        return self._times


def as_unsigned(pixels: npt.NDArray[np.generic]) -> npt.NDArray[np.uint16] | npt.NDArray[np.uint32]:
    """Unsigned 16-bit pixels when every value fits (a 16-bit ADC), else 32-bit.

    Alpaca sends counts as Int32 or UInt16; negative counts cannot come from an ADC
    and are refused rather than wrapped.
    """
    if pixels.dtype.kind == "f":
        raise DeviceStateError("floating-point images are not raw counts")
    if pixels.size and int(pixels.min()) < 0:
        raise DeviceStateError(f"negative counts in the image (minimum {int(pixels.min())})")
    if not pixels.size or int(pixels.max()) <= np.iinfo(np.uint16).max:
        return np.ascontiguousarray(pixels, dtype=np.uint16)
    return np.ascontiguousarray(pixels, dtype=np.uint32)
