"""The Alpaca management API: which API versions, which server, which devices.

Every compliant server answers ``/management/apiversions``,
``/management/v1/description`` and ``/management/v1/configureddevices``; some do not
(alpaca-simulators has none of them and answers HTTP 400). A missing endpoint is an
:class:`AlpacaUnsupportedError` (kind: the device lacks this feature), so a caller
can fall back to a configured device list instead of failing on a generic HTTP error.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from devices.alpaca.client import AlpacaClient
from devices.alpaca.errors import AlpacaHttpError, AlpacaProtocolError, AlpacaUnsupportedError
from devices.alpaca.protocol import server_label


@dataclass(frozen=True, slots=True)
class ServerDescription:
    """``/management/v1/description``."""

    server_name: str
    manufacturer: str
    manufacturer_version: str
    location: str


@dataclass(frozen=True, slots=True)
class ConfiguredDevice:
    """One entry of ``/management/v1/configureddevices``; ``device_type`` is lower case."""

    name: str
    device_type: str
    number: int
    unique_id: str


async def api_versions(client: AlpacaClient) -> list[int]:
    """The Alpaca API versions the server supports (``[1]`` today)."""
    value = await _management(client, "apiversions")
    if not isinstance(value, list) or not all(_is_int(v) for v in value):
        raise _broken(client, "apiversions", f"Value is not a list of integers: {value!r}")
    return [int(v) for v in value]


async def description(client: AlpacaClient) -> ServerDescription:
    """Who made the server and where it is."""
    value = await _management(client, "v1/description")
    if not isinstance(value, Mapping):
        raise _broken(client, "v1/description", f"Value is not an object: {value!r}")
    fields = ("ServerName", "Manufacturer", "ManufacturerVersion", "Location")
    texts = [value.get(key, "") for key in fields]
    if not all(isinstance(text, str) for text in texts):
        raise _broken(client, "v1/description", f"a field is not a string: {value!r}")
    return ServerDescription(*(str(text) for text in texts))


async def configured_devices(client: AlpacaClient) -> list[ConfiguredDevice]:
    """The devices the server offers, as the server names them."""
    value = await _management(client, "v1/configureddevices")
    if not isinstance(value, list):
        raise _broken(client, "v1/configureddevices", f"Value is not a list: {value!r}")
    devices: list[ConfiguredDevice] = []
    for item in value:
        if not isinstance(item, Mapping):
            raise _broken(client, "v1/configureddevices", f"entry is not an object: {item!r}")
        name, kind = item.get("DeviceName"), item.get("DeviceType")
        number, unique = item.get("DeviceNumber"), item.get("UniqueID", "")
        if not (isinstance(name, str) and isinstance(kind, str) and _is_int(number)):
            raise _broken(client, "v1/configureddevices", f"entry lacks a field: {item!r}")
        assert isinstance(number, int)
        devices.append(ConfiguredDevice(name, kind.lower(), number, str(unique)))
    return devices


async def _management(client: AlpacaClient, path: str) -> object:
    try:
        return await client.management(path)
    except AlpacaHttpError as error:
        if error.status in (400, 404) and not isinstance(error, AlpacaUnsupportedError):
            raise AlpacaUnsupportedError(
                error.status,
                f"no management API here ({error.body.strip()[:200]})",
                device=error.device,
                member=error.member,
            ) from error
        raise


def _broken(client: AlpacaClient, member: str, message: str) -> AlpacaProtocolError:
    return AlpacaProtocolError(
        message[:300], device=server_label(client.host, client.port), member=member
    )


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
