"""The cadence grid guide frames start on, and the latency figures a run reports.

Frame k is due at t0 + k x period on the monotonic clock: a frame waits for its time,
and one that cannot start on it (the previous frame overran) starts at once and is
counted late. The grid never moves, so one slow frame does not delay all that follow.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

import numpy as np

LATE_AFTER_S = 0.05
"""A frame starting later than this after its time is late (or a tenth of a short
period): the event loop's own wake-up jitter is a few milliseconds."""


class CadenceGrid:
    """Start times t0 + k x ``period``; t0 is the first :meth:`wait`'s moment."""

    def __init__(self, period: float, clock: Callable[[], float] = time.monotonic) -> None:
        if not period > 0:
            raise ValueError(f"period must be > 0 s, not {period}")
        self.period = period
        self.late_after = min(LATE_AFTER_S, 0.1 * period)
        self._clock = clock
        self._t0: float | None = None

    def due(self, index: int) -> float:
        """When frame ``index`` should start (the grid starts at the first wait)."""
        if self._t0 is None:
            raise RuntimeError("the grid starts at the first wait()")
        return self._t0 + index * self.period

    async def wait(self, index: int) -> float:
        """Sleep until frame ``index`` is due; return how late it is now (seconds, >= 0)."""
        if self._t0 is None:
            self._t0 = self._clock()
        delay = self.due(index) - self._clock()
        if delay > 0:
            await asyncio.sleep(delay)
        return max(0.0, self._clock() - self.due(index))

    def is_late(self, lag: float) -> bool:
        return lag > self.late_after


def percentile_ms(seconds: Sequence[float], percent: float) -> float | None:
    """The ``percent`` percentile of ``seconds`` in milliseconds (None: no values)."""
    if not seconds:
        return None
    return round(float(np.percentile(np.asarray(seconds) * 1000.0, percent)), 2)
