"""Observing a target on alpaca-simulators: pointing, dome, filters and focus, headers,
and what is refused before anything moves."""

from __future__ import annotations

import asyncio
import math
import signal
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest
from astropy.io import fits

from flows.exposure import observe_night
from flows.observe import check_observation, observe
from schemas.errors import ConfigError
from schemas.exposure import NightPlan
from schemas.instrument import InstrumentConfig, load_instrument
from schemas.observation import ObservationSpec, Target
from tasks.observing.pointing import sky_position, target_now, where

from .alpaca_sim import RunningSimulator, running_simulator
from .conftest import REPO
from .fitscheck import assert_fitsverify_clean

SIM_ALPACA = REPO / "deploy" / "instruments" / "sim-alpaca.yaml"


def _instrument(port: int, data: Path) -> InstrumentConfig:
    config = load_instrument(SIM_ALPACA).with_overrides(port=port, data_root=data)
    dump = config.model_dump()
    dump["controllers"][0]["cooling"]["stable_s"] = 0.2
    dump["concurrency_name"] = f"instrument-observe-{uuid.uuid4().hex[:12]}"
    return InstrumentConfig.model_validate(dump)


def _overhead(instrument: InstrumentConfig, *, below: bool = False) -> dict[str, float]:
    """RA/Dec at the zenith of the site now (or at the nadir: never visible)."""
    site = instrument.site
    assert site is not None
    lst_h = sky_position(0.0, 0.0, site, datetime.now(UTC)).lst_h
    ra = (lst_h * 15.0 + (180.0 if below else 0.0)) % 360.0
    return {"ra_deg": round(ra, 4), "dec_deg": -site.latitude_deg if below else site.latitude_deg}


def _spec(instrument: InstrumentConfig, **changes: object) -> ObservationSpec:
    data: dict[str, object] = {
        "name": "zenith",
        "target": {"name": "Zenith field", **_overhead(instrument)},
        "exposures": [
            {"filter": "Red", "exptime": 0.2},
            {"filter": "Blue", "exptime": 0.2, "count": 2},
        ],
        "dithers": [{}, {"east_arcsec": 36.0}],
    }
    data.update(changes)
    return ObservationSpec.model_validate(data)


