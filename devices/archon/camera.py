"""An Archon controller as a camera of the seam (devices/camera.py).

:class:`ArchonModel` plans from the config and the ACF alone: the frame geometry
(taps -> CCDs and amplifiers), the capabilities the timing script gives, and the
readout window an exposure's binning and region ask for (pre/post-skip arithmetic;
a window that does not fit is refused naming ``window`` or ``binning``).
:class:`ArchonCamera` drives a connected :class:`ArchonController` through the
camera interface: prepare = power checked + reset; stand down and make safe =
abort + reset (which closes the shutter and leaves the frame buffers as they are).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

import numpy as np
import numpy.typing as npt

from devices.archon.acf import AcfConfig, AcfError, ccd_layout, load_acf
from devices.archon.capabilities import archon_capabilities
from devices.archon.controller import ArchonController, ControllerTiming
from devices.archon.errors import ArchonError
from devices.archon.status import FrameStatus
from devices.archon.window import Window
from devices.base import CameraCapabilities, DeviceError, ExposureTimes
from devices.camera import (
    BufferReport,
    CameraConfigError,
    FrameGeometry,
    HeldFrame,
    ReadoutRequest,
    SafetyReadings,
)

T = TypeVar("T")

ARCHON_TIMER_HZ = 100_000_000
"""The controller's TIMER (and FRAME timestamps) count at 100 MHz."""
IDLE_CHECK_S = 0.1
"""Interval between the two FRAME reads that tell whether a buffer is still being
written: long enough for any readout to add a line, short beside a human's reaction."""


class ArchonSettings(Protocol):
    """The fields of an instrument config's Archon entry this package reads
    (schemas.instrument.ArchonControllerConfig has them)."""

    @property
    def name(self) -> str: ...
    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def acf(self) -> Path: ...
    @property
    def ccds(self) -> Sequence[object]: ...
    @property
    def command_timeout_s(self) -> float: ...
    @property
    def flush_time_s(self) -> float: ...
    @property
    def readout_timeout_s(self) -> float: ...
    @property
    def shutter_timestamps(self) -> bool: ...
    @property
    def fetch_piece_kib(self) -> int: ...


@dataclass(frozen=True, slots=True)
class ArchonSetup:
    """A readout window and the frame it produces."""

    window: Window
    geometry: FrameGeometry


def _geometry(acf: AcfConfig, n_ccds: int, pixels: int, overscan: int, lines: int) -> FrameGeometry:
    return FrameGeometry(acf.buffer_shape, ccd_layout(acf, n_ccds), pixels, overscan, lines)


class ArchonModel:
    """An Archon controller planned from its config and ACF (module docstring)."""

    def __init__(self, settings: ArchonSettings) -> None:
        self.settings = settings
        try:
            acf = load_acf(settings.acf)
            n_ccds = len(settings.ccds)
            ccd_layout(acf, n_ccds)
            pixels = acf.parameter_int("Pixels")
            overscan = acf.parameter_int("OverscanPixels", 0)
            lines = acf.parameter_int("Lines", acf.line_count)
        except (AcfError, ValueError, KeyError, OSError) as exc:
            raise CameraConfigError("acf", str(exc)) from exc
        if pixels + overscan > acf.pixel_count:
            raise CameraConfigError(
                "acf",
                f"Pixels ({pixels}) + OverscanPixels ({overscan}) exceed PIXELCOUNT "
                f"({acf.pixel_count})",
            )
        self.acf = acf
        self._capabilities = archon_capabilities(acf)
        self._full = ArchonSetup(
            Window.from_acf(acf), _geometry(acf, n_ccds, pixels, overscan, lines)
        )

    @property
    def name(self) -> str:
        return self.settings.name

    @property
    def address(self) -> str:
        return f"{self.settings.host}:{self.settings.port}"

    @property
    def capabilities(self) -> CameraCapabilities:
        return self._capabilities

    @property
    def full(self) -> ArchonSetup:
        return self._full

    def setup_for(self, request: ReadoutRequest) -> ArchonSetup:
        """The window that reads ``request``: a region moves lines and pixels into the
        pre/post-skips; binning must divide every read count."""
        full = Window.from_acf(self.acf)
        window = full
        name = self.settings.name
        if (roi := request.roi) is not None:
            if roi.first_line + roi.lines > full.lines:
                raise CameraConfigError(
                    "window",
                    f"lines {roi.first_line}..{roi.first_line + roi.lines} exceed the "
                    f"{full.lines} lines of {name}'s amplifiers",
                )
            if roi.first_pixel + roi.pixels > full.pixels:
                raise CameraConfigError(
                    "window",
                    f"pixels {roi.first_pixel}..{roi.first_pixel + roi.pixels} exceed the "
                    f"{full.pixels} pixels of {name}'s amplifiers",
                )
            window = full.with_changes(
                lines=roi.lines,
                preskip_lines=full.preskip_lines + roi.first_line,
                postskip_lines=full.postskip_lines + full.lines - roi.first_line - roi.lines,
                pixels=roi.pixels,
                preskip_pixels=full.preskip_pixels + roi.first_pixel,
                postskip_pixels=full.postskip_pixels + full.pixels - roi.first_pixel - roi.pixels,
            )
        for what, size, factor in (
            ("lines", window.lines, request.bin_y),
            ("overscan lines", window.overscan_lines, request.bin_y),
            ("pixels", window.pixels, request.bin_x),
            ("overscan pixels", window.overscan_pixels, request.bin_x),
        ):
            if size % factor:
                raise CameraConfigError("binning", f"{size} {what} do not divide by {factor}")
        window = window.with_changes(vbin=request.bin_y, hbin=request.bin_x)
        acf = dataclasses.replace(
            self.acf, line_count=window.line_count, pixel_count=window.pixel_count
        )
        geometry = _geometry(
            acf,
            len(self.settings.ccds),
            window.pixels // window.hbin,
            window.overscan_pixels // window.hbin,
            window.lines // window.vbin,
        )
        return ArchonSetup(window, geometry)

    def camera(self) -> ArchonCamera:
        s = self.settings
        controller = ArchonController(
            s.host,
            s.port,
            self.acf,
            name=s.name,
            timing=ControllerTiming(
                command_timeout=s.command_timeout_s,
                flush_seconds=s.flush_time_s,
                readout_timeout=s.readout_timeout_s,
                shutter_timestamps=s.shutter_timestamps,
                fetch_piece_blocks=s.fetch_piece_kib,
            ),
        )
        return ArchonCamera(controller, self.address)


