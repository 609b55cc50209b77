"""When the sky is safe for an open shutter: safety monitors, weather limits, staleness.

``safety:`` in an instrument config names the devices watched while a flow opens the
shutter: safety monitors (their IsSafe), and limits on observing-conditions readings
(``humidity_pct`` above 85, ``rain_rate_mm_per_h`` above 0 ...). A reading older than
``max_age_s`` counts as unsafe: a station that stopped answering is not a clear sky.
Unsafe stops light exposures (the one under way is aborted), closes the dome and parks
the telescope in the configured order; bias and dark frames go on. Light exposures
resume once every reading has been safe for ``resume_after_s``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from schemas.form_order import FormModel


class Limit(FormModel):
    """One reading of one device that must stay within ``min``..``max``."""

    device: str = Field(description="an observingconditions device of devices:")
    property: str = Field(description="e.g. humidity_pct, wind_speed_m_per_s")
    max: float | None = Field(default=None, allow_inf_nan=False)
    min: float | None = Field(default=None, allow_inf_nan=False)

    @model_validator(mode="after")
    def _a_bound(self) -> Limit:
        if self.max is None and self.min is None:
            raise ValueError(f"{self.device}.{self.property}: give max, min or both")
        if self.max is not None and self.min is not None and self.max < self.min:
            raise ValueError(f"{self.device}.{self.property}: max is below min")
        return self

    def broken_by(self, value: float) -> str | None:
        """Why ``value`` breaks this limit, or None."""
        name = f"{self.device}.{self.property}"
        if self.max is not None and value > self.max:
            return f"{name} {value:g} above {self.max:g}"
        if self.min is not None and value < self.min:
            return f"{name} {value:g} below {self.min:g}"
        return None


class WeatherSafety(FormModel):
    """What is watched while the shutter may open, and what is done when it is unsafe."""

    monitors: list[str] = Field(
        default_factory=list, description="safetymonitor devices: all must say IsSafe"
    )
    limits: list[Limit] = Field(default_factory=list)
    poll_s: float = Field(default=2.0, gt=0, le=60, description="how often they are read")
    max_age_s: float = Field(
        default=30.0, gt=0, le=3600, description="an older reading counts as unsafe"
    )
    resume_after_s: float = Field(
        default=600.0, ge=0, le=86400, description="safe this long before light resumes"
    )
    shutdown: Literal["park_then_close", "close_then_park", "together"] = Field(
        default="park_then_close",
        description="a roll-off roof must wait for the park (park_then_close)",
    )
    shutdown_timeout_s: float = Field(default=300.0, gt=0, le=3600)

    @model_validator(mode="after")
    def _something_watched(self) -> WeatherSafety:
        if not self.monitors and not self.limits:
            raise ValueError("name monitors, limits or both")
        if self.max_age_s <= self.poll_s:
            raise ValueError(
                f"max_age_s ({self.max_age_s:g}) must exceed poll_s ({self.poll_s:g}), "
                "or every reading would be stale"
            )
        return self

    def devices(self) -> list[str]:
        """Every device named, in order, once."""
        return list(dict.fromkeys([*self.monitors, *(limit.device for limit in self.limits)]))
