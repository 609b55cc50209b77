"""Our Alpaca camera adapter against a third-party server and a third-party client.

The server is ``alpaca-simulators`` (tests/alpaca_sim.py: 127.0.0.1, a free port, an
offline synthetic star catalogue); the independent client is ``alpyca``, the official
ASCOM library, asked the same questions about the same exposures. The camera is given
a non-square sensor (768 x 512) and non-square subframes, so an image transposed by
either side cannot match in shape, let alone pixel for pixel.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from devices.alpaca import management
from devices.alpaca.camera import AlpacaCamera, CameraState
from devices.alpaca.client import AlpacaClient
from devices.alpaca.errors import (
    AlpacaActionNotImplementedError,
    AlpacaHttpError,
    AlpacaNotImplementedError,
    AlpacaUnsupportedError,
    AlpacaValueNotSetError,
)
from tests.alpaca_sim import RunningSimulator, running_simulator

pytestmark = pytest.mark.slow

SENSOR = {"cameraxsize": 768, "cameraysize": 512, "numx": 768, "numy": 512}


@pytest.fixture(scope="module")
def simulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSimulator]:
    with running_simulator(tmp_path_factory.mktemp("alpaca-sim"), camera=SENSOR) as sim:
        yield sim
    assert sim.process.poll() is not None, "the simulator is still running"


@pytest.fixture
async def camera(simulator: RunningSimulator) -> AsyncIterator[AlpacaCamera]:
    """Our camera on a fresh client, every device back to its configured state."""
    await asyncio.to_thread(simulator.reload)
    async with AlpacaClient(simulator.host, simulator.port, timeout=5) as client:
        camera = AlpacaCamera(client)
        await camera.connect(timeout=5)
        yield camera


@pytest.fixture
def alpyca_camera(simulator: RunningSimulator) -> Any:
    from alpaca.camera import Camera  # type: ignore[import-untyped]

    return Camera(f"{simulator.host}:{simulator.port}", 0)


def _alpyca_image(alpyca_camera: Any) -> npt.NDArray[np.int64]:
    """alpyca's ImageArray is nested [x][y]; numpy's (y, x) is its transpose."""
    return np.array(alpyca_camera.ImageArray, dtype=np.int64).T


def _alpyca_expose(alpyca_camera: Any, duration: float, light: bool) -> npt.NDArray[np.int64]:
    alpyca_camera.StartExposure(duration, light)
    deadline = time.monotonic() + 60
    while not alpyca_camera.ImageReady:
        assert time.monotonic() < deadline, "alpyca's exposure never became ready"
        time.sleep(0.02)
    return _alpyca_image(alpyca_camera)


async def _expose(camera: AlpacaCamera, duration: float, light: bool) -> npt.NDArray[np.generic]:
    await camera.start_exposure(duration, light)
    await camera.wait_image_ready(timeout=duration + 60)
    return await camera.download()


async def test_properties_agree_with_alpyca(camera: AlpacaCamera, alpyca_camera: Any) -> None:
    caps = await camera.capabilities()
    identity = await camera.identity()
    telemetry = await camera.telemetry()

    def read_alpyca() -> dict[str, Any]:
        c = alpyca_camera
        return {
            "name": c.Name,
            "description": c.Description,
            "driver_info": ", ".join(c.DriverInfo),  # alpyca splits it at commas
            "interface_version": c.InterfaceVersion,
            "sensor_name": c.SensorName,
            "connected": c.Connected,
            "sensor": (c.CameraXSize, c.CameraYSize),
            "max_bin": (c.MaxBinX, c.MaxBinY),
            "pixel_size": (c.PixelSizeX, c.PixelSizeY),
            "can": (c.CanAbortExposure, c.CanStopExposure, c.CanAsymmetricBin, c.HasShutter),
            "cooling": (c.CanSetCCDTemperature, c.CanGetCoolerPower),
            "gains": list(c.Gains),
            "readout_modes": list(c.ReadoutModes),
            "ccd_temperature": c.CCDTemperature,
            "binning": (c.BinX, c.BinY),
            "frame": (c.StartX, c.StartY, c.NumX, c.NumY),
            "state": int(c.CameraState),
        }

    theirs = await asyncio.to_thread(read_alpyca)
    assert theirs["connected"] is True  # our connect() is visible to another client
    for key in ("name", "description", "driver_info", "interface_version", "sensor_name"):
        assert identity[key] == theirs[key], key
    assert (caps.sensor_x, caps.sensor_y) == theirs["sensor"] == (768, 512)
    assert (caps.max_bin_x, caps.max_bin_y) == theirs["max_bin"]
    assert (caps.pixel_size_x_um, caps.pixel_size_y_um) == theirs["pixel_size"]
    assert (
        caps.can_abort_exposure,
        caps.can_stop_exposure,
        caps.can_asymmetric_bin,
        caps.has_shutter,
    ) == theirs["can"]
    assert (caps.can_set_ccd_temperature, caps.can_get_cooler_power) == theirs["cooling"]
    assert list(caps.gains or ()) == theirs["gains"]
    assert list(caps.readout_modes) == theirs["readout_modes"]
    assert telemetry["ccd_temperature_c"] == theirs["ccd_temperature"]
    assert (telemetry["bin_x"], telemetry["bin_y"]) == theirs["binning"]
    frame = (telemetry["start_x"], telemetry["start_y"], telemetry["num_x"], telemetry["num_y"])
    assert frame == theirs["frame"]
    assert CameraState[str(telemetry["camera_state"])] == theirs["state"]


async def test_a_dark_subframe_is_the_image_alpyca_reads(
    camera: AlpacaCamera, alpyca_camera: Any
) -> None:
    await camera.set_subframe(32, 16, 300, 200)
    before = datetime.now(UTC)
    ours = await _expose(camera, 1.0, light=False)
    assert ours.shape == (200, 300)  # (NumY, NumX)
    assert ours.dtype == np.uint16
    # The simulator keeps the frame after a download (only ImageReady turns false), so
    # alpyca can download the very same exposure.
    assert await camera.image_ready() is False
    theirs = await asyncio.to_thread(_alpyca_image, alpyca_camera)
    assert theirs.shape == ours.shape
    np.testing.assert_array_equal(ours, theirs)
    assert ours.std() > 0  # noise, so a transposed or shuffled copy could not match
    assert await camera.last_exposure_duration() == 1.0
    started = await camera.last_exposure_start_time()
    assert before.timestamp() - 1 <= started.timestamp() <= time.time()


async def test_a_light_frame_shows_the_same_stars_to_both_clients(
    camera: AlpacaCamera, alpyca_camera: Any
) -> None:
    ours = np.asarray(await _expose(camera, 0.2, light=True), dtype=np.int64)
    theirs = await asyncio.to_thread(_alpyca_expose, alpyca_camera, 0.2, True)
    assert ours.shape == theirs.shape == (512, 768)
    background = np.median(ours)
    assert ours.max() > background + 1000, "no star in the light frame"
    # Two exposures of a tracked field: the stars are where they were. Compare the
    # brightest pixel and the frames as a whole (noise may differ between exposures).
    assert np.unravel_index(ours.argmax(), ours.shape) == np.unravel_index(
        theirs.argmax(), theirs.shape
    )
    assert np.corrcoef(ours.ravel(), theirs.ravel())[0, 1] > 0.9
    # And the star is not at the mirrored place, which a (y, x) swap would give.
    y, x = np.unravel_index(ours.argmax(), ours.shape)
    assert ours[y, x] > background + 1000


async def test_binning_shrinks_the_download(camera: AlpacaCamera) -> None:
    await camera.set_binning(2)
    await camera.set_subframe(0, 0, 384, 256)
    image = await _expose(camera, 0.1, light=False)
    assert image.shape == (256, 384)


async def test_abort_leaves_the_camera_idle_without_an_image(camera: AlpacaCamera) -> None:
    duration = 1.0
    await camera.start_exposure(duration, light=False)
    started = time.monotonic()
    deadline = started + 5
    while await camera.camera_state() != CameraState.EXPOSING:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    await camera.abort_exposure()
    assert await camera.camera_state() == CameraState.IDLE
    assert await camera.image_ready() is False
    # alpaca-simulators lets the aborted exposure's task run on (it turns the camera to
    # Reading, then Idle with an image, when the duration is over): wait it out so the
    # next test starts on a quiet camera.
    await asyncio.sleep(max(0.0, started + duration + 0.5 - time.monotonic()))
    await camera.wait_idle(timeout=10)


async def test_start_exposure_while_busy_is_refused(camera: AlpacaCamera) -> None:
    await camera.start_exposure(0.5, light=False)
    with pytest.raises(AlpacaActionNotImplementedError) as info:
        await camera.start_exposure(0.5, light=False)
    assert info.value.number == 0x40C  # the simulator's deviation; the spec says 0x40B
    assert info.value.member == "startexposure"
    await camera.wait_image_ready(timeout=30)
    assert (await camera.download()).shape == (512, 768)


async def test_an_invalid_binx_is_refused_with_the_typed_error(camera: AlpacaCamera) -> None:
    caps = await camera.capabilities()
    with pytest.raises(AlpacaValueNotSetError) as info:
        await camera.set_bin_x(caps.max_bin_x + 1)
    error = info.value
    assert error.number == 0x402
    assert f"Invalid binning value: {caps.max_bin_x + 1}" in error.message
    assert error.device == f"camera 0 at {camera.client.host}:{camera.client.port}"
    assert error.member == "binx"
    assert await camera.bin_x() == 1


async def test_a_bad_value_is_http_422(camera: AlpacaCamera) -> None:
    with pytest.raises(AlpacaHttpError) as info:
        await camera.put("binx", BinX="two")
    assert info.value.status == 422
    assert "BinX" in info.value.body


async def test_an_unknown_device_number_is_not_implemented(camera: AlpacaCamera) -> None:
    with pytest.raises(AlpacaNotImplementedError, match="camera:7 not found") as info:
        await AlpacaCamera(camera.client, 7).name()
    assert info.value.device == f"camera 7 at {camera.client.host}:{camera.client.port}"


async def test_the_simulator_has_no_management_api(camera: AlpacaCamera) -> None:
    with pytest.raises(AlpacaUnsupportedError) as info:
        await management.configured_devices(camera.client)
    assert info.value.status in (400, 404)
