"""Devices in the instrument config: ``device.<name>.<property>`` header sources,
checked when the config loads and read during exposures on alpaca-simulators."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from astropy.io import fits

from devices.alpaca.observingconditions import TELEMETRY_KEYS
from devices.registry import telemetry_sources
from flows.exposure import take_exposure
from schemas.devices import DEVICE_PROPERTIES, DeviceConfig, DeviceType, property_problem
from schemas.errors import ConfigError
from schemas.exposure import ExposureSpec
from schemas.instrument import InstrumentConfig, load_instrument

from .alpaca_sim import RunningSimulator, running_simulator
from .conftest import REPO

SIM_ALPACA = REPO / "deploy" / "instruments" / "sim-alpaca.yaml"


def _config_with(tmp_path: Path, **changes: Any) -> Path:
    data = yaml.safe_load(SIM_ALPACA.read_text())
    data.update(changes)
    path = tmp_path / "instrument.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_the_shipped_config_names_only_devices_and_properties_that_exist() -> None:
    config = load_instrument(SIM_ALPACA)
    assert [d.name for d in config.devices] == ["wheel", "focus", "mount", "weather", "dome"]


@pytest.mark.parametrize(
    ("source", "problem"),
    [
        ("device.roof.shutter", r"header\.cards\.0\.source: no device named 'roof' in devices"),
        ("device.wheel.position", r"a filterwheel has no property 'position' \(it has filter_"),
        ("device.wheel", "unknown header source 'device.wheel'"),
    ],
)
def test_a_card_naming_an_unknown_device_or_property_is_refused_at_load(
    tmp_path: Path, source: str, problem: str
) -> None:
    path = _config_with(tmp_path, header={"cards": [{"keyword": "X", "source": source}]})
    with pytest.raises(ConfigError, match=problem):
        load_instrument(path)


def test_an_unknown_device_type_and_a_repeated_name_are_refused(tmp_path: Path) -> None:
    wheel = {"name": "wheel", "type": "filterwheel"}
    path = _config_with(tmp_path, devices=[{"name": "w", "type": "toaster"}], header={})
    with pytest.raises(ConfigError, match=r"devices\.0\.type: Input should be 'filterwheel'"):
        load_instrument(path)
    path = _config_with(tmp_path, devices=[wheel, wheel], header={})
    with pytest.raises(ConfigError, match="devices: names must be unique; repeated: wheel"):
        load_instrument(path)


def test_switch_properties_are_one_per_switch() -> None:
    assert property_problem(DeviceType.SWITCH, "switch_3") is None
    assert property_problem(DeviceType.SWITCH, "switch_x") is not None


def test_the_weather_catalogue_is_the_adapters_keys() -> None:
    catalogue = DEVICE_PROPERTIES[DeviceType.OBSERVINGCONDITIONS]
    assert set(TELEMETRY_KEYS.values()) | {"average_period_h"} == catalogue


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSimulator]:
    with running_simulator(tmp_path_factory.mktemp("device-sources")) as sim:
        yield sim


@pytest.mark.slow
async def test_every_device_type_reports_only_catalogued_properties(
    server: RunningSimulator,
) -> None:
    entries = [
        DeviceConfig(name=kind.value[:16], type=kind, port=server.port) for kind in DeviceType
    ]
    sources = telemetry_sources(entries)
    try:
        for source, entry in zip(sources, entries, strict=True):
            await source.connect()
            readings = await source.telemetry()
            assert readings, f"{entry.type} reported nothing"
            unknown = [key for key in readings if property_problem(entry.type, key)]
            assert unknown == [], f"{entry.type} reports uncatalogued {unknown}"
    finally:
        for source in sources:
            await source.close()


def _instrument(server: RunningSimulator, data: Path, **changes: Any) -> InstrumentConfig:
    config = load_instrument(SIM_ALPACA).with_overrides(port=server.port, data_root=data)
    dump = config.model_dump()
    dump["controllers"][0]["cooling"]["stable_s"] = 0.2
    dump["site"] = None
    dump["concurrency_name"] = f"instrument-devices-{uuid.uuid4().hex[:12]}"
    dump.update(changes)
    return InstrumentConfig.model_validate(dump)


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
async def test_device_readings_reach_the_header_at_start_and_end(
    server: RunningSimulator, tmp_path: Path
) -> None:
    await asyncio.to_thread(server.reload)
    instrument = _instrument(server, tmp_path / "data")
    assert {d.port for d in instrument.devices} == {server.port}  # moved with --port
    # alpaca-simulators makes the camera's image on its own event loop when the
    # integration ends, just as the end readings are asked: on a loaded machine that
    # has taken over the 1 s bound, and the cards were (rightly) marked missing. Such
    # an exposure is taken again, at most twice; a reading that never arrives fails.
    for _ in range(3):
        [result] = await take_exposure(ExposureSpec(image_type="dark", exptime=0.3), instrument)
        header = fits.getheader(result.files[0].path)
        late = [c for c in header.get("COMMENT", []) if str(c).startswith("MISSING")]
        if not late:
            break
        assert all("no answer within" in str(c) for c in late), late
    assert header["FILTPOS"] == "Red"  # the simulator's wheel starts at slot 0
    assert header["FOCUS"] == header["FOCUSEND"] == 10000
    assert header["TELDEC"] == pytest.approx(30.0)  # the test server's pointing
    assert isinstance(header["AMBTEMP"], float)


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
async def test_a_device_that_is_not_there_fails_the_run_before_any_exposure(
    server: RunningSimulator, tmp_path: Path
) -> None:
    config = _instrument(server, tmp_path / "data")
    devices = [d.model_dump() for d in config.devices]
    devices[0]["device_number"] = 9
    instrument = _instrument(server, tmp_path / "data", devices=devices)
    with pytest.raises(Exception, match="device wheel: no filterwheel with device_number 9"):
        await take_exposure(ExposureSpec(image_type="dark", exptime=0.3), instrument)
    assert list((tmp_path / "data").rglob("*.fits")) == []
