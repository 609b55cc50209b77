"""The ASCOM Camera as an Alpaca device view: typed members, capabilities, telemetry.

Every method is one Alpaca member (named in its docstring) with its value checked
and typed, so callers never handle raw JSON. What the camera can do is read once into
:class:`CameraCapabilities`, a plain value a spec can be checked against before the
camera is asked; :meth:`AlpacaCamera.telemetry` gathers what FITS headers record.

Images come as (y, x) numpy arrays (ImageBytes, decoded without a copy; see
:mod:`devices.alpaca.imagebytes`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Coroutine
from dataclasses import dataclass
from datetime import datetime
from enum import IntEnum
from typing import Any, ClassVar, TypeVar

import numpy as np
import numpy.typing as npt

from devices.alpaca.client import AlpacaClient, Device
from devices.alpaca.errors import (
    AlpacaActionNotImplementedError,
    AlpacaCameraFailedError,
    AlpacaHttpError,
    AlpacaNotImplementedError,
    AlpacaTimeoutError,
    AlpacaValueNotSetError,
)
from devices.alpaca.imagebytes import DecodedImage
from devices.alpaca.protocol import as_datetime

T = TypeVar("T")


class CameraState(IntEnum):
    """ASCOM CameraStates."""

    IDLE = 0
    WAITING = 1
    EXPOSING = 2
    READING = 3
    DOWNLOAD = 4
    ERROR = 5


class SensorType(IntEnum):
    """ASCOM SensorType."""

    MONOCHROME = 0
    COLOR = 1
    RGGB = 2
    CMYG = 3
    CMYG2 = 4
    LRGB = 5


@dataclass(frozen=True, slots=True)
class CameraCapabilities:
    """What one camera can do, read from its properties once.

    Optional features a camera does not implement are None (a gain list, a gain
    range, electrons per ADU ...), never a guess.
    """

    sensor_name: str | None
    sensor_type: SensorType | int | None
    sensor_x: int
    sensor_y: int
    pixel_size_x_um: float
    pixel_size_y_um: float
    max_bin_x: int
    max_bin_y: int
    can_asymmetric_bin: bool
    can_abort_exposure: bool
    can_stop_exposure: bool
    has_shutter: bool
    can_set_ccd_temperature: bool
    can_get_cooler_power: bool
    can_fast_readout: bool
    can_pulse_guide: bool
    exposure_min_s: float
    exposure_max_s: float
    exposure_resolution_s: float
    max_adu: int
    electrons_per_adu: float | None
    full_well_capacity: float | None
    gains: tuple[str, ...] | None
    """Named gains (``Gains``), or None when the camera takes a value in gain_range."""
    gain_range: tuple[int, int] | None
    offsets: tuple[str, ...] | None
    offset_range: tuple[int, int] | None
    readout_modes: tuple[str, ...]

    def allows_binning(self, bin_x: int, bin_y: int) -> bool:
        """Whether BinX=bin_x, BinY=bin_y is within this camera's limits."""
        if not (1 <= bin_x <= self.max_bin_x and 1 <= bin_y <= self.max_bin_y):
            return False
        return bin_x == bin_y or self.can_asymmetric_bin

    def allows_exposure(self, duration_s: float) -> bool:
        """Whether an exposure of ``duration_s`` is within ExposureMin..ExposureMax."""
        return self.exposure_min_s <= duration_s <= self.exposure_max_s


_ABSENT = (AlpacaNotImplementedError, AlpacaActionNotImplementedError)


async def optional(call: Awaitable[T]) -> T | None:
    """The value, or None when the device says it lacks the member.

    NotImplemented (0x400, or 0x40C from some servers) and HTTP 400/404 (a member
    older interfaces do not route) mean "absent"; every other error is real.
    """
    try:
        return await call
    except _ABSENT:
        return None
    except AlpacaHttpError as error:
        if error.status in (400, 404):
            return None
        raise


