"""Rectangles of a CCD image and what each amplifier contributed, for the header."""

from __future__ import annotations

from dataclasses import dataclass


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