class ArchonCamera:
    """A camera of the seam over one :class:`ArchonController` (module docstring)."""

    def __init__(self, controller: ArchonController, address: str) -> None:
        self.controller = controller
        self._address = address

    def __repr__(self) -> str:
        return f"ArchonCamera({self.controller.name} at {self._address})"

    @property
    def address(self) -> str:
        return self._address

    @property
    def connected(self) -> bool:
        return self.controller.client.connected

    async def connect(self) -> None:
        await self.controller.connect()

    async def close(self) -> None:
        await self.controller.close()

    async def prepare(self) -> None:
        await self.controller.require_power()
        await self.controller.reset()

    async def settle(self) -> None:
        """An Archon has no cooling loop of its own to wait for."""

    async def stand_down(self) -> None:
        with contextlib.suppress(ArchonError):
            if self.connected:
                await self.controller.reset()

    async def apply(self, setup: object) -> None:
        if not isinstance(setup, ArchonSetup):
            raise TypeError(f"{self!r} takes an ArchonSetup, not {type(setup).__name__}")
        if self.controller.window != setup.window:
            fields = {name: getattr(setup.window, name) for name in Window.__dataclass_fields__}
            await self.controller.set_window(**fields)

    async def telemetry(self) -> Mapping[str, float]:
        return (await self.controller.status()).values

    async def identity(self) -> Mapping[str, str]:
        return (await self.controller.system()).values

    async def flush(self, count: int = 1) -> None:
        await self.controller.flush(count)

    async def expose(self, exptime: float, *, open_shutter: bool) -> float:
        return await self.controller.expose(exptime, open_shutter=open_shutter)

    async def readout(self, *, delay: int = 0) -> int:
        return await self.controller.readout(delay=delay)

    async def fetch(self, buffer: int = -1) -> npt.NDArray[np.uint16] | npt.NDArray[np.uint32]:
        return await self.controller.fetch(buffer)

    async def abort(self) -> None:
        await self.controller.abort()

    def exposure_times(self) -> ExposureTimes:
        return self.controller.exposure_times()

    async def held_frame(self, buffer: int) -> HeldFrame:
        info = (await self.controller.frame()).buffer(buffer)
        return HeldFrame(info.number, info.frame, info.timestamp, info.complete)

    async def secure(self, timeout_s: float) -> SafetyReadings:
        """Abort, reset, then read power and whether any buffer is still being written."""
        found = SafetyReadings()
        # Abort first: it ends an integration with one parameter change; the reset then
        # holds the core, zeroes every exposure parameter and restarts it (shutter shut).
        if await _done(found, "abort", self.controller.abort(readout=False), timeout_s):
            found.actions.append("abort")
        if await _done(found, "reset", self.controller.reset(), timeout_s):
            found.actions.append("reset")
            found.secured = True
        status = await _read(found, "status", self.controller.status(), timeout_s)
        if status is not None:
            found.power, found.power_good = status.power.name, status.power_good
        first = await _read(found, "frame", self.controller.frame(), timeout_s)
        if first is not None:
            await asyncio.sleep(IDLE_CHECK_S)
            second = await _read(found, "frame", self.controller.frame(), timeout_s)
            if second is not None:
                found.idle, found.buffers = _still(first, second), _buffers(second)
        return found


async def _done(
    found: SafetyReadings, name: str, call: Awaitable[object], timeout_s: float
) -> bool:
    """Await one action within ``timeout_s``; on failure note ``name: reason``."""
    return await _read(found, name, _true(call), timeout_s) is not None


async def _true(call: Awaitable[object]) -> bool:
    await call
    return True


async def _read(found: SafetyReadings, name: str, call: Awaitable[T], timeout_s: float) -> T | None:
    """Await one query within ``timeout_s``; on failure note ``name: reason``, give None."""
    try:
        return await asyncio.wait_for(call, timeout_s)
    except (DeviceError, TimeoutError) as exc:
        found.errors.append(f"{name}: {str(exc) or f'no answer within {timeout_s:g} s'}")
        return None


def _buffers(frame: FrameStatus) -> list[BufferReport]:
    """The buffers that ever held a frame (frame counter above 0)."""
    return [
        BufferReport(
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
