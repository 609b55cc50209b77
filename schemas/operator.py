"""Questions a night plan asks the operator, and what happens when nobody answers.

A step that needs a person ("lamps on?", "dome clear?") pauses its run; the Prefect
UI shows a form for the answer. The instrument is released while the run waits, so
the operator (or make-safe) can use it. Observatories run unattended too, so every
question has a timeout and a configured outcome.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from schemas.form_order import FormModel


class NoAnswer(StrEnum):
    """What a step does when its question times out."""

    SKIP = "skip"
    """Skip this step; the night goes on with the next."""
    PROCEED = "proceed"
    """Take the step as if the answer were yes."""
    STOP = "stop"
    """End the night cleanly, with what it took."""


class OperatorQuestion(FormModel):
    """Asked before a step; the step runs on yes, is skipped on no."""

    prompt: str = Field(
        min_length=1, max_length=200, title="Question", description="shown to the operator"
    )
    timeout_s: float = Field(
        default=600.0,
        ge=5.0,
        le=86_400.0,
        allow_inf_nan=False,
        title="Timeout (s)",
        description="how long to wait for an answer",
    )
    if_no_answer: NoAnswer = Field(
        default=NoAnswer.SKIP, title="If nobody answers", description="skip, proceed or stop"
    )
