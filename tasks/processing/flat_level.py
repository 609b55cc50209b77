"""How bright a flat field came out: the number a twilight sequence steers by.

Measured on the raw buffers as read, before anything is processed or written, so the
next exposure's time can be chosen while this one is still being finished. The level
is the median of the science pixels less the median of the same amplifier's overscan
(the bias), on every fourth pixel of every fourth row: a median of ~1 % of a 4k x 4k
CCD is as good as the whole (to a few ADU) and takes milliseconds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from schemas.exposure import ExposureSpec
from tasks.control.instrument import ControllerPlan
from tasks.post_process import RawPixels
from tasks.processing.ccd_products import CcdSource, ccd_slice, raw_product
from tasks.processing.raw_frames import RawCcd

SAMPLE = 4
"""Every SAMPLE-th row and column is measured."""
SATURATED_FRACTION = 0.01
"""A frame with more of its science pixels at the saturation limit than this is
saturated (cosmic rays and hot pixels stay far below it)."""


@dataclass(frozen=True, slots=True)
class FrameLevel:
    level_adu: float
    """The median over CCDs of each CCD's median level above bias."""
    saturated_fraction: float
    """The largest fraction of any CCD's sampled science pixels at saturation."""

    @property
    def saturated(self) -> bool:
        return self.saturated_fraction > SATURATED_FRACTION


def ccd_level(raw: RawCcd, saturation: int) -> tuple[float, float]:
    """(median above bias, fraction saturated) of one CCD's science pixels."""
    levels, saturated, counted = [], 0, 0
    for amp in raw.amplifiers:
        science = raw.data[amp.data.r0 : amp.data.r1 : SAMPLE, amp.data.c0 : amp.data.c1 : SAMPLE]
        if science.size == 0:
            continue
        bias = 0.0
        if amp.bias is not None:
            overscan = raw.data[amp.bias.r0 : amp.bias.r1, amp.bias.c0 : amp.bias.c1]
            bias = float(np.median(overscan)) if overscan.size else 0.0
        levels.append(float(np.median(science)) - bias)
        saturated += int(np.count_nonzero(science >= saturation))
        counted += science.size
    if not levels:
        raise ValueError(f"{raw.name}: no science pixels to measure")
    return float(np.median(levels)), saturated / counted


def frame_level(
    buffers: Mapping[str, RawPixels], plans: Mapping[str, ControllerPlan], spec: ExposureSpec
) -> FrameLevel:
    """The level of one exposure, from every camera's buffer (name -> pixels)."""
    levels, worst = [], 0.0
    for name, buffer in buffers.items():
        plan = plans[name]
        for index, ccd in enumerate(plan.config.ccds):
            source = CcdSource(index, ccd, plan)
            raw = raw_product(ccd_slice(buffer, source), source, spec)
            limit = ccd.saturation_adu or int(np.iinfo(buffer.dtype).max)
            level, saturated = ccd_level(raw, limit)
            levels.append(level)
            worst = max(worst, saturated)
    if not levels:
        raise ValueError("no CCD was read out")
    return FrameLevel(float(np.median(levels)), worst)
