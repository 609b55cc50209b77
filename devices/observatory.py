"""The observatory's moving parts, as observing flows drive them, whoever made them.

Each protocol is one job, complete and bounded: a call returns when the device has
got there (or raises DeviceTimeoutError naming the device and the wait), so a flow
never integrates while something still moves. devices.registry builds them, with the
telemetry sources, from the instrument config's ``devices:`` entries (a
:class:`DeviceSet`); vendor packages supply the implementations.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from devices.telemetry import TelemetrySource


class Mount(Protocol):
    async def point(self, ra_deg: float, dec_deg: float, *, timeout_s: float) -> None:
        """Unpark if parked, track, slew to ICRS (RA, Dec) and wait until it stopped."""

    async def park(self, *, timeout_s: float) -> None:
        """Park and wait until parked."""

    async def azimuth(self) -> float:
        """Where the telescope points now, degrees from north through east."""

    async def parked(self) -> bool:
        """At its park position (a weather shutdown parks it)."""


class Enclosure(Protocol):
    async def follow(self, azimuth_deg: float, *, timeout_s: float) -> None:
        """Turn the opening to ``azimuth_deg`` and wait until it stopped."""

    async def open(self, *, timeout_s: float) -> None:
        """Open the shutter (roof) and wait until it reports open."""

    async def close(self, *, timeout_s: float) -> None:
        """Close the shutter (roof) and wait until it reports closed."""


class FilterChanger(Protocol):
    async def offsets(self) -> Mapping[str, int]:
        """Filter name -> focus offset (focuser steps), in slot order."""

    async def current(self) -> str | None:
        """The filter in the beam (None while the wheel turns)."""

    async def select(self, name: str, *, timeout_s: float) -> int:
        """Put ``name`` in the beam, wait, check the slot; its focus offset."""


class FocusDrive(Protocol):
    async def move_to(self, position: int, *, timeout_s: float) -> None:
        """Move to ``position`` (steps) and wait until it stopped."""

    async def position(self) -> int: ...


class FlatLamp(Protocol):
    """A flat-field lamp: a flat panel over the aperture (its cover closed under it)
    or a dome screen's lamp."""

    async def illuminate(self, brightness: int | None, *, timeout_s: float) -> int:
        """Close the cover (when there is one), light the lamp at ``brightness``
        (None: its brightest), wait until both are done; return the brightness."""
        ...

    async def darken(self, *, timeout_s: float) -> None:
        """Lamp off, awaited (the cover stays where it is)."""
        ...


@dataclass(slots=True)
class DeviceSet:
    """The instrument's devices: every one as a telemetry source, and the first of
    each kind an observing flow drives."""

    sources: list[TelemetrySource] = field(default_factory=list)
    mount: Mount | None = None
    enclosure: Enclosure | None = None
    filters: FilterChanger | None = None
    focuser: FocusDrive | None = None
    lamps: dict[str, FlatLamp] = field(default_factory=dict)
    """Every flat-field lamp, by its device name (an exposure names the one it wants)."""
