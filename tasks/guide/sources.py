"""The brightest sources of a guide camera's first frame: where its stamps go.

Pure numpy, one pass over the frame: subtract a robust background (median and MAD of
a sparse sample of pixels, which stars barely move), smooth with a 5 x 5 box (a star
spreads its light, a cosmic ray or hot pixel does not, so the box favours stars),
keep the local maxima well above the noise, and take the brightest ones that are at
least ``min_separation`` apart (so two regions never follow one star). Each is then
centred on its light (first moment of a small window). Only sources whose stamp lies
wholly on the detector are candidates: every stamp has the full size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

BOX_RADIUS = 2
"""The smoothing box is (2 r + 1) pixels square."""
CENTRE_RADIUS = 3
"""Half-width of the window a source is centred in (pixels)."""
THRESHOLD_SIGMA = 5.0
"""A source's smoothed peak must stand this many noise sigmas above the background."""
MAX_CANDIDATES = 4096
"""Local maxima considered, brightest first: plenty for a few guide stars."""
_SAMPLE_STEP = 4


@dataclass(frozen=True, slots=True)
class Source:
    """A source: its centre (x along a line, y the line; detector pixels) and flux (the
    background-subtracted sum over the centring window, in ADU)."""

    x: float
    y: float
    flux: float


def background(image: npt.NDArray[Any]) -> tuple[float, float]:
    """(level, noise sigma) of ``image`` from every 4th pixel of every 4th line:
    median and 1.4826 x median absolute deviation, which a few stars do not move."""
    sample = np.asarray(image[::_SAMPLE_STEP, ::_SAMPLE_STEP], dtype=np.float32)
    level = float(np.median(sample))
    sigma = 1.4826 * float(np.median(np.abs(sample - np.float32(level))))
    return level, max(sigma, 1e-6)


def box_sum(image: npt.NDArray[np.float32], radius: int) -> npt.NDArray[np.float32]:
    """Sum over the (2 r + 1)^2 box around each pixel; -inf where the box leaves the
    image (summed-area table: two cumulative sums, whatever the radius)."""
    size = 2 * radius + 1
    lines, pixels = image.shape
    table = np.zeros((lines + 1, pixels + 1), dtype=np.float64)
    np.cumsum(np.cumsum(image, axis=0, dtype=np.float64), axis=1, out=table[1:, 1:])
    sums = table[size:, size:] - table[:-size, size:] - table[size:, :-size] + table[:-size, :-size]
    out = np.full(image.shape, -np.inf, dtype=np.float32)
    out[radius : lines - radius, radius : pixels - radius] = sums
    return out


def _local_maxima(smooth: npt.NDArray[np.float32], threshold: float) -> npt.NDArray[np.intp]:
    """(line, pixel) of every pixel above ``threshold`` not below any of its 8 neighbours."""
    lines, pixels = smooth.shape
    core = smooth[1 : lines - 1, 1 : pixels - 1]
    peak = core > threshold
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy or dx:
                peak &= core >= smooth[1 + dy : lines - 1 + dy, 1 + dx : pixels - 1 + dx]
    found: npt.NDArray[np.intp] = np.argwhere(peak) + 1
    return found


def _centre(image: npt.NDArray[np.float32], line: int, pixel: int) -> Source:
    """First moment of the positive light in a small window around a peak."""
    r = CENTRE_RADIUS
    window = image[line - r : line + r + 1, pixel - r : pixel + r + 1]
    light = np.clip(window, 0.0, None)
    total = float(light.sum())
    if total <= 0:
        return Source(float(pixel), float(line), float(window.sum()))
    offsets = np.arange(-r, r + 1, dtype=np.float64)
    dy = float((light.sum(axis=1) * offsets).sum()) / total
    dx = float((light.sum(axis=0) * offsets).sum()) / total
    return Source(pixel + dx, line + dy, float(window.sum()))


def find_sources(
    image: npt.NDArray[Any], count: int, *, min_separation: float, stamp_size: int
) -> list[Source]:
    """The ``count`` brightest sources of ``image`` (fewer if the frame has fewer), at
    least ``min_separation`` pixels apart, each far enough from the edges for a
    ``stamp_size`` stamp centred on it (its rounded centre) to lie on the detector."""
    level, sigma = background(image)
    data = np.asarray(image, dtype=np.float32) - np.float32(level)
    smooth = box_sum(data, BOX_RADIUS)
    noise = sigma * (2 * BOX_RADIUS + 1)  # of a box sum of independent pixels
    peaks = _local_maxima(smooth, THRESHOLD_SIGMA * noise)
    lines, pixels = data.shape
    # The stamp of a centre c spans [c - size // 2, c - size // 2 + size): the peak may
    # move by up to the centring radius, so the candidates stay that far inside.
    low = stamp_size // 2 + CENTRE_RADIUS
    high_line = lines - (stamp_size - stamp_size // 2) - CENTRE_RADIUS
    high_pixel = pixels - (stamp_size - stamp_size // 2) - CENTRE_RADIUS
    inside = (
        (peaks[:, 0] >= low)
        & (peaks[:, 0] <= high_line)
        & (peaks[:, 1] >= low)
        & (peaks[:, 1] <= high_pixel)
    )
    peaks = peaks[inside]
    values = smooth[peaks[:, 0], peaks[:, 1]]
    order = np.argsort(values)[::-1][:MAX_CANDIDATES]
    chosen: list[tuple[int, int]] = []
    for line, pixel in peaks[order]:
        if all((line - y) ** 2 + (pixel - x) ** 2 >= min_separation**2 for y, x in chosen):
            chosen.append((int(line), int(pixel)))
            if len(chosen) == count:
                break
    return [_centre(data, line, pixel) for line, pixel in chosen]
