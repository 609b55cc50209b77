"""Interfaces every device adapter implements, and the errors they raise.

Tasks depend on these protocols, not on a vendor's classes, so that a simulator, a
different controller or a test double with real behaviour can stand in for hardware.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt


class DeviceError(Exception):
    """Base class of every error a device adapter raises."""


class DeviceTimeoutError(DeviceError, TimeoutError):
    """A device did not answer within the time the caller allowed."""


class DeviceConnectionError(DeviceError, ConnectionError):
    """The connection to a device could not be made or was lost."""


class DeviceStateError(DeviceError):
    """The device is in a state that forbids the requested operation (power, busy)."""


class DeviceRefusedError(DeviceError):
    """The device understood the command and refused it (its own error code says why)."""


class DeviceProtocolError(DeviceError):
    """The device's reply breaks the protocol: what it meant cannot be told."""


class DeviceUnsupportedError(DeviceError):
    """The device lacks this feature (it says so, or the endpoint does not exist)."""


@dataclass(frozen=True, slots=True)
class ExposureTimes:
    """When an integration began and ended, as well as the device can tell.

    Headers need the times the light fell on the CCD, not the times the host asked
    for it: ``source`` says whose clock measured them ("controller timer": edges the
    controller latched itself; "host clock": the host's view of the start command),
    ``uncertainty_s`` how far either may be off, and ``fallback_reason`` why the
    better source was asked for but not used.
    """

    start: datetime
    """UTC, timezone-aware: shutter opened / integration began."""
    end: datetime
    """UTC, timezone-aware: shutter closed / integration ended."""
    source: str
    """Whose clock measured them, e.g. "controller timer" or "host clock"."""
    uncertainty_s: float | None
    """A +- bound on both start and end, in seconds; None if unknown."""
    requested_s: float
    """The integration time asked for."""
    fallback_reason: str | None = None
    """Why the controller timer was wanted but the host clock was used; else None."""

    @property
    def measured_s(self) -> float:
        """The integration as measured: end - start, in seconds."""
        return (self.end - self.start).total_seconds()


@dataclass(frozen=True, slots=True)
class CameraCapabilities:
    """What a camera can do, known before it is contacted.

    A spec asking for something the camera lacks is refused when the exposure is
    planned, with the vendor's reason (``why_not``), instead of failing on the
    hardware half-way through a sequence.
    """

    opens_shutter: bool = True
    """It drives a shutter (light frames are possible)."""
    readout_delay: bool = False
    """It can slow its readout per pixel (ExposureSpec.readout_delay)."""
    buffered_frames: int = 0
    """Frames it keeps after the host dies, readable by a recovery (0: none)."""
    fetch_overlaps_next: bool = False
    """A read-out frame waits in a buffer of its own, so the next integration may start
    while it is still being transferred (the transfer then costs no dead time)."""
    cooled: bool = False
    """It holds its sensor at a set point: each exposure waits until it is stable there."""
    why_not: Mapping[str, str] = field(default_factory=dict)
    """Feature name -> why this camera lacks it, in the vendor's terms."""

    def reason(self, feature: str) -> str:
        return self.why_not.get(feature, "not supported by this camera")


@runtime_checkable
class CCDController(Protocol):
    """What a task may ask of a CCD controller: one exposure's life cycle."""

    async def flush(self, count: int = 1) -> None:
        """Clear the CCDs ``count`` times and return when done."""

    async def expose(self, exptime: float, *, open_shutter: bool) -> float:
        """Integrate for ``exptime`` seconds; return the monotonic start time.

        The shutter is closed when this returns or raises.
        """

    async def readout(self, *, delay: int = 0) -> int:
        """Read the CCDs into a frame buffer; return the buffer number when complete."""

    async def fetch(self, buffer: int = -1) -> npt.NDArray[np.uint16] | npt.NDArray[np.uint32]:
        """Transfer one complete frame buffer into a 2-D array."""

    async def abort(self) -> None:
        """End any integration now and close the shutter."""
