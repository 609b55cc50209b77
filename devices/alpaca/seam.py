"""An Alpaca camera as a camera of the instrument (devices/camera.py's seam).

:class:`AlpacaModel` plans from the config alone: the sensor size, binning limits
and shutter the config states (checked against the camera when a run connects), the
frame geometry (one CCD read by one amplifier, no overscan: Alpaca cameras do not
expose theirs), and the subframe and binning an exposure asks for. What an Alpaca
camera cannot do is capabilities data: no readout delay, no frame buffers a recovery
could read after a crash.

:class:`AlpacaSeamCamera` is the connected adapter: the exposure life cycle of
:class:`devices.alpaca.ccd.AlpacaCcdCamera`, plus prepare (connect the device, check
it is the camera the config describes, set gain/offset/readout mode, start the
cooler), settle (the cooled sensor stable at its set point, devices/alpaca/cooling.py),
telemetry for headers, and make safe (AbortExposure, then Idle confirmed).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from devices.alpaca.camera import AlpacaCamera, CameraState
from devices.alpaca.ccd import AlpacaCcdCamera
from devices.alpaca.client import AlpacaClient
from devices.alpaca.cooling import CoolingTarget, StabilityWindow, wait_until_stable
from devices.alpaca.errors import AlpacaHttpError, AlpacaInvalidValueError
from devices.base import (
    CameraCapabilities,
    DeviceError,
    DeviceStateError,
    DeviceUnsupportedError,
)
from devices.camera import (
    CameraConfigError,
    FrameGeometry,
    HeldFrame,
    ReadoutRequest,
    SafetyReadings,
)
from devices.geometry import AmplifierRegion, CcdRegion, Tap

T = TypeVar("T")

NO_BUFFERS = "an Alpaca camera keeps no frame after its client dies"
NO_DELAY = "the Alpaca camera interface has no readout delay"
NO_OVERLAP = "an Alpaca camera holds one image, which StartExposure discards"
NO_SHUTTER = "the config says it has no shutter (has_shutter: false)"


class CoolingSettings(Protocol):
    @property
    def set_point_c(self) -> float: ...
    @property
    def tolerance_c(self) -> float: ...
    @property
    def stable_s(self) -> float: ...
    @property
    def timeout_s(self) -> float: ...


class AlpacaSettings(Protocol):
    """The fields of an instrument config's Alpaca camera entry this package reads
    (schemas.instrument.AlpacaCameraConfig has them)."""

    @property
    def name(self) -> str: ...
    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def device_number(self) -> int: ...
    @property
    def sensor_x(self) -> int: ...
    @property
    def sensor_y(self) -> int: ...
    @property
    def max_bin_x(self) -> int: ...
    @property
    def max_bin_y(self) -> int: ...
    @property
    def has_shutter(self) -> bool: ...
    @property
    def gain(self) -> int | None: ...
    @property
    def offset(self) -> int | None: ...
    @property
    def readout_mode(self) -> int | None: ...
    @property
    def ccds(self) -> Sequence[object]: ...
    @property
    def command_timeout_s(self) -> float: ...
    @property
    def readout_timeout_s(self) -> float: ...
    @property
    def cooling(self) -> CoolingSettings | None: ...


@dataclass(frozen=True, slots=True)
class AlpacaSetup:
    """Binning and subframe (StartX/StartY/NumX/NumY in binned pixels)."""

    bin_x: int
    bin_y: int
    start_x: int
    start_y: int
    num_x: int
    num_y: int
    geometry: FrameGeometry


def one_amplifier_layout(lines: int, pixels: int) -> tuple[CcdRegion, ...]:
    """One CCD read by one amplifier, in the image's own orientation."""
    rows, cols = slice(0, lines), slice(0, pixels)
    amplifier = AmplifierRegion(
        name="A",
        tap=Tap(index=0, channel="0", direction="L", gain=1.0, offset=0.0),
        buffer_rows=rows,
        buffer_cols=cols,
        flip_rows=False,
        flip_cols=False,
        ccd_rows=rows,
        ccd_cols=cols,
    )
    return (CcdRegion(0, rows, cols, (lines, pixels), (amplifier,)),)


