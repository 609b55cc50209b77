"""Where a guide camera's science pixels sit in its raw frame.

A guide camera is one CCD (a controller reading more is refused when the exposure is
planned). Its detector image is the CCD's science pixels in physical orientation, with
the overscan left out: the coordinates regions of interest are given in. For the
common guide camera (one amplifier read in its natural direction) that image is a view
of the raw frame, so cutting stamps copies only the stamps; amplifiers that read an
axis in reverse are flipped into place (one copy of the frame).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from tasks.control.instrument import ControllerPlan
from tasks.processing.sections import Box


@dataclass(frozen=True, slots=True)
class _Amplifier:
    """One amplifier's science block in the raw frame (readout order) and its place."""

    rows: slice
    cols: slice
    flip_rows: bool
    flip_cols: bool
    place: Box


@dataclass(frozen=True, slots=True)
class Detector:
    """A guide camera's detector: its (lines, pixels) and how to read it from a frame."""

    shape: tuple[int, int]
    amplifiers: tuple[_Amplifier, ...]

    def image(self, raw: npt.NDArray[Any]) -> npt.NDArray[Any]:
        """The science pixels of ``raw`` in physical orientation (a view when possible)."""
        if len(self.amplifiers) == 1:
            amp = self.amplifiers[0]
            block = raw[amp.rows, amp.cols]
            return block[:: -1 if amp.flip_rows else 1, :: -1 if amp.flip_cols else 1]
        image = np.empty(self.shape, dtype=raw.dtype)
        for amp in self.amplifiers:
            block = raw[amp.rows, amp.cols]
            block = block[:: -1 if amp.flip_rows else 1, :: -1 if amp.flip_cols else 1]
            image[amp.place.r0 : amp.place.r1, amp.place.c0 : amp.place.c1] = block
        return image


def detector_of(plan: ControllerPlan) -> Detector:
    """The detector of a one-CCD camera (ValueError naming the count otherwise)."""
    if len(plan.layout) != 1:
        raise ValueError(f"reads {len(plan.layout)} CCDs; a guide camera reads one")
    region, placement = plan.layout[0], plan.placements[0]
    geometry = plan.geometry
    amplifiers = []
    for amp in region.amplifiers:
        place = placement.boxes[amp.name]
        rows = slice(amp.buffer_rows.start, amp.buffer_rows.start + geometry.lines)
        cols = slice(amp.buffer_cols.start, amp.buffer_cols.start + geometry.pixels)
        amplifiers.append(_Amplifier(rows, cols, amp.flip_rows, amp.flip_cols, place))
    lines = max(a.place.r1 for a in amplifiers)
    pixels = max(a.place.c1 for a in amplifiers)
    return Detector((lines, pixels), tuple(amplifiers))
