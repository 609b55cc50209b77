"""Rectangles of a CCD image and what each amplifier contributed, for the header."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from devices.geometry import AmplifierRegion


@dataclass(frozen=True, slots=True)
class Box:
    """A 0-based half-open rectangle of an image: rows [r0, r1), columns [c0, c1)."""

    r0: int
    r1: int
    c0: int
    c1: int

    def fits(self) -> str:
        """The FITS section string, 1-based and inclusive, x (columns) first."""
        return f"[{self.c0 + 1}:{self.c1},{self.r0 + 1}:{self.r1}]"

    @property
    def area(self) -> int:
        return (self.r1 - self.r0) * (self.c1 - self.c0)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.r1 - self.r0, self.c1 - self.c0)


@dataclass(frozen=True, slots=True)
class AmplifierResult:
    """Where one amplifier's data (and overscan) sit in the written image, and the
    bias level overscan correction removed."""

    name: str
    data: Box
    bias: Box | None
    overscan_level: float


def bounding_box_if_tiled(boxes: list[Box]) -> Box | None:
    """The union of ``boxes`` when it is one rectangle (disjoint boxes), else None."""
    if not boxes:
        return None
    union = Box(
        min(b.r0 for b in boxes),
        max(b.r1 for b in boxes),
        min(b.c0 for b in boxes),
        max(b.c1 for b in boxes),
    )
    return union if sum(b.area for b in boxes) == union.area else None


def amp_boxes(
    amp: AmplifierRegion, pixels: int, overscan: int, lines: int
) -> tuple[Box, Box | None]:
    """Data and overscan rectangles of one amplifier in the assembled CCD image."""
    height = amp.ccd_rows.stop - amp.ccd_rows.start
    width = amp.ccd_cols.stop - amp.ccd_cols.start
    r0, c0 = amp.ccd_rows.start, amp.ccd_cols.start
    rows = (height - lines, height) if amp.flip_rows else (0, lines)
    if amp.flip_cols:
        data_cols = (width - pixels, width)
        bias_cols = (width - pixels - overscan, width - pixels)
    else:
        data_cols = (0, pixels)
        bias_cols = (pixels, pixels + overscan)
    data = Box(r0 + rows[0], r0 + rows[1], c0 + data_cols[0], c0 + data_cols[1])
    bias = (
        Box(r0 + rows[0], r0 + rows[1], c0 + bias_cols[0], c0 + bias_cols[1])
        if overscan > 0
        else None
    )
    return data, bias


def trimmed_boxes(data_boxes: Sequence[Box]) -> tuple[list[Box], tuple[int, int]]:
    """Where each amplifier's data go once overscan is cut out, and the trimmed shape.

    Amplifiers keep their arrangement: they are ordered by their rows and columns in
    the untrimmed image and packed side by side.
    """
    heights = {b.r0: b.shape[0] for b in data_boxes}
    widths = {b.c0: b.shape[1] for b in data_boxes}
    if len({(b.r0, b.c0) for b in data_boxes}) != len(data_boxes) or any(
        b.shape != (heights[b.r0], widths[b.c0]) for b in data_boxes
    ):
        raise ValueError("amplifier data sections do not form a grid; cannot trim")
    row_at, col_at, total_rows, total_cols = {}, {}, 0, 0
    for r0 in sorted(heights):
        row_at[r0], total_rows = total_rows, total_rows + heights[r0]
    for c0 in sorted(widths):
        col_at[c0], total_cols = total_cols, total_cols + widths[c0]
    boxes = [
        Box(row_at[b.r0], row_at[b.r0] + b.shape[0], col_at[b.c0], col_at[b.c0] + b.shape[1])
        for b in data_boxes
    ]
    return boxes, (total_rows, total_cols)
