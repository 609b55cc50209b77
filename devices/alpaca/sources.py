"""Alpaca devices as telemetry sources (devices/telemetry.py) for headers.

Devices on one Alpaca server share one :class:`AlpacaClient` (one HTTP connection
pool per server, as devices/alpaca/client.py wants); each source is a view of its
device, built from the config entry's type and number. Connecting checks the
device is there: a server without it answers NotImplemented or HTTP 400/404, which
becomes an error naming ``device_number`` and ``type``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from devices.alpaca.camera import AlpacaCamera
from devices.alpaca.client import AlpacaClient
from devices.alpaca.covercalibrator import AlpacaCoverCalibrator
from devices.alpaca.dome import AlpacaDome
from devices.alpaca.errors import AlpacaHttpError
from devices.alpaca.filterwheel import AlpacaFilterWheel
from devices.alpaca.focuser import AlpacaFocuser
from devices.alpaca.observatory import (
    AlpacaEnclosure,
    AlpacaFilters,
    AlpacaFlatLamp,
    AlpacaFocus,
    AlpacaMount,
)
from devices.alpaca.observingconditions import AlpacaObservingConditions
from devices.alpaca.rotator import AlpacaRotator
from devices.alpaca.safetymonitor import AlpacaSafetyMonitor
from devices.alpaca.switch import AlpacaSwitch
from devices.alpaca.telescope import AlpacaTelescope
from devices.base import DeviceError, DeviceStateError, DeviceUnsupportedError
from devices.observatory import DeviceSet
from devices.telemetry import Reading


class _Readable(Protocol):
    """What every typed adapter has: an address, a connect, its telemetry."""

    client: AlpacaClient

    async def connect(self, *, timeout: float = ..., poll: float = ...) -> None: ...

    async def telemetry(self) -> dict[str, object]: ...


ADAPTERS: dict[str, Callable[[AlpacaClient, int], _Readable]] = {
    "camera": AlpacaCamera,
    "covercalibrator": AlpacaCoverCalibrator,
    "dome": AlpacaDome,
    "filterwheel": AlpacaFilterWheel,
    "focuser": AlpacaFocuser,
    "observingconditions": AlpacaObservingConditions,
    "rotator": AlpacaRotator,
    "safetymonitor": AlpacaSafetyMonitor,
    "switch": AlpacaSwitch,
    "telescope": AlpacaTelescope,
}
"""Device type (as in the URLs) -> its adapter class."""


class DeviceSettings(Protocol):
    """The fields of an instrument config's ``devices`` entry this module reads
    (schemas.devices.DeviceConfig has them)."""

    @property
    def name(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def device_number(self) -> int: ...
    @property
    def timeout_s(self) -> float: ...


class AlpacaSource:
    """One configured Alpaca device, read for headers."""

    def __init__(self, settings: DeviceSettings, client: AlpacaClient, owns_client: bool) -> None:
        adapter = ADAPTERS.get(str(settings.type))
        if adapter is None:
            raise ValueError(f"type: unknown Alpaca device type {settings.type!r}")
        self.settings = settings
        self.device = adapter(client, settings.device_number)
        self._address = (
            f"{settings.type} {settings.device_number} at {settings.host}:{settings.port}"
        )
        self._owns_client = owns_client

    @property
    def name(self) -> str:
        return self.settings.name

    @property
    def address(self) -> str:
        return self._address

    async def connect(self) -> None:
        s = self.settings
        try:
            await self.device.connect(timeout=s.timeout_s)
        except (DeviceUnsupportedError, AlpacaHttpError) as exc:
            if isinstance(exc, AlpacaHttpError) and exc.status not in (400, 404):
                raise
            raise DeviceStateError(
                f"device {s.name}: no {s.type} with device_number {s.device_number} at "
                f"{s.host}:{s.port} ({exc})"
            ) from exc

    async def close(self) -> None:
        if self._owns_client:
            with contextlib.suppress(DeviceError):
                await self.device.client.aclose()

    async def telemetry(self) -> Mapping[str, Reading]:
        values = await self.device.telemetry()
        return {
            key: value
            for key, value in values.items()
            if isinstance(value, float | int | str | bool)
        }


def alpaca_device_set(entries: Sequence[DeviceSettings]) -> DeviceSet:
    """The entries as telemetry sources, the first telescope, dome, filter wheel and
    focuser as drivers, and every cover calibrator as a lamp, on one client per server."""
    sources = alpaca_sources(entries)
    found = DeviceSet(sources=list(sources))
    for source in sources:
        device = source.device
        if isinstance(device, AlpacaTelescope) and found.mount is None:
            found.mount = AlpacaMount(device)
        elif isinstance(device, AlpacaDome) and found.enclosure is None:
            found.enclosure = AlpacaEnclosure(device)
        elif isinstance(device, AlpacaFilterWheel) and found.filters is None:
            found.filters = AlpacaFilters(device)
        elif isinstance(device, AlpacaFocuser) and found.focuser is None:
            found.focuser = AlpacaFocus(device)
        elif isinstance(device, AlpacaCoverCalibrator):
            found.lamps[source.settings.name] = AlpacaFlatLamp(device)
    return found


def alpaca_sources(entries: Sequence[DeviceSettings]) -> list[AlpacaSource]:
    """One source per entry; one client per server (the first entry on it closes it)."""
    clients: dict[tuple[str, int], AlpacaClient] = {}
    sources = []
    for entry in entries:
        key = (entry.host, entry.port)
        owns = key not in clients
        if owns:
            clients[key] = AlpacaClient(entry.host, entry.port, timeout=entry.timeout_s)
        sources.append(AlpacaSource(entry, clients[key], owns))
    return sources
