"""Recent flow runs from the Prefect API: what was asked, how it ended, what it wrote.

The API is whatever ``get_client()`` points at: the embedded one with the project's
PREFECT_HOME, or a server named by PREFECT_API_URL. What a run wrote comes from the
exposure tables it published (``tasks.reporting.artifacts``), not from persisted results, which
pixel flows do not keep. A run that published no table (it failed early, or it is not
one of ours) has ``exposures`` and ``files`` None: unknown, not zero.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any
from uuid import UUID

from prefect.client.orchestration import PrefectClient, get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterKey,
    ArtifactFilterType,
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import Artifact, FlowRun, StateType
from prefect.client.schemas.sorting import ArtifactSort, FlowRunSort
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from schemas.exposure import CalibrationSpec, ExposureSpec, NightPlan, SequenceSpec
from tasks.reporting.artifacts import FILE_COUNT_COLUMN, PROCESSED_COUNT_COLUMN, TABLE_KIND

MAX_RUNS = 200
"""Prefect's default server page size (PREFECT_SERVER_API_DEFAULT_LIMIT); it refuses more."""

_PAGE = 200
# Tried in this order; all forbid unknown keys, so a dict validates as at most one kind
# (and a result or an instrument as none).
_SPEC_MODELS: tuple[tuple[str, type[BaseModel]], ...] = (
    ("night", NightPlan),
    ("sequence", SequenceSpec),
    ("calibrations", CalibrationSpec),
    ("exposure", ExposureSpec),
)


class ParameterSummary(BaseModel):
    """A run's parameters in a line: which spec, how many frames of each type, where.

    The instrument is reduced to its name (the whole config would fill the screen).
    """

    model_config = ConfigDict(frozen=True)

    kind: str | None = Field(default=None, description="exposure, sequence, calibrations, night")
    spec: str | None = Field(default=None, description="name of the sequence, set or plan")
    planned: dict[str, int] = Field(
        default_factory=dict, description="image type -> exposures asked for"
    )
    instrument: str | None = None
    options: dict[str, str] = Field(
        default_factory=dict, description="other parameters: scalars as JSON, others elided"
    )


class RunSummary(BaseModel):
    """One flow run as ``ccdflow history`` shows it."""

    model_config = ConfigDict(frozen=True)

    id: UUID
    name: str
    flow: str
    state: str | None
    state_type: str | None
    start: datetime | None
    end: datetime | None
    expected_start: datetime | None = Field(default=None, description="when a scheduled run is due")
    duration_s: float | None = Field(description="wall clock from start to end")
    parameters: ParameterSummary
    exposures: int | None = Field(description="rows of its exposure tables; None: no table")
    files: int | None = Field(description="files listed in its exposure tables")
    processed_files: int | None = Field(
        default=None, description="of those, processed images (the rest are raw frames)"
    )


def _planned(specs: Iterable[ExposureSpec]) -> dict[str, int]:
    counts: Counter[str] = Counter()
    for spec in specs:
        counts[spec.image_type.value] += spec.count
    return dict(counts)


def _spec_summary(value: Mapping[str, Any]) -> tuple[str, str | None, dict[str, int]] | None:
    """(kind, name, planned) of a parameter that is one of the spec models, else None."""
    for kind, model in _SPEC_MODELS:
        try:
            spec = model.model_validate(value)
        except ValidationError:
            continue
        if isinstance(spec, NightPlan):
            return kind, spec.name, _planned(s for step in spec.steps for s in step.expand())
        if isinstance(spec, SequenceSpec | CalibrationSpec):
            return kind, spec.name, _planned(spec.expand())
        if isinstance(spec, ExposureSpec):
            return kind, None, _planned([spec])
    return None


def _is_instrument(value: Mapping[str, Any]) -> bool:
    """An InstrumentConfig dump. Not validated: that would need its ACF files here."""
    return isinstance(value.get("name"), str) and isinstance(value.get("controllers"), list)


def summarize_parameters(parameters: Mapping[str, Any]) -> ParameterSummary:
    """Summarise a run's JSON parameters (dumps of the flows' pydantic models).

    Specs are recognised by validating against the current models, so counts follow
    the models' own rules (repeats, bias exposure time); a spec from an older, now
    invalid form is listed only by parameter name among the options.
    """
    kind: str | None = None
    spec: str | None = None
    planned: Counter[str] = Counter()
    instrument: str | None = None
    options: dict[str, str] = {}
    for name, value in parameters.items():
        found = _spec_summary(value) if isinstance(value, Mapping) else None
        if found is not None:
            kind, spec = (kind or found[0]), (spec or found[1])
            planned.update(found[2])
        elif isinstance(value, Mapping) and _is_instrument(value):
            instrument = str(value["name"])
        elif name == "instrument" and isinstance(value, str):
            instrument = value  # a configured instrument, by name (the deployments)
        elif value is None or isinstance(value, str | int | float | bool):
            options[name] = json.dumps(value)
        else:
            options[name] = "..."
    return ParameterSummary(
        kind=kind, spec=spec, planned=dict(planned), instrument=instrument, options=options
    )


