"""Sun events against computations we did not make with astropy.

The reference is the NOAA solar calculator (the "General Solar Position Calculations"
spreadsheet, after Meeus), written out below in plain math and iterated so the Sun's
position is taken at the event itself. NOAA ignores the site's elevation and so does
our model (no horizon dip), so the sites here sit at elevation 0 for the comparison.
NOAA quotes its results as good to a minute within +-72 degrees of latitude; against
astropy they agree to a few seconds, and the test allows 60 s.
"""

from __future__ import annotations

import functools
import math
from datetime import UTC, date, datetime, time, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from schemas.site import Site, SunHorizons
from tasks.observing.sun_events import (
    EVENT_NAMES,
    NightEvents,
    local_night,
    night_events,
    sun_altitude,
    sun_crossing,
)

APO = Site(
    name="Apache Point Observatory",
    latitude_deg=32.780,
    longitude_deg=-105.820,
    timezone="America/Denver",
)
CTIO = Site(
    name="Cerro Tololo", latitude_deg=-30.169, longitude_deg=-70.806, timezone="America/Santiago"
)
LA_PALMA = Site(
    name="La Palma", latitude_deg=28.76, longitude_deg=-17.88, timezone="Atlantic/Canary"
)
SVALBARD = Site(
    name="Longyearbyen", latitude_deg=78.22, longitude_deg=15.65, timezone="Arctic/Longyearbyen"
)

# Zenith angles of the NOAA calculator for each event of a night: (zenith, rising).
NOAA_ZENITH: dict[str, tuple[float, bool]] = {
    "sunset": (90.833, False),
    "civil_dusk": (96.0, False),
    "nautical_dusk": (102.0, False),
    "astronomical_dusk": (108.0, False),
    "astronomical_dawn": (108.0, True),
    "nautical_dawn": (102.0, True),
    "civil_dawn": (96.0, True),
    "sunrise": (90.833, True),
}

NOAA_TOLERANCE_S = 60.0


def _noaa_sun(jd: float) -> tuple[float, float]:
    """The Sun's declination (deg) and the equation of time (min) at Julian Date ``jd``,
    as in NOAA's solar calculator spreadsheet (Julian century form)."""
    jc = (jd - 2451545.0) / 36525.0
    mean_long = (280.46646 + jc * (36000.76983 + jc * 0.0003032)) % 360.0
    mean_anom = math.radians(357.52911 + jc * (35999.05029 - 0.0001537 * jc))
    ecc = 0.016708634 - jc * (0.000042037 + 0.0000001267 * jc)
    centre = (
        math.sin(mean_anom) * (1.914602 - jc * (0.004817 + 0.000014 * jc))
        + math.sin(2 * mean_anom) * (0.019993 - 0.000101 * jc)
        + math.sin(3 * mean_anom) * 0.000289
    )
    omega = math.radians(125.04 - 1934.136 * jc)
    apparent_long = math.radians(mean_long + centre - 0.00569 - 0.00478 * math.sin(omega))
    mean_obliquity = 23 + (26 + (21.448 - jc * (46.815 + jc * (0.00059 - jc * 0.001813))) / 60) / 60
    obliquity = math.radians(mean_obliquity + 0.00256 * math.cos(omega))
    declination = math.degrees(math.asin(math.sin(obliquity) * math.sin(apparent_long)))
    y = math.tan(obliquity / 2) ** 2
    l0 = math.radians(mean_long)
    eq_time = 4 * math.degrees(
        y * math.sin(2 * l0)
        - 2 * ecc * math.sin(mean_anom)
        + 4 * ecc * y * math.sin(mean_anom) * math.cos(2 * l0)
        - 0.5 * y * y * math.sin(4 * l0)
        - 1.25 * ecc * ecc * math.sin(2 * mean_anom)
    )
    return declination, eq_time


def noaa_event(
    latitude_deg: float, longitude_deg: float, day: date, zenith_deg: float, rising: bool
) -> datetime | None:
    """NOAA's rise/set time (UTC) on UTC-referenced ``day`` for a Sun zenith angle.

    The hour angle is solved around the solar noon nearest ``day`` 12h local mean time,
    then the Sun's position is taken again at the event until the time settles.
    """
    midnight_jd = day.toordinal() - date(2000, 1, 1).toordinal() + 2451544.5
    lat = math.radians(latitude_deg)
    minutes = 720.0 - 4.0 * longitude_deg  # start from mean solar noon, UTC minutes
    for _ in range(6):
        declination, eq_time = _noaa_sun(midnight_jd + minutes / 1440.0)
        dec = math.radians(declination)
        cos_ha = math.cos(math.radians(zenith_deg)) / (math.cos(lat) * math.cos(dec)) - math.tan(
            lat
        ) * math.tan(dec)
        if abs(cos_ha) > 1.0:
            return None
        hour_angle = math.degrees(math.acos(cos_ha))
        noon = 720.0 - 4.0 * longitude_deg - eq_time
        minutes = noon - 4.0 * hour_angle if rising else noon + 4.0 * hour_angle
    return datetime.combine(day, time(0), tzinfo=UTC) + timedelta(minutes=minutes)