class AlpacaCamera(Device):
    """One Alpaca camera (``/api/v1/camera/{number}/...``) on an AlpacaClient."""

    device_type: ClassVar[str] = "camera"

    def __init__(self, client: AlpacaClient, number: int = 0) -> None:
        super().__init__(client, number)
        self._capabilities: CameraCapabilities | None = None

    # --- identity (name, description, driverinfo ... are in Device) ---------------------

    async def sensor_name(self) -> str:
        """SensorName."""
        return await self.get_str("sensorname")

    async def sensor_type(self) -> SensorType | int:
        """SensorType (an unknown code is kept as its number)."""
        code = await self.get_int("sensortype")
        try:
            return SensorType(code)
        except ValueError:
            return code

    async def identity(self) -> dict[str, object]:
        """Name, description, driver info and version, interface version, sensor name."""
        name, description, info, version, interface, sensor = await asyncio.gather(
            self.name(),
            self.description(),
            self.driver_info(),
            optional(self.driver_version()),
            self.interface_version(),
            optional(self.sensor_name()),
        )
        return {
            "name": name,
            "description": description,
            "driver_info": info,
            "driver_version": version,
            "interface_version": interface,
            "sensor_name": sensor,
        }

    # --- geometry -----------------------------------------------------------------------

    async def camera_x_size(self) -> int:
        """CameraXSize: unbinned pixels across."""
        return await self.get_int("cameraxsize")

    async def camera_y_size(self) -> int:
        """CameraYSize: unbinned pixels down."""
        return await self.get_int("cameraysize")

    async def max_bin_x(self) -> int:
        """MaxBinX."""
        return await self.get_int("maxbinx")

    async def max_bin_y(self) -> int:
        """MaxBinY."""
        return await self.get_int("maxbiny")

    async def pixel_size_x(self) -> float:
        """PixelSizeX, in microns."""
        return await self.get_float("pixelsizex")

    async def pixel_size_y(self) -> float:
        """PixelSizeY, in microns."""
        return await self.get_float("pixelsizey")

    async def bin_x(self) -> int:
        """BinX."""
        return await self.get_int("binx")

    async def bin_y(self) -> int:
        """BinY."""
        return await self.get_int("biny")

    async def set_bin_x(self, value: int) -> None:
        """PUT BinX (the camera refuses values beyond MaxBinX)."""
        await self.put("binx", BinX=int(value))

    async def set_bin_y(self, value: int) -> None:
        """PUT BinY."""
        await self.put("biny", BinY=int(value))

    async def set_binning(self, bin_x: int, bin_y: int | None = None) -> None:
        """BinX then BinY (BinY = BinX unless given)."""
        await self.set_bin_x(bin_x)
        await self.set_bin_y(bin_x if bin_y is None else bin_y)

    async def start_x(self) -> int:
        """StartX, in binned pixels."""
        return await self.get_int("startx")

    async def start_y(self) -> int:
        """StartY, in binned pixels."""
        return await self.get_int("starty")

    async def num_x(self) -> int:
        """NumX: the subframe width, in binned pixels."""
        return await self.get_int("numx")

    async def num_y(self) -> int:
        """NumY: the subframe height, in binned pixels."""
        return await self.get_int("numy")

    async def set_start_x(self, value: int) -> None:
        await self.put("startx", StartX=int(value))

    async def set_start_y(self, value: int) -> None:
        await self.put("starty", StartY=int(value))

    async def set_num_x(self, value: int) -> None:
        await self.put("numx", NumX=int(value))

    async def set_num_y(self, value: int) -> None:
        await self.put("numy", NumY=int(value))

    async def set_subframe(self, start_x: int, start_y: int, num_x: int, num_y: int) -> None:
        """StartX, StartY, NumX, NumY in binned pixels (set binning first)."""
        await self.set_start_x(start_x)
        await self.set_start_y(start_y)
        await self.set_num_x(num_x)
        await self.set_num_y(num_y)

    async def set_full_frame(self) -> None:
        """The whole sensor at the present binning."""
        bin_x, bin_y, size_x, size_y = await asyncio.gather(
            self.bin_x(), self.bin_y(), self.camera_x_size(), self.camera_y_size()
        )
        await self.set_subframe(0, 0, size_x // bin_x, size_y // bin_y)

    # --- gain, offset, readout mode -----------------------------------------------------

    async def gain(self) -> int:
        """Gain: an index into Gains, or a value in GainMin..GainMax."""
        return await self.get_int("gain")

    async def set_gain(self, value: int) -> None:
        await self.put("gain", Gain=int(value))

    async def gains(self) -> list[str]:
        """Gains (NotImplemented when the camera takes gain values instead)."""
        return await self.get_str_list("gains")

    async def gain_min(self) -> int:
        return await self.get_int("gainmin")

    async def gain_max(self) -> int:
        return await self.get_int("gainmax")

    async def offset(self) -> int:
        """Offset: an index into Offsets, or a value in OffsetMin..OffsetMax."""
        return await self.get_int("offset")

    async def set_offset(self, value: int) -> None:
        await self.put("offset", Offset=int(value))

    async def offsets(self) -> list[str]:
        return await self.get_str_list("offsets")

    async def offset_min(self) -> int:
        return await self.get_int("offsetmin")

    async def offset_max(self) -> int:
        return await self.get_int("offsetmax")

    async def readout_mode(self) -> int:
        """ReadoutMode: an index into ReadoutModes."""
        return await self.get_int("readoutmode")

    async def set_readout_mode(self, value: int) -> None:
        await self.put("readoutmode", ReadoutMode=int(value))

    async def readout_modes(self) -> list[str]:
        return await self.get_str_list("readoutmodes")

    # --- cooler -------------------------------------------------------------------------

    async def cooler_on(self) -> bool:
        """CoolerOn."""
        return await self.get_bool("cooleron")

    async def set_cooler_on(self, on: bool) -> None:
        await self.put("cooleron", CoolerOn=bool(on))

    async def ccd_temperature(self) -> float:
        """CCDTemperature, in degrees Celsius."""
        return await self.get_float("ccdtemperature")

    async def ccd_setpoint(self) -> float:
        """SetCCDTemperature as read back: the cooler's target, in degrees Celsius."""
        return await self.get_float("setccdtemperature")

    async def set_ccd_temperature(self, celsius: float) -> None:
        """PUT SetCCDTemperature: the cooler's target."""
        await self.put("setccdtemperature", SetCCDTemperature=float(celsius))

    async def cooler_power(self) -> float:
        """CoolerPower, in percent."""
        return await self.get_float("coolerpower")

    async def heat_sink_temperature(self) -> float:
        """HeatSinkTemperature, in degrees Celsius."""
        return await self.get_float("heatsinktemperature")

    async def can_set_ccd_temperature(self) -> bool:
        return await self.get_bool("cansetccdtemperature")

    async def can_get_cooler_power(self) -> bool:
        return await self.get_bool("cangetcoolerpower")

    # --- exposure life cycle ------------------------------------------------------------

    async def start_exposure(self, duration: float, light: bool = True) -> None:
        """PUT StartExposure: begin integrating ``duration`` seconds, shutter open if light.

        Never retried (a lost answer may hide a started exposure). A busy camera
        refuses: InvalidOperation per the spec, ActionNotImplemented (0x40C) from
        alpaca-simulators.
        """
        if duration < 0 or duration != duration:
            raise ValueError(f"exposure duration must be >= 0 s, not {duration}")
        await self.put("startexposure", Duration=float(duration), Light=bool(light))

    async def camera_state(self) -> CameraState:
        """CameraState."""
        code = await self.get_int("camerastate")
        try:
            return CameraState(code)
        except ValueError:
            return CameraState.ERROR

    async def image_ready(self) -> bool:
        """ImageReady."""
        return await self.get_bool("imageready")

    async def percent_completed(self) -> int:
        """PercentCompleted of the present exposure/readout."""
        return await self.get_int("percentcompleted")

    async def abort_exposure(self) -> None:
        """PUT AbortExposure: end now, discard the image."""
        await self.put("abortexposure")

    async def stop_exposure(self) -> None:
        """PUT StopExposure: end now, read out what was integrated."""
        await self.put("stopexposure")

    async def last_exposure_start_time(self) -> datetime:
        """LastExposureStartTime, as an aware UTC datetime."""
        request = self.client.build_get(self.address, "lastexposurestarttime")
        reply = await self.client.call(request)
        return as_datetime(request, reply.value)

    async def last_exposure_duration(self) -> float:
        """LastExposureDuration, in seconds (what the camera actually integrated)."""
        return await self.get_float("lastexposureduration")

    async def wait_image_ready(self, *, timeout: float, poll: float = 0.02) -> None:
        """Poll ImageReady until true; CameraState Error or ``timeout`` end the wait.

        One poll is two GETs (about 3 ms on the simulator), so ``poll`` is mostly sleep;
        it bounds how late after readout the download starts.
        """
        deadline = time.monotonic() + timeout
        while not await self.image_ready():
            if await self.camera_state() == CameraState.ERROR:
                raise AlpacaCameraFailedError(
                    "the camera reports CameraState Error; no image will come",
                    device=str(self.address),
                    member="camerastate",
                )
            if time.monotonic() >= deadline:
                raise AlpacaTimeoutError(
                    timeout,
                    device=str(self.address),
                    member="imageready",
                    detail="the image did not become ready",
                )
            await asyncio.sleep(poll)

    async def wait_idle(self, *, timeout: float, poll: float = 0.05) -> CameraState:
        """Poll CameraState until Idle (or Error, returned as is)."""
        deadline = time.monotonic() + timeout
        while (state := await self.camera_state()) not in (CameraState.IDLE, CameraState.ERROR):
            if time.monotonic() >= deadline:
                raise AlpacaTimeoutError(
                    timeout,
                    device=str(self.address),
                    member="camerastate",
                    detail=f"still {state.name}",
                )
            await asyncio.sleep(poll)
        return state

    async def download_image(self, *, timeout: float | None = None) -> DecodedImage:
        """GET ImageArray as ImageBytes (JSON if that is all the server has), with header."""
        return await self.client.image(
            self.address.device_type, self.address.number, "imagearray", timeout=timeout
        )

    async def download(self, *, timeout: float | None = None) -> npt.NDArray[np.generic]:
        """The last image as a read-only (y, x) array in the transmitted pixel type."""
        return (await self.download_image(timeout=timeout)).pixels

    # --- capabilities and telemetry -----------------------------------------------------

    async def capabilities(self, *, refresh: bool = False) -> CameraCapabilities:
        """What this camera can do, read from its properties once and kept."""
        if self._capabilities is not None and not refresh:
            return self._capabilities
        t = _Tasks()
        sensor_x, sensor_y = t.spawn(self.camera_x_size()), t.spawn(self.camera_y_size())
        pixel_x, pixel_y = t.spawn(self.pixel_size_x()), t.spawn(self.pixel_size_y())
        max_bin_x, max_bin_y = t.spawn(self.max_bin_x()), t.spawn(self.max_bin_y())
        can_asymmetric = t.spawn(self.get_bool("canasymmetricbin"))
        can_abort = t.spawn(self.get_bool("canabortexposure"))
        can_stop = t.spawn(self.get_bool("canstopexposure"))
        has_shutter = t.spawn(self.get_bool("hasshutter"))
        can_set_temperature = t.spawn(self.can_set_ccd_temperature())
        can_get_power = t.spawn(self.can_get_cooler_power())
        can_fast = t.spawn(self.get_bool("canfastreadout"))
        can_guide = t.spawn(self.get_bool("canpulseguide"))
        exposure_min = t.spawn(self.get_float("exposuremin"))
        exposure_max = t.spawn(self.get_float("exposuremax"))
        exposure_resolution = t.spawn(self.get_float("exposureresolution"))
        max_adu = t.spawn(self.get_int("maxadu"))
        sensor_name = t.spawn(optional(self.sensor_name()))
        sensor_type = t.spawn(optional(self.sensor_type()))
        electrons = t.spawn(optional(self.get_float("electronsperadu")))
        full_well = t.spawn(optional(self.get_float("fullwellcapacity")))
        gains, offsets = t.spawn(optional(self.gains())), t.spawn(optional(self.offsets()))
        gain_min, gain_max = t.spawn(optional(self.gain_min())), t.spawn(optional(self.gain_max()))
        offset_min = t.spawn(optional(self.offset_min()))
        offset_max = t.spawn(optional(self.offset_max()))
        readout_modes = t.spawn(optional(self.readout_modes()))
        await t.settle()
        self._capabilities = CameraCapabilities(
            sensor_name=sensor_name.result(),
            sensor_type=sensor_type.result(),
            sensor_x=sensor_x.result(),
            sensor_y=sensor_y.result(),
            pixel_size_x_um=pixel_x.result(),
            pixel_size_y_um=pixel_y.result(),
            max_bin_x=max_bin_x.result(),
            max_bin_y=max_bin_y.result(),
            can_asymmetric_bin=can_asymmetric.result(),
            can_abort_exposure=can_abort.result(),
            can_stop_exposure=can_stop.result(),
            has_shutter=has_shutter.result(),
            can_set_ccd_temperature=can_set_temperature.result(),
            can_get_cooler_power=can_get_power.result(),
            can_fast_readout=can_fast.result(),
            can_pulse_guide=can_guide.result(),
            exposure_min_s=exposure_min.result(),
            exposure_max_s=exposure_max.result(),
            exposure_resolution_s=exposure_resolution.result(),
            max_adu=max_adu.result(),
            electrons_per_adu=electrons.result(),
            full_well_capacity=full_well.result(),
            gains=_tuple_or_none(gains.result()),
            gain_range=_range_or_none(gain_min.result(), gain_max.result()),
            offsets=_tuple_or_none(offsets.result()),
            offset_range=_range_or_none(offset_min.result(), offset_max.result()),
            readout_modes=tuple(readout_modes.result() or ()),
        )
        return self._capabilities

    async def telemetry(self) -> dict[str, object]:
        """What a FITS header records about the camera now, read in one concurrent burst.

        Keys carry their units (``ccd_temperature_c``). Members the camera lacks are
        left out rather than guessed; a cooler power the camera cannot report is not
        asked for. Names of indexed settings (gain, offset, readout mode) come from the
        capabilities' lists.
        """
        caps = await self.capabilities()
        t = _Tasks()
        state = t.spawn(self.camera_state())
        temperature = t.spawn(_unset_or_absent(self.ccd_temperature()))
        setpoint = t.spawn(
            _unset_or_absent(self.ccd_setpoint()) if caps.can_set_ccd_temperature else _none()
        )
        cooler = t.spawn(_unset_or_absent(self.cooler_on()))
        power = t.spawn(
            _unset_or_absent(self.cooler_power()) if caps.can_get_cooler_power else _none()
        )
        heat_sink = t.spawn(_unset_or_absent(self.heat_sink_temperature()))
        gain = t.spawn(_unset_or_absent(self.gain()))
        offset = t.spawn(_unset_or_absent(self.offset()))
        mode = t.spawn(_unset_or_absent(self.readout_mode()))
        bin_x, bin_y = t.spawn(self.bin_x()), t.spawn(self.bin_y())
        start_x, start_y = t.spawn(self.start_x()), t.spawn(self.start_y())
        num_x, num_y = t.spawn(self.num_x()), t.spawn(self.num_y())
        await t.settle()
        values: dict[str, object] = {
            "camera_state": state.result().name,
            "ccd_temperature_c": temperature.result(),
            "ccd_setpoint_c": setpoint.result(),
            "cooler_on": cooler.result(),
            "cooler_power_pct": power.result(),
            "heat_sink_temperature_c": heat_sink.result(),
            "gain": gain.result(),
            "gain_name": _name_of(gain.result(), caps.gains),
            "offset": offset.result(),
            "offset_name": _name_of(offset.result(), caps.offsets),
            "readout_mode": mode.result(),
            "readout_mode_name": _name_of(mode.result(), caps.readout_modes),
            "bin_x": bin_x.result(),
            "bin_y": bin_y.result(),
            "start_x": start_x.result(),
            "start_y": start_y.result(),
            "num_x": num_x.result(),
            "num_y": num_y.result(),
        }
        return {key: value for key, value in values.items() if value is not None}


class _Tasks:
    """Concurrent reads that fail like ``gather`` (the first error, not an
    ExceptionGroup as a TaskGroup would raise) and keep each result's type."""

    def __init__(self) -> None:
        self._tasks: list[asyncio.Task[Any]] = []

    def spawn(self, call: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        task = asyncio.ensure_future(call)
        self._tasks.append(task)
        return task

    async def settle(self) -> None:
        try:
            await asyncio.gather(*self._tasks)
        except BaseException:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            raise


def _tuple_or_none(items: list[str] | None) -> tuple[str, ...] | None:
    return None if items is None else tuple(items)


def _range_or_none(low: int | None, high: int | None) -> tuple[int, int] | None:
    return None if low is None or high is None else (low, high)


async def _none() -> None:
    return None


async def _unset_or_absent(call: Awaitable[T]) -> T | None:
    """Like :func:`optional`, and ValueNotSet (a setpoint never set) is absent too."""
    try:
        return await optional(call)
    except AlpacaValueNotSetError:
        return None


def _name_of(index: object, names: tuple[str, ...] | None) -> str | None:
    if isinstance(index, int) and names and 0 <= index < len(names):
        return names[index]
    return None
