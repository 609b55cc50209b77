"""An Alpaca camera as the instrument's camera: every flow on the third-party
alpaca-simulators server, the shipped sim-alpaca.yaml, cooling, and bad input."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy.io import fits

from devices.base import DeviceStateError
from flows.exposure import calibrations, observe_night, run_sequence, take_exposure
from flows.history import recent_runs
from flows.safety import make_safe
from schemas.errors import ConfigError
from schemas.exposure import CalibrationSpec, ExposureSpec, NightPlan, SequenceSpec
from schemas.instrument import InstrumentConfig, load_instrument
from tasks.control.instrument import open_instrument, plan_instrument

from .alpaca_sim import RunningSimulator, running_simulator
from .conftest import REPO, harness_api_env
from .fitscheck import assert_fitsverify_clean

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]

SIM_ALPACA = REPO / "deploy" / "instruments" / "sim-alpaca.yaml"


@pytest.fixture(scope="module")
def alpaca_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSimulator]:
    with running_simulator(tmp_path_factory.mktemp("alpaca-instrument")) as sim:
        yield sim


def _instrument(sim: RunningSimulator, data: Path, **camera: Any) -> InstrumentConfig:
    """sim-alpaca.yaml on the fixture's server, its own data root and Prefect limit."""
    config = load_instrument(SIM_ALPACA).with_overrides(port=sim.port, data_root=data)
    dump = config.model_dump()
    dump["controllers"][0].update(camera)
    dump["controllers"][0]["cooling"]["stable_s"] = 0.2
    dump["concurrency_name"] = f"instrument-alpaca-{uuid.uuid4().hex[:12]}"
    dump["site"] = None
    return InstrumentConfig.model_validate(dump)


@pytest.fixture
async def alpaca_instrument(alpaca_server: RunningSimulator, tmp_path: Path) -> InstrumentConfig:
    await asyncio.to_thread(alpaca_server.reload)
    return _instrument(alpaca_server, tmp_path / "data")


def test_the_readme_command_takes_a_dark_on_the_simulator(
    alpaca_server: RunningSimulator, tmp_path: Path
) -> None:
    alpaca_server.reload()
    data = tmp_path / "data"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "flows.cli",
            "expose",
            "--instrument",
            str(SIM_ALPACA),
            "--port",
            str(alpaca_server.port),
            "--type",
            "dark",
            "--exptime",
            "1",
            "--data",
            str(data),
        ],
        cwd=REPO,
        env=harness_api_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    [path] = data.glob("*/alpacasim-c0-*.fits")
    assert_fitsverify_clean(path)
    with fits.open(path) as hdus:
        header = hdus[0].header
        assert hdus[0].data.shape == (1024, 1024)
        assert header["IMAGETYP"] == "dark"
        assert header["SHUTTER"] == "closed"
        assert header["SET-TEMP"] == -10.0
        assert abs(header["CCD-TEMP"] - -10.0) <= 0.5
        assert header["TIMESRC"] == "camera clock"
        assert header["EXPMEAS"] == pytest.approx(1.0, abs=0.01)


async def test_a_binned_window_and_a_light_frame(alpaca_instrument: InstrumentConfig) -> None:
    window = ExposureSpec.model_validate(
        {
            "image_type": "dark",
            "exptime": 0.2,
            "binning": {"x": 2, "y": 2},
            "window": {"first_line": 256, "lines": 512, "first_pixel": 128, "pixels": 256},
        }
    )
    [dark] = await take_exposure(window, alpaca_instrument)
    with fits.open(dark.files[0].path) as hdus:
        assert hdus[0].data.shape == (256, 128)
        assert hdus[0].header["CCDSUM"] == "2 2"
        assert hdus[0].header["DETSECA"] == "[129:384,257:768]"
    light = ExposureSpec.model_validate(
        {"image_type": "object", "exptime": 1.0, "binning": {"x": 2, "y": 2}}
    )
    [frame] = await take_exposure(light, alpaca_instrument)
    with fits.open(frame.files[0].path) as hdus:
        assert hdus[0].data.shape == (512, 512)
        assert hdus[0].header["SHUTTER"] == "open"
        # The synthetic star field: stars far above the sky, unlike a dark.
        assert float(np.max(hdus[0].data)) > 4 * float(np.median(hdus[0].data))


