"""The ASCOM Telescope as an Alpaca device view: slews, tracking, park, pointing state.

Slews are the asynchronous ones (SlewToCoordinatesAsync, SlewToAltAzAsync): the call
returns once the mount has accepted the target, and :meth:`AlpacaTelescope.wait_until_stopped`
polls Slewing with a deadline, so a flow can abort a slew it no longer wants. A target
outside the sky (RA beyond 0..24 h, Dec beyond +-90 deg, altitude below the horizon)
and a slew the mount says it cannot do (CanSlewAsync false ...) are refused before
anything is sent; state the mount alone knows (parked, not tracking) is left to it,
and its refusal comes back typed (InvalidWhileParked ...).

ASCOM asks for Tracking on before an RA/Dec slew and off before an alt/az one; this
view does not switch tracking behind the caller's back.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from enum import IntEnum
from typing import ClassVar

from devices.alpaca.checks import AlpacaValueError, check_range, require
from devices.alpaca.client import AlpacaClient, Device
from devices.alpaca.reads import (
    as_enum,
    as_int_list,
    enum_name,
    optional,
    present,
    read_all,
)
from devices.alpaca.waits import DEFAULT_POLL, wait_for

DEFAULT_PARK_TIMEOUT = 300.0
"""Seconds a park or a search for home may take: a slow mount across the sky."""


class PierSide(IntEnum):
    """ASCOM PierSide: which side of the pier the mount is on (the pointing state)."""

    UNKNOWN = -1
    EAST = 0
    WEST = 1


class DriveRate(IntEnum):
    """ASCOM DriveRates: the tracking rates."""

    SIDEREAL = 0
    LUNAR = 1
    SOLAR = 2
    KING = 3


class AlignmentMode(IntEnum):
    """ASCOM AlignmentModes: the mount's geometry."""

    ALT_AZ = 0
    POLAR = 1
    GERMAN_POLAR = 2


class EquatorialSystem(IntEnum):
    """ASCOM EquatorialCoordinateType: the frame RightAscension/Declination are in."""

    OTHER = 0
    TOPOCENTRIC = 1
    J2000 = 2
    J2050 = 3
    B1950 = 4


@dataclass(frozen=True, slots=True)
class TelescopeCapabilities:
    """What one mount can do, read from its Can... properties once."""

    can_slew: bool
    can_slew_async: bool
    can_slew_alt_az: bool
    can_slew_alt_az_async: bool
    can_sync: bool
    can_sync_alt_az: bool
    can_park: bool
    can_unpark: bool
    can_set_park: bool
    can_find_home: bool
    can_set_tracking: bool
    can_pulse_guide: bool
    can_set_guide_rates: bool
    can_set_right_ascension_rate: bool
    can_set_declination_rate: bool
    can_set_pier_side: bool
    alignment_mode: AlignmentMode | int | None
    equatorial_system: EquatorialSystem | int | None
    tracking_rates: tuple[DriveRate | int, ...]
    """TrackingRates (empty when the mount does not list them)."""


_FLAGS = {
    "can_slew": "canslew",
    "can_slew_async": "canslewasync",
    "can_slew_alt_az": "canslewaltaz",
    "can_slew_alt_az_async": "canslewaltazasync",
    "can_sync": "cansync",
    "can_sync_alt_az": "cansyncaltaz",
    "can_park": "canpark",
    "can_unpark": "canunpark",
    "can_set_park": "cansetpark",
    "can_find_home": "canfindhome",
    "can_set_tracking": "cansettracking",
    "can_pulse_guide": "canpulseguide",
    "can_set_guide_rates": "cansetguiderates",
    "can_set_right_ascension_rate": "cansetrightascensionrate",
    "can_set_declination_rate": "cansetdeclinationrate",
    "can_set_pier_side": "cansetpierside",
}
"""Capability field -> Alpaca member (all booleans)."""


def check_equatorial(ra_hours: float, dec_deg: float, *, device: str, member: str) -> None:
    """Refuse RA outside [0, 24) hours or Dec outside [-90, 90] degrees."""
    check_range(
        ra_hours, 0, 24, "RightAscension", device=device, member=member, high_open=True, unit="h"
    )
    check_range(dec_deg, -90, 90, "Declination", device=device, member=member, unit="deg")


def check_horizontal(azimuth_deg: float, altitude_deg: float, *, device: str, member: str) -> None:
    """Refuse azimuth outside [0, 360) or a slew altitude outside [0, 90] degrees."""
    check_range(
        azimuth_deg, 0, 360, "Azimuth", device=device, member=member, high_open=True, unit="deg"
    )
    check_range(altitude_deg, 0, 90, "Altitude", device=device, member=member, unit="deg")


