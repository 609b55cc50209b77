"""The filter wheel for runs that do not point a telescope: calibration sets, plain
sequences. An observing flow moves the wheel with its focus offset itself
(flows/observe.py); every other run with a wheel gets this, so a flat said to be in
R is taken in R, whatever the wheel held before."""

from __future__ import annotations

from devices.observatory import DeviceSet
from schemas.exposure import ExposureSpec

WHEEL_TIMEOUT_S = 120.0
"""Longest a filter change may take."""


class WheelFollower:
    """Sets the wheel to each exposure's filter (flows.exposure.BeforeExposure); an
    exposure without a filter leaves it where it is."""

    def __init__(self) -> None:
        self.current: str | None = None

    async def __call__(self, index: int, spec: ExposureSpec, devices: DeviceSet) -> None:
        if devices.filters is None or spec.filter is None or spec.filter == self.current:
            return
        await devices.filters.select(spec.filter, timeout_s=WHEEL_TIMEOUT_S)
        self.current = spec.filter
