"""What the make-safe action found and did, per controller and for the instrument.

The report is for people and automations alike: the Prefect artifact, the CLI table
and the flow's result are all rendered from it, so each says the same thing. A
controller counts as safe only when the action reached it, its reset went through
and its frame buffers were seen standing still afterwards; anything less is reported
as unsafe, because "we could not check" must page an operator, not reassure one.
"""

from __future__ import annotations

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, computed_field


class BufferState(BaseModel):
    """One frame buffer after the reset, as the controller's FRAME reply describes it.

    Buffers are left as they are: a frame read out but not yet written stays in its
    buffer, so it can still be recovered after the instrument was made safe.
    """

    model_config = ConfigDict(frozen=True)

    number: int = Field(description="buffer 1, 2 or 3")
    frame: int = Field(description="the controller's frame counter for this buffer")
    complete: bool = Field(description="a whole frame is stored")
    lines: int = Field(description="lines written so far")
    height: int = Field(description="lines of a complete frame")
    age_s: float | None = Field(
        default=None, description="seconds since this frame's readout began (controller TIMER)"
    )


class ControllerSafety(BaseModel):
    """One controller: whether it was reached, what was done to it, what it reports."""

    model_config = ConfigDict(frozen=True)

    controller: str
    address: str = Field(description="host:port the action connected to")
    reached: bool = Field(description="a connection was made")
    actions: list[str] = Field(
        default_factory=list, description="steps that succeeded, in order (abort, reset)"
    )
    power: str | None = Field(default=None, description="STATUS power state, e.g. ON, OFF")
    power_good: bool | None = None
    idle: bool | None = Field(
        default=None,
        description="no buffer was being written after the reset (None: could not tell)",
    )
    buffers: list[BufferState] = Field(
        default_factory=list, description="buffers that ever held a frame"
    )
    secured: bool | None = Field(
        default=None,
        description=(
            "the step that leaves this camera safe went through (an Archon's reset, an "
            "Alpaca camera's abort); None in older reports: a reset among the actions"
        ),
    )
    error: str | None = Field(default=None, description="what went wrong, step by step")
    seconds: float = Field(description="wall time spent on this controller")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def safe(self) -> bool:
        """Reached, secured, and seen idle afterwards."""
        return self.reached and self._secured and self.idle is True

    @property
    def _secured(self) -> bool:
        return self.secured if self.secured is not None else "reset" in self.actions

    def reason(self) -> str:
        """Why this controller is not safe, with the error text ("safe" if it is)."""
        if self.safe:
            return "safe"
        if not self.reached:
            why = "not reached"
        elif not self._secured:
            why = "not reset" if self.secured is None else "not secured"
        elif self.idle is None:
            why = "not confirmed idle after the reset"
        else:
            why = "still reading out after the reset"
        return f"{why}: {self.error}" if self.error else why


class SafetyReport(BaseModel):
    """The make-safe result for one instrument: every controller, checked at once."""

    model_config = ConfigDict(frozen=True)

    instrument: str
    checked_at: AwareDatetime = Field(description="UTC time the check started")
    controllers: list[ControllerSafety]

    @computed_field  # type: ignore[prop-decorator]
    @property
    def safe(self) -> bool:
        """Every controller safe (an instrument without controllers is not)."""
        return bool(self.controllers) and all(c.safe for c in self.controllers)

    def problems(self) -> list[str]:
        """One line per unsafe controller: its name, address and why."""
        return [
            f"{item.controller} ({item.address}) {item.reason()}"
            for item in self.controllers
            if not item.safe
        ]
