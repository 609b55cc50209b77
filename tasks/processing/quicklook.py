"""The pixels of an exposure's quick-look: per-CCD thumbnails, their mosaic, a zscale.

A quick-look is read by eye, so it shows the science pixels only (no overscan), every
CCD where it sits in the mosaic, and one display range for the whole mosaic so CCDs
can be compared. The work is split where the pixels are:

* :func:`ccd_thumbnail` block-averages one CCD's image where that image is (a Dask
  worker, or the flow's thread); the small float32 :class:`Thumbnail` is all that
  travels back;
* :func:`assemble_mosaic` places every thumbnail by its CCD's lower-left corner in the
  mosaic (``mosaic_origin``, unbinned pixels), leaving gaps NaN;
* :func:`zscale_limits` and :func:`to_8bit` give the 8-bit grey levels.

Every CCD is reduced by the same factor, chosen from the whole mosaic's extent before
any pixel is read (:func:`plan_mosaic`), so the workers need not talk to each other.
Row 0 of every array here is the bottom of the mosaic (FITS convention: y up).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from astropy.visualization import ZScaleInterval

from tasks.processing.raw_frames import DetectorPlacement, RawCcd
from tasks.processing.sections import trimmed_boxes
from tasks.write import CcdProduct

FloatImage = npt.NDArray[np.float32]
GreyImage = npt.NDArray[np.uint8]

BLANK_GREY = 0
"""Grey level of mosaic pixels no CCD covers; data pixels are 1-255, so a reader can
tell a gap from a dark pixel."""


@dataclass(frozen=True, slots=True)
class MosaicExtent:
    """The unbinned mosaic pixels the CCDs cover: x in [x0, x1), y in [y0, y1)."""

    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def longest_side(self) -> int:
        return max(self.x1 - self.x0, self.y1 - self.y0)


@dataclass(frozen=True, slots=True)
class Thumbnail:
    """One CCD's science pixels, block-averaged; what a worker sends back."""

    ccd: str
    origin: tuple[int, int]
    """Unbinned mosaic (x, y) of the lower-left science pixel this exposure read."""
    pixels: FloatImage
    """Row 0 at the bottom; one pixel covers ``scale`` unbinned pixels each way."""


def mosaic_extent(placements: Iterable[DetectorPlacement]) -> MosaicExtent:
    """The mosaic every CCD covers when read whole and unbinned (its full readout).

    Known from the configuration alone, so the reduction factor is fixed before any
    worker starts, and a windowed or partial exposure keeps the same canvas.
    """
    corners = [
        (
            p.origin[0],
            p.origin[1],
            p.origin[0] + max(b.c1 for b in p.boxes.values()),
            p.origin[1] + max(b.r1 for b in p.boxes.values()),
        )
        for p in placements
    ]
    if not corners:
        raise ValueError("no CCD to place in the mosaic")
    return MosaicExtent(
        x0=min(c[0] for c in corners),
        y0=min(c[1] for c in corners),
        x1=max(c[2] for c in corners),
        y1=max(c[3] for c in corners),
    )


@dataclass(frozen=True, slots=True)
class MosaicPlan:
    """How one exposure's quick-look is cut, fixed before any pixel is read."""

    extent: MosaicExtent
    scale: int
    """Unbinned pixels per thumbnail pixel, along x and along y."""
    binning: tuple[int, int]
    """The exposure's (x, y) binning: its image pixels per ``scale``."""

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, columns) of the mosaic's thumbnail."""
        extent = self.extent
        return (
            math.ceil((extent.y1 - extent.y0) / self.scale),
            math.ceil((extent.x1 - extent.x0) / self.scale),
        )


def plan_mosaic(
    placements: Iterable[DetectorPlacement], binning: tuple[int, int], size: int
) -> MosaicPlan:
    """The smallest reduction that fits the whole mosaic in ``size`` pixels each way.

    The scale is a multiple of both binnings, so each image is reduced by a whole number
    of its pixels along each axis and thumbnail pixels stay square even when the
    binning is not.
    """
    if size < 1:
        raise ValueError(f"quick-look size {size} must be at least 1 pixel")
    extent = mosaic_extent(placements)
    step = math.lcm(*binning)
    scale = step * max(1, math.ceil(extent.longest_side / (size * step)))
    return MosaicPlan(extent, scale, binning)


def _block_mean(image: npt.NDArray[np.generic], fy: int, fx: int) -> FloatImage:
    """Mean of every ``fy`` x ``fx`` block; partial blocks at the far edges are averaged
    over the pixels they have (so no pixel is dropped)."""
    rows, cols = image.shape
    sums = np.add.reduceat(image, np.arange(0, rows, fy), axis=0, dtype=np.float64)
    sums = np.add.reduceat(sums, np.arange(0, cols, fx), axis=1, dtype=np.float64)
    heights = np.minimum(fy, rows - np.arange(0, rows, fy))
    widths = np.minimum(fx, cols - np.arange(0, cols, fx))
    return (sums / np.outer(heights, widths)).astype(np.float32)


def _lower_left(raw: RawCcd) -> tuple[int, int]:
    """Unbinned mosaic (x, y) of the lowest science pixel read: the detector sections
    (DETSEC) start from the CCD's ``mosaic_origin`` and follow a window."""
    return (
        min(min(a.detector_x) for a in raw.amplifiers) - 1,
        min(min(a.detector_y) for a in raw.amplifiers) - 1,
    )


