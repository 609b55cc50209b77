"""From an exposure spec's binning and region of interest to a camera's readout.

The same setup decides what the camera reads and how post-processing splits the
frame (its buffer shape and the data/overscan columns), so both come from the one
plan made here, by the camera's own model. A spec that does not fit the camera is
refused with the field and the reason before anything moves.
"""

from __future__ import annotations

from devices.camera import CameraConfigError, ReadoutRequest, Roi
from schemas.exposure import ExposureSpec
from tasks.control.instrument import ControllerPlan


def readout_request(spec: ExposureSpec) -> ReadoutRequest:
    """What ``spec`` asks of every camera's readout."""
    window = spec.window
    roi = (
        Roi(window.first_line, window.lines, window.first_pixel, window.pixels)
        if window is not None
        else None
    )
    return ReadoutRequest(bin_x=spec.binning.x, bin_y=spec.binning.y, roi=roi)


def plan_readout(spec: ExposureSpec, plan: ControllerPlan) -> ControllerPlan:
    """The camera's plan for reading ``spec`` (ValueError ``field: reason``)."""
    try:
        return plan.for_readout(readout_request(spec))
    except CameraConfigError as exc:
        raise ValueError(str(exc)) from exc
