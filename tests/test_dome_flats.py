"""Dome flats with a CoverCalibrator on alpaca-simulators: the cover closes and the
lamp is lit at the brightness asked for during the flats only, never during a dark;
it is off when the run ends, the wheel holds the flats' filter, and the flats make a
master flat. A lamp the instrument does not have is refused before anything moves."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from astropy.io import fits

from flows.exposure import calibrations
from flows.frame import plan_exposure
from schemas.errors import ConfigError
from schemas.exposure import CalibrationSpec, ExposureSpec
from schemas.instrument import InstrumentConfig, load_instrument
from schemas.products import Product
from tasks.control.instrument import plan_instrument

from .alpaca_sim import RunningSimulator, running_simulator
from .conftest import REPO

SIM_ALPACA = REPO / "deploy" / "instruments" / "sim-alpaca.yaml"
EXPOSING = 2
COVER_CLOSED, LAMP_OFF, LAMP_READY = 1, 1, 3


def _instrument(port: int, data: Path) -> InstrumentConfig:
    dump = load_instrument(SIM_ALPACA).with_overrides(port=port, data_root=data).model_dump()
    dump["controllers"][0]["cooling"]["stable_s"] = 0.2
    dump["concurrency_name"] = f"instrument-lamp-{uuid.uuid4().hex[:12]}"
    dump["site"] = None
    dump["devices"].append({"name": "panel", "type": "covercalibrator", "port": port})
    return InstrumentConfig.model_validate(dump)


def _spec() -> CalibrationSpec:
    return CalibrationSpec.model_validate(
        {
            "name": "dome-flats",
            "flats": [
                {
                    "filter": "Red",
                    "exptime": 0.5,
                    "count": 3,
                    "lamp": {"device": "panel", "brightness": 40},
                }
            ],
            "darks": [{"exptime": 1.5, "count": 1}],
        }
    )


def test_a_lamp_the_instrument_lacks_is_refused_before_anything_moves(tmp_path: Path) -> None:
    instrument = _instrument(9, tmp_path)  # nothing listens: nothing may be contacted
    flat = ExposureSpec.model_validate(
        {"image_type": "flat", "exptime": 1, "lamp": {"device": "screen"}}
    )
    with pytest.raises(ConfigError, match=r"lamp\.device: 'screen' is not a flat-field lamp"):
        plan_exposure(flat, instrument, plan_instrument(instrument))
    with pytest.raises(ValueError, match="a lamp lights nothing behind a closed shutter"):
        ExposureSpec.model_validate({"image_type": "dark", "exptime": 1, "lamp": {"device": "x"}})


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSimulator]:
    with running_simulator(tmp_path_factory.mktemp("lamp")) as sim:
        yield sim


async def _value(client: httpx.AsyncClient, path: str) -> object:
    reply = await client.get(f"/api/v1/{path}", params={"ClientID": 1, "ClientTransactionID": 1})
    return reply.json()["Value"]


async def _put(client: httpx.AsyncClient, path: str, **form: object) -> None:
    data = {**{k: str(v) for k, v in form.items()}, "ClientID": "1", "ClientTransactionID": "1"}
    reply = await client.put(f"/api/v1/{path}", data=data)
    assert reply.json()["ErrorNumber"] == 0, reply.text


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
async def test_dome_flats_light_the_lamp_for_the_flats_only(
    server: RunningSimulator, tmp_path: Path
) -> None:
    """The set's dark comes first; the lamp was left on before the run (by someone
    else): the dark must see it off, the flats lit at their brightness, cover closed."""
    await asyncio.to_thread(server.reload)
    instrument = _instrument(server.port, tmp_path / "data")
    seen: list[tuple[object, ...]] = []  # (lamp state, brightness, cover) while exposing
    async with httpx.AsyncClient(base_url=server.base_url, trust_env=False) as client:
        await _put(client, "covercalibrator/0/calibratoron", Brightness=10)
        while await _value(client, "covercalibrator/0/calibratorstate") != LAMP_READY:
            await asyncio.sleep(0.05)
        run = asyncio.ensure_future(calibrations(_spec(), instrument, resume=False))
        while not run.done():
            if await _value(client, "camera/0/camerastate") == EXPOSING:
                seen.append(
                    (
                        await _value(client, "covercalibrator/0/calibratorstate"),
                        await _value(client, "covercalibrator/0/brightness"),
                        await _value(client, "covercalibrator/0/coverstate"),
                    )
                )
            await asyncio.sleep(0.05)
        result = run.result()
        after = await _value(client, "covercalibrator/0/calibratorstate")
        names = await _value(client, "filterwheel/0/names")
        position = await _value(client, "filterwheel/0/position")
    # A calibration set moves the wheel to its flats' filter too.
    assert isinstance(names, list)
    assert isinstance(position, int)
    assert names[position] == "Red"
    assert after == LAMP_OFF
    states = [s[0] for s in seen]
    assert states, "no exposure was seen"
    assert states[0] == LAMP_OFF, f"the dark saw the lamp on: {seen}"
    first_lit = states.index(LAMP_READY)
    assert all(s == (LAMP_READY, 40, COVER_CLOSED) for s in seen[first_lit:]), seen
    flats = [e for e in result.exposures if e.image_type.value == "flat"]
    dark = next(e for e in result.exposures if e.image_type.value == "dark")
    assert len(flats) == 3
    for exposure in flats:
        raw = next(f.path for f in exposure.files if f.product is Product.RAW)
        header = fits.getheader(raw)
        assert header["LAMP"] == "panel"
        assert header["LAMPBRT"] == 40
    dark_raw = next(f.path for f in dark.files if f.product is Product.RAW)
    assert "LAMP" not in fits.getheader(dark_raw)
    assert {(m.kind, m.filter) for m in result.masters} >= {("flat", "Red"), ("dark", "none")}
