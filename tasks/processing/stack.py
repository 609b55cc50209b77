"""Combining the frames of a stacked exposure into one image per CCD.

Each frame is overscan-corrected on its own first (the bias level drifts between
readouts); the combination then runs on the corrected data, and the overscan levels
recorded in the header are the mean of the frames'.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from schemas.exposure import StackMethod
from tasks.post_process import CcdImage, data_stats


def combine(frames: Sequence[CcdImage], method: StackMethod) -> CcdImage:
    """One CCD's frames (same geometry, same CCD) combined with ``method``."""
    if not frames:
        raise ValueError("nothing to combine")
    first = frames[0]
    if any(f.name != first.name or f.data.shape != first.data.shape for f in frames):
        raise ValueError("frames of different CCDs or shapes cannot be combined")
    if len(frames) == 1:
        return first
    cube = np.stack([f.data for f in frames])
    if method is StackMethod.MEDIAN:
        data = np.median(cube, axis=0)
    elif method is StackMethod.MEAN:
        data = cube.mean(axis=0)
    else:
        data = cube.sum(axis=0)
    amplifiers = tuple(
        dataclasses.replace(
            amp,
            overscan_level=float(np.mean([f.amplifiers[i].overscan_level for f in frames])),
        )
        for i, amp in enumerate(first.amplifiers)
    )
    data = data.astype(np.float32)
    stats = data_stats(data, amplifiers)
    if all("saturated" in f.stats for f in frames):
        # A pixel saturated in any frame is suspect in the combination.
        stats["saturated"] = max(f.stats["saturated"] for f in frames)
    return dataclasses.replace(first, data=data, amplifiers=amplifiers, stats=stats)
