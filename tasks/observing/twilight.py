"""Twilight sky flats: the next exposure time, and whether a frame is good enough.

The twilight sky fades (evening) or brightens (morning) by roughly a factor of ten
for every three degrees the Sun moves, so a fixed exposure time gives frames from
saturated to useless within minutes. The planner here keeps each frame near a target
level: it takes the count rate the last frame measured at its Sun altitude, moves it
to the next frame's altitude with the sky's brightness slope, and solves for the
time whose integral of the changing rate reaches the target (Tyson & Gal 1993 in
closed form). The slope starts at a typical value and is then measured from the
frames themselves, so a site, a filter or an instrument that differs is followed.

Pure functions: the flow (flows/twilight.py) gives Sun altitudes and measured levels.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from astropy import units as u
from astropy.coordinates import AltAz, SkyCoord, get_sun
from astropy.time import Time

from schemas.site import Site
from tasks.observing.sun_events import offline_astropy, site_location

TYPICAL_SLOPE = 0.36
"""[dex per degree of Sun altitude] how fast the zenith twilight sky's brightness
changes while the Sun is 2-10 degrees below the horizon (about 0.9 mag per degree)."""
SLOPE_RANGE = (0.1, 1.0)
"""A slope measured outside this is noise (clouds, a bad frame): it is clipped."""
SLOPE_MIN_STEP_DEG = 0.05
"""The Sun must have moved at least this far between two frames to measure a slope."""


@dataclass(frozen=True, slots=True)
class Measurement:
    """One frame's level: what the planner learns the sky's rate from."""

    exptime_s: float
    level_adu: float
    """Median above bias of the science pixels."""
    sun_alt_deg: float
    """The Sun's altitude at mid-exposure."""
    saturated: bool


@dataclass(slots=True)
class TwilightPlanner:
    """Exposure times that keep twilight flats at ``target_adu``.

    ``rate`` is the sky's count rate (ADU/s in this filter) at ``rate_alt``; it is
    unknown until a frame is measured (the flow's first frame of a filter is a probe,
    flows/twilight.py). Filters differ in throughput, so :meth:`new_filter` forgets the
    rate but keeps the slope (the sky's, not the filter's)."""

    target_adu: float
    slope: float = TYPICAL_SLOPE
    rate: float | None = None
    rate_alt: float | None = None
    follow_sun: bool = True
    """False: the next time is the last scaled by target / level, as many scripts do
    (bench/twilight.py measures both)."""

    def new_filter(self) -> None:
        self.rate = self.rate_alt = None

    def learn(self, frame: Measurement) -> None:
        """Take the frame's rate as the sky's now; refine the slope from the last."""
        if frame.exptime_s <= 0 or frame.level_adu <= 0:
            return
        rate = frame.level_adu / frame.exptime_s
        if frame.saturated:
            # The level is a floor: assume twice as bright, the next frame says more.
            rate *= 2.0
        elif self.rate is not None and self.rate_alt is not None:
            step = frame.sun_alt_deg - self.rate_alt
            if abs(step) >= SLOPE_MIN_STEP_DEG:
                measured = math.log10(rate / self.rate) / step
                self.slope = min(max(measured, SLOPE_RANGE[0]), SLOPE_RANGE[1])
        self.rate, self.rate_alt = rate, frame.sun_alt_deg

    def exptime(self, alt_at: Callable[[float], float]) -> float | None:
        """Seconds for the next frame to reach the target, or None before a first
        measurement (or when a fading sky never gets there); ``alt_at(s)`` is the
        Sun's altitude ``s`` seconds after the shutter opens. Not clipped: the caller
        decides what too short or too long means (wait for the sky, or move on)."""
        sky = self._sky(alt_at)
        if sky is None:
            return None
        start_rate, dex_per_s = sky
        return integration_time(self.target_adu, start_rate, dex_per_s)

    def level(self, seconds: float, alt_at: Callable[[float], float]) -> float | None:
        """The level a frame of ``seconds`` would reach (None before a measurement):
        at the longest or shortest time allowed, it may still be close enough."""
        sky = self._sky(alt_at)
        if sky is None:
            return None
        start_rate, dex_per_s = sky
        a = dex_per_s * math.log(10)
        return start_rate * seconds if abs(a) < 1e-12 else start_rate * math.expm1(a * seconds) / a

    def _sky(self, alt_at: Callable[[float], float]) -> tuple[float, float] | None:
        """(rate when the shutter opens, its change in dex per second)."""
        if self.rate is None or self.rate_alt is None:
            return None
        if not self.follow_sun:
            return self.rate, 0.0
        start = alt_at(0.0)
        speed = alt_at(60.0) - start  # degrees per minute; the Sun moves steadily
        start_rate = self.rate * 10 ** (self.slope * (start - self.rate_alt))
        return start_rate, self.slope * speed / 60.0