def table_counts(data: object) -> tuple[int, int, int] | None:
    """(exposures, files, processed files) of one exposure-table artifact's data, None
    if it is not one (tables from before there were products count no processed file).

    Prefect stores a table as its JSON text: a list of row objects.
    """
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except json.JSONDecodeError:
            return None
    if not isinstance(data, list) or not all(isinstance(row, dict) for row in data):
        return None
    files = [row.get(FILE_COUNT_COLUMN) for row in data]
    if not all(isinstance(n, int) for n in files):
        return None
    processed = [row.get(PROCESSED_COUNT_COLUMN, 0) for row in data]
    return (
        len(data),
        sum(n for n in files if isinstance(n, int)),
        sum(n for n in processed if isinstance(n, int)),
    )


async def _read_artifacts(
    client: PrefectClient, artifact_filter: ArtifactFilter, offset: int
) -> list[Artifact]:
    """One page of artifacts, newest first.

    Not ``client.read_artifacts``: Prefect 3.8.8's client sends ``null`` for every
    filter it was not given, and the server (with the fastapi in our lock) answers 422
    for a null ``flow_runs``/``task_runs``; an empty TaskRunFilter is no way out, it
    keeps only artifacts made inside task runs. Filters left out of the body apply none.
    """
    response = await client.request(
        "POST",
        "/artifacts/filter",
        json={
            "artifacts": artifact_filter.model_dump(mode="json", exclude_unset=True),
            "sort": ArtifactSort.ID_DESC.value,
            "limit": _PAGE,
            "offset": offset,
        },
    )
    return [Artifact.model_validate(item) for item in response.json()]


async def _exposure_counts(
    client: PrefectClient, run_ids: list[UUID]
) -> dict[UUID, tuple[int, int, int]]:
    """(exposures, files, processed files) per run, summed over its tables (a night has
    one per step)."""
    artifact_filter = ArtifactFilter(
        flow_run_id=ArtifactFilterFlowRunId(any_=run_ids),
        type=ArtifactFilterType(any_=["table"]),
        key=ArtifactFilterKey(like_=f"{TABLE_KIND}-%"),
    )
    counts: dict[UUID, tuple[int, int, int]] = {}
    offset = 0
    while True:
        page = await _read_artifacts(client, artifact_filter, offset)
        for artifact in page:
            found = table_counts(artifact.data)
            if artifact.flow_run_id is None or found is None:
                continue
            before = counts.get(artifact.flow_run_id, (0, 0, 0))
            counts[artifact.flow_run_id] = (
                before[0] + found[0],
                before[1] + found[1],
                before[2] + found[2],
            )
        if len(page) < _PAGE:
            return counts
        offset += _PAGE


def _summary(run: FlowRun, flow: str, counts: tuple[int, int, int] | None) -> RunSummary:
    start, end = run.start_time, run.end_time
    return RunSummary(
        id=run.id,
        name=run.name,
        flow=flow,
        state=run.state_name,
        state_type=run.state_type.value if run.state_type else None,
        start=start,
        end=end,
        expected_start=run.expected_start_time,
        duration_s=round((end - start).total_seconds(), 3) if start and end else None,
        parameters=summarize_parameters(run.parameters),
        exposures=counts[0] if counts else None,
        files=counts[1] if counts else None,
        processed_files=counts[2] if counts else None,
    )


UPCOMING = 5
"""Scheduled runs shown after the history, soonest first."""


def _by_state(scheduled: bool) -> FlowRunFilter:
    types = FlowRunFilterStateType(**{"any_" if scheduled else "not_any_": [StateType.SCHEDULED]})
    return FlowRunFilter(state=FlowRunFilterState(type=types))


async def recent_runs(limit: int = 20, flow_name: str | None = None) -> list[RunSummary]:
    """The newest ``limit`` runs that started or ended (running, finished, failed...),
    newest first, then up to :data:`UPCOMING` scheduled runs, soonest first.

    Scheduled runs come apart: a schedule keeps runs queued an hour and more ahead,
    and sorted with the rest they would push every finished run off the list.
    ``flow_name`` keeps only runs of that flow (e.g. ``run-sequence``). Raises
    ValueError for a limit outside 1-200, httpx.HTTPError if the API cannot be reached.
    """
    if not 1 <= limit <= MAX_RUNS:
        raise ValueError(f"limit must be between 1 and {MAX_RUNS}, not {limit}")
    flow_filter = FlowFilter(name=FlowFilterName(any_=[flow_name])) if flow_name else None
    async with get_client() as client:
        # sort and limit must be given: sent as null, the server refuses them (422).
        past, upcoming = await asyncio.gather(
            client.read_flow_runs(
                flow_filter=flow_filter,
                flow_run_filter=_by_state(scheduled=False),
                sort=FlowRunSort.START_TIME_DESC,
                limit=limit,
            ),
            client.read_flow_runs(
                flow_filter=flow_filter,
                flow_run_filter=_by_state(scheduled=True),
                sort=FlowRunSort.EXPECTED_START_TIME_ASC,
                limit=UPCOMING,
            ),
        )
        runs = [*past, *upcoming]
        if not runs:
            return []
        # One GET per distinct flow: read_flows has the same null-filter problem.
        flows = await asyncio.gather(*(client.read_flow(i) for i in {r.flow_id for r in runs}))
        names = {flow.id: flow.name for flow in flows}
        counts = await _exposure_counts(client, [run.id for run in past]) if past else {}
    return [_summary(run, names.get(run.flow_id, "?"), counts.get(run.id)) for run in runs]
