"""The ASCOM SafetyMonitor as an Alpaca device view: is it safe to observe?

ISafetyMonitor has one property, IsSafe. A monitor that cannot be read is not a
monitor saying "safe": every error propagates, and :meth:`AlpacaSafetyMonitor.is_safe`
never answers True by default.
"""

from __future__ import annotations

from typing import ClassVar

from devices.alpaca.client import Device


class AlpacaSafetyMonitor(Device):
    """One Alpaca safety monitor (``/api/v1/safetymonitor/{number}/...``)."""

    device_type: ClassVar[str] = "safetymonitor"

    async def is_safe(self) -> bool:
        """IsSafe: True only when the monitor says conditions are safe."""
        return await self.get_bool("issafe")

    async def telemetry(self) -> dict[str, object]:
        """``is_safe``: the monitor's verdict now."""
        return {"is_safe": await self.is_safe()}


__all__ = ["AlpacaSafetyMonitor"]
