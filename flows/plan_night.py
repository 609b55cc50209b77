"""``plan-night``: schedule tonight's runs at the moments the Sun gives.

Deployed with a daily schedule (deploy/prefect.yaml), it computes the night's Sun
events at the instrument's site and creates one scheduled flow run per entry of the
night's schedule, with ``run_deployment(scheduled_time=...)``: the Prefect server
holds each run until its time and the worker starts it then. Every run carries an
idempotency key (schedule, night, entry), so planning the same night twice, by a
retry or by hand, never schedules a run twice. Everything is checked before the
first run is created: the site, every moment, every deployment.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import acreate_markdown_artifact
from prefect.client.orchestration import get_client
from prefect.deployments.flow_runs import arun_deployment
from prefect.exceptions import ObjectNotFound
from pydantic import BaseModel, ConfigDict

from flows.instrument_choice import DEFAULT_INSTRUMENT, InstrumentChoice, resolve_instrument
from flows.night_clock import resolve_moment
from schemas.errors import ConfigError
from schemas.night_schedule import NightSchedule

PAST_GRACE = timedelta(minutes=1)
"""A moment this far in the past still gets its run (it starts at once)."""


class PlannedRunResult(BaseModel):
    """What the planner did with one entry of the schedule."""

    model_config = ConfigDict(frozen=True)

    name: str
    deployment: str
    scheduled_time: datetime | None
    flow_run_id: str | None
    skipped: str | None = None


def idempotency_key(schedule: str, night: date, run: str) -> str:
    return f"ccdflow-plan:{schedule}:{night.isoformat()}:{run}"


@flow(name="plan-night")
async def plan_night(
    schedule: NightSchedule,
    instrument: InstrumentChoice = DEFAULT_INSTRUMENT,
    night: date | None = None,
) -> list[PlannedRunResult]:
    """Create tonight's scheduled runs (``night``: the evening's local date; default
    the night now belongs to at the site). Moments already past are skipped."""
    logger = get_run_logger()
    config = resolve_instrument(instrument)
    source = f"night schedule {schedule.name}"
    site = config.site
    if site is None:
        raise ConfigError(source, ["the instrument has no site: plan-night needs one"])
    from tasks.observing.sun_events import local_night, night_events

    now = datetime.now(UTC)
    night = night or local_night(site, now)
    events = night_events(site, night, config.horizons)
    problems: list[str] = []
    times = [
        resolve_moment(run.at, site, events, f"runs.{index}.at", problems)
        for index, run in enumerate(schedule.runs)
    ]
    async with get_client() as client:
        for index, run in enumerate(schedule.runs):
            try:
                await client.read_deployment_by_name(run.deployment)
            except ObjectNotFound:
                problems.append(f"runs.{index}.deployment: no deployment {run.deployment!r}")
    if problems:
        raise ConfigError(source, problems)
    chosen: Any = instrument if isinstance(instrument, str) else config.model_dump(mode="json")
    results: list[PlannedRunResult] = []
    for run, when in zip(schedule.runs, times, strict=True):
        assert when is not None
        local = when.astimezone(site.zone).strftime("%Y-%m-%d %H:%M %Z")
        if when < now - PAST_GRACE:
            logger.warning("%s: %s (%s) has passed", run.name, local, run.at.describe())
            results.append(
                PlannedRunResult(
                    name=run.name,
                    deployment=run.deployment,
                    scheduled_time=when,
                    flow_run_id=None,
                    skipped=f"{run.at.describe()} ({local}) had passed",
                )
            )
            continue
        created = await arun_deployment(
            run.deployment,
            parameters={"instrument": chosen, **run.parameters},
            scheduled_time=max(when, now),
            timeout=0,
            as_subflow=False,
            idempotency_key=idempotency_key(schedule.name, night, run.name),
            tags=["ccdflow", "plan-night", f"night-{night.isoformat()}"],
        )
        logger.info("%s: %s at %s (%s)", run.name, run.deployment, local, run.at.describe())
        results.append(
            PlannedRunResult(
                name=run.name,
                deployment=run.deployment,
                scheduled_time=when,
                flow_run_id=str(created.id),
            )
        )
    await _publish(schedule.name, night, site.timezone, results, events.events())
    return results


async def _publish(
    name: str,
    night: date,
    zone: str,
    results: list[PlannedRunResult],
    events: dict[str, datetime | None],
) -> None:
    from zoneinfo import ZoneInfo

    tz = ZoneInfo(zone)

    def local(when: datetime | None) -> str:
        return when.astimezone(tz).strftime("%H:%M") if when else "none"

    lines = [f"# Night of {night.isoformat()} ({zone})", "", "| Sun event | local time |"]
    lines += ["|---|---|"] + [f"| {event} | {local(when)} |" for event, when in events.items()]
    lines += ["", "| run | deployment | at | flow run |", "|---|---|---|---|"]
    lines += [
        f"| {r.name} | {r.deployment} | {local(r.scheduled_time)} | {r.flow_run_id or r.skipped} |"
        for r in results
    ]
    await acreate_markdown_artifact(
        markdown="\n".join(lines),
        key=re.sub(r"[^a-z0-9-]+", "-", f"plan-{name}".lower()),
        description="the night's plan",
    )
