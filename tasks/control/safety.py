"""Make one controller safe: end any integration, reset the timing core, report.

This is the emergency action (operators, and a Prefect automation on Failed or
Crashed runs), so it is built to work when everything else has gone wrong:

* **No instrument lock.** It deliberately does not take ``tasks.durable.instrument_lock``:
  the run it must stop is very likely the one holding the lock (stuck in an
  integration, or hung on a dead API), and waiting for that lock would leave the
  shutter open for as long as the stuck run lives. The actions are idempotent and
  harmless to a healthy run's controller state: abort and reset are exactly what
  every run does on its way out.
* **Its own connection.** A new :class:`ArchonController` (built like a run's, by
  :func:`tasks.control.instrument.controller_for`), never a run's adapter, whose locks and
  connection may be held by the stuck run. The controller serves several
  connections, so this works beside a run's open one.
* **Bounded and never raising.** Every step has its own timeout; each step is tried
  even if an earlier one failed (a refused abort must not prevent the reset, which is
  what closes the shutter for sure). A controller that cannot be reached is reported,
  not raised, so the other controllers of the instrument are still made safe.
* **Buffers untouched.** Neither abort nor reset clears the frame buffers, so a frame
  read out but not yet written can still be recovered afterwards.

Not a Prefect task: the flow awaits all controllers at once on its own loop, with
nothing (task-run bookkeeping, result handling) between the decision and the shutter.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import TypeVar

from devices.archon.controller import ArchonController
from devices.archon.status import FrameStatus
from devices.base import DeviceError
from schemas.safety import BufferState, ControllerSafety, SafetyReport
from tasks.control.instrument import ControllerPlan, controller_for

T = TypeVar("T")

ARCHON_TIMER_HZ = 100_000_000
"""The controller's TIMER (and FRAME timestamps) count at 100 MHz."""

IDLE_CHECK_S = 0.1
"""Interval between the two FRAME reads that tell whether a buffer is still being
written: long enough for any readout to add a line, short beside a human's reaction."""

_STEP_ERRORS = (DeviceError, TimeoutError)


class InstrumentNotSafeError(RuntimeError):
    """Make-safe could not confirm that every controller is safe; ``report`` says why."""

    def __init__(self, report: SafetyReport) -> None:
        listing = "; ".join(report.problems()) or "no controllers"
        super().__init__(f"instrument {report.instrument} is not safe: {listing}")
        self.report = report

    def __reduce__(self) -> tuple[type[InstrumentNotSafeError], tuple[SafetyReport]]:
        # Prefect may pickle a flow's exception; rebuild it from the report.
        return (type(self), (self.report,))


def _reason(exc: Exception, timeout_s: float) -> str:
    return str(exc) or f"no answer within {timeout_s:g} s"


async def _done(name: str, call: Awaitable[object], timeout_s: float, errors: list[str]) -> bool:
    """Await one action within ``timeout_s``; on failure note ``name: reason``."""
    try:
        await asyncio.wait_for(call, timeout_s)
    except _STEP_ERRORS as exc:
        errors.append(f"{name}: {_reason(exc, timeout_s)}")
        return False
    return True


async def _read(name: str, call: Awaitable[T], timeout_s: float, errors: list[str]) -> T | None:
    """Await one query within ``timeout_s``; on failure note ``name: reason``, give None."""
    try:
        return await asyncio.wait_for(call, timeout_s)
    except _STEP_ERRORS as exc:
        errors.append(f"{name}: {_reason(exc, timeout_s)}")
        return None


def _buffers(frame: FrameStatus) -> list[BufferState]:
    """The buffers that ever held a frame (frame counter above 0)."""
    return [
        BufferState(
            number=info.number,
            frame=info.frame,
            complete=info.complete,
            lines=info.lines,
            height=info.height,
            age_s=max(0.0, (frame.timer - info.timestamp) / ARCHON_TIMER_HZ),
        )
        for info in frame.buffers
        if info.frame > 0
    ]


def _still(before: FrameStatus, after: FrameStatus) -> bool:
    """No buffer changed between the two reads: no readout is writing one.

    A single FRAME cannot tell a readout under way from one abandoned by the reset
    (both leave a buffer incomplete, part-filled); a buffer that grows, or a frame
    counter that moves, can only be a readout still running.
    """
    seen = {info.number: (info.frame, info.lines) for info in before.buffers}
    return all(seen.get(info.number) == (info.frame, info.lines) for info in after.buffers)


async def _secure(
    controller: ArchonController, timeout_s: float, actions: list[str], errors: list[str]
) -> dict[str, object]:
    """Abort, reset, then read power and buffers; the readings as ControllerSafety fields."""
    # Abort first: it ends an integration with one parameter change; the reset then
    # holds the core, zeroes every exposure parameter and restarts it (shutter shut).
    if await _done("abort", controller.abort(readout=False), timeout_s, errors):
        actions.append("abort")
    if await _done("reset", controller.reset(), timeout_s, errors):
        actions.append("reset")
    readings: dict[str, object] = {}
    status = await _read("status", controller.status(), timeout_s, errors)
    if status is not None:
        readings |= {"power": status.power.name, "power_good": status.power_good}
    first = await _read("frame", controller.frame(), timeout_s, errors)
    if first is not None:
        await asyncio.sleep(IDLE_CHECK_S)
        second = await _read("frame", controller.frame(), timeout_s, errors)
        if second is not None:
            readings |= {"idle": _still(first, second), "buffers": _buffers(second)}
    return readings


async def make_controller_safe(plan: ControllerPlan, *, timeout_s: float = 5.0) -> ControllerSafety:
    """Abort and reset one controller over a connection of our own; report what it says.

    Never raises for the controller's sake: an unreachable or misbehaving controller
    comes back with ``reached=False`` or an ``error``. See the module docstring for
    why no instrument lock is taken.
    """
    if not timeout_s > 0:
        raise ValueError(f"timeout_s must be > 0, not {timeout_s}")
    started = time.monotonic()
    config = plan.config
    actions: list[str] = []
    errors: list[str] = []
    readings: dict[str, object] = {}
    reached = False
    try:
        controller = controller_for(plan)
    except ValueError as exc:  # an ACF without the timing parameters the adapter needs
        errors.append(f"cannot drive it: {exc}")
    else:
        try:
            reached = await _done("connect", controller.connect(), timeout_s, errors)
            if reached:
                readings = await _secure(controller, timeout_s, actions, errors)
        finally:
            await controller.close()
    return ControllerSafety.model_validate(
        {
            "controller": config.name,
            "address": f"{config.host}:{config.port}",
            "reached": reached,
            "actions": actions,
            "error": "; ".join(errors) or None,
            "seconds": round(time.monotonic() - started, 3),
            **readings,
        }
    )
