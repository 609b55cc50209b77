"""Watching the sky while a run may open the shutter (``safety:`` of the instrument).

A :class:`SkyWatch` reads the safety monitors and weather devices every ``poll_s``
(each read bounded by ``poll_s``; a device that does not answer goes stale and so
unsafe) and judges them with tasks/observing/sky_safety.py. When it turns unsafe:

1. the light exposure under way is cancelled (the camera's own cancellation path
   closes the shutter at once; what it integrated is not kept);
2. the telescope parks and the dome closes, in the configured order (a roll-off roof
   waits for the park), in the background so the watch goes on reading;
3. a Prefect event ``ccdflow.sky.unsafe`` is emitted (``ccdflow.sky.safe`` when it
   turns safe again), so an automation can react.

Bias and dark frames are never held up. Before each light exposure the run calls
:meth:`SkyWatch.ready_for_light`, which waits until it is safe and opens the dome.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, TypeVar

from prefect import get_run_logger
from prefect.events import emit_event

from devices.base import DeviceError
from devices.observatory import DeviceSet
from schemas.weather import WeatherSafety
from tasks.control.devices import reader_name
from tasks.control.shutdown import park_and_close
from tasks.headers.telemetry import Reader
from tasks.observing.sky_safety import SkySafety, Verdict

T = TypeVar("T")

EVENT_PREFIX = "ccdflow.sky"


class SkyUnsafeError(Exception):
    """A light exposure was cancelled because the sky turned unsafe (``reason``)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"sky unsafe: {reason}")
        self.reason = reason


class SkyWatch:
    """The watch of one run (module docstring); use :func:`watching`."""

    def __init__(
        self,
        config: WeatherSafety,
        readers: Mapping[str, Reader],
        drivers: DeviceSet,
        instrument: str,
        logger: logging.Logger | logging.LoggerAdapter[logging.Logger] | None = None,
    ) -> None:
        self.config = config
        self._logger = logger
        self.rule = SkySafety(config)
        self.readers = {name: readers[reader_name(name)] for name in config.devices()}
        self.drivers = drivers
        self.instrument = instrument
        self._safe = asyncio.Event()
        self._light: set[asyncio.Future[Any]] = set()
        self._shutdown: asyncio.Task[None] | None = None
        self._dome_open = False

    @property
    def logger(self) -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
        """The run's logger (or the one given: a bench runs the watch outside Prefect)."""
        return self._logger or get_run_logger()

    @property
    def verdict(self) -> Verdict:
        return self.rule.verdict

    async def poll_once(self) -> Verdict:
        """Read every watched device (bounded), judge, act on a change."""
        names = list(self.readers)
        results = await asyncio.gather(
            *(asyncio.wait_for(self.readers[name](), self.config.poll_s) for name in names),
            return_exceptions=True,
        )
        now = time.monotonic()
        for name, result in zip(names, results, strict=True):
            if isinstance(result, Mapping):
                self.rule.reading(name, now, result)
            elif isinstance(result, asyncio.CancelledError):
                raise result
        was_safe = self._safe.is_set()
        verdict = self.rule.judge(now)
        if verdict.safe != was_safe:
            await self._changed(verdict)
        return verdict

    async def _changed(self, verdict: Verdict) -> None:
        logger = self.logger
        if verdict.safe:
            logger.warning("sky safe: light exposures may go on")
            self._safe.set()
        else:
            logger.error("sky unsafe (%s): light exposures stop", verdict.reason)
            self._safe.clear()
            for light in list(self._light):
                light.cancel()
            if self._shutdown is None or self._shutdown.done():
                self._shutdown = asyncio.ensure_future(self._park_and_close())
        self._emit(verdict)

    def _emit(self, verdict: Verdict) -> None:
        state = "safe" if verdict.safe else "unsafe"
        with contextlib.suppress(Exception):  # an event is a notice, never a failure
            emit_event(
                event=f"{EVENT_PREFIX}.{state}",
                resource={"prefect.resource.id": f"ccdflow.instrument.{self.instrument}"},
                payload={"reason": verdict.reason},
            )

    async def _park_and_close(self) -> None:
        """Park the telescope and close the dome in the configured order, bounded."""
        order = self.config.shutdown
        failed = await park_and_close(self.drivers, order, self.config.shutdown_timeout_s)
        for problem in failed:
            self.logger.error("sky unsafe: shutting the observatory down failed: %s", problem)
        self._dome_open = False
        self.logger.warning("sky unsafe: telescope parked and dome closed (%s)", order)

    async def finish(self) -> None:
        """Wait for a shutdown under way (the park and close are never cut short)."""
        if self._shutdown is not None:
            with contextlib.suppress(Exception):
                await self._shutdown

    async def run(self) -> None:
        """Poll until cancelled."""
        while True:
            try:
                await self.poll_once()
            except (DeviceError, TimeoutError) as exc:  # a judge never fails the run
                self.logger.warning("sky watch: %s", exc)
            await asyncio.sleep(self.config.poll_s)

    async def ready_for_light(self, still_wanted: Callable[[], str | None]) -> str | None:
        """Wait until it is safe and the dome is open; None, or why the light exposure
        is no longer wanted (``still_wanted()``, asked while waiting)."""
        logger = self.logger
        told = False
        while not self._safe.is_set():
            if (stop := still_wanted()) is not None:
                return stop
            if not told:
                logger.warning("waiting for a safe sky: %s", self.verdict.reason)
                told = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._safe.wait(), self.config.poll_s)
        if self._shutdown is not None and not self._shutdown.done():
            await self._shutdown  # never open a dome that is still closing
        if not self._dome_open and self.drivers.enclosure is not None:
            await self.drivers.enclosure.open(timeout_s=self.config.shutdown_timeout_s)
        self._dome_open = True
        return None

    async def light(self, work: Awaitable[T]) -> T:
        """Run a light exposure; cancelled (SkyUnsafeError) if the sky turns unsafe."""
        task = asyncio.ensure_future(work)
        self._light.add(task)
        try:
            return await task
        except asyncio.CancelledError:
            if task.cancelled() and not self._safe.is_set():
                raise SkyUnsafeError(self.verdict.reason) from None
            raise
        finally:
            self._light.discard(task)


@contextlib.asynccontextmanager
async def watching(
    config: WeatherSafety | None,
    readers: Mapping[str, Reader],
    drivers: DeviceSet,
    instrument: str,
) -> AsyncIterator[SkyWatch | None]:
    """A running watch for the block (None without ``safety:``), its first reading
    taken before the block starts."""
    if config is None:
        yield None
        return
    watch = SkyWatch(config, readers, drivers, instrument)
    await watch.poll_once()
    runner = asyncio.ensure_future(watch.run())
    try:
        yield watch
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
        await watch.finish()
