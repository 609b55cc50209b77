"""Where a target is at the site now: altitude, azimuth, airmass, hour angle, LST.

An observation is checked against its constraints before the telescope moves, and
its headers record where the target was (ALT, AZ, AIRMASS, HA, LST beside the mount's
own report). Coordinates are ICRS at the target's epoch, moved by its proper motion
to the time asked; the altitude is geometric (no refraction), as the limits an
operator sets are. astropy stays offline (tasks/observing/sun_events.py says how).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

from astropy import units as u
from astropy.coordinates import ICRS, AltAz, SkyCoord
from astropy.time import Time

from schemas.observation import Target
from schemas.site import Site
from tasks.observing.sun_events import offline_astropy, site_location


@dataclass(frozen=True, slots=True)
class Pointing:
    """Where the target is from the site at ``when`` (degrees; hours for HA and LST)."""

    when: datetime
    ra_deg: float
    """ICRS right ascension at ``when`` (proper motion applied)."""
    dec_deg: float
    alt_deg: float
    az_deg: float
    airmass: float | None
    """Plane-parallel sec(z), None below the horizon."""
    hour_angle_h: float
    """-12 .. 12: negative east of the meridian (rising)."""
    lst_h: float


def target_now(target: Target, when: datetime) -> tuple[float, float]:
    """ICRS (RA, Dec) in degrees at ``when``, moved from the epoch by proper motion."""
    years = (Time(when).jyear - target.epoch_jyear) if when.tzinfo else 0.0
    dec = target.dec_deg + target.pm_dec_mas_per_yr * years / 3.6e6
    cos_dec = math.cos(math.radians(target.dec_deg))
    dra = target.pm_ra_mas_per_yr * years / 3.6e6 / cos_dec if cos_dec > 1e-9 else 0.0
    return (target.ra_deg + dra) % 360.0, max(-90.0, min(90.0, dec))


def where(target: Target, site: Site, when: datetime) -> Pointing:
    """The target's pointing from ``site`` at ``when`` (timezone-aware)."""
    if when.tzinfo is None:
        raise ValueError(f"when must be timezone-aware, got naive {when.isoformat()}")
    ra, dec = target_now(target, when)
    return sky_position(ra, dec, site, when)


def sky_position(ra: float, dec: float, site: Site, when: datetime) -> Pointing:
    """Where ICRS (``ra``, ``dec``) degrees is from ``site`` at ``when``."""
    offline_astropy()
    moment = Time(when)
    location = site_location(site)
    frame = AltAz(obstime=moment, location=location)
    altaz = SkyCoord(ra=ra * u.deg, dec=dec * u.deg, frame=ICRS()).transform_to(frame)
    alt = float(altaz.alt.deg)
    lst = float(moment.sidereal_time("apparent", longitude=location.lon).hour)
    hour_angle = (lst - ra / 15.0 + 12.0) % 24.0 - 12.0
    airmass = 1.0 / math.sin(math.radians(alt)) if alt > 0.5 else None
    return Pointing(
        when=when,
        ra_deg=ra,
        dec_deg=dec,
        alt_deg=alt,
        az_deg=float(altaz.az.deg),
        airmass=airmass,
        hour_angle_h=hour_angle,
        lst_h=lst,
    )
