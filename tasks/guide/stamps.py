"""Stamps: the small squares of each frame a guide exposure keeps, and what they show.

A stamp of size s centred on (x, y) spans pixels [x - s//2, x - s//2 + s) and lines
[y - s//2, y - s//2 + s) of the detector image: numpy slicing, no copy of the frame.
Stamps that would be clipped by an edge are refused when the exposure is planned (or
never chosen by source finding), so all have the full size and stack into one cube.
Each stamp is measured where it is cut: its star's centroid (detector pixels) and
flux above the stamp's own background, for the per-frame table a guider steers by.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from schemas.guide import RoiCentre

CENTROID_RADIUS = 4
"""Half-width of the window around a stamp's brightest pixel that its centroid uses:
small, so the noise of the rest of the stamp does not pull the centroid."""


def stamp_origin(centre: RoiCentre, size: int) -> tuple[int, int]:
    """(first line, first pixel) of the stamp centred on ``centre``."""
    return centre.y - size // 2, centre.x - size // 2


def cut_stamps(
    image: npt.NDArray[Any], centres: Sequence[RoiCentre], size: int
) -> npt.NDArray[Any]:
    """The stamps of one frame as an (nroi, size, size) array of the image's dtype
    (ValueError for a stamp that does not lie wholly on the image)."""
    stamps = np.empty((len(centres), size, size), dtype=image.dtype)
    lines, pixels = image.shape
    for index, centre in enumerate(centres):
        y0, x0 = stamp_origin(centre, size)
        if y0 < 0 or x0 < 0 or y0 + size > lines or x0 + size > pixels:
            raise ValueError(
                f"stamp at ({centre.x}, {centre.y}) of {size} x {size} leaves the "
                f"{pixels} x {lines} image"
            )
        stamps[index] = image[y0 : y0 + size, x0 : x0 + size]
    return stamps


@dataclass(frozen=True, slots=True)
class StampMeasures:
    """Per stamp: the centroid in detector pixels and the flux above background (ADU)."""

    x: npt.NDArray[np.float64]
    y: npt.NDArray[np.float64]
    flux: npt.NDArray[np.float64]


def measure_stamps(
    stamps: npt.NDArray[Any], centres: Sequence[RoiCentre], size: int
) -> StampMeasures:
    """Centroid and flux of each stamp's star.

    The background is the median of the stamp's edge pixels (a guide star sits in
    the middle); the centroid is the first moment of the light above it in a small
    window around the brightest pixel; the flux is the whole stamp above background.
    """
    count = len(centres)
    xs, ys, fluxes = np.empty(count), np.empty(count), np.empty(count)
    r = CENTROID_RADIUS
    offsets = np.arange(-r, r + 1, dtype=np.float64)
    for index, centre in enumerate(centres):
        stamp = stamps[index].astype(np.float64)
        edge = np.concatenate((stamp[0], stamp[-1], stamp[1:-1, 0], stamp[1:-1, -1]))
        light = stamp - np.median(edge)
        fluxes[index] = light.sum()
        brightest = np.unravel_index(int(np.argmax(light)), light.shape)
        line = min(max(int(brightest[0]), r), size - 1 - r)
        pixel = min(max(int(brightest[1]), r), size - 1 - r)
        window = np.clip(light[line - r : line + r + 1, pixel - r : pixel + r + 1], 0.0, None)
        total = window.sum()
        y0, x0 = stamp_origin(centre, size)
        dy = (window.sum(axis=1) * offsets).sum() / total if total > 0 else 0.0
        dx = (window.sum(axis=0) * offsets).sum() / total if total > 0 else 0.0
        xs[index], ys[index] = x0 + pixel + dx, y0 + line + dy
    return StampMeasures(xs, ys, fluxes)
