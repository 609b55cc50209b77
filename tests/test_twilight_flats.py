"""Twilight sky flats: the planner's arithmetic, the window, and a real evening on the
Archon simulator under a simulated twilight sky at a site where the Sun is setting now."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from devices.archon.acf import load_acf
from devices.archon.simulator import ArchonSimulator
from devices.archon.simulator.shutter import ShutterBlade
from flows.simulated_sky import TwilightSky, twilight_site
from flows.twilight import check_twilight, twilight_flats, twilight_wait_s
from schemas.errors import ConfigError
from schemas.instrument import InstrumentConfig
from schemas.products import Product
from schemas.site import Site
from schemas.twilight import TwilightFlatSpec
from tasks.observing.sun_events import sun_altitude
from tasks.observing.twilight import (
    Judgement,
    Measurement,
    SkyClock,
    TwilightPlanner,
    integration_time,
    judge,
    sun_track,
)

from .conftest import SIM_ACF
from .fitscheck import assert_fitsverify_clean

APO = Site(name="APO", latitude_deg=32.78, longitude_deg=-105.82, elevation_m=2788, timezone="UTC")


def _spec(**changes: object) -> TwilightFlatSpec:
    data: dict[str, object] = {
        "twilight": "evening",
        "filters": [{"filter": "B", "count": 2}, {"filter": "R", "count": 2}],
        "target_adu": 10000,
        "tolerance": 0.2,
        "min_exptime": 0.3,
        "max_exptime": 6.0,
    }
    data.update(changes)
    return TwilightFlatSpec.model_validate(data)


def test_integration_time_solves_the_integral_of_a_changing_rate() -> None:
    for dex_per_s in (-0.05, -0.01, 0.0, 0.02):
        seconds = integration_time(5000.0, 1000.0, dex_per_s)
        assert seconds is not None
        steps = np.linspace(0.0, seconds, 10001)
        integral = np.trapezoid(1000.0 * 10 ** (dex_per_s * steps), steps)
        assert integral == pytest.approx(5000.0, rel=1e-6)
    # A sky fading by x10 a second never gives 5 s of today's rate.
    assert integration_time(5000.0, 1000.0, -1.0) is None


def test_the_planner_learns_the_sky_and_hits_the_target() -> None:
    """A synthetic evening sky of slope 0.5 dex/deg (the planner starts at 0.36): after
    two frames its prediction is within 1 % of the time that reaches the target."""
    true_slope, deg_per_s = 0.5, -0.25 / 60  # the Sun sets a quarter degree a minute

    def rate(alt: float) -> float:
        return 2000.0 * 10 ** (true_slope * (alt + 5.0))

    def level(start_alt: float, seconds: float) -> float:
        steps = np.linspace(0.0, seconds, 2001)
        return float(np.trapezoid([rate(start_alt + deg_per_s * t) for t in steps], steps))

    planner = TwilightPlanner(target_adu=20000.0)
    alt, exptime, errors = -3.0, 1.0, []
    for _ in range(8):
        got = level(alt, exptime)
        errors.append(abs(got / 20000.0 - 1))
        planner.learn(Measurement(exptime, got, alt + deg_per_s * exptime / 2, saturated=False))
        alt += deg_per_s * (exptime + 20.0)  # readout and overheads
        predicted = planner.exptime(lambda s, a=alt: a + deg_per_s * s)
        assert predicted is not None
        exptime = predicted
    assert planner.slope == pytest.approx(true_slope, rel=0.02)
    assert max(errors[2:]) < 0.01, errors


def test_the_level_at_a_time_is_the_inverse_of_the_time_for_a_level() -> None:
    planner = TwilightPlanner(target_adu=20000.0)
    assert planner.level(5.0, lambda s: -4.0) is None  # nothing measured yet
    planner.learn(Measurement(2.0, 8000.0, -4.0, saturated=False))
    setting = -0.25 / 60

    def track(s: float) -> float:
        return -4.1 + setting * s

    seconds = planner.exptime(track)
    assert seconds is not None
    assert planner.level(seconds, track) == pytest.approx(20000.0, rel=1e-9)


def test_a_saturated_frame_shortens_the_next() -> None:
    planner = TwilightPlanner(target_adu=20000.0)
    planner.learn(Measurement(2.0, 65000.0, -3.0, saturated=True))
    following = planner.exptime(lambda s: -3.0)
    assert following is not None
    assert following < 20000.0 / 65000.0 * 2.0


def test_frames_are_judged_against_the_target_and_saturation() -> None:
    assert judge(20000, False, 20000, 0.2) is Judgement.GOOD
    assert judge(24500, False, 20000, 0.2) is Judgement.TOO_BRIGHT
    assert judge(15500, False, 20000, 0.2) is Judgement.TOO_FAINT
    assert judge(20000, True, 20000, 0.2) is Judgement.SATURATED


def test_the_morning_takes_the_filters_reversed_and_bad_specs_are_refused() -> None:
    evening = [s.filter for s in _spec().expand()]
    morning = [s.filter for s in _spec(twilight="morning").expand()]
    assert evening == ["B", "R"]
    assert morning == ["R", "B"]
    with pytest.raises(ValueError, match="max_exptime must be longer"):
        _spec(min_exptime=5.0, max_exptime=2.0)
    with pytest.raises(ValueError, match="each filter once"):
        _spec(filters=[{"filter": "B"}, {"filter": "B"}])


def test_unknown_filters_and_no_site_are_refused_before_anything_moves(
    sim_instrument: InstrumentConfig,
) -> None:
    instrument = _with_filters(sim_instrument, None)
    with pytest.raises(ConfigError) as caught:
        check_twilight(_spec(filters=[{"filter": "Ha"}]), instrument)
    assert "filters.0.filter: 'Ha' is not a filter" in str(caught.value)
    assert "site: twilight flats need the instrument's site" in str(caught.value)


def test_the_twilight_window_waits_starts_or_is_over() -> None:
    now = datetime.now(UTC)
    dusk = twilight_site(APO, -4.0, setting=True, when=now)
    assert sun_altitude(dusk, now) == pytest.approx(-4.0, abs=0.01)
    assert twilight_wait_s(_spec(), dusk, now) == 0.0
    # Asked for the morning at dusk: it waits the night through (hours, not a day).
    morning_wait = twilight_wait_s(_spec(twilight="morning"), dusk, now)
    assert morning_wait is not None
    assert 3 * 3600 < morning_wait < 16 * 3600
    afternoon = twilight_site(APO, 20.0, setting=True, when=now)
    evening_wait = twilight_wait_s(_spec(), afternoon, now)
    assert evening_wait is not None
    assert 3600 < evening_wait < 3 * 3600
    dawn = twilight_site(APO, -20.0, setting=False, when=now)
    assert twilight_wait_s(_spec(), dawn, now) is None  # that night's evening is over


def test_a_faster_sky_clock_moves_the_sun_faster() -> None:
    now = datetime.now(UTC)
    dusk = twilight_site(APO, -4.0, setting=True, when=now)
    real = sun_track(lambda t: sun_altitude(dusk, t), now, SkyClock())
    fast = sun_track(lambda t: sun_altitude(dusk, t), now, SkyClock(20.0, now, now))
    assert real(0.0) == pytest.approx(fast(0.0))
    assert (fast(60.0) - fast(0.0)) == pytest.approx(20 * (real(60.0) - real(0.0)), rel=1e-6)


def test_the_shutter_integrates_a_changing_light() -> None:
    blade = ShutterBlade(light=lambda unix: math.exp(unix - blade_origin))
    blade_origin = blade._to_unix  # monotonic 0 is UNIX time blade_origin
    assert blade.open_seconds(0.0, 1.0) == 0.0  # never opened
    blade.log.append((0.0, 1.0))
    assert blade.open_seconds(-5.0, 5.0) == pytest.approx(math.e - 1, rel=1e-6)
    assert ShutterBlade().open_seconds(0.0, 1.0) == 0.0


def _with_filters(instrument: InstrumentConfig, site: Site | None) -> InstrumentConfig:
    data = instrument.model_dump()
    data["filters"] = ["B", "R"]
    data["storage"]["processed"] = True  # masters from processed images, as usual
    data["site"] = site.model_dump() if site is not None else None
    return InstrumentConfig.model_validate(data)


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
async def test_evening_flats_reach_their_level_and_make_master_flats(
    sim_instrument: InstrumentConfig, tmp_path: Path
) -> None:
    """The real flow, the real Sun: the site is placed where it is dusk now."""
    site = twilight_site(APO, -4.0, setting=True, when=datetime.now(UTC))
    blade = ShutterBlade(light=TwilightSky(site))
    async with ArchonSimulator(load_acf(SIM_ACF), port=0, seed=7, shutter_blade=blade) as simulator:
        instrument = _with_filters(
            sim_instrument.with_overrides(port=simulator.port, data_root=tmp_path / "data"), site
        )
        spec = _spec()
        result = await twilight_flats(spec, instrument)
    assert result.skipped == []
    kept = {r.expnum: r for r in result.exposures}
    assert len(kept) == 4
    levels, order = [], []
    for exposure in result.exposures:
        raw = next(f.path for f in exposure.files if f.product is Product.RAW)
        header = fits.getheader(raw)
        assert header["FLATOK"] is True
        assert header["IMAGETYP"].lower() == "flat"
        levels.append(header["FLATLEVL"])
        order.append(header["FILTER"])
        assert_fitsverify_clean(raw)
    print(f"levels {levels}; {len(result.rejected)} rejected; skipped {result.skipped}")
    assert order == ["B", "B", "R", "R"]  # the evening order
    assert all(abs(level / spec.target_adu - 1) <= spec.tolerance for level in levels), levels
    # The first frame is a probe at the shortest time: too faint, kept on disk, marked.
    assert result.rejected, "the probe frame was not rejected"
    for frame in result.rejected:
        raw = next(f.path for f in frame.files if f.product is Product.RAW)
        header = fits.getheader(raw)
        assert header["FLATOK"] is False
        assert frame.expnum not in kept
    # Every frame has its own number; one master flat per filter from the good ones.
    numbers = [r.expnum for r in [*result.exposures, *result.rejected]]
    assert len(set(numbers)) == len(numbers)
    assert {m.filter for m in result.masters} == {"B", "R"}
    for master in result.masters:
        assert set(master.inputs) <= set(kept)
    # The flow's level is the sky's: the processed image's median agrees with it.
    processed = next(f.path for f in result.exposures[-1].files if f.product is Product.PROCESSED)
    with fits.open(processed) as hdus:
        median = float(np.median(hdus[1].data if hdus[0].data is None else hdus[0].data))
    assert median == pytest.approx(levels[-1], rel=0.05)


def test_the_flats_command_refuses_a_filter_the_instrument_lacks() -> None:
    from typer.testing import CliRunner

    from flows.cli import app

    from .conftest import REPO

    example = REPO / "deploy" / "examples" / "twilight-flats.yaml"
    refused = CliRunner().invoke(app, ["flats", str(example)])  # sim: no filter wheel
    assert refused.exit_code == 2, refused.output
    assert "'Blue' is not a filter of ccdsim" in refused.output


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
async def test_morning_flats_take_the_filters_reversed_as_the_sky_brightens(
    sim_instrument: InstrumentConfig, tmp_path: Path
) -> None:
    """Dawn at the site now: the first frame is a probe at a third of the longest time,
    the filters come in morning order, every kept frame on its level."""
    site = twilight_site(APO, -5.0, setting=False, when=datetime.now(UTC))
    blade = ShutterBlade(light=TwilightSky(site))
    async with ArchonSimulator(load_acf(SIM_ACF), port=0, seed=8, shutter_blade=blade) as simulator:
        instrument = _with_filters(
            sim_instrument.with_overrides(port=simulator.port, data_root=tmp_path / "data"), site
        )
        spec = _spec(
            twilight="morning",
            filters=[{"filter": "B", "count": 1}, {"filter": "R", "count": 2}],
            build_masters=False,
        )
        result = await twilight_flats(spec, instrument)
    headers = [
        fits.getheader(next(f.path for f in e.files if f.product is Product.RAW))
        for e in result.exposures
    ]
    print([(h["FILTER"], h["EXPTIME"], h["FLATLEVL"]) for h in headers], result.skipped)
    assert [h["FILTER"] for h in headers] == ["R", "R", "B"]
    assert all(abs(h["FLATLEVL"] / spec.target_adu - 1) <= spec.tolerance for h in headers)
    # The Sun rises through the run.
    assert headers[-1]["SUNALT"] > headers[0]["SUNALT"]