async def test_a_sequence_calibrations_with_masters_a_night_and_history(
    alpaca_instrument: InstrumentConfig,
) -> None:
    sequence = SequenceSpec.model_validate(
        {"name": "alpaca-seq", "exposures": [{"image_type": "dark", "exptime": 0.2, "count": 2}]}
    )
    taken = await run_sequence(sequence, alpaca_instrument)
    assert [e.expnum for e in taken.exposures] == [1, 2]

    spec = CalibrationSpec(
        name="alpaca-cals",
        biases=3,
        darks=[{"exptime": 0.5, "count": 3}],
        flats=[{"exptime": 2.0, "count": 3}],  # the simulator's sky is faint
    )
    result = await calibrations(spec, alpaca_instrument)
    assert [m.kind for m in result.masters] == ["bias", "dark", "flat"]
    for master in result.masters:
        assert_fitsverify_clean(master.file.path)

    night = NightPlan.model_validate(
        {
            "name": "alpaca-night",
            "light_until": None,
            "steps": [
                {"name": "n1", "exposures": [{"image_type": "object", "exptime": 0.2}]},
            ],
        }
    )
    [observed] = await observe_night(night, alpaca_instrument)
    assert not observed.stopped
    assert [e.image_type.value for e in observed.exposures] == ["object"]
    numbers = [e.expnum for e in (*taken.exposures, *result.exposures, *observed.exposures)]
    assert len(set(numbers)) == len(numbers)  # never reused

    runs = await recent_runs(limit=50)
    ours = {r.flow: r for r in runs if r.parameters.instrument == alpaca_instrument.name}
    assert {"run-sequence", "calibrations", "observe-night"} <= set(ours)
    assert ours["calibrations"].exposures == 9
    assert ours["calibrations"].parameters.planned == {"bias": 3, "dark": 3, "flat": 3}


async def test_make_safe_aborts_an_exposure_under_way(
    alpaca_instrument: InstrumentConfig, alpaca_server: RunningSimulator
) -> None:
    [plan] = plan_instrument(alpaca_instrument)
    async with open_instrument([plan]) as [session]:
        camera = session.controller
        exposing = asyncio.ensure_future(camera.expose(30.0, open_shutter=True))
        await asyncio.sleep(0.5)
        report = await make_safe(alpaca_instrument)
        with pytest.raises(DeviceStateError, match="ended from outside"):
            await asyncio.wait_for(exposing, 10)
    [item] = report.controllers
    assert report.safe, report.problems()
    assert item.actions == ["abort"]
    assert item.idle is True
    assert item.address == f"127.0.0.1:{alpaca_server.port} camera 0"


async def test_a_camera_that_is_not_what_the_config_says_is_refused(
    alpaca_server: RunningSimulator, tmp_path: Path
) -> None:
    await asyncio.to_thread(alpaca_server.reload)
    instrument = _instrument(alpaca_server, tmp_path / "data", sensor_x=2048)
    spec = ExposureSpec(image_type="dark", exptime=0.1)
    with pytest.raises(Exception, match=r"sensor_x is 2048 in the config.*CameraXSize is 1024"):
        await take_exposure(spec, instrument)
    assert not (tmp_path / "data").exists() or not list((tmp_path / "data").rglob("*.fits"))


async def test_an_unknown_device_number_is_named(
    alpaca_server: RunningSimulator, tmp_path: Path
) -> None:
    instrument = _instrument(alpaca_server, tmp_path / "data", device_number=7)
    with pytest.raises(Exception, match="device_number 7"):
        await take_exposure(ExposureSpec(image_type="bias"), instrument)


def test_a_spec_the_camera_cannot_read_is_refused_before_contact(tmp_path: Path) -> None:
    # Port 9 has no server: planning must not need one.
    config = load_instrument(SIM_ALPACA).with_overrides(port=9, data_root=tmp_path)
    plans = plan_instrument(config)
    from flows.frame import plan_exposure

    for spec, field in (
        ({"binning": {"x": 8, "y": 8}}, "binning: 8x8 exceeds cam0's largest binning 4x4"),
        (
            {"window": {"first_line": 0, "lines": 2000, "pixels": 100}},
            "window: lines 0..2000 exceed the 1024 lines",
        ),
        ({"binning": {"x": 3, "y": 3}}, "binning: 1024 pixels do not divide by 3"),
        ({"readout_delay": 5}, "readout_delay: cam0 cannot delay its readout"),
    ):
        exposure = ExposureSpec.model_validate({"image_type": "dark", "exptime": 1.0, **spec})
        with pytest.raises(ConfigError, match=field):
            plan_exposure(exposure, config, plans)
