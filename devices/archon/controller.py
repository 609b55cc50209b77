"""An Archon controller: status, power, flush, expose, readout, fetch, configuration.

The controller's timing script is steered through its parameters (FASTLOADPARAM) and
the timing core (HOLD/RELEASE/RESETTIMING); completion of a readout is only visible in
FRAME, so it is polled at a short interval instead of sleeping for seconds. Every
operation has a timeout, and an integration that is interrupted (cancellation, an
error) is aborted so that the shutter closes.

A broken link does not outlive the command it broke: every command goes through one
path (:meth:`ArchonController._link`) that reopens a closed connection, a bounded
number of times, and first releases a frame-buffer lock a given-up fetch left behind.

Exposure times (:meth:`ArchonController.exposure_times`) come from the host clock at
the controller's acknowledgement of the start, or, when the timing script latches
them, from the controller's own shutter edges mapped to UTC through FRAME readings.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from types import TracebackType

import numpy as np
import numpy.typing as npt

from devices.archon.acf import AcfConfig, load_acf, parse_acf, parse_wire_lines
from devices.archon.client import ArchonClient
from devices.archon.config_io import (
    Progress,
    apply_command_for,
    apply_overrides,
    read_config_lines,
    write_config_lines,
)
from devices.archon.errors import (
    ArchonBusyError,
    ArchonConnectionError,
    ArchonError,
    ArchonPowerError,
    ArchonProtocolError,
    ArchonTimeoutError,
)
from devices.archon.protocol import BLOCK_PAYLOAD
from devices.archon.status import ArchonStatus, BufferInfo, FrameStatus, PowerState, SystemInfo
from devices.archon.window import PARAMETER_NAMES, Window
from devices.base import ExposureTimes

RESET_PARAMETERS: Mapping[str, int] = {
    "Exposures": 0,
    "ReadOut": 0,
    "AbortExposure": 0,
    "DoFlush": 0,
    "OpenShutter": 0,
    "AutoFlush": 1,
}
"""Parameter values that leave the timing core idle, flushing, with the shutter shut."""

REQUIRED_PARAMETERS = ("Exposures", "ReadOut", "AbortExposure", "DoFlush", "FlushCount")
"""What the adapter's timing model needs from the ACF's timing script (plus IntCS or
IntMS). AutoFlush, OpenShutter and WaitCount are used when the script defines them."""

TIMER_HZ = 100_000_000
"""The controller's TIMER counts 10 ns ticks."""

CONTROLLER_TIMER = "controller timer"
HOST_CLOCK = "host clock"
"""The two values of :attr:`ExposureTimes.source` this adapter produces."""

MAX_TIMER_SAMPLES = 8192
"""FRAME readings kept per integration to map TIMER to UTC: a 120 s readout polled
every 20 ms, with room to spare; beyond that the oldest are dropped."""


@dataclass(frozen=True, slots=True)
class ControllerTiming:
    """How long the adapter waits for the controller's slower operations.

    ``flush_seconds`` is the time one flush takes: the controller does not report the
    end of a flush, so the adapter waits that long (per flush) instead of guessing.

    ``reconnect_attempts`` bounds how often a broken connection is reopened before a
    command gives up, waiting ``reconnect_backoff`` times the attempt number between
    tries: a pause for a controller that has just dropped a link, short enough that
    one that cannot be reached is reported within seconds.

    ``shutter_timestamps`` says the ACF's timing script latches BUFnRETIMESTAMP and
    BUFnFETIMESTAMP at shutter open and close, so exposure times can come from the
    controller's own clock. ``timer_rate_tolerance`` is the assumed bound on that
    clock's rate error against UTC (a crystal's 50 ppm, not a figure from STA): it
    widens the uncertainty in proportion to the time between a clock reading and
    the edge it dates, and the time the controller was asked to integrate.

    ``fetch_piece_blocks`` splits a buffer's transfer into FETCHes of that many 1 KiB
    blocks (0: one FETCH for the whole buffer). A connection answers in order and a
    block stream cannot be interrupted, so a 100 MB FETCH would hold every other
    command (the next exposure's flush and start) for the whole transfer, about a
    second on gigabit Ethernet; between pieces they are answered, and the fetch of
    one frame overlaps the next integration. FETCH reads controller memory from any
    address, so a piece starts part-way into the buffer (the sdss and azcam clients
    only ever start at a buffer's base: on a controller whose firmware refuses other
    addresses, set 0).
    """

    command_timeout: float = 5.0
    flush_seconds: float = 0.05
    readout_timeout: float = 120.0
    poll_interval: float = 0.02
    fetch_min_rate: float = 20e6
    fetch_attempts: int = 3
    fetch_piece_blocks: int = 1024
    power_timeout: float = 10.0
    reconnect_attempts: int = 3
    reconnect_backoff: float = 0.1
    shutter_timestamps: bool = False
    timer_rate_tolerance: float = 50e-6


