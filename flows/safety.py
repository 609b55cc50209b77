"""The ``make-safe`` flow: every camera of an instrument secured at once (abort, reset).

For operators (``ccdflow safe``) and for a Prefect automation that runs it when a
ccdflow run ends Failed or Crashed (``deploy/prefect.yaml``). It takes no instrument
lock (``tasks/control/safety.py`` says why), logs one line per controller, leaves a markdown
report as an artifact, and then fails if any controller could not be confirmed safe:
a Failed make-safe run is what an automation or an operator's pager can see.
"""

# No `from __future__ import annotations` here: Prefect validates a deployed run's
# parameters against the flow's signature, and string annotations of pydantic models
# cannot be resolved when the engine loads this module from its entrypoint.
import asyncio
from datetime import UTC, datetime
from typing import Annotated

import httpx
from prefect import flow, get_run_logger
from prefect.artifacts import MarkdownArtifact
from prefect.exceptions import PrefectException
from pydantic import Field

from flows.instrument_choice import DEFAULT_INSTRUMENT, InstrumentChoice, resolve_instrument
from schemas.safety import BufferState, ControllerSafety, SafetyReport
from tasks.control.instrument import plan_instrument
from tasks.control.safety import InstrumentNotSafeError, make_controller_safe
from tasks.reporting.artifacts import ARTIFACT_TIMEOUT_S, artifact_key

ARTIFACT_KIND = "make-safe"
_API_ERRORS = (httpx.HTTPError, PrefectException, TimeoutError)


def describe_buffers(buffers: list[BufferState]) -> str:
    """``1: frame 3 complete, 12.0 s old; 2: frame 4 512/1024 lines`` (or ``empty``)."""
    if not buffers:
        return "empty"
    parts = []
    for buffer in buffers:
        state = "complete" if buffer.complete else f"{buffer.lines}/{buffer.height} lines"
        age = f", {buffer.age_s:.1f} s old" if buffer.age_s is not None else ""
        parts.append(f"{buffer.number}: frame {buffer.frame} {state}{age}")
    return "; ".join(parts)


def _yes_no(value: bool | None) -> str:
    return "?" if value is None else ("yes" if value else "no")


def _power(item: ControllerSafety) -> str:
    if item.power is None:
        return "?"
    return item.power if item.power_good in (None, True) else f"{item.power} (not good)"


def _cell(text: str) -> str:
    """Text safe inside a markdown table cell."""
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def safety_markdown(report: SafetyReport) -> str:
    """The report as a markdown page: verdict, then one table row per controller."""
    verdict = "SAFE" if report.safe else "NOT SAFE"
    lines = [
        f"# make-safe {report.instrument}: {verdict}",
        "",
        f"checked at {report.checked_at.isoformat(timespec='seconds')}",
        "",
        "| controller | address | safe | reached | actions | power | idle | buffers | s | error |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | ---: | --- |",
    ]
    for item in report.controllers:
        cells = [
            item.controller,
            item.address,
            _yes_no(item.safe),
            _yes_no(item.reached),
            ", ".join(item.actions) or "none",
            _power(item),
            _yes_no(item.idle),
            describe_buffers(item.buffers),
            f"{item.seconds:.3f}",
            item.error or "",
        ]
        lines.append("| " + " | ".join(_cell(cell) for cell in cells) + " |")
    return "\n".join(lines) + "\n"


async def _publish(report: SafetyReport) -> None:
    """The markdown artifact; a failure is a warning, never the flow's failure."""
    artifact = MarkdownArtifact(
        key=artifact_key(ARTIFACT_KIND, report.instrument),
        description=f"make-safe report of {report.instrument}",
        markdown=safety_markdown(report),
    )
    try:
        await asyncio.wait_for(artifact.acreate(), ARTIFACT_TIMEOUT_S)
    except _API_ERRORS as exc:
        reason = str(exc) or type(exc).__name__
        get_run_logger().warning("could not create the make-safe artifact: %s", reason)


def _log(item: ControllerSafety) -> None:
    logger = get_run_logger()
    facts = (
        f"actions {', '.join(item.actions) or 'none'}; power {_power(item)}; "
        f"idle {_yes_no(item.idle)}; buffers {describe_buffers(item.buffers)}; "
        f"{item.seconds:.3f} s"
    )
    if item.safe:
        logger.info("%s (%s) is safe: %s", item.controller, item.address, facts)
    else:
        logger.error(
            "%s (%s) is NOT safe, %s; %s", item.controller, item.address, item.reason(), facts
        )


@flow(name="make-safe")
async def make_safe(
    instrument: InstrumentChoice = DEFAULT_INSTRUMENT,
    timeout_s: Annotated[float, Field(gt=0, le=600)] = 5.0,
) -> SafetyReport:
    """End any integration on every camera (an Archon is also reset; shutter closed), report.

    Controllers are handled concurrently, each over a connection of its own, without
    the instrument lock, so a stuck run cannot delay it. ``timeout_s`` bounds each
    step on each controller. Raises InstrumentNotSafeError (the run ends Failed) after
    logging and publishing the report, if any controller is not confirmed safe.
    """
    instrument = resolve_instrument(instrument)
    checked_at = datetime.now(UTC)
    plans = plan_instrument(instrument)
    results = await asyncio.gather(
        *(make_controller_safe(plan, timeout_s=timeout_s) for plan in plans)
    )
    report = SafetyReport(
        instrument=instrument.name, checked_at=checked_at, controllers=list(results)
    )
    for item in results:
        _log(item)
    await _publish(report)
    if not report.safe:
        raise InstrumentNotSafeError(report)
    return report
