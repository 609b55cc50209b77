"""A night's schedule: which deployments run, and at which moment of the night.

The ``plan-night`` flow (flows/plan_night.py) runs once a day, computes the coming
night's Sun events at the instrument's site and creates one scheduled run per entry
here, so "darks an hour before sunset, the science plan at nautical dusk" follows
the seasons without anyone editing a cron line.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from schemas.form_order import FormModel
from schemas.night_window import NightMoment

DEPLOYMENT_NAME = r"^[\w.-]+/[\w.-]+$"


class PlannedRun(FormModel):
    """One run of a deployment at one moment of the night."""

    name: str = Field(
        min_length=1,
        max_length=64,
        pattern=r"^[\w.-]+$",
        title="Name",
        description="names the run in the plan (and its idempotency key)",
    )
    deployment: str = Field(
        pattern=DEPLOYMENT_NAME, title="Deployment", description="FLOW/DEPLOYMENT"
    )
    at: NightMoment = Field(title="At", description="a Sun event (+ offset) or local time")
    parameters: dict[str, Any] = Field(
        default_factory=dict,
        title="Parameters",
        description="the run's parameters; the instrument is the planner's unless given",
    )


class NightSchedule(FormModel):
    """The runs of a night, each at its moment."""

    name: str = Field(default="night", min_length=1, max_length=64, pattern=r"^[\w.-]+$")
    runs: list[PlannedRun] = Field(min_length=1, title="Runs")

    @model_validator(mode="after")
    def _unique_names(self) -> NightSchedule:
        names = [run.name for run in self.runs]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"run names must be unique (they key the schedule): {repeated}")
        return self