@dataclass(frozen=True, slots=True)
class TimerSample:
    """One reading of the controller's TIMER, bracketed by the host's UTC clock.

    ``sent`` and ``received`` are ``time.time()`` just before the FRAME request and
    just after its reply: the controller read its TIMER somewhere in between.
    """

    sent: float
    received: float
    ticks: int

    def to_utc(self, ticks: int, rate_tolerance: float) -> tuple[float, float]:
        """``ticks`` as UTC epoch seconds, and a +- bound on that.

        NTP's reasoning: the midpoint of the round trip is off by at most half of it
        (plus one tick); the further ``ticks`` lies from this reading, the more the
        controller's clock may have run fast or slow against the host's.
        """
        half_round_trip = (self.received - self.sent) / 2
        span = (ticks - self.ticks) / TIMER_HZ
        bound = half_round_trip + 1 / TIMER_HZ + rate_tolerance * abs(span)
        return self.sent + half_round_trip + span, bound


def best_utc(
    samples: Iterable[TimerSample], ticks: int, rate_tolerance: float
) -> tuple[float, float]:
    """``ticks`` in UTC through the reading that bounds it most tightly, and the bound."""
    return min((s.to_utc(ticks, rate_tolerance) for s in samples), key=lambda pair: pair[1])


def _utc(epoch_seconds: float) -> datetime:
    return datetime.fromtimestamp(epoch_seconds, tz=UTC)


@dataclass(slots=True)
class IntegrationRecord:
    """What the host saw of one integration: enough to say when it began and ended.

    Host times are ``time.time()`` (UTC epoch seconds): ``sent`` just before the
    RELEASETIMING that starts the integration and ``acked`` when its reply arrived;
    ``abort_sent`` just before an abort's AbortExposure and ``abort_acked`` at its
    RELEASETIMING reply. ``before`` is a TIMER reading from before the start, so
    edges latched earlier are recognised as an older integration's. ``buffer`` is the
    frame the readout made, carrying the edges; ``samples`` are the FRAME readings
    taken until then, to map those edges to UTC.
    """

    requested_s: float
    programmed_s: float
    sent: float
    acked: float
    before: TimerSample | None = None
    abort_sent: float | None = None
    abort_acked: float | None = None
    buffer: BufferInfo | None = None
    samples: deque[TimerSample] = field(default_factory=lambda: deque(maxlen=MAX_TIMER_SAMPLES))

    def times(self, *, use_timer: bool, rate_tolerance: float) -> ExposureTimes:
        """The controller's edges when asked for and usable, else the host's view."""
        host = self.host_clock_times(rate_tolerance)
        if not use_timer:
            return host
        problem = self.stamp_problem()
        if problem is not None:
            return replace(host, fallback_reason=problem)
        return self.controller_timer_times(rate_tolerance)

    def host_clock_times(self, rate_tolerance: float) -> ExposureTimes:
        """The host's view of the integration.

        Start: when the controller acknowledged the start command; it began somewhere
        within that round trip. End: start plus the integration time the controller
        was given (it times the integration itself, at its clock's rate), unless an
        abort ended it sooner: then the abort's acknowledgement, which the true end
        precedes by at most the abort's own span.
        """
        start = self.acked
        end = start + self.programmed_s
        uncertainty = (self.acked - self.sent) + rate_tolerance * self.programmed_s
        aborted_at = self.abort_acked
        if self.abort_sent is not None and aborted_at is not None and aborted_at < end:
            end = aborted_at
            uncertainty = max(uncertainty, aborted_at - self.abort_sent)
        return ExposureTimes(
            start=_utc(start),
            end=_utc(max(start, end)),
            source=HOST_CLOCK,
            uncertainty_s=uncertainty,
            requested_s=self.requested_s,
        )

    def stamp_problem(self) -> str | None:
        """Why the latched edges cannot date this integration; None if they can."""
        info = self.buffer
        if info is None:
            return "no frame of this integration was read out, so no shutter edges to read"
        if self.before is None:
            return "no TIMER reading from before the integration started"
        rising, falling = info.re_timestamp, info.fe_timestamp
        if rising == 0 or falling == 0:
            return f"buffer {info.number} reports no RETIMESTAMP/FETIMESTAMP (zero)"
        if falling < rising:
            return f"buffer {info.number}: FETIMESTAMP {falling:X} precedes RETIMESTAMP {rising:X}"
        if rising < self.before.ticks:
            return (
                f"buffer {info.number}: RETIMESTAMP {rising:X} predates the TIMER "
                f"{self.before.ticks:X} read before the start (an earlier integration's)"
            )
        if info.timestamp and falling > info.timestamp:
            return (
                f"buffer {info.number}: FETIMESTAMP {falling:X} is later than the frame's "
                f"start {info.timestamp:X}, so the edges are not this frame's"
            )
        return None

    def controller_timer_times(self, rate_tolerance: float) -> ExposureTimes:
        """The latched edges in UTC, each through the TIMER reading that bounds it best."""
        if self.buffer is None or self.before is None:
            raise RuntimeError("controller timer times need a read-out frame and a TIMER reading")
        readings = [self.before, *self.samples]
        start, start_bound = best_utc(readings, self.buffer.re_timestamp, rate_tolerance)
        end, end_bound = best_utc(readings, self.buffer.fe_timestamp, rate_tolerance)
        return ExposureTimes(
            start=_utc(start),
            end=_utc(end),
            source=CONTROLLER_TIMER,
            uncertainty_s=max(start_bound, end_bound),
            requested_s=self.requested_s,
        )


