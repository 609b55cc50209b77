"""From a camera's config entry to its model, by the entry's ``kind``.

The only module outside the vendor packages that names a vendor: flows and tasks ask
for ``camera_model(entry)`` and get a devices.camera.CameraModel. The entry is any
object with a ``kind`` and the fields its vendor reads (the vendor's settings
protocol: devices.archon.camera.ArchonSettings, devices.alpaca.seam.AlpacaSettings),
so this package does not depend on the schemas that validate them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, cast

from devices.camera import CameraModel
from devices.observatory import DeviceSet
from devices.telemetry import TelemetrySource

KINDS = ("archon", "alpaca")
"""Camera kinds an instrument config may name (``archon`` when it names none)."""


class CameraEntry(Protocol):
    """A config entry of a camera or device: its ``kind`` names the vendor package."""

    @property
    def kind(self) -> str: ...


def camera_model(entry: CameraEntry) -> CameraModel:
    """Plan the camera ``entry`` describes (CameraConfigError naming a field; nothing
    is contacted). Vendor packages are imported on first use."""
    if entry.kind == "archon":
        from devices.archon.camera import ArchonModel, ArchonSettings

        return ArchonModel(cast(ArchonSettings, entry))
    if entry.kind == "alpaca":
        from devices.alpaca.seam import AlpacaModel, AlpacaSettings

        return AlpacaModel(cast(AlpacaSettings, entry))
    raise ValueError(f"unknown camera kind {entry.kind!r}; known: {', '.join(KINDS)}")


def device_set(entries: Sequence[CameraEntry]) -> DeviceSet:
    """The instrument's ``devices`` (unconnected): every one as a telemetry source,
    and the first mount, enclosure, filter wheel and focuser as drivers."""
    unknown = sorted({entry.kind for entry in entries} - {"alpaca"})
    if unknown:
        raise ValueError(f"unknown device kind {unknown[0]!r}; known: alpaca")
    if not entries:
        return DeviceSet()
    from devices.alpaca.sources import DeviceSettings, alpaca_device_set

    return alpaca_device_set([cast(DeviceSettings, entry) for entry in entries])


def telemetry_sources(entries: Sequence[CameraEntry]) -> list[TelemetrySource]:
    """The instrument's ``devices`` as telemetry sources, in order (unconnected)."""
    return device_set(entries).sources
