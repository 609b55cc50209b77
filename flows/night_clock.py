"""A night plan's moments as times: its step windows and the end of light exposures.

Resolved once, when the run starts, from the instrument's site and the night's Sun
events (tasks/observing/sun_events.py); a plan that needs a site the instrument does not have,
or a moment the Sun does not give that night (polar summer), is refused before any
device moves, naming the field. During the night the clock answers two questions:
may this step still start, and may this exposure start.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING

from schemas.errors import ConfigError
from schemas.exposure import ExposureSpec, NightPlan
from schemas.instrument import InstrumentConfig
from schemas.night_window import NOON, NightMoment
from schemas.site import Site

if TYPE_CHECKING:
    from tasks.observing.sun_events import NightEvents

Window = tuple[datetime | None, datetime | None]


def _local(when: datetime, site: Site | None) -> str:
    if site is None:
        return when.astimezone(UTC).strftime("%H:%M:%S UTC")
    return when.astimezone(site.zone).strftime("%H:%M:%S %Z")


def resolve_moment(
    moment: NightMoment | None,
    site: Site,
    events: NightEvents,
    where: str,
    problems: list[str],
) -> datetime | None:
    """``moment`` of the night ``events`` describe, in UTC; a problem (and None) when
    the Sun does not give that event that night."""
    if moment is None:
        return None
    if moment.event is not None:
        base = events.event(moment.event)
        if base is None:
            problems.append(
                f"{where}: the Sun gives no {moment.event} on the night of {events.night} "
                f"at {site.name}"
            )
            return None
    else:
        assert moment.clock is not None
        day = events.night if moment.clock >= NOON else events.night + timedelta(days=1)
        base = datetime.combine(day, moment.clock, tzinfo=site.zone).astimezone(UTC)
    return base + timedelta(minutes=moment.offset_min)


@dataclass(frozen=True)
class NightClock:
    """The resolved windows (UTC) of a plan's steps, and when light exposures end."""

    site: Site | None = None
    night: date | None = None
    windows: dict[str, Window] = field(default_factory=dict)
    light_until: datetime | None = None
    now: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))

    @classmethod
    def for_plan(
        cls,
        plan: NightPlan,
        instrument: InstrumentConfig,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> NightClock:
        """Resolve every moment of ``plan`` for the night ``now()`` belongs to."""
        site = instrument.site
        source = f"night plan {plan.name}"
        if site is None:
            if plan.windows:
                raise ConfigError(
                    source,
                    [
                        f"windows.{name}: a time window needs the instrument's site "
                        "(site: latitude, longitude, time zone)"
                        for name in plan.windows
                    ],
                )
            return cls(now=now)  # no site: light exposures are not limited by twilight
        from tasks.observing.sun_events import local_night, night_events

        night = local_night(site, now())
        events = night_events(site, night, instrument.horizons)
        problems: list[str] = []

        def resolve(moment: NightMoment | None, where: str) -> datetime | None:
            return resolve_moment(moment, site, events, where, problems)

        windows: dict[str, Window] = {}
        for name, window in plan.windows.items():
            start = resolve(window.start, f"windows.{name}.start")
            end = resolve(window.end, f"windows.{name}.end")
            if start is not None and end is not None and end <= start:
                problems.append(
                    f"windows.{name}: on the night of {night} it ends ({_local(end, site)}) "
                    f"before it starts ({_local(start, site)})"
                )
            windows[name] = (start, end)
        light_until = resolve(plan.light_until, "light_until")
        if instrument.daylight_light:
            light_until = None  # a simulated sky: no morning ends its light
        if problems:
            raise ConfigError(source, problems)
        return cls(site=site, night=night, windows=windows, light_until=light_until, now=now)

    def describe(self, when: datetime) -> str:
        return _local(when, self.site)

    def window(self, step: str) -> Window:
        return self.windows.get(step, (None, None))

    def closed(self, step: str) -> str | None:
        """Why ``step`` may no longer start (its window has closed), or None."""
        _, end = self.window(step)
        if end is not None and self.now() >= end:
            return f"its window closed at {self.describe(end)}"
        return None

    def wait_s(self, step: str) -> float:
        """Seconds until ``step``'s window opens (0 when open or none)."""
        start, _ = self.window(step)
        if start is None:
            return 0.0
        return max(0.0, (start - self.now()).total_seconds())

    def exposure_gate(self, step: str) -> Callable[[ExposureSpec], str | None]:
        """For the step's exposure loop: why the next exposure may not start, or None.

        An exposure is not started after the window closes; a light exposure is not
        started when it would still be integrating at ``light_until``.
        """

        def gate(spec: ExposureSpec) -> str | None:
            if reason := self.closed(step):
                return reason
            if self.light_until is not None and spec.opens_shutter:
                integration = timedelta(seconds=spec.exptime * spec.frames_per_exposure)
                if self.now() + integration > self.light_until:
                    return (
                        "light exposures end at morning twilight "
                        f"({self.describe(self.light_until)})"
                    )
            return None

        return gate