class ArchonController:
    """A connected Archon controller: exposure life cycle, configuration, data.

    Compose it from an :class:`ArchonClient` (the socket) and the controller's ACF
    (the parameter names and geometry). Operations that change the timing core are
    serialised with a lock; queries and fetches may run while an integration goes on.
    """

    def __init__(
        self,
        host: str,
        port: int,
        acf: AcfConfig,
        *,
        name: str = "archon",
        timing: ControllerTiming | None = None,
    ) -> None:
        missing = [p for p in REQUIRED_PARAMETERS if not _has_parameter(acf.parameters, p)]
        if not (_has_parameter(acf.parameters, "IntCS") or _has_parameter(acf.parameters, "IntMS")):
            missing.append("IntCS or IntMS")
        if missing:
            raise ValueError(
                f"{name}: ACF {acf.source} lacks the timing parameters {', '.join(missing)}"
            )
        self.name = name
        self.acf = acf
        self.timing = timing or ControllerTiming()
        self.client = ArchonClient(host, port, timeout=self.timing.command_timeout)
        self.window = Window.from_acf(acf)
        self._timing_lock = asyncio.Lock()
        self._link_lock = asyncio.Lock()
        self._fetch_serial = asyncio.Lock()
        self._closed = False
        self._lock_held = 0
        self._fetch_lock = 0
        self._exposing = False
        self._readout_requested = False
        self._integration: IntegrationRecord | None = None
        self._config_lines: list[str] | None = None

    async def connect(self) -> None:
        """Open the connection; release a buffer lock a given-up fetch left behind."""
        await self.client.connect()
        self._closed = False
        await self._link()

    async def close(self) -> None:
        """Close the connection; later commands fail until :meth:`connect` is called."""
        self._closed = True
        await self.client.close()

    async def __aenter__(self) -> ArchonController:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- the link ----------------------------------------------------------------------

    async def _send(self, command: str, *, timeout: float | None = None) -> str:
        """Send one text command over a working link (see :meth:`_link`)."""
        client = await self._link()
        return await client.send(command, timeout=timeout)

    async def _fetch_blocks(
        self, command: str, n_blocks: int, timeout: float
    ) -> npt.NDArray[np.uint8]:
        """Send one FETCH over a working link (see :meth:`_link`)."""
        client = await self._link()
        return await client.fetch_blocks(command, n_blocks, timeout=timeout)

    @property
    def _stale_lock(self) -> bool:
        """A buffer may be locked that no running fetch wants locked."""
        return self._lock_held != 0 and self._lock_held != self._fetch_lock

    async def _link(self) -> ArchonClient:
        """The client, connected and with no stale buffer lock: every command's way in.

        A protocol error or a given-up fetch closes the connection; the next command
        reopens it here instead of failing until someone reconnects by hand. A fetch
        that gave up may have left its buffer locked (the link dropped before LOCK0),
        which would keep that buffer from later readouts, so LOCK0 goes first.
        """
        if self.client.connected and not self._stale_lock:
            return self.client
        async with self._link_lock:
            if not self.client.connected:
                await self._reconnect()
            if self._stale_lock:
                await self.client.send("LOCK0")
                self._lock_held = 0
        return self.client

    async def _reconnect(self) -> None:
        """Reopen the connection, ``reconnect_attempts`` times at most, backing off."""
        if self._closed:
            raise ArchonConnectionError(
                f"{self.name}: not connected to {self.client.host}:{self.client.port} "
                "(closed; call connect() to reopen)"
            )
        attempts = max(1, self.timing.reconnect_attempts)
        last: ArchonConnectionError | None = None
        for attempt in range(1, attempts + 1):
            try:
                await self.client.reconnect()
                return
            except ArchonConnectionError as exc:
                last = exc
            if attempt < attempts:
                await asyncio.sleep(self.timing.reconnect_backoff * attempt)
        raise ArchonConnectionError(
            f"{self.name}: not connected to {self.client.host}:{self.client.port} and "
            f"{attempts} reconnect attempts failed; the last: {last}"
        ) from last

    # -- queries ---------------------------------------------------------------------

    async def status(self) -> ArchonStatus:
        return ArchonStatus.parse(await self._send("STATUS"))

    async def system(self) -> SystemInfo:
        return SystemInfo.parse(await self._send("SYSTEM"))

    async def frame(self) -> FrameStatus:
        """One FRAME; its TIMER reading also helps date the current integration's edges."""
        frame, sample = await self._read_frame()
        record = self._integration
        if record is not None and record.buffer is None:
            record.samples.append(sample)
        return frame

    async def _read_frame(self) -> tuple[FrameStatus, TimerSample]:
        sent = time.time()
        payload = await self._send("FRAME")
        received = time.time()
        frame = FrameStatus.parse(payload)
        return frame, TimerSample(sent, received, frame.timer)

    async def status_stream(self, interval: float = 1.0) -> AsyncIterator[ArchonStatus]:
        """STATUS every ``interval`` seconds, for monitoring, until the caller stops."""
        if interval <= 0:
            raise ValueError("the status interval must be > 0 s")
        while True:
            started = time.monotonic()
            yield await self.status()
            await asyncio.sleep(max(0.0, interval - (time.monotonic() - started)))

    async def set_param(self, name: str, value: int) -> None:
        """Change one timing-script parameter at once (FASTLOADPARAM)."""
        await self._send(f"FASTLOADPARAM {name} {int(value)}")

    async def _set_if_defined(self, name: str, value: int) -> None:
        """Set an optional parameter only when this ACF's timing script has it."""
        if _has_parameter(self.acf.parameters, name):
            await self.set_param(name, value)

    @property
    def drives_shutter(self) -> bool:
        """Whether the timing script opens a shutter (our OpenShutter parameter)."""
        return _has_parameter(self.acf.parameters, "OpenShutter")

    async def require_power(self) -> ArchonStatus:
        """Fail before anything moves when the controller is not powered and good."""
        status = await self.status()
        if status.power is not PowerState.ON or not status.power_good:
            raise ArchonPowerError(
                f"{self.name}: power is {status.power.name}"
                f"{'' if status.power_good else ' and not good'}; expected ON and good"
            )
        return status

    async def power(self, on: bool | None = None) -> PowerState:
        """Switch the CCD power on or off (None: only report) and wait until it settles.

        Raises ArchonPowerError if the power does not reach the requested state, or
        is on but not good, within the power timeout.
        """
        if on is not None:
            await self._send("POWERON" if on else "POWEROFF")
        target = None if on is None else (PowerState.ON if on else PowerState.OFF)
        deadline = time.monotonic() + self.timing.power_timeout
        while True:
            status = await self.status()
            settled = target is None or status.power is target
            if settled and (status.power is not PowerState.ON or status.power_good):
                return status.power
            if time.monotonic() > deadline:
                raise ArchonPowerError(
                    f"{self.name}: power is {status.power.name}"
                    f"{'' if status.power_good else ' (not good)'} after "
                    f"{self.timing.power_timeout:g} s"
                )
            await asyncio.sleep(self.timing.poll_interval)

    # -- timing core -------------------------------------------------------------------

    async def reset(self) -> None:
        """Stop whatever the timing core does and return it to idle, shutter closed.

        An integration under way ends here, so its end is noted as an abort's.
        """
        record = self._integration if self._exposing else None
        sent = time.time()
        await self._send("HOLDTIMING")
        for name, value in RESET_PARAMETERS.items():
            await self._set_if_defined(name, value)
        await self._send("RESETTIMING")
        _note_abort(record, sent, time.time())
        await self._send("RELEASETIMING")
        self._exposing = False
        self._readout_requested = False

    async def set_autoflush(self, on: bool) -> None:
        """Keep the CCDs clear while idle (on) or let charge accumulate (off)."""
        if not _has_parameter(self.acf.parameters, "AutoFlush"):
            raise ValueError(f"{self.name}: the ACF's timing script has no AutoFlush parameter")
        await self.set_param("AutoFlush", 1 if on else 0)

    async def flush(self, count: int = 1) -> None:
        """Clear the CCDs ``count`` times; returns when the flushes are done."""
        if count < 1:
            raise ValueError("flush count must be at least 1")
        async with self._timing_lock:
            await self.set_param("FlushCount", count)
            await self.set_param("DoFlush", 1)
            await self._send("RELEASETIMING")
            await asyncio.sleep(self.timing.flush_seconds * count)

    async def expose(self, exptime: float, *, open_shutter: bool, readout: bool = False) -> float:
        """Integrate for ``exptime`` seconds; with ``readout``, read out right after.

        Returns the monotonic time the integration was started, once the integration
        time has passed (call :meth:`readout` next: it starts the readout, or with
        ``readout=True`` waits for the one already under way). If the set-up or the
        wait is interrupted (task cancelled, error), the exposure is aborted before
        the exception goes on, so the shutter never stays open and a half-written
        parameter set never starts an integration later. :meth:`exposure_times`
        then tells when the integration really began and ended.
        """
        if exptime < 0 or not math.isfinite(exptime):
            raise ValueError(f"exposure time must be a finite number >= 0, not {exptime}")
        if open_shutter and not self.drives_shutter:
            raise ValueError(
                f"{self.name}: the ACF has no OpenShutter parameter, so this controller "
                "cannot open a shutter; light frames need a shutter device"
            )
        await self.require_power()
        async with self._timing_lock:
            if self._exposing:
                raise ArchonBusyError(f"{self.name}: an exposure is already in progress")
            self._exposing = True
            self._integration = None
            try:
                programmed = await self._program_exposure(exptime, open_shutter, readout)
                self._integration = await self._start_integration(exptime, programmed)
                self._readout_requested = readout
                started = time.monotonic()
                await asyncio.sleep(exptime)
            except BaseException:
                await asyncio.shield(self._abort_quietly())
                raise
            return started

    async def _program_exposure(self, exptime: float, open_shutter: bool, readout: bool) -> float:
        """Load the exposure's parameters into the held core; the programmed seconds.

        The core is held while the parameters change, so it never acts on a
        half-written set. AutoFlush goes off: a timing script that flushes while idle
        would otherwise clear the charge between the end of the integration and the
        readout.
        """
        await self._send("HOLDTIMING")
        await self.set_param("ReadOut", 1 if readout else 0)
        await self.set_param("AbortExposure", 0)
        await self._set_if_defined("AutoFlush", 0)
        await self._set_if_defined("OpenShutter", 1 if open_shutter else 0)
        programmed = await self._set_integration_time(exptime)
        await self.set_param("Exposures", 1)
        return programmed

    async def _start_integration(self, exptime: float, programmed: float) -> IntegrationRecord:
        """RELEASETIMING starts the integration; note when, by both clocks.

        The host's start is the moment the controller acknowledged the command, not
        the moment it was sent; with shutter timestamps, a TIMER reading taken just
        before tells the edges of this integration from those of an earlier one.
        """
        before = None
        if self.timing.shutter_timestamps:
            _, before = await self._read_frame()
        sent = time.time()
        await self._send("RELEASETIMING")
        acked = time.time()
        return IntegrationRecord(
            requested_s=exptime, programmed_s=programmed, sent=sent, acked=acked, before=before
        )

    async def _set_integration_time(self, exptime: float) -> float:
        """Program the integration; return it as the controller will time it (rounded)."""
        if _has_parameter(self.acf.parameters, "IntMS"):
            await self.set_param("IntCS", 0)
            milliseconds = round(exptime * 1000)
            await self.set_param("IntMS", milliseconds)
            return milliseconds / 1000
        centiseconds = round(exptime * 100)
        await self.set_param("IntCS", centiseconds)
        return centiseconds / 100

    async def abort(self, *, readout: bool = False) -> None:
        """End the integration now; the shutter closes.

        With ``readout`` the frame is read out (call :meth:`readout` to wait for it);
        without, it is discarded and the CCDs are flushed while idle.
        """
        record = self._integration if self._exposing else None
        await self.set_param("ReadOut", 1 if readout else 0)
        sent = time.time()
        await self.set_param("AbortExposure", 1)
        await self.set_param("Exposures", 0)
        await self._set_if_defined("OpenShutter", 0)
        if not readout:
            await self._set_if_defined("AutoFlush", 1)
        await self._send("RELEASETIMING")
        _note_abort(record, sent, time.time())
        self._readout_requested = readout
        if not readout:
            self._exposing = False

    async def _abort_quietly(self) -> None:
        try:
            await self.abort()
        except ArchonError:
            # The caller is already failing; a dead link cannot be aborted over it.
            # The controller's own timing still ends the integration on time.
            pass
        finally:
            self._exposing = False

    def exposure_times(self) -> ExposureTimes:
        """When the last integration began and ended (valid once it was read out or
        aborted; before that, the host's expectation of it).

        From the controller's latched shutter edges when ``shutter_timestamps`` is
        set and they belong to this frame; else from the host clock, with the reason
        in ``fallback_reason`` if the edges were wanted.
        """
        record = self._integration
        if record is None:
            raise RuntimeError(
                f"{self.name}: no integration to describe; expose() has not started one"
            )
        return record.times(
            use_timer=self.timing.shutter_timestamps,
            rate_tolerance=self.timing.timer_rate_tolerance,
        )

    async def readout(self, *, delay: int = 0) -> int:
        """Read the integrated frame into a buffer; return its number when complete.

        Completion is seen in FRAME, polled every ``poll_interval`` (20 ms by
        default), not after fixed sleeps. ``delay`` slows each pixel by that many
        WaitCount units (10 ns), e.g. for photon-transfer frames.
        """
        if delay < 0:
            raise ValueError("readout delay must be >= 0")
        async with self._timing_lock:
            record = self._integration if self._exposing else None
            before = await self.frame()
            if delay:
                if not _has_parameter(self.acf.parameters, "WaitCount"):
                    raise ValueError(f"{self.name}: no WaitCount parameter for a readout delay")
                await self.set_param("WaitCount", delay)
            if not self._readout_requested:
                await self.set_param("ReadOut", 1)
                await self._send("RELEASETIMING")
            try:
                info = await self._wait_for_new_frame(before.last_frame)
            finally:
                self._exposing = False
                self._readout_requested = False
            if record is not None:
                record.buffer = info
            await self.set_param("ReadOut", 0)
            await self.set_param("AbortExposure", 0)
            await self._set_if_defined("AutoFlush", 1)
            if delay:
                await self.set_param("WaitCount", 0)
            return info.number

    async def _wait_for_new_frame(self, last_frame: int) -> BufferInfo:
        deadline = time.monotonic() + self.timing.readout_timeout
        while True:
            frame = await self.frame()
            for info in frame.buffers:
                if info.frame > last_frame and info.complete:
                    return info
            if time.monotonic() > deadline:
                raise ArchonTimeoutError(
                    "FRAME", self.timing.readout_timeout, "readout did not complete"
                )
            await asyncio.sleep(self.timing.poll_interval)

    # -- window and configuration ----------------------------------------------------

    async def set_window(self, **changes: int) -> Window:
        """Change the readout window (lines, pixels, skips, overscan, binning).

        Each changed parameter is loaded at once; LINECOUNT and PIXELCOUNT follow so
        the stored frame has the window's shape, and APPLYCDS makes them current.
        """
        window = self.window.with_changes(**changes)
        for name, value in window.parameters().items():
            if _has_parameter(self.acf.parameters, name):
                await self.set_param(name, value)
        await self.write_line("LINECOUNT", window.line_count, apply=False)
        await self.write_line("PIXELCOUNT", window.pixel_count, apply="APPLYCDS")
        self.window = window
        return window

    async def reset_window(self) -> Window:
        """Back to the window the ACF defines."""
        default = Window.from_acf(self.acf)
        return await self.set_window(**{k: getattr(default, k) for k in PARAMETER_NAMES})

    async def read_config(self) -> AcfConfig:
        """Read the whole configuration memory back (pipelined RCONFIG).

        The pipelined reads use the client directly, after :meth:`_link` made sure
        the link works: one batch of commands in flight cannot each reconnect.
        """
        lines = await read_config_lines(await self._link())
        self._config_lines = lines
        return parse_wire_lines(lines, source=f"{self.name} configuration memory")

    async def write_config(
        self,
        source: AcfConfig | str | os.PathLike[str],
        *,
        apply: bool = True,
        power_on: bool = False,
        overrides: Mapping[str, object] | None = None,
        progress: Progress | None = None,
    ) -> AcfConfig:
        """Load an ACF (object, file path, or ACF text) into the controller.

        ``overrides`` replace values (or add keys) before writing. The lines are
        checked before CLEARCONFIG, so bad input never leaves the controller with a
        half-written memory. With ``apply`` the whole config is applied (APPLYALL),
        with ``power_on`` the CCDs are powered afterwards.
        """
        if isinstance(source, AcfConfig):
            acf = source
        elif isinstance(source, str) and "\n" in source:
            acf = parse_acf(source, source="<text>")
        else:
            acf = load_acf(source)
        lines = apply_overrides(acf.wire_lines(), overrides or {})
        checked = parse_wire_lines(lines, source=f"{acf.source} with overrides")
        await write_config_lines(await self._link(), lines, progress=progress)
        self._config_lines = list(lines)
        self.acf = checked
        self.window = Window.from_acf(checked)
        if apply:
            await self._send("APPLYALL", timeout=max(self.timing.command_timeout, 30.0))
        if power_on:
            await self.power(True)
        return checked

    async def write_line(self, key: str, value: object, *, apply: bool | str = True) -> None:
        """Change one configuration line in place; apply it (inferred command by default).

        ``apply`` may name the command (``"APPLYCDS"``, ``"LOADPARAMS"``, ...); True
        picks the one the key needs, False only writes the memory.
        """
        if self._config_lines is None:
            await self.read_config()
        assert self._config_lines is not None
        wire_key = key.replace("\\", "/")
        index = next(
            (
                i
                for i, line in enumerate(self._config_lines)
                if line.partition("=")[0].upper() == wire_key.upper()
            ),
            None,
        )
        if index is None:
            raise KeyError(f"{self.name}: no configuration line {key!r}")
        line = f"{self._config_lines[index].partition('=')[0]}={value}"
        await self._send(f"WCONFIG{index:04X}{line}")
        self._config_lines[index] = line
        if apply:
            command = apply if isinstance(apply, str) else apply_command_for(wire_key)
            await self._send(command, timeout=max(self.timing.command_timeout, 30.0))

    # -- data --------------------------------------------------------------------------

    async def fetch(self, buffer: int = -1) -> npt.NDArray[np.uint16] | npt.NDArray[np.uint32]:
        """Transfer one complete frame buffer into an array of shape (height, width).

        ``buffer=-1`` takes the complete buffer with the newest timestamp. The buffer
        is locked for the transfer so no readout can overwrite it, and read in pieces
        (``fetch_piece_blocks``, two asked for at a time) so other commands are
        answered meanwhile. A stream cut short (a timeout, a dropped connection, or
        the next piece's blocks where this one's were due) is taken up again after a
        reconnect from the piece that failed, up to ``fetch_attempts`` times: the locked buffer
        still holds the same frame. Giving up leaves the lock to be released on the
        next command.
        """
        info = self._fetchable(await self.frame(), buffer)
        n_blocks = math.ceil(info.nbytes / BLOCK_PAYLOAD)
        pieces = fetch_pieces(info.base, n_blocks, self.timing.fetch_piece_blocks)
        raw = np.empty(n_blocks * BLOCK_PAYLOAD, dtype=np.uint8)
        failures: list[ArchonError] = []
        started = time.monotonic()
        # One fetch at a time: the controller has one lock register, and the record
        # of which buffer a running fetch holds must not be cleared by another.
        async with self._fetch_serial:
            self._fetch_lock = info.number
            try:
                for _ in range(max(1, self.timing.fetch_attempts)):
                    try:
                        await self._fetch_locked(info.number, pieces, raw)
                    except (ArchonTimeoutError, ArchonConnectionError, ArchonProtocolError) as exc:
                        # A stream cut short: a timeout, a dropped link, or (the next
                        # piece already streaming) its blocks where this one's were due.
                        failures.append(exc)
                        continue
                    dtype = np.dtype("<u2") if info.bytes_per_pixel == 2 else np.dtype("<u4")
                    return raw[: info.nbytes].view(dtype).reshape(info.height, info.width)
            finally:
                self._fetch_lock = 0
        first = pieces[0].command if pieces else f"FETCH{info.base:08X}{n_blocks:08X}"
        raise self._fetch_gave_up(first, failures, time.monotonic() - started)

    def _fetchable(self, frame: FrameStatus, buffer: int) -> BufferInfo:
        """The buffer a fetch of ``buffer`` (-1: the newest complete) reads, if complete."""
        if buffer == -1:
            newest = frame.newest_complete()
            if newest is None:
                raise ArchonBusyError(f"{self.name}: no complete frame buffer to fetch")
            info = newest
        else:
            info = frame.buffer(buffer)
        if not info.complete:
            raise ArchonBusyError(f"{self.name}: frame buffer {info.number} is not complete")
        return info

    async def _fetch_locked(
        self, number: int, pieces: list[FetchPiece], out: npt.NDArray[np.uint8]
    ) -> None:
        """One attempt: LOCKn, the pieces not yet in ``out`` (marked done as they come),
        LOCK0; the lock counts as held from LOCKn's send until LOCK0 is acknowledged,
        so a link lost in between is unlocked later.

        ``PIECES_IN_FLIGHT`` pieces are asked for at a time, so the link never idles
        for a round trip between them (one at a time ran at 65 % of a 1 Gb/s cap).
        """
        self._lock_held = number
        await self._send(f"LOCK{number}")
        in_flight: deque[asyncio.Future[None]] = deque()
        try:
            for piece in pieces:
                if not piece.done:
                    in_flight.append(asyncio.ensure_future(self._fetch_piece(piece, out)))
                if len(in_flight) >= PIECES_IN_FLIGHT:
                    await in_flight.popleft()
            while in_flight:
                await in_flight.popleft()
        finally:
            for left in in_flight:
                left.cancel()
            await asyncio.gather(*in_flight, return_exceptions=True)
            if self.client.connected:
                await self._send("LOCK0")
                self._lock_held = 0

    async def _fetch_piece(self, piece: FetchPiece, out: npt.NDArray[np.uint8]) -> None:
        timeout = max(
            self.timing.command_timeout,
            2 * piece.blocks * BLOCK_PAYLOAD / self.timing.fetch_min_rate,
        )
        data = await self._fetch_blocks(piece.command, piece.blocks, timeout)
        out[piece.offset : piece.offset + data.size] = data
        piece.done = True

    def _fetch_gave_up(
        self, command: str, failures: list[ArchonError], total: float
    ) -> ArchonError:
        """One error for all attempts: what one was allowed, and what they took in all."""
        last = failures[-1]
        error: ArchonError
        if isinstance(last, ArchonTimeoutError):
            detail = last.detail if last.command == command else f"{last.command} timed out"
            error = ArchonTimeoutError(
                command, last.timeout, detail, attempts=len(failures), total=total
            )
        else:
            error = ArchonConnectionError(
                f"{self.name}: {command} failed on all {len(failures)} attempts "
                f"({total:.1f} s in all); the last: {last}"
            )
        error.__cause__ = last
        return error


