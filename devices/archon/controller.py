"""An Archon controller: status, power, flush, expose, readout, fetch, configuration.

The controller's timing script is steered through its parameters (FASTLOADPARAM) and
the timing core (HOLD/RELEASE/RESETTIMING); completion of a readout is only visible in
FRAME, so it is polled at a short interval instead of sleeping for seconds. Every
operation has a timeout, and an integration that is interrupted (cancellation, an
error) is aborted so that the shutter closes.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
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
    ArchonTimeoutError,
)
from devices.archon.protocol import BLOCK_PAYLOAD
from devices.archon.status import ArchonStatus, BufferInfo, FrameStatus, PowerState, SystemInfo
from devices.archon.window import PARAMETER_NAMES, Window

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


@dataclass(frozen=True, slots=True)
class ControllerTiming:
    """How long the adapter waits for the controller's slower operations.

    ``flush_seconds`` is the time one flush takes: the controller does not report the
    end of a flush, so the adapter waits that long (per flush) instead of guessing.
    """

    command_timeout: float = 5.0
    flush_seconds: float = 0.05
    readout_timeout: float = 120.0
    poll_interval: float = 0.02
    fetch_min_rate: float = 20e6
    fetch_attempts: int = 3
    power_timeout: float = 10.0


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
        self._exposing = False
        self._readout_requested = False
        self._config_lines: list[str] | None = None

    async def connect(self) -> None:
        await self.client.connect()

    async def close(self) -> None:
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

    # -- queries ---------------------------------------------------------------------

    async def status(self) -> ArchonStatus:
        return ArchonStatus.parse(await self.client.send("STATUS"))

    async def system(self) -> SystemInfo:
        return SystemInfo.parse(await self.client.send("SYSTEM"))

    async def frame(self) -> FrameStatus:
        return FrameStatus.parse(await self.client.send("FRAME"))

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
        await self.client.send(f"FASTLOADPARAM {name} {int(value)}")

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
            await self.client.send("POWERON" if on else "POWEROFF")
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
        """Stop whatever the timing core does and return it to idle, shutter closed."""
        await self.client.send("HOLDTIMING")
        for name, value in RESET_PARAMETERS.items():
            await self._set_if_defined(name, value)
        await self.client.send("RESETTIMING")
        await self.client.send("RELEASETIMING")
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
            await self.client.send("RELEASETIMING")
            await asyncio.sleep(self.timing.flush_seconds * count)

    async def expose(self, exptime: float, *, open_shutter: bool, readout: bool = False) -> float:
        """Integrate for ``exptime`` seconds; with ``readout``, read out right after.

        Returns the monotonic time the integration was started, once the integration
        time has passed (call :meth:`readout` next: it starts the readout, or with
        ``readout=True`` waits for the one already under way). If the wait is
        interrupted (task cancelled, error), the exposure is aborted before the
        exception goes on, so the shutter never stays open.
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
            # The core is held while the parameters change, so it never acts on a
            # half-written set. AutoFlush goes off: a timing script that flushes
            # while idle would otherwise clear the charge between the end of the
            # integration and the readout.
            await self.client.send("HOLDTIMING")
            await self.set_param("ReadOut", 1 if readout else 0)
            await self.set_param("AbortExposure", 0)
            await self._set_if_defined("AutoFlush", 0)
            await self._set_if_defined("OpenShutter", 1 if open_shutter else 0)
            await self._set_integration_time(exptime)
            await self.set_param("Exposures", 1)
            await self.client.send("RELEASETIMING")
            self._readout_requested = readout
            started = time.monotonic()
            try:
                await asyncio.sleep(exptime)
            except BaseException:
                await asyncio.shield(self._abort_quietly())
                raise
            return started

    async def _set_integration_time(self, exptime: float) -> None:
        if _has_parameter(self.acf.parameters, "IntMS"):
            await self.set_param("IntCS", 0)
            await self.set_param("IntMS", round(exptime * 1000))
        else:
            await self.set_param("IntCS", round(exptime * 100))

    async def abort(self, *, readout: bool = False) -> None:
        """End the integration now; the shutter closes.

        With ``readout`` the frame is read out (call :meth:`readout` to wait for it);
        without, it is discarded and the CCDs are flushed while idle.
        """
        await self.set_param("ReadOut", 1 if readout else 0)
        await self.set_param("AbortExposure", 1)
        await self.set_param("Exposures", 0)
        await self._set_if_defined("OpenShutter", 0)
        if not readout:
            await self._set_if_defined("AutoFlush", 1)
        await self.client.send("RELEASETIMING")
        self._readout_requested = readout
        if not readout:
            self._exposing = False

    async def _abort_quietly(self) -> None:
        try:
            await self.abort()
        except ArchonError:
            # The caller is already failing; a dead link cannot be aborted over it.
            # The controller's own timing still ends the integration on time.
            self._exposing = False

    async def readout(self, *, delay: int = 0) -> int:
        """Read the integrated frame into a buffer; return its number when complete.

        Completion is seen in FRAME, polled every ``poll_interval`` (20 ms by
        default), not after fixed sleeps. ``delay`` slows each pixel by that many
        WaitCount units (10 ns), e.g. for photon-transfer frames.
        """
        if delay < 0:
            raise ValueError("readout delay must be >= 0")
        async with self._timing_lock:
            before = await self.frame()
            if delay:
                if not _has_parameter(self.acf.parameters, "WaitCount"):
                    raise ValueError(f"{self.name}: no WaitCount parameter for a readout delay")
                await self.set_param("WaitCount", delay)
            if not self._readout_requested:
                await self.set_param("ReadOut", 1)
                await self.client.send("RELEASETIMING")
            try:
                info = await self._wait_for_new_frame(before.last_frame)
            finally:
                self._exposing = False
                self._readout_requested = False
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
        """Read the whole configuration memory back (pipelined RCONFIG)."""
        lines = await read_config_lines(self.client)
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
        await write_config_lines(self.client, lines, progress=progress)
        self._config_lines = list(lines)
        self.acf = checked
        self.window = Window.from_acf(checked)
        if apply:
            await self.client.send("APPLYALL", timeout=max(self.timing.command_timeout, 30.0))
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
        await self.client.send(f"WCONFIG{index:04X}{line}")
        self._config_lines[index] = line
        if apply:
            command = apply if isinstance(apply, str) else apply_command_for(wire_key)
            await self.client.send(command, timeout=max(self.timing.command_timeout, 30.0))

    # -- data --------------------------------------------------------------------------

    async def fetch(self, buffer: int = -1) -> npt.NDArray[np.uint16] | npt.NDArray[np.uint32]:
        """Transfer one complete frame buffer into an array of shape (height, width).

        ``buffer=-1`` takes the complete buffer with the newest timestamp. The buffer
        is locked for the transfer so no readout can overwrite it. A stream cut short
        (timeout, dropped connection) is fetched again from the start after a
        reconnect: the locked buffer still holds the same frame.
        """
        frame = await self.frame()
        if buffer == -1:
            newest = frame.newest_complete()
            if newest is None:
                raise ArchonBusyError(f"{self.name}: no complete frame buffer to fetch")
            info = newest
        else:
            info = frame.buffer(buffer)
        if not info.complete:
            raise ArchonBusyError(f"{self.name}: frame buffer {info.number} is not complete")
        n_blocks = math.ceil(info.nbytes / BLOCK_PAYLOAD)
        timeout = max(self.timing.command_timeout, 2 * info.nbytes / self.timing.fetch_min_rate)
        command = f"FETCH{info.base:08X}{n_blocks:08X}"
        last_error: ArchonError | None = None
        for _ in range(self.timing.fetch_attempts):
            try:
                if not self.client.connected:
                    await self.client.reconnect()
                await self.client.send(f"LOCK{info.number}")
                try:
                    raw = await self.client.fetch_blocks(command, n_blocks, timeout=timeout)
                finally:
                    if self.client.connected:
                        await self.client.send("LOCK0")
            except (ArchonTimeoutError, ArchonConnectionError) as exc:
                last_error = exc
                continue
            dtype = np.dtype("<u2") if info.bytes_per_pixel == 2 else np.dtype("<u4")
            pixels = raw[: info.nbytes].view(dtype).reshape(info.height, info.width)
            return pixels
        assert last_error is not None
        raise last_error


def _has_parameter(parameters: Mapping[str, str], name: str) -> bool:
    """Parameter names are case-insensitive on the controller, so here too."""
    return any(key.lower() == name.lower() for key in parameters)
