"""The ASCOM Dome as an Alpaca device view: shutter, azimuth, slaving, park and home.

Opening a shutter or turning a dome takes tens of seconds, so each action sends its
PUT and returns, and a matching wait polls with a deadline: ShutterStatus for the
shutter (an Error status ends the wait at once), Slewing for the dome, AtPark and
AtHome for park and home. What the dome says it cannot do (CanSetShutter false ...)
and an azimuth off the circle are refused before anything is sent.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from enum import IntEnum
from typing import ClassVar

from devices.alpaca.checks import check_range, require
from devices.alpaca.client import AlpacaClient, Device
from devices.alpaca.reads import as_enum, enum_name, optional, present, read_all
from devices.alpaca.waits import DEFAULT_POLL, wait_for

DEFAULT_SHUTTER_TIMEOUT = 180.0
"""Seconds a shutter or roof may take to open or close, with margin."""


class ShutterState(IntEnum):
    """ASCOM ShutterState."""

    OPEN = 0
    CLOSED = 1
    OPENING = 2
    CLOSING = 3
    ERROR = 4


@dataclass(frozen=True, slots=True)
class DomeCapabilities:
    """What one dome can do, read from its Can... properties once."""

    can_find_home: bool
    can_park: bool
    can_set_altitude: bool
    can_set_azimuth: bool
    can_set_park: bool
    can_set_shutter: bool
    can_slave: bool
    can_sync_azimuth: bool


_FLAGS = {
    "can_find_home": "canfindhome",
    "can_park": "canpark",
    "can_set_altitude": "cansetaltitude",
    "can_set_azimuth": "cansetazimuth",
    "can_set_park": "cansetpark",
    "can_set_shutter": "cansetshutter",
    "can_slave": "canslave",
    "can_sync_azimuth": "cansyncazimuth",
}


class AlpacaDome(Device):
    """One Alpaca dome or roll-off roof (``/api/v1/dome/{number}/...``)."""

    device_type: ClassVar[str] = "dome"

    def __init__(self, client: AlpacaClient, number: int = 0) -> None:
        super().__init__(client, number)
        self._capabilities: DomeCapabilities | None = None

    async def capabilities(self, *, refresh: bool = False) -> DomeCapabilities:
        """Every Can... flag, read once and kept."""
        if self._capabilities is None or refresh:
            flags = await asyncio.gather(*(self.get_bool(member) for member in _FLAGS.values()))
            self._capabilities = DomeCapabilities(**dict(zip(_FLAGS, flags, strict=True)))
        return self._capabilities

    def _require(self, capable: bool, capability: str, member: str) -> None:
        require(capable, capability, device=str(self.address), member=member)

    # --- shutter ------------------------------------------------------------------------

    async def shutter_status(self) -> ShutterState | int:
        """ShutterStatus (an unknown code is kept as its number)."""
        return as_enum(ShutterState, await self.get_int("shutterstatus"))

    async def open_shutter(self) -> None:
        """PUT OpenShutter (refused before sending where CanSetShutter is false)."""
        caps = await self.capabilities()
        self._require(caps.can_set_shutter, "CanSetShutter", "openshutter")
        await self.put("openshutter")

    async def close_shutter(self) -> None:
        """PUT CloseShutter (refused before sending where CanSetShutter is false)."""
        caps = await self.capabilities()
        self._require(caps.can_set_shutter, "CanSetShutter", "closeshutter")
        await self.put("closeshutter")

    async def wait_shutter(
        self,
        state: ShutterState,
        *,
        timeout: float = DEFAULT_SHUTTER_TIMEOUT,
        poll: float = DEFAULT_POLL,
    ) -> None:
        """Poll ShutterStatus until it is ``state``; Error ends the wait at once.

        The Error status raises :class:`~devices.alpaca.checks.AlpacaDeviceFaultError`
        (unless Error is what was asked for): a jammed shutter is not a slow one.
        """
        await wait_for(
            self.shutter_status,
            lambda status: status == state,
            timeout=timeout,
            poll=poll,
            device=str(self.address),
            member="shutterstatus",
            waiting_for=f"the shutter to be {state.name}",
            fault=lambda status: (
                "the shutter reports Error"
                if status == ShutterState.ERROR and state != ShutterState.ERROR
                else None
            ),
        )

    # --- azimuth and altitude -----------------------------------------------------------

    async def azimuth(self) -> float:
        """Azimuth of the opening, in degrees from north through east."""
        return await self.get_float("azimuth")

    async def altitude(self) -> float:
        """Altitude of the opening, in degrees (domes with a moving shutter only)."""
        return await self.get_float("altitude")

    async def is_slewing(self) -> bool:
        """Slewing: true while the dome turns (or the shutter altitude moves)."""
        return await self.get_bool("slewing")

    async def slew_to_azimuth(self, azimuth_deg: float) -> None:
        """PUT SlewToAzimuth (0 <= azimuth < 360); the turn is awaited by wait_until_stopped."""
        where, member = str(self.address), "slewtoazimuth"
        check_range(
            azimuth_deg, 0, 360, "Azimuth", device=where, member=member, high_open=True, unit="deg"
        )
        self._require((await self.capabilities()).can_set_azimuth, "CanSetAzimuth", member)
        await self.put(member, Azimuth=float(azimuth_deg))

    async def slew_to_altitude(self, altitude_deg: float) -> None:
        """PUT SlewToAltitude (0..90 degrees) where CanSetAltitude is true."""
        where, member = str(self.address), "slewtoaltitude"
        check_range(altitude_deg, 0, 90, "Altitude", device=where, member=member, unit="deg")
        self._require((await self.capabilities()).can_set_altitude, "CanSetAltitude", member)
        await self.put(member, Altitude=float(altitude_deg))

    async def abort_slew(self) -> None:
        """PUT AbortSlew: stop turning (and, per IDome, stop the shutter)."""
        await self.put("abortslew")

    async def wait_until_stopped(self, *, timeout: float, poll: float = DEFAULT_POLL) -> None:
        """Poll Slewing until false."""
        await wait_for(
            self.is_slewing,
            lambda slewing: not slewing,
            timeout=timeout,
            poll=poll,
            device=str(self.address),
            member="slewing",
            waiting_for="the dome to stop turning",
        )

    # --- slaving, park, home ------------------------------------------------------------

    async def slaved(self) -> bool:
        """Slaved: whether the dome follows the telescope by itself."""
        return await self.get_bool("slaved")

    async def set_slaved(self, on: bool) -> None:
        """PUT Slaved (slaving is refused before sending where CanSlave is false)."""
        if on:
            self._require((await self.capabilities()).can_slave, "CanSlave", "slaved")
        await self.put("slaved", Slaved=bool(on))

    async def at_park(self) -> bool:
        """AtPark."""
        return await self.get_bool("atpark")

    async def at_home(self) -> bool:
        """AtHome."""
        return await self.get_bool("athome")

    async def park(self) -> None:
        """PUT Park (refused before sending where CanPark is false); see :meth:`wait_parked`."""
        self._require((await self.capabilities()).can_park, "CanPark", "park")
        await self.put("park")

    async def wait_parked(
        self, *, timeout: float = DEFAULT_SHUTTER_TIMEOUT, poll: float = DEFAULT_POLL
    ) -> None:
        """Poll AtPark until true."""
        await wait_for(
            self.at_park,
            bool,
            timeout=timeout,
            poll=poll,
            device=str(self.address),
            member="atpark",
            waiting_for="the dome to park",
        )

    async def find_home(self) -> None:
        """PUT FindHome (refused where CanFindHome is false); see :meth:`wait_home`."""
        self._require((await self.capabilities()).can_find_home, "CanFindHome", "findhome")
        await self.put("findhome")

    async def wait_home(
        self, *, timeout: float = DEFAULT_SHUTTER_TIMEOUT, poll: float = DEFAULT_POLL
    ) -> None:
        """Poll AtHome until true."""
        await wait_for(
            self.at_home,
            bool,
            timeout=timeout,
            poll=poll,
            device=str(self.address),
            member="athome",
            waiting_for="the dome to find home",
        )

    # --- telemetry ----------------------------------------------------------------------

    async def telemetry(self) -> dict[str, object]:
        """Shutter, azimuth, motion, slaving, park and home, read concurrently.

        Keys: ``shutter`` (ShutterState name), ``dome_azimuth_deg``,
        ``dome_altitude_deg`` (domes with CanSetAltitude), ``dome_slewing``,
        ``dome_slaved``, ``dome_at_park``, ``dome_at_home``; absent members are left out.
        """
        caps = await self.capabilities()
        reads = {
            "shutter": optional(self.shutter_status()),
            "dome_azimuth_deg": optional(self.azimuth()),
            "dome_slewing": self.is_slewing(),
            "dome_slaved": optional(self.slaved()),
            "dome_at_park": optional(self.at_park()),
            "dome_at_home": optional(self.at_home()),
        }
        if caps.can_set_altitude:
            reads["dome_altitude_deg"] = optional(self.altitude())
        values = await read_all(reads)
        return present({key: enum_name(value) for key, value in values.items()})


__all__ = ["DEFAULT_SHUTTER_TIMEOUT", "AlpacaDome", "DomeCapabilities", "ShutterState"]
