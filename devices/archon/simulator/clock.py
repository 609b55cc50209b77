"""The controller's 64-bit TIMER: 100 MHz ticks since the controller started.

FRAME timestamps and TIMER replies must come from one clock, or a client comparing
a buffer's TIMESTAMP with TIMER would see time run backwards.
"""

from __future__ import annotations

import time

__all__ = ["TIMER_HZ", "Clock"]

TIMER_HZ = 100_000_000


class Clock:
    """``time.monotonic()`` rebased to the controller's start."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()

    def ticks(self) -> int:
        return int((time.monotonic() - self.t0) * TIMER_HZ)

    def seconds(self) -> float:
        return time.monotonic() - self.t0
