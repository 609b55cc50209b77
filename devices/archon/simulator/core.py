"""The timing core: what the controller's sequencer does with the timing parameters.

The core models the script of ``deploy/instruments/sim.acf`` rather than
interpreting it: idle (continuously clearing while AutoFlush is set) -> integrate
when Exposures > 0 (Exposures is decremented; the shutter opens when OpenShutter=1;
AbortExposure ends it early) -> read out once ReadOut > 0 and a buffer is free
(ReadOut and AbortExposure are left for the client to clear) -> idle.  DoFlush runs
FlushCount flushes and is then cleared.

HOLDTIMING gates the core's *decisions* (starting an exposure, a flush or a
readout); an integration or readout already running finishes.  The real controller
freezes its sequencer instead; for the sequences clients use (hold, set parameters,
reset or release) the two are indistinguishable.  Power off, or a supply fault
(:meth:`TimingCore.set_power_bad`), gates the same decisions: no exposure starts.

Readout timing comes from :mod:`.readout`; the pixels are rendered in a worker
thread while the readout time passes, so a 100 MB frame never blocks the event loop
(and so never delays another connection's replies).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import Callable
from typing import Any

import numpy.typing as npt

from devices.archon.acf import AcfConfig
from devices.archon.sensor import SensorModel, render_frame
from devices.archon.simulator.buffers import BufferBank
from devices.archon.simulator.clock import Clock
from devices.archon.simulator.housekeeping import EventLog
from devices.archon.simulator.params import TimingParameters
from devices.archon.simulator.readout import ReadoutSchedule, flush_seconds
from devices.archon.simulator.shutter import Shutter

__all__ = ["CoreState", "TimingCore"]

log = logging.getLogger(__name__)


class CoreState(enum.Enum):
    """What the timing core is doing."""

    IDLE = "idle"
    FLUSHING = "flushing"
    INTEGRATING = "integrating"
    WAITING_READOUT = "waiting_readout"
    READING = "reading"


class TimingCore:
    """The sequencer task and the flags that gate it (power, power fault, hold)."""

    def __init__(
        self,
        *,
        params: TimingParameters,
        bank: BufferBank,
        shutter: Shutter,
        clock: Clock,
        events: EventLog,
        sensor: SensorModel,
        acf: Callable[[], AcfConfig],
        pixel_rate_hz: float,
        power_on: bool,
    ) -> None:
        self._params, self._bank, self._shutter = params, bank, shutter
        self._clock, self._events, self._sensor, self._acf = clock, events, sensor, acf
        self._pixel_rate = _positive_rate(pixel_rate_hz)
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._active = False
        self.power_on = power_on
        self.power_bad = False
        self.held = False
        self.state = CoreState.IDLE
        self.frames_completed = 0
        self.render: Callable[..., npt.NDArray[Any]] = render_frame
        """Makes a frame's pixels: render_frame, or a ReusedFrames for benchmarks."""
        self._exposure_timers = (0, 0)

    # ------------------------------------------------------------- settings

    @property
    def pixel_rate_hz(self) -> float:
        return self._pixel_rate

    @pixel_rate_hz.setter
    def pixel_rate_hz(self, value: float) -> None:
        """Takes effect at the next readout or flush (one running keeps its schedule)."""
        self._pixel_rate = _positive_rate(value)

    def set_power(self, on: bool) -> None:
        self.power_on = on
        self.notify()

    def set_power_bad(self, bad: bool) -> None:
        self.power_bad = bad
        self.notify()

    def set_held(self, held: bool) -> None:
        self.held = held
        self.notify()

    def notify(self) -> None:
        """Wake the core: something it may be waiting on changed."""
        self._changed.set()

    @property
    def _runnable(self) -> bool:
        return self.power_on and not self.power_bad and not self.held

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        # A fresh event: the old one may belong to the event loop of an earlier run.
        self._changed = asyncio.Event()
        self._active = True
        self._spawn()

    async def stop(self) -> None:
        self._active = False
        await self._cancel()

    async def restart(self) -> None:
        """RESETTIMING semantics: abandon whatever runs, close the shutter, go idle."""
        await self._cancel()
        if self._active:
            self._spawn()

    def _spawn(self) -> None:
        self.state = CoreState.IDLE
        self._task = asyncio.create_task(self._run(), name="archon-sim-core")
        self._task.add_done_callback(_log_exit)

    async def _cancel(self) -> None:
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # ------------------------------------------------------------- sequence

    async def _run(self) -> None:
        try:
            while True:
                await self._idle()
                if self._params.get("Exposures") > 0:
                    await self._expose()
                else:
                    await self._flush()
        finally:
            self._shutter.close()
            self.state = CoreState.IDLE

    async def _wait_until(
        self, predicate: Callable[[], bool], deadline: float | None = None
    ) -> bool:
        """Sleep until ``predicate`` holds (re-checked on every change) or the deadline."""
        while not predicate():
            self._changed.clear()
            if deadline is None:
                await self._changed.wait()
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)
        return True

    async def _idle(self) -> None:
        """Wait for work; while AutoFlush runs, the CCD is continuously cleared."""
        self.state = CoreState.IDLE
        p = self._params
        while True:
            clearing = self._runnable and p.get("AutoFlush") > 0
            if self._runnable and (p.get("Exposures") > 0 or p.get("DoFlush") > 0):
                if clearing:
                    self._shutter.cleared()
                return
            self._changed.clear()
            await self._changed.wait()
            if clearing:
                self._shutter.cleared()

    async def _flush(self) -> None:
        self.state = CoreState.FLUSHING
        one = flush_seconds(self._acf(), self._params.snapshot(), self._pixel_rate)
        await asyncio.sleep(max(1, self._params.get("FlushCount")) * one)
        self._params.set("DoFlush", 0)
        self._shutter.cleared()

    def _integration_seconds(self) -> float:
        cs = self._params.get("IntCS")
        return cs / 100 if cs > 0 else max(0, self._params.get("IntMS")) / 1000

    async def _expose(self) -> None:
        self.state = CoreState.INTEGRATING
        p = self._params
        deadline = time.monotonic() + self._integration_seconds()
        started = self._clock.ticks()
        if p.get("OpenShutter") == 1:
            self._shutter.open()
        await self._wait_until(lambda: p.get("AbortExposure") != 0, deadline)
        self._shutter.close()
        self._exposure_timers = (started, self._clock.ticks())
        p.set("Exposures", max(0, p.get("Exposures") - 1))
        self.state = CoreState.WAITING_READOUT
        await self._wait_until(
            lambda: self._runnable and p.get("ReadOut") > 0 and self._bank.free_buffer() is not None
        )
        await self._readout()

    async def _readout(self) -> None:
        index = self._bank.free_buffer()
        assert index is not None  # guaranteed by the caller's wait
        acf, params = self._acf(), self._params.snapshot()
        schedule = ReadoutSchedule.plan(acf, params, self._pixel_rate)
        if schedule.rows != schedule.stored_rows:
            self._events.add(
                f"readout clocks {schedule.rows} lines, LINECOUNT is {schedule.stored_rows}"
            )
        self.state = CoreState.READING
        start = time.monotonic()
        buf = self._bank.begin_frame(
            index,
            acf,
            timer=self._clock.ticks(),
            exposure_timers=self._exposure_timers,
            schedule=schedule,
            start=start,
        )
        render = asyncio.ensure_future(
            asyncio.to_thread(
                self.render,
                acf,
                self._sensor,
                dark_seconds=self._shutter.dark_seconds(),
                light_seconds=self._shutter.light_seconds,
                frame_number=buf.frame,
                params=params,
            )
        )
        try:
            await asyncio.sleep(max(0.0, start + schedule.total - time.monotonic()))
            data = await render
        except BaseException:
            render.cancel()
            buf.end_readout(time.monotonic())
            raise
        buf.data = data
        buf.end_readout(start + schedule.total)
        buf.lines, buf.complete = buf.height, True
        self.frames_completed += 1
        self._shutter.cleared()


def _positive_rate(value: float) -> float:
    if not value > 0:
        raise ValueError("pixel_rate_hz must be > 0")
    return float(value)


def _log_exit(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("Archon simulator timing core crashed", exc_info=task.exception())
