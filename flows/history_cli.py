"""``ccdflow history``: the recent runs as a table, or as JSON for scripts.

Prefect is imported only when the command runs, after ``configure_prefect`` has
chosen the Prefect home, so importing this module (and ``ccdflow --help``) stays instant.
"""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import TYPE_CHECKING, Annotated

import typer

from flows.cli_support import start_prefect

if TYPE_CHECKING:
    from pathlib import Path

    from rich.table import Table

    from flows.history import RunSummary

MAX_RUNS = 200
"""Same as flows.history.MAX_RUNS, repeated so ``--help`` does not import Prefect."""

_STATE_STYLES = {"COMPLETED": "green", "FAILED": "red", "CRASHED": "red", "CANCELLED": "yellow"}


def _when(run: RunSummary) -> str:
    if run.start:
        return run.start.astimezone().strftime("%m-%d %H:%M")
    if run.expected_start:
        return "due " + run.expected_start.astimezone().strftime("%m-%d %H:%M")
    return "not started"


def _duration(run: RunSummary) -> str:
    """Seconds for a short run, h:mm:ss for a long one (a night is hours)."""
    if run.duration_s is None:
        return ""
    if run.duration_s < 60:
        return f"{run.duration_s:.1f} s"
    return str(timedelta(seconds=round(run.duration_s)))


def _what(run: RunSummary) -> str:
    """``physics: 2 bias, 1 dark``: the spec and the exposures it asked for."""
    parameters = run.parameters
    planned = ", ".join(f"{count} {kind}" for kind, count in parameters.planned.items())
    label = parameters.spec or parameters.kind or ""
    return f"{label}: {planned}" if label and planned else label or planned


def _count(value: int | None) -> str:
    return "" if value is None else str(value)


def _files(run: RunSummary) -> str:
    """``8`` raw files, or ``8+8`` raw + processed when processed images were written."""
    if run.files is None:
        return ""
    processed = run.processed_files or 0
    return f"{run.files - processed}+{processed}" if processed else str(run.files)


def runs_table(runs: list[RunSummary], title: str = "recent flow runs (newest first)") -> Table:
    """Plain text cells (no rich markup), so names with brackets print as they are."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    table = Table(
        title=title,
        caption="files: raw frames, or raw+processed",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )
    # Numbers, times and states never wrap; the free-text columns fold in a narrow
    # terminal (80 columns) instead of being cut to an ellipsis.
    # The run's name is in --json; its flow and start time identify it here.
    table.add_column("started", no_wrap=True)
    table.add_column("flow", overflow="fold", min_width=12)
    table.add_column("state", no_wrap=True)
    table.add_column("took", justify="right", no_wrap=True)
    table.add_column("asked for", overflow="fold", ratio=1)
    table.add_column("inst", overflow="fold")
    table.add_column("exp", justify="right", no_wrap=True, min_width=3)
    table.add_column("files", justify="right", no_wrap=True, min_width=5)
    for run in runs:
        table.add_row(
            Text(_when(run)),
            Text(run.flow),
            Text(run.state or "", style=_STATE_STYLES.get(run.state_type or "", "")),
            Text(_duration(run)),
            Text(_what(run)),
            Text(run.parameters.instrument or ""),
            Text(_count(run.exposures)),
            Text(_files(run)),
        )
    return table


def _api_description(home: Path, api_url: str | None) -> str:
    if api_url:
        return f"the Prefect API at {api_url}"
    return f"the embedded Prefect API (PREFECT_HOME={home})"


def history_command(
    limit: Annotated[
        int, typer.Option(min=1, max=MAX_RUNS, help="how many runs to show, newest first")
    ] = 20,
    flow: Annotated[
        str | None,
        typer.Option(
            metavar="NAME",
            help="only runs of this flow: take-exposure, run-sequence, calibrations, observe-night",
        ),
    ] = None,
    json_out: Annotated[
        bool, typer.Option("--json", help="print the runs as JSON instead of a table")
    ] = False,
) -> None:
    """List recent flow runs (state, what they asked for, what they wrote), then the
    runs scheduled next."""
    home = start_prefect()
    import httpx
    from prefect.settings import PREFECT_API_URL
    from rich.console import Console

    from flows.history import recent_runs

    where = _api_description(home, PREFECT_API_URL.value())

    try:
        runs = asyncio.run(recent_runs(limit, flow))
    except httpx.HTTPError as exc:
        typer.secho(
            f"cannot read the run history from {where}: {exc}",
            fg=typer.colors.RED,
            err=True,
        )
        raise typer.Exit(1) from exc
    if json_out:
        typer.echo(json.dumps([run.model_dump(mode="json") for run in runs], indent=2))
    elif not runs:
        which = f" of flow {flow}" if flow else ""
        typer.echo(f"no runs{which} yet in {where}")
    else:
        console = Console()
        past = [run for run in runs if run.state_type != "SCHEDULED"]
        upcoming = [run for run in runs if run.state_type == "SCHEDULED"]
        if past:
            console.print(runs_table(past))
        else:
            console.print(f"no run has started yet in {where}")
        if upcoming:
            console.print(runs_table(upcoming, title="scheduled (soonest first)"))
