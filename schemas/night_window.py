"""Moments of the night and time windows, by the clock or by the Sun.

A night-plan step may start no earlier than a moment and take no new exposure after
another; the planner schedules runs at such moments. A moment is a Sun event of the
night (``astronomical_dusk``, with an offset in minutes) or a local clock time at the
site. Clock times before noon belong to the next morning, so ``20:00`` to ``05:30``
is one night. What can be checked without the site's almanac (a window whose end is
not after its start, by the clock or on the same Sun event) is refused when the file
loads, naming the field; the rest is checked when the night's events are known.
"""

from __future__ import annotations

from datetime import time
from typing import Literal, get_args

from pydantic import Field, model_validator

from schemas.form_order import FormModel

SunEvent = Literal[
    "sunset",
    "civil_dusk",
    "nautical_dusk",
    "astronomical_dusk",
    "astronomical_dawn",
    "nautical_dawn",
    "civil_dawn",
    "sunrise",
]
SUN_EVENTS: tuple[str, ...] = get_args(SunEvent)
"""The Sun events of a night, in time order (tasks/observing/sun_events.py computes them)."""

NOON = time(12, 0)


class NightMoment(FormModel):
    """A Sun event plus an offset, or a local clock time; exactly one of them."""

    event: SunEvent | None = Field(
        default=None, title="Sun event", description="e.g. astronomical_dusk"
    )
    clock: time | None = Field(
        default=None,
        title="Local time",
        description="site's local time, HH:MM; before noon is the next morning",
    )
    offset_min: float = Field(
        default=0.0,
        ge=-720.0,
        le=720.0,
        allow_inf_nan=False,
        title="Offset (min)",
        description="minutes after (negative: before) the event or time",
    )

    @model_validator(mode="after")
    def _one_reference(self) -> NightMoment:
        if (self.event is None) == (self.clock is None):
            raise ValueError("give exactly one of event (a Sun event) or clock (HH:MM)")
        return self

    def night_minutes(self) -> float | None:
        """Minutes after the night's noon, for a clock time (None for a Sun event)."""
        if self.clock is None:
            return None
        minutes = self.clock.hour * 60 + self.clock.minute + self.clock.second / 60
        if self.clock < NOON:
            minutes += 24 * 60
        return minutes - 12 * 60 + self.offset_min

    def describe(self) -> str:
        base = self.event if self.event is not None else self.clock.strftime("%H:%M")  # type: ignore[union-attr]
        if self.offset_min:
            return f"{base} {self.offset_min:+g} min"
        return str(base)


class TimeWindow(FormModel):
    """When a step may run: it does not start before ``start`` nor after ``end``, and
    takes no new exposure once ``end`` has passed (the step ends with what it took)."""

    start: NightMoment | None = Field(default=None, title="Not before")
    end: NightMoment | None = Field(default=None, title="Not after")

    @model_validator(mode="after")
    def _ends_after_it_starts(self) -> TimeWindow:
        if self.start is None or self.end is None:
            return self
        start, end = self.start, self.end
        first, last = start.night_minutes(), end.night_minutes()
        if first is not None and last is not None and last <= first:
            raise ValueError(
                f"end ({end.describe()}) is not after start ({start.describe()}); "
                "clock times before noon are the next morning"
            )
        if (
            start.event is not None
            and start.event == end.event
            and (end.offset_min <= start.offset_min)
        ):
            raise ValueError(f"end ({end.describe()}) is not after start ({start.describe()})")
        if (
            start.event is not None
            and end.event is not None
            and SUN_EVENTS.index(end.event) < SUN_EVENTS.index(start.event)
            and end.offset_min <= start.offset_min
        ):
            raise ValueError(
                f"end ({end.describe()}) comes before start ({start.describe()}) in the night"
            )
        return self
