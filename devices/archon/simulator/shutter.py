"""The shutter and the charge the CCD collected since it was last cleared.

Pixels depend on two times the sensor model needs at readout: seconds of dark since
the last clear (flush, readout, or continuous AutoFlush) and seconds of light (the
shutter open while the CCD collected charge).  Keeping both here means every path
that opens, closes or clears updates them the same way.

The blade (the physical shutter) is separate from a controller's view of it, so that
several simulated controllers can sit behind one shutter: the instrument's shutter
controller opens it, and every CCD behind it sees light for as long as it is open
during that CCD's own charge collection.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["Light", "Shutter", "ShutterBlade"]

Light = Callable[[float], float]
"""How bright the light behind the shutter is at a UNIX time, relative to the sensor
model's ``illumination`` (1.0: as configured). A twilight sky fades by orders of
magnitude within minutes; a flat-field lamp is switched on and off."""

STEPS = 16
"""Simpson steps per open interval: a light that changes by x10 in one exposure is
integrated to better than 0.1 %."""


class ShutterBlade:
    """The physical shutter: open or closed, and the log of its openings."""

    def __init__(self, light: Light | None = None) -> None:
        """``light``: the light that reaches the CCDs while open (steady by default)."""
        self.opened: float | None = None
        self.log: list[tuple[float, float]] = []
        self.light = light
        self._to_unix = time.time() - time.monotonic()

    @property
    def is_open(self) -> bool:
        return self.opened is not None

    def open(self) -> None:
        if self.opened is None:
            self.opened = time.monotonic()

    def close(self) -> None:
        opened, self.opened = self.opened, None
        if opened is not None:
            self.log.append((opened, time.monotonic()))

    def open_seconds(self, start: float, end: float) -> float:
        """How long the shutter was open between ``start`` and ``end`` (monotonic),
        in seconds of the sensor's configured illumination when a light is set."""
        intervals = list(self.log)
        if self.opened is not None:
            intervals.append((self.opened, end))
        clipped = [(max(o, start), min(c, end)) for o, c in intervals]
        return sum(self._exposure(o, c) for o, c in clipped if c > o)

    def _exposure(self, opened: float, closed: float) -> float:
        if self.light is None:
            return closed - opened
        step = (closed - opened) / STEPS
        weights = [1.0, *([4.0, 2.0] * (STEPS // 2 - 1)), 4.0, 1.0]
        samples = (self.light(self._to_unix + opened + i * step) for i in range(STEPS + 1))
        return step / 3 * sum(w * v for w, v in zip(weights, samples, strict=True))


class Shutter:
    """One controller's shutter control and its CCDs' exposure clocks."""

    def __init__(self, blade: ShutterBlade | None = None) -> None:
        self.blade = blade or ShutterBlade()
        self._opened_by_us = False
        self.last_clear = time.monotonic()

    @property
    def is_open(self) -> bool:
        return self.blade.is_open

    @property
    def log(self) -> list[tuple[float, float]]:
        return self.blade.log

    def open(self) -> None:
        self.blade.open()
        self._opened_by_us = True

    def close(self) -> None:
        """Close the shutter if this controller opened it (another's stays open)."""
        if self._opened_by_us:
            self.blade.close()
            self._opened_by_us = False

    def cleared(self) -> None:
        """The CCD has just been emptied: dark and light accumulate from now."""
        self.last_clear = time.monotonic()

    def dark_seconds(self) -> float:
        return time.monotonic() - self.last_clear

    @property
    def light_seconds(self) -> float:
        return self.blade.open_seconds(self.last_clear, time.monotonic())