class AlpacaTelescope(Device):
    """One Alpaca mount (``/api/v1/telescope/{number}/...``) on an AlpacaClient."""

    device_type: ClassVar[str] = "telescope"

    def __init__(self, client: AlpacaClient, number: int = 0) -> None:
        super().__init__(client, number)
        self._capabilities: TelescopeCapabilities | None = None

    # --- capabilities -------------------------------------------------------------------

    async def capabilities(self, *, refresh: bool = False) -> TelescopeCapabilities:
        """Every Can... flag, the geometry and the tracking rates, read once and kept."""
        if self._capabilities is None or refresh:
            flags, mode, system, rates = await asyncio.gather(
                asyncio.gather(*(self.get_bool(member) for member in _FLAGS.values())),
                optional(self.alignment_mode()),
                optional(self.equatorial_system()),
                optional(self.tracking_rates()),
            )
            self._capabilities = TelescopeCapabilities(
                **dict(zip(_FLAGS, flags, strict=True)),
                alignment_mode=mode,
                equatorial_system=system,
                tracking_rates=tuple(rates or ()),
            )
        return self._capabilities

    async def alignment_mode(self) -> AlignmentMode | int:
        """AlignmentMode (an unknown code is kept as its number)."""
        return as_enum(AlignmentMode, await self.get_int("alignmentmode"))

    async def equatorial_system(self) -> EquatorialSystem | int:
        """EquatorialSystem: the frame of RightAscension and Declination."""
        return as_enum(EquatorialSystem, await self.get_int("equatorialsystem"))

    async def tracking_rates(self) -> list[DriveRate | int]:
        """TrackingRates: the drive rates the mount offers."""
        codes = as_int_list(*await self._typed("trackingrates"))
        return [as_enum(DriveRate, code) for code in codes]

    # --- pointing state -----------------------------------------------------------------

    async def right_ascension(self) -> float:
        """RightAscension, in hours (in the EquatorialSystem frame)."""
        return await self.get_float("rightascension")

    async def declination(self) -> float:
        """Declination, in degrees."""
        return await self.get_float("declination")

    async def altitude(self) -> float:
        """Altitude above the horizon, in degrees."""
        return await self.get_float("altitude")

    async def azimuth(self) -> float:
        """Azimuth, in degrees from north through east."""
        return await self.get_float("azimuth")

    async def side_of_pier(self) -> PierSide | int:
        """SideOfPier: the pointing state of a German mount."""
        return as_enum(PierSide, await self.get_int("sideofpier"))

    async def sidereal_time(self) -> float:
        """SiderealTime: local apparent sidereal time, in hours."""
        return await self.get_float("siderealtime")

    async def is_slewing(self) -> bool:
        """Slewing: true while the mount moves to a target (or MoveAxis runs)."""
        return await self.get_bool("slewing")

    async def at_park(self) -> bool:
        """AtPark."""
        return await self.get_bool("atpark")

    async def at_home(self) -> bool:
        """AtHome."""
        return await self.get_bool("athome")

    # --- tracking -----------------------------------------------------------------------

    async def tracking(self) -> bool:
        """Tracking: whether the mount follows the sky."""
        return await self.get_bool("tracking")

    async def set_tracking(self, on: bool) -> None:
        """PUT Tracking (refused before sending where CanSetTracking is false)."""
        caps = await self.capabilities()
        require(
            caps.can_set_tracking, "CanSetTracking", device=str(self.address), member="tracking"
        )
        await self.put("tracking", Tracking=bool(on))

    async def tracking_rate(self) -> DriveRate | int:
        """TrackingRate."""
        return as_enum(DriveRate, await self.get_int("trackingrate"))

    async def set_tracking_rate(self, rate: DriveRate) -> None:
        """PUT TrackingRate; a rate not in the mount's TrackingRates is refused first."""
        caps = await self.capabilities()
        if caps.tracking_rates and rate not in caps.tracking_rates:
            offered = ", ".join(str(enum_name(r)) for r in caps.tracking_rates)
            raise AlpacaValueError(
                "TrackingRate",
                enum_name(rate),
                f"the mount offers {offered}",
                device=str(self.address),
                member="trackingrate",
            )
        await self.put("trackingrate", TrackingRate=int(rate))

    # --- slews --------------------------------------------------------------------------

    async def slew_to_coordinates(self, ra_hours: float, dec_deg: float) -> None:
        """PUT SlewToCoordinatesAsync: start the slew to RA (hours), Dec (degrees).

        Refused before sending when the target is off the sphere or CanSlewAsync is
        false. Returns when the mount has accepted; :meth:`wait_until_stopped` waits.
        """
        where, member = str(self.address), "slewtocoordinatesasync"
        check_equatorial(ra_hours, dec_deg, device=where, member=member)
        caps = await self.capabilities()
        require(caps.can_slew_async, "CanSlewAsync", device=where, member=member)
        await self.put(member, RightAscension=float(ra_hours), Declination=float(dec_deg))

    async def slew_to_altaz(self, azimuth_deg: float, altitude_deg: float) -> None:
        """PUT SlewToAltAzAsync: start the slew to azimuth, altitude (degrees).

        Refused before sending when the target is below the horizon or off the circle,
        or when CanSlewAltAzAsync is false. ASCOM wants Tracking off first.
        """
        where, member = str(self.address), "slewtoaltazasync"
        check_horizontal(azimuth_deg, altitude_deg, device=where, member=member)
        caps = await self.capabilities()
        require(caps.can_slew_alt_az_async, "CanSlewAltAzAsync", device=where, member=member)
        await self.put(member, Azimuth=float(azimuth_deg), Altitude=float(altitude_deg))

    async def abort_slew(self) -> None:
        """PUT AbortSlew: stop a slew now (the mount stays where it got to)."""
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
            waiting_for="the slew to end",
        )

    # --- park and home ------------------------------------------------------------------

    async def park(self) -> None:
        """PUT Park (refused before sending where CanPark is false).

        ITelescopeV4 lets Park return before the mount arrives: :meth:`wait_parked`.
        """
        caps = await self.capabilities()
        require(caps.can_park, "CanPark", device=str(self.address), member="park")
        await self.put("park")

    async def wait_parked(
        self, *, timeout: float = DEFAULT_PARK_TIMEOUT, poll: float = DEFAULT_POLL
    ) -> None:
        """Poll AtPark until true."""
        await wait_for(
            self.at_park,
            bool,
            timeout=timeout,
            poll=poll,
            device=str(self.address),
            member="atpark",
            waiting_for="the mount to park",
        )

    async def unpark(self) -> None:
        """PUT Unpark (refused before sending where CanUnpark is false)."""
        caps = await self.capabilities()
        require(caps.can_unpark, "CanUnpark", device=str(self.address), member="unpark")
        await self.put("unpark")

    async def find_home(self) -> None:
        """PUT FindHome (refused before sending where CanFindHome is false).

        ITelescopeV4 lets FindHome return before the search ends: :meth:`wait_home`.
        """
        caps = await self.capabilities()
        require(caps.can_find_home, "CanFindHome", device=str(self.address), member="findhome")
        await self.put("findhome")

    async def wait_home(
        self, *, timeout: float = DEFAULT_PARK_TIMEOUT, poll: float = DEFAULT_POLL
    ) -> None:
        """Poll AtHome until true."""
        await wait_for(
            self.at_home,
            bool,
            timeout=timeout,
            poll=poll,
            device=str(self.address),
            member="athome",
            waiting_for="the mount to find home",
        )

    # --- telemetry ----------------------------------------------------------------------

    async def telemetry(self) -> dict[str, object]:
        """Where the mount points now, for FITS headers, read in one concurrent burst.

        Keys (FITS card in brackets): ``ra_hours`` (TELRA), ``dec_deg`` (TELDEC),
        ``alt_deg`` (ALT), ``az_deg`` (AZ), ``tracking``, ``tracking_rate``,
        ``pier_side`` (PIERSIDE), ``sidereal_time_hours`` (LST), ``slewing``,
        ``at_park``. What the mount lacks is left out.
        """
        values = await read_all(
            {
                "ra_hours": self.right_ascension(),
                "dec_deg": self.declination(),
                "alt_deg": optional(self.altitude()),
                "az_deg": optional(self.azimuth()),
                "tracking": self.tracking(),
                "tracking_rate": optional(self.tracking_rate()),
                "pier_side": optional(self.side_of_pier()),
                "sidereal_time_hours": optional(self.sidereal_time()),
                "slewing": self.is_slewing(),
                "at_park": optional(self.at_park()),
            }
        )
        return present({key: enum_name(value) for key, value in values.items()})


__all__ = [
    "DEFAULT_PARK_TIMEOUT",
    "AlignmentMode",
    "AlpacaTelescope",
    "DriveRate",
    "EquatorialSystem",
    "PierSide",
    "TelescopeCapabilities",
    "check_equatorial",
    "check_horizontal",
]
