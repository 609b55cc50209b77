"""Cooling: the stability rule on its own, then a cooling curve on the simulator."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devices.alpaca.cooling import CoolingTarget, StabilityWindow, wait_until_stable
from devices.base import DeviceTimeoutError
from schemas.errors import ConfigError
from schemas.instrument import InstrumentConfig, load_instrument
from tasks.control.instrument import open_instrument, plan_instrument

from .alpaca_sim import RunningSimulator, running_simulator
from .conftest import REPO

SIM_ALPACA = REPO / "deploy" / "instruments" / "sim-alpaca.yaml"
TARGET = CoolingTarget(set_point_c=-10.0, tolerance_c=0.5, stable_s=2.0, timeout_s=60.0)


@pytest.mark.parametrize(
    "readings",
    [
        [(0, 5.0), (1, -2.0), (2, -9.6), (3, -9.8), (4, -10.1)],  # cooling down
        [(0, -25.0), (1, -14.0), (2, -10.4), (3, -10.2), (4, -9.9)],  # warming up
    ],
)
def test_stable_after_the_window_from_either_side(readings: list[tuple[float, float]]) -> None:
    window = StabilityWindow(TARGET)
    verdicts = [window.add(at, temperature) for at, temperature in readings]
    assert verdicts == [False, False, False, False, True]  # within since t=2, stable at t=4


def test_one_reading_outside_starts_the_window_again() -> None:
    window = StabilityWindow(TARGET)
    assert not window.add(0, -10.0)
    assert not window.add(1.5, -10.6)  # overshoot
    assert not window.add(2.5, -10.0)
    assert not window.add(4.0, -10.0)
    assert window.add(4.5, -10.0)


def test_a_zero_window_is_stable_at_the_first_reading_within() -> None:
    window = StabilityWindow(CoolingTarget(-10.0, 0.5, 0.0, 10.0))
    assert window.add(0, -10.3)


async def test_a_camera_that_never_gets_there_times_out_naming_the_reading() -> None:
    target = CoolingTarget(-10.0, 0.5, 0.0, 0.2)

    async def read() -> float:
        return -4.0

    with pytest.raises(DeviceTimeoutError, match=r"-4.00 C not stable .* set point -10 C"):
        await wait_until_stable(read, StabilityWindow(target), device="cam", poll_s=0.05)


@pytest.mark.parametrize(("set_point", "lowest"), [(-70.0, -60.0), (-51.0, -50.0)])
def test_a_set_point_below_the_coolers_range_is_refused_at_load(
    tmp_path: Path, set_point: float, lowest: float
) -> None:
    text = SIM_ALPACA.read_text().replace("set_point_c: -10", f"set_point_c: {set_point}")
    text = text.replace("lowest_c: -50", f"lowest_c: {lowest}")
    path = tmp_path / "cold.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"controllers\.0\.cooling: .*below the cooler's range"):
        load_instrument(path)


@pytest.fixture(scope="module")
def warm_camera(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSimulator]:
    """A camera whose sensor starts at +10 C and takes 3 s to reach a new set point."""
    camera = {"ccdtemperature": 10.0, "setccdtemperature": 10.0, "cooling_time": 3.0}
    with running_simulator(tmp_path_factory.mktemp("cooling"), camera=camera) as sim:
        yield sim


def _instrument(sim: RunningSimulator, tmp_path: Path, set_point: float) -> InstrumentConfig:
    dump = (
        load_instrument(SIM_ALPACA).with_overrides(port=sim.port, data_root=tmp_path).model_dump()
    )
    dump["controllers"][0]["cooling"].update(set_point_c=set_point, stable_s=0.5)
    return InstrumentConfig.model_validate(dump)


@pytest.mark.slow
async def test_each_exposure_waits_for_the_cooled_sensor_from_either_side(
    warm_camera: RunningSimulator, tmp_path: Path
) -> None:
    await asyncio.to_thread(warm_camera.reload)
    for set_point in (-10.0, 0.0):  # down from +10 C, then up from -10 C
        [plan] = plan_instrument(_instrument(warm_camera, tmp_path, set_point))
        assert plan.capabilities.cooled
        async with open_instrument([plan]) as [session]:
            started = time.monotonic()
            await session.controller.settle()
            waited = time.monotonic() - started
            reading = (await session.controller.telemetry())["CCD_TEMPERATURE"]
            assert abs(reading - set_point) <= 0.5
            assert waited > 1.0, "the sensor needed its cooling time"
            started = time.monotonic()
            await session.controller.settle()  # already stable: at once
            assert time.monotonic() - started < 1.5
