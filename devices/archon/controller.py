"""An Archon controller as ccdflow uses it: status, flush, expose, readout, fetch.

The controller's timing script is steered through its parameters (FASTLOADPARAM) and
the timing core (HOLD/RELEASE/RESETTIMING); completion of a readout is only visible in
FRAME, so it is polled at a short interval instead of sleeping for seconds. Every
operation has a timeout, and an integration that is interrupted (cancellation, an
error) is aborted so that the shutter closes.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType

import numpy as np
import numpy.typing as npt

from devices.archon.acf import AcfConfig
from devices.archon.client import ArchonClient
from devices.archon.errors import (
    ArchonBusyError,
    ArchonConnectionError,
    ArchonError,
    ArchonPowerError,
    ArchonTimeoutError,
)
from devices.archon.protocol import BLOCK_PAYLOAD, parse_key_values
from devices.archon.status import ArchonStatus, BufferInfo, FrameStatus, PowerState

RESET_PARAMETERS: Mapping[str, int] = {
    "Exposures": 0,
    "ReadOut": 0,
    "AbortExposure": 0,
    "DoFlush": 0,
    "OpenShutter": 0,
    "AutoFlush": 1,
}
"""Parameter values that leave the timing core idle, flushing, with the shutter shut."""


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


class ArchonController:
    """A connected Archon controller with ccdflow's exposure operations."""

    def __init__(
        self,
        host: str,
        port: int,
        acf: AcfConfig,
        *,
        name: str = "archon",
        timing: ControllerTiming | None = None,
    ) -> None:
        self.name = name
        self.acf = acf
        self.timing = timing or ControllerTiming()
        self.client = ArchonClient(host, port, timeout=self.timing.command_timeout)
        self._timing_lock = asyncio.Lock()
        self._exposing = False

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

    async def system(self) -> dict[str, str]:
        return parse_key_values(await self.client.send("SYSTEM"))

    async def frame(self) -> FrameStatus:
        return FrameStatus.parse(await self.client.send("FRAME"))

    async def set_param(self, name: str, value: int) -> None:
        """Change one timing-script parameter at once (FASTLOADPARAM)."""
        await self.client.send(f"FASTLOADPARAM {name} {int(value)}")

    async def require_power(self) -> ArchonStatus:
        """Fail before anything moves when the controller is not powered and good."""
        status = await self.status()
        if status.power is not PowerState.ON or not status.power_good:
            raise ArchonPowerError(
                f"{self.name}: power is {status.power.name}"
                f"{'' if status.power_good else ' and not good'}; expected ON and good"
            )
        return status

    # -- timing core -------------------------------------------------------------------

    async def reset(self) -> None:
        """Stop whatever the timing core does and return it to idle, shutter closed."""
        await self.client.send("HOLDTIMING")
        for name, value in RESET_PARAMETERS.items():
            await self.set_param(name, value)
        await self.client.send("RESETTIMING")
        await self.client.send("RELEASETIMING")
        self._exposing = False

    async def flush(self, count: int = 1) -> None:
        """Clear the CCDs ``count`` times; returns when the flushes are done."""
        if count < 1:
            raise ValueError("flush count must be at least 1")
        async with self._timing_lock:
            await self.set_param("FlushCount", count)
            await self.set_param("DoFlush", 1)
            await self.client.send("RELEASETIMING")
            await asyncio.sleep(self.timing.flush_seconds * count)

    async def expose(self, exptime: float, *, open_shutter: bool) -> float:
        """Integrate for ``exptime`` seconds without reading out.

        Returns the monotonic time the integration was started. If the wait is
        interrupted (task cancelled, error), the exposure is aborted before the
        exception goes on, so the shutter never stays open.
        """
        if exptime < 0 or not math.isfinite(exptime):
            raise ValueError(f"exposure time must be a finite number >= 0, not {exptime}")
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
            await self.set_param("ReadOut", 0)
            await self.set_param("AbortExposure", 0)
            await self.set_param("AutoFlush", 0)
            await self.set_param("OpenShutter", 1 if open_shutter else 0)
            await self._set_integration_time(exptime)
            await self.set_param("Exposures", 1)
            await self.client.send("RELEASETIMING")
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

    async def abort(self) -> None:
        """End the integration now (the shutter closes), discard it, flush while idle."""
        await self.set_param("AbortExposure", 1)
        await self.set_param("Exposures", 0)
        await self.set_param("OpenShutter", 0)
        await self.set_param("AutoFlush", 1)
        await self.client.send("RELEASETIMING")
        self._exposing = False

    async def _abort_quietly(self) -> None:
        try:
            await self.abort()
        except ArchonError:
            # The caller is already failing; a dead link cannot be aborted over it.
            # The controller's own timing still ends the integration on time.
            self._exposing = False

    async def readout(self) -> int:
        """Read the integrated frame into a buffer; return its number when complete."""
        async with self._timing_lock:
            before = await self.frame()
            await self.set_param("ReadOut", 1)
            await self.client.send("RELEASETIMING")
            try:
                info = await self._wait_for_new_frame(before.last_frame)
            finally:
                self._exposing = False
            await self.set_param("ReadOut", 0)
            await self.set_param("AbortExposure", 0)
            await self.set_param("AutoFlush", 1)
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

    # -- data --------------------------------------------------------------------------

    async def fetch(self, buffer: int) -> npt.NDArray[np.uint16] | npt.NDArray[np.uint32]:
        """Transfer one complete frame buffer into an array of shape (height, width).

        The buffer is locked for the transfer so no readout can overwrite it. A stream
        cut short (timeout, dropped connection) is fetched again from the start after a
        reconnect: the locked buffer still holds the same frame.
        """
        info = (await self.frame()).buffer(buffer)
        if not info.complete:
            raise ArchonBusyError(f"{self.name}: frame buffer {buffer} is not complete")
        n_blocks = math.ceil(info.nbytes / BLOCK_PAYLOAD)
        timeout = max(self.timing.command_timeout, 2 * info.nbytes / self.timing.fetch_min_rate)
        command = f"FETCH{info.base:08X}{n_blocks:08X}"
        last_error: ArchonError | None = None
        for _ in range(self.timing.fetch_attempts):
            try:
                if not self.client.connected:
                    await self.client.reconnect()
                await self.client.send(f"LOCK{buffer}")
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
