"""The frame buffers: FRAME bookkeeping, the read lock, and which buffer is next.

At the frame clock the controller claims the next buffer after the last one written
that is not locked (LOCKn is the client saying "I am fetching this one"), so a locked
buffer is never overwritten; with no free buffer the readout waits.  WBUF stays on a
buffer until the next frame starts, and BUFnLINES grows on the readout schedule.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy.typing as npt

from devices.archon.acf import AcfConfig, AcfError
from devices.archon.simulator.errors import CommandError
from devices.archon.simulator.readout import ReadoutSchedule

__all__ = ["BUFFER_BASES", "BufferBank", "FrameBuffer", "buffer_capacity", "check_capacity"]

BUFFER_BASES = (0xA0000000, 0xC0000000, 0xE0000000)
"""Memory addresses of buffers 1..3 (FRAME reports them as BUFnBASE, in decimal)."""
_MIB = 1024 * 1024


def n_buffers(acf: AcfConfig) -> int:
    """BIGBUF=1 trades three buffers for two larger ones."""
    return 2 if acf.bigbuf else 3


def buffer_capacity(acf: AcfConfig) -> int:
    """Bytes one buffer holds: 512 MiB, or 768 MiB with BIGBUF."""
    return (768 if acf.bigbuf else 512) * _MIB


def check_capacity(acf: AcfConfig) -> None:
    """Refuse a geometry whose frame would not fit a buffer."""
    capacity = buffer_capacity(acf)
    if acf.buffer_bytes > capacity:
        raise AcfError(
            f"frame of {acf.buffer_bytes} bytes exceeds the {capacity} byte buffer",
            source=acf.source,
        )


@dataclass
class FrameBuffer:
    """One buffer and what FRAME says about it."""

    base: int
    complete: bool = False
    frame: int = 0
    width: int = 0
    height: int = 0
    sample: int = 0
    mode: int = 0
    timestamp: int = 0
    re_timestamp: int = 0
    fe_timestamp: int = 0
    lines: int = 0
    data: npt.NDArray[Any] | None = None
    schedule: ReadoutSchedule | None = None
    read_start: float | None = None
    rows_per_line: int = 1

    def lines_now(self, now: float) -> int:
        """Buffer rows written so far; grows with time during readout."""
        if self.read_start is None or self.schedule is None:
            return self.lines
        done = self.schedule.rows_done(now - self.read_start)
        return min(self.height, done * self.rows_per_line)

    def end_readout(self, now: float) -> None:
        """Freeze LINES where the readout stopped (finished or abandoned)."""
        self.lines = self.lines_now(now)
        self.read_start = None


class BufferBank:
    """Buffers 1..3, the lock, WBUF and the frame counter."""

    def __init__(self, count: int, on_change: Callable[[], None]) -> None:
        self.buffers = [FrameBuffer(base) for base in BUFFER_BASES]
        self.count = count
        self.lock = 0
        self.wbuf = 1
        self._last_written = -1
        self._frame_counter = 0
        self._on_change = on_change

    def set_lock(self, n: int) -> None:
        """LOCKn: n = 0 unlocks; a buffer that does not exist is refused."""
        if n > self.count:
            raise CommandError(f"no buffer {n}")
        self.lock = n
        self._on_change()

    def free_buffer(self) -> int | None:
        """Next unlocked buffer after the last one written (0-based), if any."""
        for step in range(1, self.count + 1):
            index = (self._last_written + step) % self.count
            if index + 1 != self.lock:
                return index
        return None

    def begin_frame(
        self,
        index: int,
        acf: AcfConfig,
        *,
        timer: int,
        exposure_timers: tuple[int, int],
        schedule: ReadoutSchedule,
        start: float,
    ) -> FrameBuffer:
        """The frame clock: claim buffer ``index`` and reset its FRAME bookkeeping."""
        self._frame_counter += 1
        self._last_written = index
        self.wbuf = index + 1
        height, width = acf.buffer_shape
        buf = self.buffers[index]
        buf.complete = False
        buf.frame = self._frame_counter
        buf.width, buf.height = width, height
        buf.sample, buf.mode = acf.sample_mode, acf.frame_mode
        buf.timestamp = timer
        buf.re_timestamp, buf.fe_timestamp = exposure_timers
        buf.lines = 0
        buf.rows_per_line = 2 if acf.frame_mode == 2 else 1
        buf.schedule, buf.read_start = schedule, start
        return buf

    def containing(self, address: int, capacity: int) -> tuple[FrameBuffer, int] | None:
        """The buffer whose memory holds ``address``, and the byte offset into it.

        FETCH reads controller memory from any address, so a client may transfer a
        buffer in pieces (a later FETCH starting part-way in), letting other commands
        be answered between the pieces.
        """
        for base, buf in zip(BUFFER_BASES[: self.count], self.buffers, strict=False):
            if base <= address < base + capacity:
                return buf, address - base
        return None

    def frame_reply(self, timer: int, now: float) -> str:
        """The FRAME payload: keys containing TIME are hex, all others decimal."""
        items: list[tuple[str, object]] = [("TIMER", f"{timer:X}"), ("RBUF", self.lock)]
        items.append(("WBUF", self.wbuf))
        for n, buf in enumerate(self.buffers, start=1):
            b = f"BUF{n}"
            items += [
                (f"{b}SAMPLE", buf.sample),
                (f"{b}COMPLETE", int(buf.complete)),
                (f"{b}MODE", buf.mode),
                (f"{b}BASE", buf.base),
                (f"{b}FRAME", buf.frame),
                (f"{b}WIDTH", buf.width),
                (f"{b}HEIGHT", buf.height),
                (f"{b}PIXELS", buf.width if buf.frame else 0),
                (f"{b}LINES", buf.lines_now(now)),
                (f"{b}RAWBLOCKS", 0),
                (f"{b}RAWLINES", 0),
                (f"{b}RAWOFFSET", 0),
                (f"{b}TIMESTAMP", f"{buf.timestamp:X}"),
                (f"{b}RETIMESTAMP", f"{buf.re_timestamp:X}"),
                (f"{b}FETIMESTAMP", f"{buf.fe_timestamp:X}"),
            ]
        return " ".join(f"{k}={v}" for k, v in items)
