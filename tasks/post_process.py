"""Stage 5: turn a raw buffer into CCD images, by the chain in schemas/processing.py.

Each amplifier is overscan-corrected in readout order (its overscan columns follow
its data), converted to electrons if asked, then flipped into place, so the written
image looks like the sky on the detector. Trimming then keeps only the science
pixels, amplifiers in the same arrangement. Master calibrations and the instrument's
own steps run on the assembled image; statistics come last, on the science pixels.

The sections (DATASEC, BIASSEC, per amplifier DATASECx/BIASSECx) describe where the
data and overscan sit in the written image, in FITS 1-based ``[x1:x2,y1:y2]`` form;
saturation is counted on the raw science pixels, before any correction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from devices.geometry import CcdRegion
from schemas.exposure import ExposureSpec
from schemas.instrument import CcdConfig
from schemas.processing import ProcessingConfig
from tasks.control.instrument import ControllerPlan
from tasks.files.fits_cards import Card
from tasks.processing.masters import apply_masters
from tasks.processing.overscan import correct_overscan
from tasks.processing.processing_steps import StepContext, run_steps
from tasks.processing.sections import (
    AmplifierResult,
    Box,
    amp_boxes,
    bounding_box_if_tiled,
    trimmed_boxes,
)

__all__ = ["AmplifierResult", "Box", "CcdImage", "ProcessingInputs", "ReadoutNumbers"]

FloatImage = npt.NDArray[np.float32]
RawPixels = npt.NDArray[np.uint16] | npt.NDArray[np.uint32]

DEFAULT_PROCESSING = ProcessingConfig()


class ReadoutNumbers(NamedTuple):
    """The readout geometry of each amplifier after binning: science pixels per line,
    overscan pixels per line, science lines."""

    pixels: int
    overscan: int
    lines: int

    @classmethod
    def of(cls, plan: ControllerPlan) -> ReadoutNumbers:
        return cls(plan.pixels, plan.overscan_pixels, plan.lines)


@dataclass(frozen=True, slots=True)
class ProcessingInputs:
    """What the chain needs beyond the geometry: the CCD, the exposure and the settings."""

    ccd: CcdConfig
    spec: ExposureSpec
    processing: ProcessingConfig


@dataclass(frozen=True, slots=True)
class CcdImage:
    """One CCD's processed image and the facts the writer puts in its header."""

    name: str
    data: FloatImage
    amplifiers: tuple[AmplifierResult, ...]
    datasec: Box | None
    biassec: Box | None
    stats: dict[str, float]
    bunit: str = "adu"
    trimmed: bool = False
    cards: tuple[Card, ...] = ()
    """What the chain did (OVERSCAN, ZEROCOR, HISTORY of user steps, ...)."""


def processed_shape(region: CcdRegion, numbers: ReadoutNumbers, trim: bool) -> tuple[int, int]:
    """The shape post-processing gives this CCD (for checks made before exposing)."""
    if not trim:
        return region.shape
    boxes = [amp_boxes(amp, *numbers)[0] for amp in region.amplifiers]
    return trimmed_boxes(boxes)[1]


def _trim(
    image: FloatImage, amps: list[AmplifierResult]
) -> tuple[FloatImage, list[AmplifierResult]]:
    boxes, shape = trimmed_boxes([a.data for a in amps])
    out = np.empty(shape, dtype=np.float32)
    for amp, box in zip(amps, boxes, strict=True):
        out[box.r0 : box.r1, box.c0 : box.c1] = image[
            amp.data.r0 : amp.data.r1, amp.data.c0 : amp.data.c1
        ]
    return out, [
        AmplifierResult(a.name, b, None, a.overscan_level) for a, b in zip(amps, boxes, strict=True)
    ]


def full_scale(buffer: RawPixels) -> int:
    """The largest value the buffer's samples can hold (saturation when not configured)."""
    return int(np.iinfo(buffer.dtype).max)


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