class AlpacaModel:
    """An Alpaca camera planned from its config (module docstring)."""

    def __init__(self, settings: AlpacaSettings) -> None:
        if len(settings.ccds) != 1:
            raise CameraConfigError(
                "ccds", f"an Alpaca camera is one CCD; the config names {len(settings.ccds)}"
            )
        self.settings = settings
        why_not = {
            "readout_delay": NO_DELAY,
            "buffered_frames": NO_BUFFERS,
            "fetch_overlaps_next": NO_OVERLAP,
        }
        if not settings.has_shutter:
            why_not["opens_shutter"] = NO_SHUTTER
        self._capabilities = CameraCapabilities(
            opens_shutter=settings.has_shutter,
            readout_delay=False,
            buffered_frames=0,
            cooled=settings.cooling is not None,
            why_not=why_not,
        )
        self._full = self.setup_for(ReadoutRequest())

    @property
    def name(self) -> str:
        return self.settings.name

    @property
    def address(self) -> str:
        s = self.settings
        return f"{s.host}:{s.port} camera {s.device_number}"

    @property
    def capabilities(self) -> CameraCapabilities:
        return self._capabilities

    @property
    def full(self) -> AlpacaSetup:
        return self._full

    def setup_for(self, request: ReadoutRequest) -> AlpacaSetup:
        s = self.settings
        bx, by = request.bin_x, request.bin_y
        if bx > s.max_bin_x or by > s.max_bin_y:
            raise CameraConfigError(
                "binning",
                f"{bx}x{by} exceeds {s.name}'s largest binning {s.max_bin_x}x{s.max_bin_y}",
            )
        roi = request.roi
        first_pixel, pixels = (roi.first_pixel, roi.pixels) if roi else (0, s.sensor_x)
        first_line, lines = (roi.first_line, roi.lines) if roi else (0, s.sensor_y)
        if first_pixel + pixels > s.sensor_x:
            raise CameraConfigError(
                "window",
                f"pixels {first_pixel}..{first_pixel + pixels} exceed the {s.sensor_x} "
                f"pixels of {s.name}'s sensor",
            )
        if first_line + lines > s.sensor_y:
            raise CameraConfigError(
                "window",
                f"lines {first_line}..{first_line + lines} exceed the {s.sensor_y} lines of "
                f"{s.name}'s sensor",
            )
        for what, size, factor in (
            ("first pixel", first_pixel, bx),
            ("pixels", pixels, bx),
            ("first line", first_line, by),
            ("lines", lines, by),
        ):
            if size % factor:
                raise CameraConfigError("binning", f"{size} {what} do not divide by {factor}")
        num_x, num_y = pixels // bx, lines // by
        geometry = FrameGeometry(
            buffer_shape=(num_y, num_x),
            layout=one_amplifier_layout(num_y, num_x),
            pixels=num_x,
            overscan_pixels=0,
            lines=num_y,
        )
        return AlpacaSetup(bx, by, first_pixel // bx, first_line // by, num_x, num_y, geometry)

    def camera(self) -> AlpacaSeamCamera:
        s = self.settings
        client = AlpacaClient(
            s.host, s.port, timeout=s.command_timeout_s, image_timeout=s.readout_timeout_s
        )
        return AlpacaSeamCamera(AlpacaCamera(client, s.device_number), s)


def _target(cooling: CoolingSettings | None) -> CoolingTarget | None:
    if cooling is None:
        return None
    return CoolingTarget(
        cooling.set_point_c, cooling.tolerance_c, cooling.stable_s, cooling.timeout_s
    )


class AlpacaSeamCamera(AlpacaCcdCamera):
    """A camera of the seam over one Alpaca camera device (module docstring)."""

    def __init__(self, camera: AlpacaCamera, settings: AlpacaSettings) -> None:
        super().__init__(camera, ready_margin_s=settings.readout_timeout_s)
        self.settings = settings
        target = _target(settings.cooling)
        self._stability = StabilityWindow(target) if target is not None else None
        self._applied: AlpacaSetup | None = None
        self._connected = False

    @property
    def address(self) -> str:
        return str(self.camera.address)

    @property
    def connected(self) -> bool:
        return self._connected

    async def connect(self) -> None:
        """Connect the device (Platform 7 connect, or Connected=True); a server without
        this camera is an error naming ``device_number``."""
        s = self.settings
        try:
            await self.camera.connect(timeout=s.command_timeout_s)
        except (DeviceUnsupportedError, AlpacaHttpError) as exc:
            if isinstance(exc, AlpacaHttpError) and exc.status not in (400, 404):
                raise
            raise DeviceStateError(
                f"{s.name}: no camera with device_number {s.device_number} at "
                f"{s.host}:{s.port} ({exc})"
            ) from exc
        self._connected = True

    async def close(self) -> None:
        self._connected = False
        with contextlib.suppress(DeviceError):
            await self.camera.client.aclose()

    async def prepare(self) -> None:
        """Check it is the camera the config says, set it up, start the cooler."""
        await self._check_identity()
        if (state := await self.camera.camera_state()) is not CameraState.IDLE:
            await self._abort_quietly()
            state = await self.camera.wait_idle(timeout=self.settings.command_timeout_s)
            if state is not CameraState.IDLE:
                raise DeviceStateError(f"{self.address}: camera is {state.name}, not idle")
        s = self.settings
        for field, value, setter in (
            ("gain", s.gain, self.camera.set_gain),
            ("offset", s.offset, self.camera.set_offset),
            ("readout_mode", s.readout_mode, self.camera.set_readout_mode),
        ):
            if value is not None:
                await _refused_names(field, value, setter(value))
        self._applied = None
        if s.cooling is not None:
            await _refused_names(
                "cooling.set_point_c",
                s.cooling.set_point_c,
                self.camera.set_ccd_temperature(s.cooling.set_point_c),
            )
            await self.camera.set_cooler_on(True)
            if self._stability is not None:
                self._stability.forget()

    async def _check_identity(self) -> None:
        """The camera the config describes: size, binning, shutter, cooler."""
        s = self.settings
        size_x, size_y, max_x, max_y, shutter, can_cool = await asyncio.gather(
            self.camera.camera_x_size(),
            self.camera.camera_y_size(),
            self.camera.max_bin_x(),
            self.camera.max_bin_y(),
            self.camera.get_bool("hasshutter"),
            self.camera.can_set_ccd_temperature(),
        )
        problems = [
            f"{field} is {want} in the config, the camera's {member} is {have}"
            for field, member, want, have in (
                ("sensor_x", "CameraXSize", s.sensor_x, size_x),
                ("sensor_y", "CameraYSize", s.sensor_y, size_y),
            )
            if want != have
        ]
        if s.max_bin_x > max_x or s.max_bin_y > max_y:
            problems.append(
                f"max_bin_x/max_bin_y are {s.max_bin_x}/{s.max_bin_y} in the config, the "
                f"camera's MaxBinX/MaxBinY are {max_x}/{max_y}"
            )
        if s.has_shutter and not shutter:
            problems.append("has_shutter is true in the config, the camera's HasShutter is false")
        if s.cooling is not None and not can_cool:
            problems.append("cooling is configured, the camera's CanSetCCDTemperature is false")
        if problems:
            raise DeviceStateError(
                f"{s.name} ({self.address}) is not the camera the config describes: "
                + "; ".join(problems)
            )

    async def settle(self) -> None:
        """With cooling configured: return once the sensor is stable at its set point."""
        if self._stability is None:
            return
        await wait_until_stable(self.camera.ccd_temperature, self._stability, device=self.address)

    async def stand_down(self) -> None:
        """End an exposure under way (the cooler stays on: the next run wants it cold)."""
        if self._connected:
            await self._abort_quietly()

    async def apply(self, setup: object) -> None:
        if not isinstance(setup, AlpacaSetup):
            raise TypeError(f"{self!r} takes an AlpacaSetup, not {type(setup).__name__}")
        if setup == self._applied:
            return
        self._applied = None  # half-applied: send it all again next time
        await self.camera.set_binning(setup.bin_x, setup.bin_y)
        await self.camera.set_subframe(setup.start_x, setup.start_y, setup.num_x, setup.num_y)
        self._applied = setup

    async def telemetry(self) -> Mapping[str, float]:
        """Numeric readings for ``controller.status.KEY`` header sources."""
        values = await self.camera.telemetry()
        found: dict[str, float] = {}
        for key, name in TELEMETRY_KEYS.items():
            value = values.get(key)
            if isinstance(value, int | float):  # bool is an int: 1.0 or 0.0
                found[name] = float(value)
        return found

    async def identity(self) -> Mapping[str, str]:
        """Names and versions for ``controller.system.KEY`` header sources."""
        found = await self.camera.identity()
        return {key.upper(): str(value) for key, value in found.items() if value is not None}

    async def held_frame(self, buffer: int) -> HeldFrame:
        raise DeviceUnsupportedError(f"{self.address}: {NO_BUFFERS}")

    async def secure(self, timeout_s: float) -> SafetyReadings:
        """AbortExposure, then Idle confirmed."""
        found = SafetyReadings(power=None)
        try:
            await asyncio.wait_for(self.camera.abort_exposure(), timeout_s)
            found.actions.append("abort")
        except (DeviceError, TimeoutError) as exc:
            found.errors.append(f"abort: {str(exc) or f'no answer within {timeout_s:g} s'}")
        started = time.monotonic()
        try:
            state = await self.camera.wait_idle(timeout=timeout_s)
        except (DeviceError, TimeoutError) as exc:
            found.errors.append(f"idle: {str(exc) or f'no answer within {timeout_s:g} s'}")
        else:
            found.idle = state is CameraState.IDLE
            found.secured = found.idle
            if not found.idle:
                found.errors.append(
                    f"idle: CameraState {state.name} after {time.monotonic() - started:.1f} s"
                )
        return found


TELEMETRY_KEYS = {
    "ccd_temperature_c": "CCD_TEMPERATURE",
    "ccd_setpoint_c": "SET_TEMPERATURE",
    "cooler_on": "COOLER_ON",
    "cooler_power_pct": "COOLER_POWER",
    "heat_sink_temperature_c": "HEATSINK_TEMPERATURE",
    "gain": "GAIN",
    "offset": "OFFSET",
    "readout_mode": "READOUT_MODE",
}
"""AlpacaCamera.telemetry() key -> header source key (``controller.status.KEY``)."""


async def _refused_names(field: str, value: object, call: Awaitable[None]) -> None:
    """Run a setter; a camera's InvalidValue becomes an error naming the config field."""
    try:
        await call
    except AlpacaInvalidValueError as exc:
        raise CameraConfigError(field, f"the camera refuses {value!r}: {exc}") from exc
