"""A twilight sky for the simulated camera: how bright it is at any moment, at a site.

The Archon simulator's shutter lets through a light whose brightness changes with
time (devices/archon/simulator/shutter.py integrates it over each exposure). This is
the sky's: ``10 ** (slope * (sun_altitude - reference))`` times the sensor model's
illumination, so at ``reference_deg`` the sky gives exactly that illumination. The
default slope differs from the planner's starting value on purpose: the planner must
measure it from the frames, as it must at a real site. Above ``day_deg`` the sky is
as bright as there; below ``night_deg``, as dark.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from schemas.site import Site
from tasks.observing.sun_events import sun_altitude
from tasks.observing.twilight import SkyClock


@dataclass
class TwilightSky:
    """Relative sky brightness at a UNIX time (devices.archon.simulator.shutter.Light)."""

    site: Site
    clock: SkyClock = field(default_factory=SkyClock)
    slope: float = 0.32
    """[dex per degree] how fast the sky changes with the Sun's altitude."""
    reference_deg: float = -6.0
    day_deg: float = 2.0
    night_deg: float = -18.0
    _minutes: dict[int, float] = field(default_factory=dict, repr=False)

    def altitude(self, when: datetime) -> float:
        """The Sun's altitude at the simulated time ``when``, from exact values a
        minute apart (computing it takes milliseconds; a readout asks 17 times)."""
        minute = math.floor(when.timestamp() / 60)
        first, second = self._exact(minute), self._exact(minute + 1)
        return first + (second - first) * (when.timestamp() / 60 - minute)

    def _exact(self, minute: int) -> float:
        if minute not in self._minutes:
            if len(self._minutes) > 10_000:
                self._minutes.clear()
            when = datetime.fromtimestamp(minute * 60, UTC)
            self._minutes[minute] = sun_altitude(self.site, when)
        return self._minutes[minute]

    def __call__(self, unix: float) -> float:
        real = datetime.fromtimestamp(unix, UTC)
        altitude = min(max(self.altitude(self.clock.at(real)), self.night_deg), self.day_deg)
        return float(10 ** (self.slope * (altitude - self.reference_deg)))


def twilight_site(base: Site, sun_altitude_deg: float, *, setting: bool, when: datetime) -> Site:
    """``base`` moved in longitude so that at ``when`` the Sun stands at
    ``sun_altitude_deg``, setting or rising: a simulated observatory in twilight now,
    whatever the time of day (tests and benchmarks)."""
    for _ in range(8):  # Newton's method on the longitude; converges in 3-4 steps
        here = sun_altitude(base, when)
        later = sun_altitude(base, when + timedelta(minutes=4))  # the Sun: 1 deg of longitude
        if (later < here) != setting:
            # The wrong side of the meridian: go half a day round.
            base = base.model_copy(update={"longitude_deg": _wrap(base.longitude_deg + 180.0)})
            continue
        slope = later - here  # degrees of altitude per degree of longitude eastward
        step = (sun_altitude_deg - here) / slope if abs(slope) > 1e-6 else 10.0
        base = base.model_copy(update={"longitude_deg": _wrap(base.longitude_deg + step)})
        if abs(step) < 1e-3:
            break
    hours = round(base.longitude_deg / 15.0)  # the zone of that longitude's clocks
    zone = "Etc/UTC" if hours == 0 else f"Etc/GMT{-hours:+d}"
    return base.model_copy(update={"timezone": zone})


def _wrap(longitude: float) -> float:
    return (longitude + 180.0) % 360.0 - 180.0
