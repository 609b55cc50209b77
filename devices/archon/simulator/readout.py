"""How long a readout, a skip and a flush take, and how many rows are stored when.

The timing model (all taps are read in parallel, so times are per tap):

* a sampled pixel takes ``1 / pixel_rate_hz``; a pixel that is skipped
  (Pre/PostSkipPixels) or summed into a bin without its own sample takes a tenth of
  that, as fast serial clocking does;
* a stored row takes its samples, its fast pixels, and ``WaitCount`` x 10 ns: WaitCount
  counts per LINE (the sim.acf script calls ``Delay(WaitCount)`` once after every
  ReadRow, and one Delay iteration is one 10 ns tick);
* a skipped line (Pre/PostSkipLines) is clocked at a tenth of an unbinned line's
  time and stores nothing; a flush clocks every line of the CCD the same way.

Rows are stored in readout order: PreSkipLines pass with nothing stored, then the
binned image rows, then a PostSkipLines gap, then the binned overscan rows.  The
core does not sleep line by line: it computes when row ``k`` is complete, so a FRAME
poll sees BUFnLINES grow exactly on schedule at any pixel rate, without thousands of
wake-ups per frame.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from devices.archon.acf import AcfConfig
from devices.archon.sensor import ReadoutWindow, readout_window

__all__ = ["FAST_CLOCK_FACTOR", "WAIT_TICK", "ReadoutSchedule", "flush_seconds"]

FAST_CLOCK_FACTOR = 10
"""Skipped lines and pixels are clocked this many times faster than read ones."""
WAIT_TICK = 10e-9
"""Seconds per WaitCount unit (one 100 MHz tick), added once per stored row."""


def _serial_pixels(window: ReadoutWindow) -> int:
    """Pixels shifted out of the serial register per line, unbinned."""
    return window.preskip_pixels + window.pixels + window.postskip_pixels + window.overscan_pixels


@dataclass(frozen=True, slots=True)
class ReadoutSchedule:
    """When each stored row of one tap is complete, counted from the frame clock."""

    preskip: float
    row_time: float
    data_rows: int
    postskip: float
    rows: int
    stored_rows: int

    @classmethod
    def plan(
        cls, acf: AcfConfig, params: Mapping[str, int], pixel_rate_hz: float
    ) -> ReadoutSchedule:
        """The schedule of a readout with the applied geometry and current parameters."""
        window = readout_window(acf, params)
        pixel = 1.0 / pixel_rate_hz
        fast = pixel / FAST_CLOCK_FACTOR
        serial = _serial_pixels(window)
        samples = window.cols
        wait = max(0, {k.lower(): v for k, v in params.items()}.get("waitcount", 0))
        row_time = samples * pixel + (serial - samples) * fast + wait * WAIT_TICK
        skip_line = serial * fast
        return cls(
            preskip=window.preskip_lines * skip_line,
            row_time=row_time,
            data_rows=window.data_rows,
            postskip=window.postskip_lines * skip_line,
            rows=window.rows,
            stored_rows=acf.line_count,
        )

    @property
    def total(self) -> float:
        """Seconds from the frame clock to the last row."""
        return self.preskip + self.rows * self.row_time + self.postskip

    def rows_done(self, elapsed: float) -> int:
        """Rows of one tap stored ``elapsed`` seconds after the frame clock.

        Rows LINECOUNT asks for beyond those the window clocks are only counted when
        the readout ends (the sensor model fills them with bias).
        """
        if elapsed >= self.total:
            return self.stored_rows
        t = elapsed - self.preskip
        if t <= 0 or self.row_time <= 0:
            return 0
        done = min(self.data_rows, int(t / self.row_time))
        if done == self.data_rows:
            t -= self.data_rows * self.row_time + self.postskip
            if t > 0:
                done = min(self.rows, self.data_rows + int(t / self.row_time))
        return min(self.stored_rows, done)


def flush_seconds(acf: AcfConfig, params: Mapping[str, int], pixel_rate_hz: float) -> float:
    """One flush: every line of the CCD (skipped, read and overscan) clocked fast."""
    window = readout_window(acf, params)
    lines = window.preskip_lines + window.lines + window.postskip_lines + window.overscan_lines
    return lines * _serial_pixels(window) / pixel_rate_hz / FAST_CLOCK_FACTOR
