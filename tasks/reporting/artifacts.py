"""A run's progress and results as Prefect artifacts, for the UI and ``ccdflow history``.

Artifacts live in the API's database beside the run, so the history can say what a
run wrote without persisted results (results of pixel tasks are never persisted, and
a persisted result may sit where the reader cannot see it). Three per sequence:

- ``progress-<name>``: a progress bar, "exposure i of N", updated as exposures finish;
- ``exposures-<name>``: a table, one row per exposure (files, digests, stage timings);
- ``summary-<name>``: markdown with counts, median stage timings and quick-look stats,
  and a link to each exposure's quick-look PNG where ``storage.url_base`` serves them.

Keys are versioned by Prefect: the latest run of a sequence is what the Artifacts page
shows, every run keeps its own. Artifacts are a report, never part of the data path: a
failure to create one (API down, slow or refusing) is a warning, and every call is
bounded by ``ARTIFACT_TIMEOUT_S`` so a slow API cannot stall a sequence between
exposures. Outside a flow run nothing is created (Prefect deprecates run-less artifacts).
"""

from __future__ import annotations

import asyncio
import logging
import re
import statistics
from collections import Counter
from collections.abc import Awaitable
from typing import TypeVar
from uuid import UUID

import httpx
from prefect.artifacts import (
    MarkdownArtifact,
    ProgressArtifact,
    TableArtifact,
    aupdate_progress_artifact,
)
from prefect.client.orchestration import PrefectClient
from prefect.exceptions import MissingContextError, PrefectException
from prefect.logging import get_run_logger
from prefect.utilities.context import get_flow_run_id

from schemas.products import Product
from schemas.results import SequenceResult

T = TypeVar("T")

ARTIFACT_TIMEOUT_S = 10.0
"""Longest an artifact call may hold up the flow before it is given up with a warning."""

PROGRESS_KIND = "progress"
TABLE_KIND = "exposures"
SUMMARY_KIND = "summary"
FILE_COUNT_COLUMN = "n_files"
PROCESSED_COUNT_COLUMN = "n_processed"
"""Of the n_files, how many are processed images (the rest are raw frames)."""
"""Table column with the number of files of an exposure (read back by the history)."""

MAX_KEY_LENGTH = 64
SHA256_SHORT = 12
MAX_STATS_ROWS = 200
"""Quick-look rows shown in the summary; a long calibration set would drown the page."""
MAX_QUICKLOOK_LINKS = 200
"""Quick-look PNGs linked from the summary, for the same reason."""
QUICKLOOK_COLUMN = "quicklook"
"""Table column with each exposure's quick-look URL (only when they are served)."""

Cell = str | int | float | None

_NOT_KEY = re.compile(r"[^a-z0-9]+")
_API_ERRORS = (httpx.HTTPError, PrefectException, TimeoutError)


HELD_NOTICE_S = 0.1
"""An integration held back longer than this by the previous exposure's finishing is
worth telling the operator about (shorter waits are the pipeline's normal hand-over)."""


def artifact_key(kind: str, name: str) -> str:
    """``kind-name`` in the only alphabet Prefect accepts for keys: ``[a-z0-9-]``.

    Sequence names may hold capitals, dots and underscores (``Flat_V.2``), which the
    API would refuse; every other run of characters becomes one dash
    (``progress-flat-v-2``). Keys are cut to ``MAX_KEY_LENGTH`` characters.
    """
    slug = _NOT_KEY.sub("-", name.lower()).strip("-") or "unnamed"
    return f"{kind}-{slug}"[:MAX_KEY_LENGTH].rstrip("-")


def progress_text(done: int, total: int) -> str:
    return f"exposure {done} of {total}"


def progress_percent(done: int, total: int) -> float:
    """Percent done, within 0-100 (Prefect warns about and clamps anything else)."""
    if total <= 0:
        return 100.0
    return min(100.0, max(0.0, 100.0 * done / total))


