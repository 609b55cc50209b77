"""A device read for headers: connect once, then ``telemetry()`` at every sample.

The instrument's devices (filter wheel, focuser, telescope, dome, weather ...) are
read at integration start and end like a camera's telemetry; flows and tasks see
them through this protocol, built by devices.registry.telemetry_sources.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

Reading = float | int | str | bool
"""What a telemetry value may be: a number, a flag or a state name."""


class TelemetrySource(Protocol):
    @property
    def name(self) -> str:
        """The device's name in the instrument config."""

    @property
    def address(self) -> str:
        """Where it is reached, for messages."""

    async def connect(self) -> None:
        """Connect; an error naming the field when the device is not what the
        config says (no such device number, or another type)."""

    async def close(self) -> None:
        """Disconnect from the server; never raises for the device's sake."""

    async def telemetry(self) -> Mapping[str, Reading]:
        """Its readings now, by property name (a property it lacks is left out)."""