def test_a_target_below_the_limit_a_bad_dither_and_no_site_are_refused(tmp_path: Path) -> None:
    instrument = _instrument(9, tmp_path)  # nothing listens: nothing may be contacted
    low = _spec(instrument, target={"name": "Nadir", **_overhead(instrument, below=True)})
    with pytest.raises(ConfigError, match=r"target: Nadir is at altitude -\d+\.\d deg"):
        check_observation(low, instrument, datetime.now(UTC))
    polar = _spec(
        instrument,
        target={"name": "Pole", "ra_deg": 10.0, "dec_deg": 89.9},
        dithers=[{"north_arcsec": 720.0}],
        constraints={"min_altitude_deg": 0.0},
    )
    with pytest.raises(ConfigError, match=r"dithers\.0: 720 arcsec north of Dec 89\.9"):
        check_observation(polar, instrument, datetime.now(UTC))
    nowhere = instrument.model_copy(update={"site": None})
    with pytest.raises(ConfigError, match="site: observing needs the instrument's site"):
        check_observation(_spec(instrument), nowhere, datetime.now(UTC))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSimulator]:
    with running_simulator(tmp_path_factory.mktemp("observe")) as sim:
        yield sim


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
async def test_observe_points_follows_sets_filter_and_focus_and_records_it(
    server: RunningSimulator, tmp_path: Path
) -> None:
    await asyncio.to_thread(server.reload)
    instrument = _instrument(server.port, tmp_path / "data")
    spec = _spec(instrument)
    result = await observe(spec, instrument)
    assert [e.image_type.value for e in result.exposures] == ["object"] * 6
    headers = [fits.getheader(e.files[0].path) for e in result.exposures]
    assert [h["FILTER"] for h in headers] == ["Red", "Blue", "Blue"] * 2
    focus = {h["FILTER"]: h["FOCUS"] for h in headers}
    assert focus["Blue"] - focus["Red"] == 150  # the wheel's offsets: Red -100, Blue +50
    for header in headers:
        assert header["FILTPOS"] == header["FILTER"]  # what the wheel reported
        assert header["FOCUS"] == header["FOCUSEND"]  # nothing moved while integrating
        assert header["OBJECT"] == "Zenith field"
        assert header["OBJRA"] == spec.target.ra_deg
        assert header["RADESYS"] == "ICRS"
        assert header["AIRMASS"] == pytest.approx(1.0, abs=0.01)
        assert header["ALT"] > 80
        assert abs(header["TELRA"] * 15.0 - header["RA"]) < 0.01  # the mount got there
        assert header["TELDEC"] == pytest.approx(header["DEC"], abs=0.01)
    east = 36.0 / 3600.0 / math.cos(math.radians(spec.target.dec_deg))  # the second dither
    assert (headers[3]["RA"] - headers[0]["RA"]) % 360.0 == pytest.approx(east, abs=1e-6)
    assert_fitsverify_clean(result.exposures[0].files[0].path)
    async with httpx.AsyncClient(base_url=server.base_url, trust_env=False) as client:
        params = {"ClientID": 1, "ClientTransactionID": 1}
        dome = await client.get("/api/v1/dome/0/shutterstatus", params=params)
        parked = await client.get("/api/v1/telescope/0/atpark", params=params)
    # Opened for the observation (DOMEAZ followed the target), closed at its end.
    assert dome.json()["Value"] == 1  # closed
    assert parked.json()["Value"] is True


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
async def test_a_filter_the_wheel_lacks_is_refused_before_the_telescope_moves(
    server: RunningSimulator, tmp_path: Path
) -> None:
    await asyncio.to_thread(server.reload)
    dump = _instrument(server.port, tmp_path / "data").model_dump()
    dump["filters"] = ["Red", "Halpha"]  # the config has it; the wheel does not
    instrument = InstrumentConfig.model_validate(dump)
    spec = _spec(instrument, exposures=[{"filter": "Halpha", "exptime": 0.2}])
    with pytest.raises(ConfigError, match="exposures: the wheel has no filter 'Halpha'"):
        await observe(spec, instrument)
    assert list((tmp_path / "data").rglob("*.fits")) == []


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
async def test_a_night_plan_takes_observations_and_skips_one_that_is_not_up(
    server: RunningSimulator, tmp_path: Path
) -> None:
    await asyncio.to_thread(server.reload)
    instrument = _instrument(server.port, tmp_path / "data")
    up = _spec(instrument, name="up", exposures=[{"filter": "Green", "exptime": 0.2}], dithers=[{}])
    down = _spec(
        instrument,
        name="down",
        target={"name": "Nadir", **_overhead(instrument, below=True)},
        dithers=[{}],
    )
    plan = NightPlan.model_validate(
        {
            "name": "observing-night",
            "light_until": None,
            "steps": [
                {"name": "darks", "exposures": [{"image_type": "dark", "exptime": 0.2}]},
                down.model_dump(),
                up.model_dump(),
            ],
        }
    )
    darks, skipped, observed = await observe_night(plan, instrument)
    assert [e.image_type.value for e in darks.exposures] == ["dark"]
    assert skipped.exposures == []
    assert skipped.stopped is not None
    assert "below constraints.min_altitude_deg" in skipped.stopped
    [exposure] = observed.exposures
    assert fits.getheader(exposure.files[0].path)["FILTPOS"] == "Green"


def test_polaris_stands_at_the_sites_latitude_and_the_zenith_at_airmass_one() -> None:
    site = load_instrument(SIM_ALPACA).site
    assert site is not None
    now = datetime.now(UTC)
    polaris = Target(name="Polaris", ra_deg=37.9546, dec_deg=89.2641)
    at = where(polaris, site, now)
    assert abs(at.alt_deg - site.latitude_deg) < 1.0  # the pole's altitude is the latitude
    assert at.az_deg < 1.5 or at.az_deg > 358.5
    zenith = sky_position(at.lst_h * 15.0, site.latitude_deg, site, now)
    assert zenith.airmass == pytest.approx(1.0, abs=1e-3)
    assert abs(zenith.hour_angle_h) < 1e-3


