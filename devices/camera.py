"""The camera seam: what flows and tasks may ask of any camera, whoever made it.

A camera comes in two halves, like ophyd-async's detector pieces:

* a :class:`CameraModel`, planned from the instrument config without contacting
  anything: its capabilities, the frame geometry of its full readout, and the
  readout setup (window, binning) an exposure asks for, refused with the field and
  the reason when the camera cannot take it;
* a :class:`Camera`, the connected adapter: the stage methods of
  :class:`devices.base.CCDController` plus what a run needs around them (prepare,
  apply a setup, telemetry and identity for headers, make safe).

Vendor packages (devices/archon/, devices/alpaca/) implement both;
devices/registry.py picks one by the config's ``kind``. Flows and tasks import this
module, devices.base, devices.geometry and devices.registry, never a vendor package.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from devices.base import CameraCapabilities, CCDController, ExposureTimes
from devices.geometry import CcdRegion


class CameraConfigError(ValueError):
    """A camera's config cannot be planned: ``field`` (relative to the camera's entry
    in the config, e.g. ``acf`` or ``cooling.set_point_c``) and why."""

    def __init__(self, field_name: str, reason: str) -> None:
        super().__init__(f"{field_name}: {reason}")
        self.field = field_name
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Roi:
    """A region of interest in unbinned amplifier pixels and lines (0-based)."""

    first_line: int
    lines: int
    first_pixel: int
    pixels: int


@dataclass(frozen=True, slots=True)
class ReadoutRequest:
    """What an exposure asks of the readout: binning and an optional region."""

    bin_x: int = 1
    bin_y: int = 1
    roi: Roi | None = None


@dataclass(frozen=True, slots=True)
class FrameGeometry:
    """The frame a readout produces, as processing and raw files see it."""

    buffer_shape: tuple[int, int]
    """(rows, columns) of the array :meth:`Camera.fetch` returns."""
    layout: tuple[CcdRegion, ...]
    """Where each CCD and amplifier sits in that array."""
    pixels: int
    """Science pixels per amplifier line (binned)."""
    overscan_pixels: int
    """Overscan pixels per amplifier line (binned; 0 for a camera that hides them)."""
    lines: int
    """Science lines per amplifier (binned)."""


class ReadoutSetup(Protocol):
    """A vendor's readout setup (an Archon window, an Alpaca subframe and binning):
    compared for equality so an unchanged setup is not sent again."""

    @property
    def geometry(self) -> FrameGeometry: ...


@dataclass(frozen=True, slots=True)
class HeldFrame:
    """A frame a camera holds in a buffer, identified well enough to tell it apart
    from a later one (a recovery fetches it again only if it is still the same)."""

    buffer: int
    frame: int
    timestamp: int
    complete: bool = True


@dataclass(frozen=True, slots=True)
class BufferReport:
    """One frame buffer as a make-safe found it."""

    number: int
    frame: int
    complete: bool
    lines: int
    height: int
    age_s: float | None = None


@dataclass(slots=True)
class SafetyReadings:
    """What :meth:`Camera.secure` did and saw: the steps that succeeded, the errors
    (``step: reason``), and the readings a report shows (None: not known)."""

    actions: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    secured: bool = False
    """The step that leaves this camera safe (Archon: reset; Alpaca: abort) went through."""
    power: str | None = None
    power_good: bool | None = None
    idle: bool | None = None
    buffers: list[BufferReport] = field(default_factory=list)


class Camera(CCDController, Protocol):
    """A connected camera, as a run drives it (see the module docstring)."""

    @property
    def address(self) -> str:
        """Where it is reached, for reports (host:port, or a URL)."""

    @property
    def connected(self) -> bool:
        """A connection is open (the way out resets only a camera it can reach)."""

    async def connect(self) -> None:
        """Open the connection (DeviceConnectionError / DeviceTimeoutError)."""

    async def close(self) -> None:
        """Close the connection; never raises for the device's sake."""

    async def prepare(self) -> None:
        """Make it ready for a run: power checked, idle, cooling started."""

    async def settle(self) -> None:
        """Be ready for the next science frame (cooling stable); a no-op if it is."""

    async def stand_down(self) -> None:
        """On the way out of a run: end anything under way, shutter closed."""

    async def apply(self, setup: ReadoutSetup) -> None:
        """Set the readout setup the next exposure reads with (if it changed)."""

    async def telemetry(self) -> Mapping[str, float]:
        """Numeric readings for headers (``controller.status.KEY`` sources)."""

    async def identity(self) -> Mapping[str, str]:
        """Versions and names for headers (``controller.system.KEY`` sources)."""

    def exposure_times(self) -> ExposureTimes:
        """The last integration's times (RuntimeError if none was read out)."""

    async def held_frame(self, buffer: int) -> HeldFrame:
        """Which frame ``buffer`` holds now (DeviceUnsupportedError without buffers)."""

    async def secure(self, timeout_s: float) -> SafetyReadings:
        """End any integration and leave the camera safe; every step bounded by
        ``timeout_s`` and tried even if an earlier one failed; never raises for the
        device's sake."""


class CameraModel(Protocol):
    """A camera planned from its config; nothing is contacted (module docstring)."""

    @property
    def name(self) -> str: ...

    @property
    def address(self) -> str: ...

    @property
    def capabilities(self) -> CameraCapabilities: ...

    @property
    def full(self) -> ReadoutSetup:
        """The setup of a full, unbinned readout (what a run starts with)."""

    def setup_for(self, request: ReadoutRequest) -> ReadoutSetup:
        """The setup that reads ``request`` (CameraConfigError naming the field:
        ``window`` or ``binning``)."""

    def camera(self) -> Camera:
        """A new, unconnected adapter, with the config's address and timeouts."""
