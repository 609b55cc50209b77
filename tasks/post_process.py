"""Stage 5: split a raw buffer into CCD images, overscan-subtracted, physically oriented.

Each amplifier is corrected in readout order (its overscan columns follow its data),
then flipped into place, so the written image looks like the sky on the detector.
The sections (DATASEC, BIASSEC, per amplifier DATASECx/BIASSECx) describe where the
data and overscan sit in that written image, in FITS 1-based ``[x1:x2,y1:y2]`` form.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from prefect import task
from prefect.cache_policies import NO_CACHE

from devices.archon.acf import AmplifierRegion, CcdRegion
from tasks.instrument import ControllerPlan

FloatImage = npt.NDArray[np.float32]


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


@dataclass(frozen=True, slots=True)
class AmplifierResult:
    """What overscan correction did to one amplifier, for the header."""

    name: str
    data: Box
    bias: Box | None
    overscan_level: float


@dataclass(frozen=True, slots=True)
class CcdImage:
    """One CCD's corrected image and the facts the writer puts in its header."""

    name: str
    data: FloatImage
    amplifiers: tuple[AmplifierResult, ...]
    datasec: Box | None
    biassec: Box | None
    stats: dict[str, float]


def _amp_boxes(
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


def _bounding_box_if_tiled(boxes: list[Box]) -> Box | None:
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


def data_stats(image: FloatImage, amplifiers: Sequence[AmplifierResult]) -> dict[str, float]:
    """Quick-look statistics of the science pixels (overscan excluded)."""
    science = np.concatenate(
        [image[a.data.r0 : a.data.r1, a.data.c0 : a.data.c1].ravel() for a in amplifiers]
    )
    return {
        "mean": float(science.mean()),
        "median": float(np.median(science)),
        "std": float(science.std()),
    }


def process_ccd(
    buffer: npt.NDArray[np.uint16] | npt.NDArray[np.uint32],
    region: CcdRegion,
    name: str,
    *,
    pixels: int,
    overscan: int,
    lines: int,
) -> CcdImage:
    """Assemble one CCD: subtract each amplifier's per-row overscan median, flip, place.

    Without overscan columns the image is only converted and oriented. Rows past
    ``lines`` (overscan lines) are corrected with the amplifier's overall level.
    """
    out = np.empty(region.shape, dtype=np.float32)
    results: list[AmplifierResult] = []
    for amp in region.amplifiers:
        block = buffer[amp.buffer_rows, amp.buffer_cols].astype(np.float32)
        level = 0.0
        if overscan > 0:
            strip = block[:lines, pixels : pixels + overscan]
            per_row = np.median(strip, axis=1)
            level = float(np.median(per_row))
            block[:lines] -= per_row[:, np.newaxis]
            block[lines:] -= level
        if amp.flip_rows:
            block = block[::-1]
        if amp.flip_cols:
            block = block[:, ::-1]
        out[amp.ccd_rows, amp.ccd_cols] = block
        data_box, bias_box = _amp_boxes(amp, pixels, overscan, lines)
        results.append(AmplifierResult(amp.name, data_box, bias_box, level))
    datasec = _bounding_box_if_tiled([r.data for r in results])
    bias_boxes = [r.bias for r in results if r.bias is not None]
    biassec = _bounding_box_if_tiled(bias_boxes) if len(bias_boxes) == len(results) else None
    return CcdImage(name, out, tuple(results), datasec, biassec, data_stats(out, results))


def process_buffer(
    buffer: npt.NDArray[np.uint16] | npt.NDArray[np.uint32], plan: ControllerPlan
) -> list[CcdImage]:
    """Every CCD of one controller's buffer, in the config's CCD order."""
    if buffer.shape != plan.acf.buffer_shape:
        raise ValueError(
            f"{plan.config.name}: buffer shape {buffer.shape} does not match the ACF's "
            f"{plan.acf.buffer_shape}"
        )
    return [
        process_ccd(
            buffer,
            region,
            ccd.name,
            pixels=plan.pixels,
            overscan=plan.overscan_pixels,
            lines=plan.lines,
        )
        for region, ccd in zip(plan.layout, plan.config.ccds, strict=True)
    ]


@task(name="post-process", cache_policy=NO_CACHE, persist_result=False)
async def post_process(
    buffer: npt.NDArray[np.uint16] | npt.NDArray[np.uint32], plan: ControllerPlan
) -> list[CcdImage]:
    """Run :func:`process_buffer` in a worker thread so the event loop stays free."""
    return await asyncio.to_thread(process_buffer, buffer, plan)
