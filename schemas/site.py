"""Where the observatory is, and the Sun altitudes that define its night.

A flow that starts at dusk or stops at dawn needs the site's position and its local
time zone; the zone also decides which night a moment belongs to. These models are
plain data (no astropy here), so they load from YAML, show as forms in the Prefect UI
and refuse a bad value before anything is computed. The Sun events themselves are
computed in tasks/observing/sun_events.py.
"""

from __future__ import annotations

from itertools import pairwise
from zoneinfo import ZoneInfo

from pydantic import Field, field_validator, model_validator

from schemas.form_order import FormModel
from schemas.naming import check_timezone

SITE_NAME = r"^[\x20-\x7e]+$"
"""Printable ASCII: the name may go into a FITS string value (at most 68 characters)."""


class Site(FormModel):
    """An observing site: geodetic position and the IANA time zone of its clocks.

    The elevation is kept for the record and for the topocentric position; it does not
    lower the horizon (no dip correction), as almanacs do not either.
    """

    name: str = Field(
        default="site",
        min_length=1,
        max_length=68,
        pattern=SITE_NAME,
        title="Site name",
        description="printable ASCII, at most 68 characters (a FITS string value)",
    )
    latitude_deg: float = Field(
        ge=-90.0,
        le=90.0,
        allow_inf_nan=False,
        title="Latitude (deg)",
        description="geodetic latitude in degrees, north positive",
    )
    longitude_deg: float = Field(
        ge=-180.0,
        le=180.0,
        allow_inf_nan=False,
        title="Longitude (deg)",
        description="geodetic longitude in degrees, east positive (west is negative)",
    )
    elevation_m: float = Field(
        default=0.0,
        ge=-500.0,
        le=9000.0,
        allow_inf_nan=False,
        title="Elevation (m)",
        description="metres above the WGS84 ellipsoid (or sea level); does not lower the horizon",
    )
    timezone: str = Field(
        default="UTC",
        min_length=1,
        title="Time zone",
        description="IANA zone of the site's clocks, e.g. 'America/Denver'; decides the night",
    )

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, zone: str) -> str:
        return check_timezone(zone)

    @property
    def zone(self) -> ZoneInfo:
        """The site's time zone (ZoneInfo caches instances, so this is cheap)."""
        return ZoneInfo(self.timezone)


class SunHorizons(FormModel):
    """Sun altitudes (degrees, apparent centre, no refraction applied) that define events.

    The defaults are the almanac conventions: sunset and sunrise when the upper limb
    touches the horizon with standard refraction (-0.833), then civil, nautical and
    astronomical twilight at -6, -12 and -18. An observatory may move them per activity
    (twilight flats from -3, say), but they must stay in that order so the events stay
    in time order.
    """

    sunset_deg: float = Field(
        default=-0.833,
        ge=-30.0,
        le=5.0,
        allow_inf_nan=False,
        title="Sunset/sunrise altitude (deg)",
        description="Sun altitude of sunset and sunrise; -0.833 includes standard refraction",
    )
    civil_deg: float = Field(
        default=-6.0,
        ge=-30.0,
        le=5.0,
        allow_inf_nan=False,
        title="Civil twilight altitude (deg)",
        description="Sun altitude that ends civil twilight at dusk and starts it at dawn",
    )
    nautical_deg: float = Field(
        default=-12.0,
        ge=-30.0,
        le=5.0,
        allow_inf_nan=False,
        title="Nautical twilight altitude (deg)",
        description="Sun altitude that ends nautical twilight at dusk and starts it at dawn",
    )
    astronomical_deg: float = Field(
        default=-18.0,
        ge=-30.0,
        le=5.0,
        allow_inf_nan=False,
        title="Astronomical twilight altitude (deg)",
        description="Sun altitude below which the sky is dark (astronomical night)",
    )

    @model_validator(mode="after")
    def _descending(self) -> SunHorizons:
        levels = (self.sunset_deg, self.civil_deg, self.nautical_deg, self.astronomical_deg)
        if any(high <= low for high, low in pairwise(levels)):
            raise ValueError(
                "Sun horizons must decrease: sunset_deg > civil_deg > nautical_deg > "
                f"astronomical_deg, got {', '.join(f'{level:g}' for level in levels)}"
            )
        return self