def noaa_night(site: Site, night: date) -> dict[str, datetime | None]:
    """Every event of ``night`` by the NOAA calculator: dusk events around the solar
    noon of the evening's date, dawn events around the next day's."""
    events: dict[str, datetime | None] = {}
    for name, (zenith, rising) in NOAA_ZENITH.items():
        local_day = night + timedelta(days=1) if rising else night
        noon_utc = datetime.combine(local_day, time(12), tzinfo=site.zone).astimezone(UTC)
        events[name] = noaa_event(
            site.latitude_deg, site.longitude_deg, noon_utc.date(), zenith, rising
        )
    return events


@functools.cache
def events_of(site: Site, night: date) -> NightEvents:
    """Each night once: the agreement and the order tests look at the same nights."""
    return night_events(site, night)


NIGHTS = [
    pytest.param(APO, date(2024, 3, 9), id="apo-dst-starts"),
    pytest.param(APO, date(2024, 6, 20), id="apo-summer"),
    pytest.param(APO, date(2024, 11, 2), id="apo-dst-ends"),
    pytest.param(APO, date(2024, 12, 21), id="apo-winter"),
    pytest.param(CTIO, date(2024, 4, 6), id="ctio-dst-ends"),
    pytest.param(CTIO, date(2024, 6, 21), id="ctio-winter"),
    pytest.param(CTIO, date(2024, 9, 7), id="ctio-dst-starts"),
    pytest.param(CTIO, date(2024, 12, 21), id="ctio-summer"),
    pytest.param(LA_PALMA, date(2024, 3, 30), id="lapalma-dst-starts"),
    pytest.param(LA_PALMA, date(2025, 10, 25), id="lapalma-dst-ends"),
    pytest.param(LA_PALMA, date(2031, 1, 15), id="lapalma-beyond-iers-table"),
]


@pytest.mark.parametrize(("site", "night"), NIGHTS)
def test_events_agree_with_noaa(site: Site, night: date) -> None:
    ours = events_of(site, night)
    reference = noaa_night(site, night)
    for name in EVENT_NAMES:
        mine, theirs = ours.event(name), reference[name]
        assert mine is not None, name
        assert theirs is not None, name
        assert mine.tzinfo is not None
        assert mine.utcoffset() == timedelta(0)
        difference = abs((mine - theirs).total_seconds())
        assert difference < NOAA_TOLERANCE_S, f"{name}: {mine} vs NOAA {theirs}"


@pytest.mark.parametrize(("site", "night"), NIGHTS)
def test_events_are_in_order_within_the_night(site: Site, night: date) -> None:
    events = events_of(site, night)
    times = [events.event(name) for name in NightEvents.EVENT_NAMES]
    assert all(when is not None for when in times)
    present = [when for when in times if when is not None]
    assert all(a < b for a, b in pairwise(present))
    assert all(local_night(site, when) == night for when in present)
    assert events.night == night


def test_events_sit_on_their_altitudes() -> None:
    horizons = SunHorizons()
    events = night_events(APO, date(2024, 3, 9), horizons)
    expected = {
        "sunset": horizons.sunset_deg,
        "civil_dusk": horizons.civil_deg,
        "nautical_dusk": horizons.nautical_deg,
        "astronomical_dusk": horizons.astronomical_deg,
    }
    for name, altitude in expected.items():
        when = events.event(name)
        assert when is not None
        # The Sun moves ~0.2 deg a minute here: 0.005 deg is ~1.5 s.
        assert sun_altitude(APO, when) == pytest.approx(altitude, abs=0.005), name


def test_jcmt_against_the_us_naval_observatory() -> None:
    """USNO one-day table for W155 29, N19 49 (Mauna Kea), 2003 July 15, zone -10h:
    sunrise 05:51, sunset 19:04, civil twilight 05:27 and 19:28 (sea level, rounded to
    the minute). Values as quoted in the Astro::Coords test suite (t/rise.t,
    github.com/timj/perl-Astro-Coords), which checks SLALIB against them."""
    site = Site(
        name="JCMT",
        latitude_deg=19 + 49 / 60,
        longitude_deg=-(155 + 29 / 60),
        timezone="Pacific/Honolulu",
    )
    hst = ZoneInfo("Pacific/Honolulu")
    evening = night_events(site, date(2003, 7, 15))  # July 15 evening
    morning = night_events(site, date(2003, 7, 14))  # July 15 morning
    usno = {
        "sunset": (evening.sunset, datetime(2003, 7, 15, 19, 4, tzinfo=hst)),
        "civil_dusk": (evening.civil_dusk, datetime(2003, 7, 15, 19, 28, tzinfo=hst)),
        "civil_dawn": (morning.civil_dawn, datetime(2003, 7, 15, 5, 27, tzinfo=hst)),
        "sunrise": (morning.sunrise, datetime(2003, 7, 15, 5, 51, tzinfo=hst)),
    }
    for name, (mine, published) in usno.items():
        assert mine is not None, name
        # Published times are rounded to the minute: within 30 s, plus a little.
        assert abs((mine - published).total_seconds()) <= 35.0, f"{name}: {mine}"