def test_proper_motion_moves_the_target_from_its_epoch(tmp_path: Path) -> None:
    barnard = Target(
        name="Barnard's star",
        ra_deg=269.452,
        dec_deg=4.693,
        pm_ra_mas_per_yr=-801.6,
        pm_dec_mas_per_yr=10362.4,
        epoch_jyear=2016.0,
    )
    ra, dec = target_now(barnard, datetime(2026, 1, 1, tzinfo=UTC))
    assert dec - barnard.dec_deg == pytest.approx(10.3624 * 10.0 / 3600.0, rel=0.01)
    assert ra < barnard.ra_deg  # moving west


def test_an_airmass_limit_and_a_closed_window_are_refused(tmp_path: Path) -> None:
    instrument = _instrument(9, tmp_path)
    site = instrument.site
    assert site is not None
    pole = {"name": "Pole", "ra_deg": 10.0, "dec_deg": 89.0}  # at altitude ~33 deg: airmass ~1.8
    high = _spec(instrument, target=pole, constraints={"min_altitude_deg": 20, "max_airmass": 1.5})
    with pytest.raises(ConfigError, match=r"target: Pole is at airmass 1\.\d+, above .*1\.5"):
        check_observation(high, instrument, datetime.now(UTC))
    night = datetime(2026, 11, 30, 3, 0, tzinfo=ZoneInfo(site.timezone))  # 03:00 at the site
    for window, problem in (
        ({"end": {"clock": "02:00"}}, r"constraints\.window: its window closed at"),
        ({"start": {"clock": "04:30"}}, r"constraints\.window: it opens in 90 min"),
    ):
        limited = {"min_altitude_deg": 20, "window": window}
        with pytest.raises(ConfigError, match=problem):
            check_observation(
                _spec(instrument, target=pole, constraints=limited), instrument, night
            )


@pytest.fixture(scope="module")
def wheel_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSimulator]:
    """A second simulator for the filter wheel alone, to freeze (SIGSTOP) mid-run."""
    with running_simulator(tmp_path_factory.mktemp("wheel")) as sim:
        yield sim


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
async def test_a_device_that_stops_answering_ends_the_observation_safely(
    server: RunningSimulator, wheel_server: RunningSimulator, tmp_path: Path
) -> None:
    """The wheel freezes during the first exposure: the next filter change fails
    within the device's timeout with an error naming it, never a hang; the frame
    already taken is written, and the camera is left idle."""
    await asyncio.to_thread(server.reload)
    await asyncio.to_thread(wheel_server.reload)
    dump = _instrument(server.port, tmp_path / "data").model_dump()
    wheel = next(d for d in dump["devices"] if d["type"] == "filterwheel")
    wheel.update(port=wheel_server.port, timeout_s=1.0)  # its bound on every call
    instrument = InstrumentConfig.model_validate(dump)
    spec = _spec(
        instrument,
        exposures=[{"filter": "Red", "exptime": 1.5}, {"filter": "Blue", "exptime": 0.2}],
        dithers=[{}],
    )
    frozen = False
    try:
        async with httpx.AsyncClient(base_url=server.base_url, trust_env=False) as client:
            run = asyncio.ensure_future(observe(spec, instrument, resume=False))
            params = {"ClientID": 1, "ClientTransactionID": 1}
            while (await client.get("/api/v1/camera/0/camerastate", params=params)).json()[
                "Value"
            ] != 2:  # exposing
                assert not run.done(), run.exception()
                await asyncio.sleep(0.05)
            wheel_server.process.send_signal(signal.SIGSTOP)
            frozen = True
            started = time.monotonic()
            with pytest.raises(Exception, match="filterwheel") as failed:
                await asyncio.wait_for(run, 90)
            ended_after = time.monotonic() - started
            state = (await client.get("/api/v1/camera/0/camerastate", params=params)).json()
    finally:
        if frozen:
            wheel_server.process.send_signal(signal.SIGCONT)
    assert "no answer within" in str(failed.value)  # the device's bound, not the test's
    assert ended_after < 30, f"the run took {ended_after:.0f} s to give up"
    assert state["Value"] == 0  # idle: no exposure left running
    files = sorted((tmp_path / "data").rglob("*.fits"))
    assert len(files) == 1, files  # the Red frame, whole
    assert fits.getheader(files[0])["FILTER"] == "Red"