def _gain_of(ccd: CcdConfig | None, amp: str) -> float:
    if ccd is None:
        return 1.0
    return next((a.gain for a in ccd.amplifiers if a.name == amp), ccd.gain)


def process_ccd(
    buffer: RawPixels,
    region: CcdRegion,
    name: str,
    *,
    pixels: int,
    overscan: int,
    lines: int,
    inputs: ProcessingInputs | None = None,
) -> CcdImage:
    """One CCD through the chain. Without ``inputs``: per-row median overscan only."""
    processing = inputs.processing if inputs else DEFAULT_PROCESSING
    ccd = inputs.ccd if inputs else None
    electrons = processing.electrons and ccd is not None
    saturation = (ccd.saturation_adu if ccd else None) or full_scale(buffer)
    saturated = 0
    out = np.empty(region.shape, dtype=np.float32)
    amps: list[AmplifierResult] = []
    for amp in region.amplifiers:
        raw = buffer[amp.buffer_rows, amp.buffer_cols]
        saturated += int(np.count_nonzero(raw[:lines, :pixels] >= saturation))
        block = raw.astype(np.float32)
        level = correct_overscan(
            block, pixels=pixels, overscan=overscan, lines=lines, method=processing.overscan
        )
        if electrons:
            block *= np.float32(_gain_of(ccd, amp.name))
        if amp.flip_rows:
            block = block[::-1]
        if amp.flip_cols:
            block = block[:, ::-1]
        out[amp.ccd_rows, amp.ccd_cols] = block
        data_box, bias_box = amp_boxes(amp, pixels, overscan, lines)
        amps.append(AmplifierResult(amp.name, data_box, bias_box, level))
    cards: list[Card] = []
    if overscan > 0:
        cards.append(("OVERSCAN", processing.overscan.value, "overscan correction per amplifier"))
    if processing.trim:
        out, amps = _trim(out, amps)
        cards.append(("TRIM", "overscan columns and lines removed", "trimmed to DATASEC"))
    bunit = "electron" if electrons else "adu"
    if inputs is not None:
        cards += apply_masters(out, name, inputs.spec, processing.masters)
        datasec = bounding_box_if_tiled([a.data for a in amps])
        context = StepContext(inputs.ccd, inputs.spec, bunit, tuple(amps), datasec)
        out, history = run_steps(out, processing.steps, context)
        cards += history
    datasec = bounding_box_if_tiled([a.data for a in amps])
    bias_boxes = [a.bias for a in amps if a.bias is not None]
    biassec = bounding_box_if_tiled(bias_boxes) if len(bias_boxes) == len(amps) else None
    stats = {**data_stats(out, amps), "saturated": float(saturated)}
    return CcdImage(
        name,
        out,
        tuple(amps),
        datasec,
        biassec,
        stats,
        bunit=bunit,
        trimmed=processing.trim,
        cards=tuple(cards),
    )


def process_buffer(
    buffer: RawPixels,
    plan: ControllerPlan,
    spec: ExposureSpec | None = None,
    processing: ProcessingConfig | None = None,
) -> list[CcdImage]:
    """Every CCD of one controller's buffer, in the config's CCD order.

    Without ``spec`` only the default overscan correction runs (benchmarks, tests).
    """
    if buffer.shape != plan.buffer_shape:
        raise ValueError(
            f"{plan.config.name}: buffer shape {buffer.shape} does not match the ACF's "
            f"{plan.buffer_shape}"
        )
    settings = processing or DEFAULT_PROCESSING
    numbers = ReadoutNumbers.of(plan)
    return [
        process_ccd(
            buffer,
            region,
            ccd.name,
            pixels=numbers.pixels,
            overscan=numbers.overscan,
            lines=numbers.lines,
            inputs=ProcessingInputs(ccd, spec, settings) if spec is not None else None,
        )
        for region, ccd in zip(plan.layout, plan.config.ccds, strict=True)
    ]