def test_polar_day_has_no_events() -> None:
    events = night_events(SVALBARD, date(2024, 6, 21))
    assert all(events.event(name) is None for name in EVENT_NAMES)
    assert sun_altitude(SVALBARD, datetime(2024, 6, 22, 0, 0, tzinfo=SVALBARD.zone)) > 10


def test_polar_night_has_no_sunset_but_has_darkness() -> None:
    events = night_events(SVALBARD, date(2024, 12, 21))
    for name in ("sunset", "civil_dusk", "civil_dawn", "sunrise"):
        assert events.event(name) is None, name
    # The noon Sun is at about -11.4 deg: it still crosses -12 and -18.
    for name in ("nautical_dusk", "astronomical_dusk", "astronomical_dawn", "nautical_dawn"):
        assert events.event(name) is not None, name
    present = [when for name in EVENT_NAMES if (when := events.event(name)) is not None]
    assert present == sorted(present)


def test_custom_horizon_for_flats() -> None:
    night = date(2024, 6, 20)
    flats = sun_crossing(LA_PALMA, night, -3.0, rising=False)
    morning_flats = sun_crossing(LA_PALMA, night, -3.0, rising=True)
    events = night_events(LA_PALMA, night, SunHorizons(civil_deg=-3.0))
    normal = night_events(LA_PALMA, night)
    assert flats is not None
    assert morning_flats is not None
    assert normal.sunset is not None
    assert normal.civil_dusk is not None
    assert normal.sunset < flats < normal.civil_dusk
    assert events.civil_dusk == flats
    assert events.civil_dawn == morning_flats
    assert sun_crossing(SVALBARD, night, -3.0, rising=False) is None


def test_local_night_rolls_over_at_local_noon() -> None:
    denver = APO.zone
    assert local_night(APO, datetime(2024, 3, 10, 5, 0, tzinfo=denver)) == date(2024, 3, 9)
    assert local_night(APO, datetime(2024, 3, 10, 11, 59, tzinfo=denver)) == date(2024, 3, 9)
    assert local_night(APO, datetime(2024, 3, 10, 12, 0, tzinfo=denver)) == date(2024, 3, 10)
    # 03:00 UTC is 20:00 the evening before in Denver.
    assert local_night(APO, datetime(2024, 3, 10, 3, 0, tzinfo=UTC)) == date(2024, 3, 9)


def test_events_by_name() -> None:
    events = night_events(APO, date(2024, 6, 20))
    assert events.event("sunrise") == events.sunrise
    assert list(events.events()) == list(EVENT_NAMES)
    with pytest.raises(ValueError, match="'noon'"):
        events.event("noon")


@pytest.mark.parametrize("latitude", [91.0, -90.5, math.nan, math.inf])
def test_latitude_out_of_range_is_refused(latitude: float) -> None:
    with pytest.raises(ValidationError, match="latitude_deg"):
        Site(latitude_deg=latitude, longitude_deg=0.0)


def test_longitude_out_of_range_is_refused() -> None:
    with pytest.raises(ValidationError, match="longitude_deg"):
        Site(latitude_deg=0.0, longitude_deg=200.0)


def test_unknown_time_zone_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown time zone 'Mars/Olympus'"):
        Site(latitude_deg=0.0, longitude_deg=0.0, timezone="Mars/Olympus")


def test_site_is_frozen_and_strict() -> None:
    with pytest.raises(ValidationError, match="extra"):
        Site(latitude_deg=0.0, longitude_deg=0.0, altitude=3.0)  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="frozen"):
        APO.latitude_deg = 0.0  # type: ignore[misc]
    assert APO.zone == ZoneInfo("America/Denver")
    assert Site(latitude_deg=0.0, longitude_deg=0.0).timezone == "UTC"
    schema = Site.model_json_schema()["properties"]
    assert all("title" in field and "description" in field for field in schema.values())


def test_horizons_must_stay_in_order() -> None:
    with pytest.raises(ValidationError, match="must decrease"):
        SunHorizons(civil_deg=-13.0)
    with pytest.raises(ValidationError, match="sunset_deg"):
        SunHorizons(sunset_deg=10.0)


def test_naive_datetimes_are_refused() -> None:
    naive = datetime(2024, 3, 10, 5, 0)
    with pytest.raises(ValueError, match="timezone-aware"):
        sun_altitude(APO, naive)
    with pytest.raises(ValueError, match="timezone-aware"):
        local_night(APO, naive)
    with pytest.raises(TypeError, match="must be a date"):
        night_events(APO, datetime(2024, 3, 9, 20, 0, tzinfo=UTC))
