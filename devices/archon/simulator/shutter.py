"""The shutter and the charge the CCD collected since it was last cleared.

Pixels depend on two times the sensor model needs at readout: seconds of dark since
the last clear (flush, readout, or continuous AutoFlush) and seconds of light (the
shutter open).  Keeping both here means every path that opens, closes or clears
updates them the same way.
"""

from __future__ import annotations

import time

__all__ = ["Shutter"]


class Shutter:
    """Shutter state, the log of openings, and the exposure clocks."""

    def __init__(self) -> None:
        self._opened: float | None = None
        self.log: list[tuple[float, float]] = []
        self.last_clear = time.monotonic()
        self.light_seconds = 0.0

    @property
    def is_open(self) -> bool:
        return self._opened is not None

    def open(self) -> None:
        if self._opened is None:
            self._opened = time.monotonic()

    def close(self) -> None:
        opened, self._opened = self._opened, None
        if opened is not None:
            closed = time.monotonic()
            self.log.append((opened, closed))
            self.light_seconds += closed - opened

    def cleared(self) -> None:
        """The CCD has just been emptied: dark and light accumulate from now."""
        self.last_clear = time.monotonic()
        self.light_seconds = 0.0

    def dark_seconds(self) -> float:
        return time.monotonic() - self.last_clear