def _raw_science(raw: RawCcd, binning: tuple[int, int]) -> FloatImage:
    """The science pixels of a raw frame put in place (each amplifier flipped the way
    its DETSEC runs), each amplifier's overscan median subtracted: amplifiers' bias
    levels differ by more than the faint signal a quick-look is for, and the stretch
    would show little but the steps between them."""
    bx, by = binning
    x0, y0 = _lower_left(raw)
    places = [
        ((min(a.detector_x) - 1 - x0) // bx, (min(a.detector_y) - 1 - y0) // by)
        for a in raw.amplifiers
    ]
    height = max(row + a.data.shape[0] for a, (_, row) in zip(raw.amplifiers, places, strict=True))
    width = max(col + a.data.shape[1] for a, (col, _) in zip(raw.amplifiers, places, strict=True))
    science = np.full((height, width), np.nan, dtype=np.float32)
    for amp, (col, row) in zip(raw.amplifiers, places, strict=True):
        block = raw.data[amp.data.r0 : amp.data.r1, amp.data.c0 : amp.data.c1]
        level = 0.0
        if amp.bias is not None and amp.bias.area > 0:
            bias = raw.data[amp.bias.r0 : amp.bias.r1, amp.bias.c0 : amp.bias.c1]
            level = float(np.median(bias))
        if amp.detector_x[0] > amp.detector_x[1]:
            block = block[:, ::-1]
        if amp.detector_y[0] > amp.detector_y[1]:
            block = block[::-1]
        rows, cols = block.shape
        science[row : row + rows, col : col + cols] = block.astype(np.float32) - np.float32(level)
    return science


def _processed_science(product: CcdProduct) -> FloatImage:
    """The processed image without its overscan (already in place, row 0 at the bottom)."""
    image = product.image
    assert image is not None
    boxes, shape = trimmed_boxes([a.data for a in image.amplifiers])
    science = np.empty(shape, dtype=np.float32)
    for amp, box in zip(image.amplifiers, boxes, strict=True):
        science[box.r0 : box.r1, box.c0 : box.c1] = image.data[
            amp.data.r0 : amp.data.r1, amp.data.c0 : amp.data.c1
        ]
    return science


def ccd_thumbnail(product: CcdProduct, plan: MosaicPlan) -> Thumbnail:
    """One CCD reduced to the plan's scale: its processed image when there is one, else
    its (first) raw frame."""
    bx, by = plan.binning
    if plan.scale % bx or plan.scale % by:
        raise ValueError(f"scale {plan.scale} is not a multiple of the binning {bx}x{by}")
    if product.image is not None:
        science = _processed_science(product)
    elif product.raw:
        science = _raw_science(product.raw[0], plan.binning)
    else:
        raise ValueError(f"{product.ccd.name}: no pixels to make a thumbnail of")
    origin = _lower_left(product.raw[0]) if product.raw else product.ccd.mosaic_origin
    reduced = _block_mean(science, plan.scale // by, plan.scale // bx)
    return Thumbnail(product.ccd.name, origin, reduced)


def thumbnails_of(products: Sequence[CcdProduct], plan: MosaicPlan) -> list[Thumbnail]:
    """Every CCD's thumbnail, here (the in-process path)."""
    return [ccd_thumbnail(product, plan) for product in products]


def assemble_mosaic(thumbnails: Sequence[Thumbnail], plan: MosaicPlan) -> FloatImage:
    """Every thumbnail at its place in the mosaic; NaN where no CCD is (gaps, a CCD
    whose controller failed). Row 0 is the bottom of the mosaic."""
    extent, scale = plan.extent, plan.scale
    height, width = plan.shape
    mosaic = np.full((height, width), np.nan, dtype=np.float32)
    for thumb in thumbnails:
        row = (thumb.origin[1] - extent.y0) // scale
        col = (thumb.origin[0] - extent.x0) // scale
        if not (0 <= row < height and 0 <= col < width):
            raise ValueError(f"{thumb.ccd}: origin {thumb.origin} is outside the mosaic")
        rows = min(thumb.pixels.shape[0], height - row)
        cols = min(thumb.pixels.shape[1], width - col)
        mosaic[row : row + rows, col : col + cols] = thumb.pixels[:rows, :cols]
    return mosaic


def zscale_limits(mosaic: FloatImage) -> tuple[float, float]:
    """IRAF's zscale display range over every finite pixel of the mosaic at once, so
    one grey level means one value on every CCD."""
    finite = mosaic[np.isfinite(mosaic)]
    if finite.size == 0:
        raise ValueError("the mosaic has no finite pixel to scale")
    low, high = ZScaleInterval().get_limits(finite)
    return float(low), float(high)


def to_8bit(mosaic: FloatImage, low: float, high: float) -> GreyImage:
    """Grey levels 1-255 from ``low`` to ``high`` (clipped), :data:`BLANK_GREY` where
    the mosaic is NaN; rows flipped so the first row is the top, as images are stored."""
    span = high - low
    with np.errstate(invalid="ignore"):
        unit = (mosaic - low) / span if span > 0 else np.full_like(mosaic, 0.5)
    levels = 1.0 + 254.0 * np.clip(unit, 0.0, 1.0)
    grey = np.where(np.isfinite(mosaic), np.rint(levels), BLANK_GREY).astype(np.uint8)
    return np.ascontiguousarray(grey[::-1])