PIECES_IN_FLIGHT = 2
"""FETCHes of one buffer sent ahead of their answers: the next is queued while one
streams (a command sent meanwhile waits at most for those two pieces)."""


@dataclass(slots=True)
class FetchPiece:
    """One FETCH of a buffer's transfer: where it starts (bytes into the buffer)."""

    command: str
    offset: int
    blocks: int
    done: bool = False


def fetch_pieces(base: int, n_blocks: int, piece_blocks: int) -> list[FetchPiece]:
    """The FETCHes that transfer ``n_blocks`` blocks from ``base``, ``piece_blocks`` at
    a time (0 or more than the buffer: one FETCH)."""
    step = piece_blocks if piece_blocks > 0 else n_blocks
    pieces = []
    for first in range(0, n_blocks, max(1, step)):
        count = min(step, n_blocks - first)
        offset = first * BLOCK_PAYLOAD
        pieces.append(FetchPiece(f"FETCH{base + offset:08X}{count:08X}", offset, count))
    return pieces


def _note_abort(record: IntegrationRecord | None, sent: float, acked: float) -> None:
    """An abort (or reset) between ``sent`` and ``acked`` may have ended ``record``'s
    integration; only the first counts, and none once its frame was read out."""
    if record is not None and record.buffer is None and record.abort_acked is None:
        record.abort_sent, record.abort_acked = sent, acked


def _has_parameter(parameters: Mapping[str, str], name: str) -> bool:
    """Parameter names are case-insensitive on the controller, so here too."""
    return any(key.lower() == name.lower() for key in parameters)
