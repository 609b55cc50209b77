"""Make one camera safe: end any integration, leave it idle (shutter closed), report.

This is the emergency action (operators, and a Prefect automation on Failed or
Crashed runs), so it is built to work when everything else has gone wrong:

* **No instrument lock.** It deliberately does not take ``tasks.durable.instrument_lock``:
  the run it must stop is very likely the one holding the lock (stuck in an
  integration, or hung on a dead API), and waiting for that lock would leave the
  shutter open for as long as the stuck run lives. The actions are idempotent and
  harmless to a healthy run's controller state: abort and reset are exactly what
  every run does on its way out.
* **Its own connection.** A new camera adapter (built like a run's, by
  :func:`tasks.control.instrument.camera_for`), never a run's, whose locks and
  connection may be held by the stuck run. An Archon serves several connections and
  an Alpaca server many clients, so this works beside a run's open one.
* **The vendor's steps** (devices.camera.Camera.secure): an Archon is aborted and
  reset, which closes the shutter for sure, and its buffers are read twice to see
  that no readout still writes one; an Alpaca camera gets AbortExposure and must
  then report Idle.
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
from dataclasses import asdict

from devices.base import DeviceError
from devices.camera import SafetyReadings
from schemas.safety import BufferState, ControllerSafety, SafetyReport
from tasks.control.instrument import ControllerPlan, camera_for


class InstrumentNotSafeError(RuntimeError):
    """Make-safe could not confirm that every controller is safe; ``report`` says why."""

    def __init__(self, report: SafetyReport) -> None:
        listing = "; ".join(report.problems()) or "no controllers"
        super().__init__(f"instrument {report.instrument} is not safe: {listing}")
        self.report = report

    def __reduce__(self) -> tuple[type[InstrumentNotSafeError], tuple[SafetyReport]]:
        # Prefect may pickle a flow's exception; rebuild it from the report.
        return (type(self), (self.report,))


async def make_controller_safe(plan: ControllerPlan, *, timeout_s: float = 5.0) -> ControllerSafety:
    """End any integration on one camera over a connection of our own; report what it says.

    Never raises for the camera's sake: an unreachable or misbehaving camera comes
    back with ``reached=False`` or an ``error``. See the module docstring for why no
    instrument lock is taken.
    """
    if not timeout_s > 0:
        raise ValueError(f"timeout_s must be > 0, not {timeout_s}")
    started = time.monotonic()
    readings = SafetyReadings()
    reached = False
    try:
        camera = camera_for(plan)
    except ValueError as exc:  # an ACF without the timing parameters the adapter needs
        readings.errors.append(f"cannot drive it: {exc}")
    else:
        try:
            await asyncio.wait_for(camera.connect(), timeout_s)
            reached = True
        except (DeviceError, TimeoutError) as exc:
            readings.errors.append(f"connect: {str(exc) or f'no answer within {timeout_s:g} s'}")
        try:
            if reached:
                readings = await camera.secure(timeout_s)
        finally:
            await camera.close()
    return ControllerSafety(
        controller=plan.config.name,
        address=plan.model.address,
        reached=reached,
        actions=readings.actions,
        secured=readings.secured,
        power=readings.power,
        power_good=readings.power_good,
        idle=readings.idle,
        buffers=[BufferState(**asdict(buffer)) for buffer in readings.buffers],
        error="; ".join(readings.errors) or None,
        seconds=round(time.monotonic() - started, 3),
    )