def integration_time(target: float, start_rate: float, dex_per_s: float) -> float | None:
    """Time for a rate of ``start_rate * 10**(dex_per_s * t)`` to integrate to
    ``target``; None when a fading sky never gets there."""
    if start_rate <= 0:
        return None
    a = dex_per_s * math.log(10)
    if abs(a) < 1e-12:
        return target / start_rate
    inner = 1 + a * target / start_rate
    if inner <= 0:
        return None
    return math.log(inner) / a


class Judgement(StrEnum):
    GOOD = "good"
    SATURATED = "saturated"
    TOO_BRIGHT = "too bright"
    TOO_FAINT = "too faint"


def judge(level_adu: float, saturated: bool, target_adu: float, tolerance: float) -> Judgement:
    """A flat is kept when its level is within ``tolerance`` (a fraction) of the target
    and no pixel of the sky is saturated (cosmic rays aside: the caller says which)."""
    if saturated:
        return Judgement.SATURATED
    if level_adu > target_adu * (1 + tolerance):
        return Judgement.TOO_BRIGHT
    if level_adu < target_adu * (1 - tolerance):
        return Judgement.TOO_FAINT
    return Judgement.GOOD


FLAT_SPOT_ALT_DEG = 75.0
"""Chromey & Hasselbacher (1996): the twilight sky is flattest about 15 degrees from
the zenith, away from the Sun."""


def flat_spot(
    site: Site, when: datetime, alt_deg: float = FLAT_SPOT_ALT_DEG
) -> tuple[float, float]:
    """ICRS RA and Dec (degrees) of the sky's flattest patch at ``when``: ``alt_deg``
    high, opposite the Sun's azimuth."""
    offline_astropy()
    location = site_location(site)
    frame = AltAz(obstime=Time(when), location=location)
    sun = get_sun(Time(when)).transform_to(frame)
    away = (float(sun.az.deg) + 180.0) % 360.0
    spot = SkyCoord(az=away * u.deg, alt=alt_deg * u.deg, frame=frame).icrs
    return float(spot.ra.deg), float(spot.dec.deg)


@dataclass(frozen=True, slots=True)
class SkyClock:
    """The time the Sun is computed for: the real time, or (``speed`` > 1) a twilight
    run faster from ``origin``, so a simulator's sky and the planner can go through a
    whole twilight in minutes (bench/twilight.py). Both must share one clock."""

    speed: float = 1.0
    origin: datetime = datetime(2000, 1, 1, tzinfo=UTC)
    """The simulated time at ``real_origin``."""
    real_origin: datetime = datetime(2000, 1, 1, tzinfo=UTC)

    @classmethod
    def from_now(cls, origin: datetime, speed: float) -> SkyClock:
        return cls(speed, origin, datetime.now(UTC))

    def at(self, real: datetime) -> datetime:
        """The Sun's time at the real time ``real``."""
        return self.origin + (real - self.real_origin) * self.speed

    def now(self) -> datetime:
        return self.at(datetime.now(UTC))


def sun_track(
    altitude: Callable[[datetime], float], start: datetime, clock: SkyClock
) -> Callable[[float], float]:
    """The Sun's altitude ``s`` real seconds after the real time ``start``, from two
    exact points a simulated minute apart (it changes linearly over an exposure)."""
    when = clock.at(start)
    here, later = altitude(when), altitude(when + timedelta(minutes=1))
    per_s = (later - here) / 60.0 * clock.speed
    return lambda s: here + per_s * s
