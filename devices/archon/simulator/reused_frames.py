"""Frames rendered once and served shifted: a simulator that costs the host a copy.

Rendering a frame draws a random number per pixel: about 1.4 s of CPU per 100 MB.
A real Archon digitizes on its own hardware; a simulator on the benchmark's machine
that renders 1 GB per exposure would take most of a 2-core host from the pipeline it
is meant to feed, and the figures would measure the random number generator. With
frame reuse the first frame of each kind (the same exposure times and readout
window) is rendered and kept; later ones are that frame with its rows rolled by a
pseudo-random amount, so consecutive frames differ, each row keeps its own overscan,
and every statistic (levels, noise, the compressibility of the pixels) is that of a
rendered frame. Noise is then not independent between frames: for benchmarks only,
never for tests of the pixels' statistics.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from devices.archon.acf import AcfConfig
from devices.archon.sensor import SensorModel, render_frame

__all__ = ["ReusedFrames"]

_TIME_QUANTUM_S = 0.25
"""Light times closer than this share a rendered frame: the shutter's time varies by
milliseconds with the commands around it, and a frame rendered anew each time would
cost the very CPU the reuse saves."""

_DARK_BAND_S = 0.75
"""Dark times (since the CCD was last cleared) share a frame within a factor of two
from here: back-to-back exposures without a flush between them have a dark time of
the exposure time plus the gap since the previous readout, a gap that varies by
hundreds of milliseconds; bands of 0.25 s put consecutive 1 s darks either side of a
boundary and rendered 100 MB per controller again (10 s outliers in the scale bench).
Shorter than this (biases) is one band."""

KINDS_KEPT = 3
"""Kinds of frame kept per controller, the least recently served dropped first."""


def _dark_band(seconds: float) -> int:
    return -1 if seconds < _DARK_BAND_S else int(math.log2(seconds / _DARK_BAND_S))


class ReusedFrames:
    """A drop-in for :func:`render_frame` that renders each kind of frame once."""

    def __init__(self) -> None:
        self._frames: OrderedDict[tuple[object, ...], npt.NDArray[Any]] = OrderedDict()

    def __call__(
        self,
        acf: AcfConfig,
        model: SensorModel,
        *,
        dark_seconds: float,
        light_seconds: float,
        frame_number: int,
        lines_read: int | None = None,
        params: Mapping[str, int] | None = None,
    ) -> npt.NDArray[Any]:
        key = (
            acf.buffer_shape,
            acf.sample_mode,
            acf.frame_mode,
            len(acf.taps),
            model,
            _dark_band(dark_seconds),
            round(light_seconds / _TIME_QUANTUM_S),
            lines_read,
            tuple(sorted((params or {}).items())),
        )
        frame = self._frames.get(key)
        if frame is None:
            # A few kinds kept per controller: a bench alternates few kinds, and a
            # 100 MB frame per kind ever seen would grow without bound.
            while len(self._frames) >= KINDS_KEPT:
                self._frames.popitem(last=False)
            frame = render_frame(
                acf,
                model,
                dark_seconds=dark_seconds,
                light_seconds=light_seconds,
                frame_number=frame_number,
                lines_read=lines_read,
                params=params,
            )
            self._frames[key] = frame
            return frame.copy()
        self._frames.move_to_end(key)
        shift = (frame_number * 7919) % max(1, frame.shape[0])
        return np.roll(frame, shift, axis=0)
