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

__all__ = ["Shutter", "ShutterBlade"]


class ShutterBlade:
    """The physical shutter: open or closed, and the log of its openings."""

    def __init__(self) -> None:
        self.opened: float | None = None
        self.log: list[tuple[float, float]] = []

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
        """How long the shutter was open between ``start`` and ``end`` (monotonic)."""
        intervals = list(self.log)
        if self.opened is not None:
            intervals.append((self.opened, end))
        return sum(max(0.0, min(c, end) - max(o, start)) for o, c in intervals)


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
