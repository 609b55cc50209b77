"""The night's Sun events at a site: sunset, the three twilights and sunrise.

Flows start calibrations at dusk and stop science at dawn, so they need these times
to seconds, not to the minute of a printed almanac. The Sun's apparent altitude comes
from astropy (``get_sun`` transformed to ``AltAz`` at the site, without refraction:
the -0.833 degree sunset altitude already includes standard refraction, as in the
almanacs). It is computed on a 10 minute grid from local noon to the next local noon
in one vectorised call, the sign changes of ``altitude - horizon`` bracket each event
and two vectorised rounds of 16 subdivisions plus a linear interpolation refine it to
well under a second. Three astropy transforms in all: a few tens of milliseconds once
astropy is loaded.

Conventions: the site's elevation does not lower the horizon (no dip correction, as in
the almanacs); altitudes are of the Sun's centre. A night is named by the local date
of its evening (the date of the local noon that starts it). An event is None when the
Sun does not cross that altitude that night (polar day or night); a grazing crossing,
where the Sun dips below an altitude for less than the grid step, may be missed too.

astropy must never reach the network here: the IERS tables come from the installed
astropy-iers-data package and their accuracy beyond its range is accepted (a second
of UT1 moves an event by about a second).
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import ClassVar, Final

import numpy as np
import numpy.typing as npt
from astropy import units as u
from astropy.coordinates import AltAz, EarthLocation, get_sun
from astropy.time import Time
from astropy.utils import iers

from schemas.site import Site, SunHorizons

EVENT_NAMES: Final[tuple[str, ...]] = (
    "sunset",
    "civil_dusk",
    "nautical_dusk",
    "astronomical_dusk",
    "astronomical_dawn",
    "nautical_dawn",
    "civil_dawn",
    "sunrise",
)
"""The events of a night, in time order."""

GRID_STEP_S: Final = 600.0
"""Altitude grid step: the Sun moves at most ~2.5 degrees in 10 minutes."""

REFINE_STEPS: Final = 16
"""Subdivisions of a bracket per refinement round: 600 s -> 37.5 s -> 2.3 s."""

REFINE_ROUNDS: Final = 2

_UNIX_EPOCH_JD: Final = 2440587.5
_DAY_S: Final = 86400.0

DEFAULT_HORIZONS: Final = SunHorizons()
"""The almanac conventions: -0.833, -6, -12 and -18 degrees."""

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class NightEvents:
    """The Sun events of one night at one site, as aware UTC datetimes.

    ``night`` is the local date of the evening. An event is None when the Sun does not
    cross its altitude between the local noon that starts the night and the next one.
    """

    EVENT_NAMES: ClassVar[tuple[str, ...]] = EVENT_NAMES

    night: date
    sunset: datetime | None
    civil_dusk: datetime | None
    nautical_dusk: datetime | None
    astronomical_dusk: datetime | None
    astronomical_dawn: datetime | None
    nautical_dawn: datetime | None
    civil_dawn: datetime | None
    sunrise: datetime | None

    def event(self, name: str) -> datetime | None:
        """The event called ``name`` (one of EVENT_NAMES); ValueError for another name."""
        if name not in EVENT_NAMES:
            raise ValueError(f"unknown Sun event {name!r}; known: {', '.join(EVENT_NAMES)}")
        when: datetime | None = getattr(self, name)
        return when

    def events(self) -> dict[str, datetime | None]:
        """Every event by name, in time order."""
        return {name: self.event(name) for name in EVENT_NAMES}


@functools.cache
def offline_astropy() -> None:
    """Keep astropy off the network: bundled IERS tables, whatever their age or range.

    Global astropy settings, set once for the process; without them astropy would try
    to download a fresh IERS-A table, or refuse times its bundled table does not cover.
    """
    iers.conf.auto_download = False
    iers.conf.auto_max_age = None
    iers.conf.iers_degraded_accuracy = "ignore"


def _require_aware(when: datetime, what: str) -> None:
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware, got naive {when.isoformat()}")


def _require_date(night: date) -> None:
    if isinstance(night, datetime):
        raise TypeError(f"night must be a date (the evening's local date), got {night!r}")


@functools.lru_cache(maxsize=64)
def _location(latitude_deg: float, longitude_deg: float, elevation_m: float) -> EarthLocation:
    return EarthLocation.from_geodetic(
        lon=longitude_deg * u.deg, lat=latitude_deg * u.deg, height=elevation_m * u.m
    )


def site_location(site: Site) -> EarthLocation:
    return _location(site.latitude_deg, site.longitude_deg, site.elevation_m)


def _altitudes(location: EarthLocation, start: datetime, seconds: FloatArray) -> FloatArray:
    """The Sun's apparent altitude (degrees, no refraction) at ``start + seconds``.

    Times are UTC days of 86400 s, as datetime arithmetic counts them, so the seconds
    convert back with a plain timedelta.
    """
    offline_astropy()
    days, rest = divmod(start.timestamp(), _DAY_S)
    jd1 = np.full(seconds.shape, _UNIX_EPOCH_JD + days)
    jd2 = (rest + seconds) / _DAY_S
    times = Time(jd1, jd2, format="jd", scale="utc")
    with warnings.catch_warnings():
        # Far from today: ERFA doubts leap seconds and polar motion falls back to its
        # mean. Both move the Sun's altitude by far less than an event's precision.
        warnings.filterwarnings("ignore", message=r'ERFA function "\w+" yielded .*dubious year')
        warnings.filterwarnings("ignore", message=r"Tried to get polar motions")
        frame = AltAz(obstime=times, location=location, pressure=0.0 * u.hPa)
        altaz = get_sun(times).transform_to(frame)
        return np.asarray(altaz.alt.to_value(u.deg), dtype=np.float64)


def _window(site: Site, night: date) -> tuple[datetime, datetime]:
    """Local noon of ``night`` and of the next day, in UTC (23 or 25 h apart across DST)."""
    zone = site.zone
    start = datetime.combine(night, time(12), tzinfo=zone).astimezone(UTC)
    end = datetime.combine(night + timedelta(days=1), time(12), tzinfo=zone).astimezone(UTC)
    return start, end


def _first_change(values: FloatArray, rising: bool) -> int | None:
    """Index i of the first pair (i, i+1) that crosses zero in the given direction."""
    above = values > 0.0
    hits = (
        np.flatnonzero(above[1:] & ~above[:-1])
        if rising
        else np.flatnonzero(above[:-1] & ~above[1:])
    )
    return int(hits[0]) if hits.size else None


def _crossings(
    site: Site, night: date, levels: Sequence[float]
) -> list[tuple[datetime | None, datetime | None]]:
    """For each altitude, the (setting, rising) crossing times of the night, or None.

    The setting crossing is the last one before the Sun's lowest point on the grid,
    the rising one the first after it: the night is centred on the Sun's lowest point,
    whatever the offset between the zone's clock and the Sun.
    """
    _require_date(night)
    start, end = _window(site, night)
    location = site_location(site)
    span = (end - start).total_seconds()
    grid = np.linspace(0.0, span, math.ceil(span / GRID_STEP_S) + 1)
    altitude = _altitudes(location, start, grid)
    lowest = int(np.argmin(altitude))

    # Every wanted crossing as a bracket of seconds from start: refined together.
    wanted: list[tuple[int, bool]] = []  # (level index, rising)
    lows: list[float] = []
    highs: list[float] = []
    low_values: list[float] = []
    high_values: list[float] = []
    for index, level in enumerate(levels):
        offsets = altitude - level
        above = offsets > 0.0
        setting = np.flatnonzero(above[:-1] & ~above[1:])
        rising = np.flatnonzero(~above[:-1] & above[1:])
        for found, is_rising in (
            (setting[setting < lowest], False),
            (rising[rising >= lowest], True),
        ):
            if found.size:
                i = int(found[0] if is_rising else found[-1])
                wanted.append((index, is_rising))
                lows.append(float(grid[i]))
                highs.append(float(grid[i + 1]))
                low_values.append(float(offsets[i]))
                high_values.append(float(offsets[i + 1]))

    results: list[list[datetime | None]] = [[None, None] for _ in levels]
    if wanted:
        low = np.array(lows)
        high = np.array(highs)
        low_value = np.array(low_values)
        high_value = np.array(high_values)
        steps = np.arange(REFINE_STEPS + 1) / REFINE_STEPS
        for _ in range(REFINE_ROUNDS):
            samples = low[:, None] + (high - low)[:, None] * steps[None, :]
            values = _altitudes(location, start, samples.ravel()).reshape(samples.shape)
            for row, (index, is_rising) in enumerate(wanted):
                offsets = values[row] - levels[index]
                j = _first_change(offsets, is_rising)
                if j is None:  # only if rounding moved the change onto an end: keep it
                    continue
                low[row], high[row] = samples[row, j], samples[row, j + 1]
                low_value[row], high_value[row] = offsets[j], offsets[j + 1]
        # The brackets are now ~2 s wide, where the altitude is a straight line to
        # milliseconds: interpolate linearly.
        for row, (index, is_rising) in enumerate(wanted):
            drop = float(low_value[row] - high_value[row])
            fraction = float(low_value[row]) / drop if drop != 0.0 else 0.5
            fraction = min(max(fraction, 0.0), 1.0)
            offset = float(low[row] + fraction * (high[row] - low[row]))
            results[index][int(is_rising)] = start + timedelta(seconds=offset)
    return [(setting_at, rising_at) for setting_at, rising_at in results]


def night_events(site: Site, night: date, horizons: SunHorizons = DEFAULT_HORIZONS) -> NightEvents:
    """Sunset, dusk twilights, dawn twilights and sunrise of ``night`` at ``site``.

    ``night`` is the local date of the evening; the Sun is followed from local noon of
    that date to local noon of the next (23 or 25 hours across a DST change). Times are
    aware UTC datetimes, good to about a second against astropy's Sun; None where the
    Sun does not cross the altitude that night.
    """
    levels = (
        horizons.sunset_deg,
        horizons.civil_deg,
        horizons.nautical_deg,
        horizons.astronomical_deg,
    )
    horizon, civil, nautical, astronomical = _crossings(site, night, levels)
    return NightEvents(
        night=night,
        sunset=horizon[0],
        civil_dusk=civil[0],
        nautical_dusk=nautical[0],
        astronomical_dusk=astronomical[0],
        astronomical_dawn=astronomical[1],
        nautical_dawn=nautical[1],
        civil_dawn=civil[1],
        sunrise=horizon[1],
    )


def sun_crossing(site: Site, night: date, altitude_deg: float, *, rising: bool) -> datetime | None:
    """When the Sun crosses ``altitude_deg`` during ``night``: rising (dawn side) or
    setting (dusk side); None if it does not cross it that night.

    For activities with their own altitude, e.g. twilight flats from -3 degrees.
    """
    if not math.isfinite(altitude_deg) or not -90.0 <= altitude_deg <= 90.0:
        raise ValueError(f"altitude_deg must be within -90..90, got {altitude_deg!r}")
    setting_at, rising_at = _crossings(site, night, (altitude_deg,))[0]
    return rising_at if rising else setting_at


def sun_altitude(site: Site, when: datetime) -> float:
    """The Sun's apparent altitude at ``when`` (aware), degrees, without refraction.

    Compare with the SunHorizons altitudes, e.g. ``sun_altitude(site, now) < -18``.
    """
    _require_aware(when, "when")
    start = when.astimezone(UTC)
    return float(_altitudes(site_location(site), start, np.zeros(1))[0])


def local_night(site: Site, when: datetime) -> date:
    """The night ``when`` (aware) belongs to: the local date of the preceding local noon."""
    _require_aware(when, "when")
    local = when.astimezone(site.zone)
    return local.date() if local.hour >= 12 else local.date() - timedelta(days=1)