def _logger() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    """The run's logger, so a warning shows in the run's log in the UI."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger(__name__)


async def _guarded(what: str, call: Awaitable[T]) -> T | None:
    """Await an API call within ``ARTIFACT_TIMEOUT_S``; on failure warn, return None."""
    try:
        return await asyncio.wait_for(call, ARTIFACT_TIMEOUT_S)
    except _API_ERRORS as exc:
        reason = str(exc) or type(exc).__name__
        _logger().warning("could not %s (the run goes on without it): %s", what, reason)
        return None


async def start_progress(
    sequence_name: str, total: int, *, client: PrefectClient | None = None
) -> UUID | None:
    """Create the run's progress artifact at 0 %; its id, or None if there is none.

    None when not in a flow run, or when the API did not take it (then
    ``update_progress`` does nothing). ``client`` defaults to the run's own client.
    """
    if get_flow_run_id() is None:
        return None
    artifact = ProgressArtifact(
        key=artifact_key(PROGRESS_KIND, sequence_name),
        description=progress_text(0, total),
        progress=progress_percent(0, total),
    )
    created = await _guarded("create the progress artifact", artifact.acreate(client))
    return created.id if created is not None else None


async def update_progress(
    artifact_id: UUID | None,
    done: int,
    total: int,
    *,
    note: str | None = None,
    client: PrefectClient | None = None,
) -> None:
    """Set the progress artifact to ``done`` of ``total`` exposures; None does nothing.

    ``note`` follows the count (how far the files lag the readout, a held integration):
    what an operator watching the run needs to see that finishing keeps up."""
    if artifact_id is None:
        return
    text = progress_text(done, total)
    await _guarded(
        "update the progress artifact",
        aupdate_progress_artifact(
            artifact_id,
            progress_percent(done, total),
            description=f"{text}; {note}" if note else text,
            client=client,
        ),
    )


async def publish_results(result: SequenceResult, *, client: PrefectClient | None = None) -> None:
    """Publish the exposure table and the markdown summary of a finished sequence.

    Both are created concurrently, so an unreachable API costs one timeout, not two.
    Nothing happens outside a flow run.
    """
    if get_flow_run_id() is None:
        return
    table = TableArtifact(
        key=artifact_key(TABLE_KIND, result.name),
        description=f"exposures of {result.name}",
        table=exposure_rows(result),
    )
    summary = MarkdownArtifact(
        key=artifact_key(SUMMARY_KIND, result.name),
        description=f"summary of {result.name}",
        markdown=summary_markdown(result),
    )
    await asyncio.gather(
        _guarded("create the exposure table artifact", table.acreate(client)),
        _guarded("create the summary artifact", summary.acreate(client)),
    )


def _stages(result: SequenceResult) -> list[str]:
    """Every stage any exposure timed, in the order first seen."""
    return list(dict.fromkeys(stage for e in result.exposures for stage in e.timings))


def exposure_rows(result: SequenceResult) -> list[dict[str, Cell]]:
    """One row per exposure, every row with the same columns (a stage an exposure did
    not run is None), so the UI draws one table and the history can count files."""
    stages = _stages(result)
    linked = any(exposure.quicklook_url for exposure in result.exposures)
    rows: list[dict[str, Cell]] = []
    for exposure in result.exposures:
        row: dict[str, Cell] = {
            "expnum": exposure.expnum,
            "type": exposure.image_type.value,
            "exptime": exposure.exptime,
            "date_obs": exposure.date_obs.isoformat(),
            "date_end": exposure.date_end.isoformat() if exposure.date_end else None,
            "exptime_measured": exposure.exptime_measured,
            "time_source": exposure.time_source,
            "exptime_flagged": exposure.exptime_flagged,
            "files": ", ".join(record.path.name for record in exposure.files),
            # FITS files only: the history reads them as raw + processed.
            FILE_COUNT_COLUMN: sum(
                record.product is not Product.QUICKLOOK for record in exposure.files
            ),
            PROCESSED_COUNT_COLUMN: sum(
                record.product is Product.PROCESSED for record in exposure.files
            ),
            "sha256": ", ".join(record.sha256[:SHA256_SHORT] for record in exposure.files),
        }
        for stage in stages:
            seconds = exposure.timings.get(stage)
            row[f"{stage}_s"] = None if seconds is None else round(seconds, 3)
        row["total_s"] = round(sum(exposure.timings.values()), 3)
        row["missing"] = "; ".join(f"{name}: {why}" for name, why in exposure.missing.items())
        if linked:
            row[QUICKLOOK_COLUMN] = exposure.quicklook_url
        rows.append(row)
    return rows


def _md(text: str) -> str:
    """Text safe inside a markdown table cell."""
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _number(value: float) -> str:
    return f"{value:.6g}"


def summary_markdown(result: SequenceResult) -> str:
    """Counts, elapsed time, median seconds per stage and quick-look statistics."""
    exposures = result.exposures
    n_files = sum(len(e.files) for e in exposures)
    megabytes = sum(r.nbytes for e in exposures for r in e.files) / 1e6
    products = Counter(r.product.value for e in exposures for r in e.files)
    kinds_written = ", ".join(f"{count} {name}" for name, count in sorted(products.items()))
    lines = [
        f"### {_md(result.name)}",
        "",
        f"{len(exposures)} exposures, {n_files} files ({kinds_written}; {megabytes:.1f} MB) "
        f"in {result.elapsed_s:.1f} s",
    ]
    flagged = [e.expnum for e in exposures if e.exptime_flagged]
    if flagged:
        lines += [
            "",
            f"**Integration differs from the requested time** in exposures "
            f"{', '.join(map(str, flagged))} (EXPFLAG)",
        ]
    if result.flow_run_id:
        lines.append(f"(flow run `{result.flow_run_id}`)")
    kinds = Counter(e.image_type.value for e in exposures)
    if kinds:
        lines += ["", "| image type | exposures |", "| --- | ---: |"]
        lines += [f"| {kind} | {count} |" for kind, count in kinds.items()]
    partial = [e for e in exposures if e.missing]
    if partial:
        names = sorted({name for e in partial for name in e.missing})
        lines += [
            "",
            f"**{len(partial)} exposures without controllers**: {_md(', '.join(names))}",
        ]
    lines += _stage_lines(result)
    lines += _quicklook_lines(result)
    lines += _stats_lines(result)
    lines += _master_lines(result)
    return "\n".join(lines) + "\n"


def _stage_lines(result: SequenceResult) -> list[str]:
    stages = _stages(result)
    if not stages:
        return []
    lines = ["", "#### Seconds per stage", "", "| stage | median | max |", "| --- | ---: | ---: |"]
    for stage in stages:
        seconds = [e.timings[stage] for e in result.exposures if stage in e.timings]
        lines.append(f"| {stage} | {statistics.median(seconds):.3f} | {max(seconds):.3f} |")
    lags = [e.files_after_readout_s for e in result.exposures if e.files_after_readout_s]
    if lags:
        lines.append(
            f"| files on disk after readout | {statistics.median(lags):.3f} | {max(lags):.3f} |"
        )
    held = [e.timings["held"] for e in result.exposures if e.timings.get("held", 0) > HELD_NOTICE_S]
    if held:
        lines += [
            "",
            f"Finishing held {len(held)} integrations back, {sum(held):.1f} s in all "
            f"(longest {max(held):.1f} s): the instrument took exposures faster than "
            "they were written",
        ]
    return lines


def _quicklook_lines(result: SequenceResult) -> list[str]:
    """A link to each exposure's quick-look PNG; nothing when none is served (a path on
    the instrument's disk would be a dead link in a browser)."""
    linked = [e for e in result.exposures if e.quicklook_url]
    if not linked:
        return []
    lines = ["", "#### Quick-look images", ""]
    for exposure in linked[:MAX_QUICKLOOK_LINKS]:
        name = next(
            (r.path.name for r in exposure.files if r.product is Product.QUICKLOOK), "quick-look"
        )
        lines.append(
            f"- {exposure.expnum} ({exposure.image_type.value}): "
            f"[{_md(name)}]({exposure.quicklook_url})"
        )
    if len(linked) > MAX_QUICKLOOK_LINKS:
        lines += ["", f"(first {MAX_QUICKLOOK_LINKS} of {len(linked)} exposures)"]
    return lines


