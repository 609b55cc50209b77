"""Opening the instrument's other devices (``devices:`` in its config) for a run.

Their readings go into headers (``device.<name>.<property>`` sources), sampled with
the cameras' telemetry at integration start and end. Every device is connected when
the run opens, before any exposure: one that is not there, or not what the config
says, fails the run then, naming the device and the field. Afterwards a device that
stops answering costs only its cards (marked missing, bounded by the sample's
timeout), never an exposure.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from devices.base import DeviceError, DeviceTimeoutError
from devices.observatory import DeviceSet
from devices.registry import device_set
from devices.telemetry import TelemetrySource
from schemas.instrument import InstrumentConfig
from tasks.headers.telemetry import Reader


def reader_name(device: str) -> str:
    """The snapshot key of a device's readings (a camera's is its own name; device
    names are kept apart by the dot, which no camera name has)."""
    return f"device.{device}"


async def _connected(source: TelemetrySource, timeout_s: float) -> None:
    try:
        await asyncio.wait_for(source.connect(), timeout_s)
    except TimeoutError as exc:
        raise DeviceTimeoutError(
            f"device {source.name} ({source.address}): no answer to connect within {timeout_s:g} s"
        ) from exc


@dataclass(frozen=True, slots=True)
class OpenDevices:
    """The connected devices of a run: readers for the header samples, and the
    drivers an observing flow moves (devices.observatory.DeviceSet)."""

    readers: dict[str, Reader]
    drivers: DeviceSet


@contextlib.asynccontextmanager
async def open_devices(instrument: InstrumentConfig) -> AsyncIterator[OpenDevices]:
    """Connect every configured device at once; yield their readers and drivers."""
    drivers = device_set(instrument.devices)
    sources = drivers.sources
    try:
        await asyncio.gather(
            *(
                _connected(source, entry.timeout_s)
                for source, entry in zip(sources, instrument.devices, strict=True)
            )
        )
        readers: dict[str, Reader] = {reader_name(s.name): s.telemetry for s in sources}
        yield OpenDevices(readers, drivers)
    finally:
        for source in sources:
            with contextlib.suppress(DeviceError):
                await source.close()
