"""Waiting for a cooled sensor to be stable at its set point.

Dark current doubles every few degrees, so a frame taken while the sensor still
drifts towards its set point is not calibrated by darks taken at it. A camera counts
as stable when every reading over the last ``stable_s`` seconds was within
``tolerance_c`` of the set point, whichever side it approaches from (cooling down,
or warming up to a higher set point); one reading outside starts the window again.

:class:`StabilityWindow` is the pure rule (readings in, verdict out), so it is
tested without a camera; :func:`wait_until_stable` polls a camera with it, bounded.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from devices.base import DeviceTimeoutError

POLL_S = 0.5
"""How often the temperature is read while waiting (a GET costs ~1.5 ms)."""


@dataclass(frozen=True, slots=True)
class CoolingTarget:
    """A set point and what counts as having reached it."""

    set_point_c: float
    tolerance_c: float
    stable_s: float
    timeout_s: float

    def __post_init__(self) -> None:
        if self.tolerance_c <= 0 or self.stable_s < 0 or self.timeout_s <= 0:
            raise ValueError("tolerance_c and timeout_s must be > 0, stable_s >= 0")


class StabilityWindow:
    """Readings in, "stable for long enough" out (module docstring)."""

    def __init__(self, target: CoolingTarget) -> None:
        self.target = target
        self._within_since: float | None = None

    def add(self, at_s: float, temperature_c: float) -> bool:
        """Record a reading taken at monotonic ``at_s``; whether it is now stable."""
        if abs(temperature_c - self.target.set_point_c) > self.target.tolerance_c:
            self._within_since = None
            return False
        if self._within_since is None:
            self._within_since = at_s
        return at_s - self._within_since >= self.target.stable_s

    def forget(self) -> None:
        """Start over (the set point changed, or the camera was reconnected)."""
        self._within_since = None


async def wait_until_stable(
    read: Callable[[], Awaitable[float]],
    window: StabilityWindow,
    *,
    device: str,
    poll_s: float = POLL_S,
) -> float:
    """Poll ``read()`` until ``window`` says stable; the last temperature.

    DeviceTimeoutError after the target's ``timeout_s``, naming the device, the set
    point and the last reading.
    """
    target = window.target
    deadline = time.monotonic() + target.timeout_s
    while True:
        temperature = await read()
        now = time.monotonic()
        if window.add(now, temperature):
            return temperature
        if now >= deadline:
            raise DeviceTimeoutError(
                f"{device}: CCD temperature {temperature:.2f} C not stable within "
                f"{target.tolerance_c:g} C of the set point {target.set_point_c:g} C for "
                f"{target.stable_s:g} s after {target.timeout_s:g} s (cooling.timeout_s)"
            )
        await asyncio.sleep(poll_s)