def _stats_lines(result: SequenceResult) -> list[str]:
    """A row per exposure and CCD with the statistics the flow measured, if any."""
    rows = [(e.expnum, ccd, stats) for e in result.exposures for ccd, stats in e.stats.items()]
    if not rows:
        return []
    columns = list(dict.fromkeys(name for _, _, stats in rows for name in stats))
    lines = [
        "",
        "#### Quick-look statistics",
        "",
        "| exp | ccd | " + " | ".join(_md(c) for c in columns) + " |",
        "| ---: | --- |" + " ---: |" * len(columns),
    ]
    for expnum, ccd, stats in rows[:MAX_STATS_ROWS]:
        cells = [_number(stats[c]) if c in stats else "" for c in columns]
        lines.append(f"| {expnum} | {_md(ccd)} | " + " | ".join(cells) + " |")
    if len(rows) > MAX_STATS_ROWS:
        lines += ["", f"(first {MAX_STATS_ROWS} of {len(rows)} rows)"]
    return lines


def _master_lines(result: SequenceResult) -> list[str]:
    """Master frames a calibration set built, with the exposures behind each."""
    if not result.masters:
        return []
    lines = [
        "",
        "#### Masters",
        "",
        "| kind | filter | file | inputs |",
        "| --- | --- | --- | ---: |",
    ]
    for master in result.masters:
        lines.append(
            f"| {master.kind} | {_md(master.filter)} | {_md(master.file.path.name)} "
            f"| {len(master.inputs)} |"
        )
    return lines
