"""From an exposure spec's binning and region of interest to the controller's window.

The same window decides what the controller reads (its timing parameters) and how
post-processing splits the buffer (LINECOUNT/PIXELCOUNT and the data/overscan
columns), so both are derived here from one place. Specs that do not fit the
detector are refused with the field and the reason before anything moves.
"""

from __future__ import annotations

import dataclasses

from devices.archon.acf import ccd_layout
from devices.archon.window import Window as ReadoutWindow
from schemas.exposure import ExposureSpec
from tasks.control.instrument import ControllerPlan


def window_for(spec: ExposureSpec, plan: ControllerPlan) -> ReadoutWindow:
    """The readout window ``spec`` asks of this controller (ValueError naming the field)."""
    full = ReadoutWindow.from_acf(plan.acf)
    binning = spec.binning
    window = full
    if spec.window is not None:
        roi = spec.window
        if roi.first_line + roi.lines > full.lines:
            raise ValueError(
                f"window: lines {roi.first_line}..{roi.first_line + roi.lines} exceed the "
                f"{full.lines} lines of {plan.config.name}'s amplifiers"
            )
        if roi.first_pixel + roi.pixels > full.pixels:
            raise ValueError(
                f"window: pixels {roi.first_pixel}..{roi.first_pixel + roi.pixels} exceed the "
                f"{full.pixels} pixels of {plan.config.name}'s amplifiers"
            )
        window = full.with_changes(
            lines=roi.lines,
            preskip_lines=full.preskip_lines + roi.first_line,
            postskip_lines=full.postskip_lines + full.lines - roi.first_line - roi.lines,
            pixels=roi.pixels,
            preskip_pixels=full.preskip_pixels + roi.first_pixel,
            postskip_pixels=full.postskip_pixels + full.pixels - roi.first_pixel - roi.pixels,
        )
    for name, size, factor in (
        ("lines", window.lines, binning.y),
        ("overscan lines", window.overscan_lines, binning.y),
        ("pixels", window.pixels, binning.x),
        ("overscan pixels", window.overscan_pixels, binning.x),
    ):
        if size % factor:
            raise ValueError(f"binning: {size} {name} do not divide by {factor}")
    return window.with_changes(vbin=binning.y, hbin=binning.x)


def plan_for_window(plan: ControllerPlan, window: ReadoutWindow) -> ControllerPlan:
    """The controller plan with the buffer geometry that ``window`` produces."""
    acf = dataclasses.replace(
        plan.acf, line_count=window.line_count, pixel_count=window.pixel_count
    )
    return dataclasses.replace(
        plan,
        acf=acf,
        layout=ccd_layout(acf, len(plan.config.ccds)),
        pixels=window.pixels // window.hbin,
        overscan_pixels=window.overscan_pixels // window.hbin,
        lines=window.lines // window.vbin,
    )
