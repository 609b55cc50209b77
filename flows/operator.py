"""Asking the operator before a night-plan step, through the Prefect UI.

The run pauses with a typed form (:class:`OperatorAnswer`); the UI shows it on the
run's page and resumes the run with the answer. Nobody answering within the
question's timeout is an answer too: the question's ``if_no_answer``. The caller
releases the instrument before asking, so a paused run never holds it.
"""

from __future__ import annotations

from enum import StrEnum

from prefect import get_run_logger
from prefect.client.orchestration import get_client
from prefect.context import FlowRunContext
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import apause_flow_run
from prefect.input import RunInput
from prefect.states import Running
from pydantic import Field

from schemas.operator import NoAnswer, OperatorQuestion

POLL_S = 2


class Decision(StrEnum):
    TAKE = "take"
    SKIP = "skip"
    STOP = "stop"


class OperatorAnswer(RunInput):
    """The form the operator fills to resume a paused night plan."""

    go_ahead: bool = Field(title="Go ahead?", description="yes: take the step; no: skip it")
    note: str = Field(default="", max_length=200, title="Note", description="for the log")


_NO_ANSWER = {
    NoAnswer.SKIP: Decision.SKIP,
    NoAnswer.PROCEED: Decision.TAKE,
    NoAnswer.STOP: Decision.STOP,
}


async def ask_operator(step: str, question: OperatorQuestion, key: str) -> Decision:
    """Pause the run until the operator answers ``question`` (or it times out)."""
    logger = get_run_logger()
    logger.warning(
        "%s: waiting up to %.0f s for the operator: %s (answer on this run's page)",
        step,
        question.timeout_s,
        question.prompt,
    )
    try:
        answer = await apause_flow_run(
            wait_for_input=OperatorAnswer.with_initial_data(
                description=f"**{step}**: {question.prompt}", go_ahead=True
            ),
            timeout=max(1, round(question.timeout_s)),
            poll_interval=POLL_S,
            key=key,
        )
    except FlowPauseTimeout:
        decision = _NO_ANSWER[question.if_no_answer]
        logger.warning(
            "%s: nobody answered within %.0f s; configured outcome: %s",
            step,
            question.timeout_s,
            question.if_no_answer.value,
        )
        await _resume_self()
        return decision
    logger.info(
        "%s: the operator answered %s%s",
        step,
        "go ahead" if answer.go_ahead else "skip",
        f" ({answer.note})" if answer.note else "",
    )
    return Decision.TAKE if answer.go_ahead else Decision.SKIP


async def _resume_self() -> None:
    """A timed-out pause leaves the run Paused on the server; it goes on running."""
    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        return
    async with get_client() as client:
        await client.set_flow_run_state(context.flow_run.id, Running(), force=True)
