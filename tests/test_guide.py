"""Guide and focus mode: source finding, stamps, refusals, the archive layout, and one
guide exposure end to end on simulated guide cameras with stars."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from astropy.io import fits
from pydantic import ValidationError
from typer.testing import CliRunner

from devices.archon.acf import load_acf
from devices.archon.sensor import SensorModel, readout_window, star_field
from devices.archon.simulator import MultiSimulator
from flows.cli import app
from flows.guide import check_guide, guide
from flows.spec_files import load_guide_spec
from schemas.errors import ConfigError
from schemas.guide import GuideSpec, RoiCentre
from schemas.instrument import InstrumentConfig, load_instrument
from tasks.files.manifest import MANIFEST_NAME, verify_manifest
from tasks.guide.archive import CameraLayout, CameraRow, GuideArchive
from tasks.guide.guide_file import GuideFacts, guide_paths, publish_guide_files
from tasks.guide.sources import find_sources
from tasks.guide.stamps import cut_stamps, measure_stamps
from tasks.guide.timing import CadenceGrid, percentile_ms

from .conftest import REPO, SIM_YAML

GUIDER_YAML = REPO / "deploy" / "instruments" / "sim-guider.yaml"
GUIDER_ACF = REPO / "deploy" / "instruments" / "guider.acf"
EXAMPLE = REPO / "deploy" / "examples" / "guide.yaml"


def _gaussian(image: np.ndarray[Any, Any], x: float, y: float, flux: float, sigma: float) -> None:
    lines, pixels = np.mgrid[0 : image.shape[0], 0 : image.shape[1]]
    image += (
        flux
        / (2 * np.pi * sigma**2)
        * np.exp(-((pixels - x) ** 2 + (lines - y) ** 2) / (2 * sigma**2))
    )


def _sky(seed: int = 1, shape: tuple[int, int] = (256, 300)) -> np.ndarray[Any, Any]:
    rng = np.random.default_rng(seed)
    return 1000.0 + rng.normal(0.0, 5.0, shape)


# ------------------------------------------------------------------ source finding


def test_finds_the_brightest_stars_in_order_and_centres_them() -> None:
    image = _sky()
    stars = [(60.3, 70.6, 9000.0), (200.2, 150.7, 30000.0), (120.0, 200.4, 15000.0)]
    for x, y, flux in stars:
        _gaussian(image, x, y, flux, 1.5)
    image[100, 100] += 2000.0  # a hot pixel: brighter peak than the faint star, no spread
    found = find_sources(image, 2, min_separation=10, stamp_size=32)
    assert len(found) == 2
    for source, (x, y, _) in zip(found, [stars[1], stars[2]], strict=True):
        assert abs(source.x - x) < 0.3
        assert abs(source.y - y) < 0.3
    assert found[0].flux > found[1].flux > 0


def test_two_peaks_closer_than_the_separation_are_one_region() -> None:
    image = _sky(2)
    _gaussian(image, 100.0, 100.0, 30000.0, 1.5)
    _gaussian(image, 108.0, 100.0, 25000.0, 1.5)  # 8 px from the brightest
    _gaussian(image, 200.0, 60.0, 5000.0, 1.5)
    apart = find_sources(image, 2, min_separation=20, stamp_size=32)
    assert [round(s.x) for s in apart] == [100, 200]
    close = find_sources(image, 2, min_separation=4, stamp_size=32)
    assert [round(s.x) for s in close] == [100, 108]


def test_a_star_too_near_the_edge_for_a_full_stamp_is_not_chosen() -> None:
    image = _sky(3)
    _gaussian(image, 10.0, 100.0, 50000.0, 1.5)  # a 32-pixel stamp would leave the image
    _gaussian(image, 150.0, 120.0, 8000.0, 1.5)
    found = find_sources(image, 2, min_separation=10, stamp_size=32)
    assert [(round(s.x), round(s.y)) for s in found] == [(150, 120)]
    assert find_sources(_sky(4), 2, min_separation=10, stamp_size=32) == []


# ------------------------------------------------------------------ stamps


def test_stamps_are_cut_around_their_centres_and_measured() -> None:
    image = _sky(5)
    _gaussian(image, 41.4, 52.8, 20000.0, 1.5)
    raw = np.rint(image).astype(np.uint16)
    centres = [RoiCentre(x=41, y=53), RoiCentre(x=200, y=100)]
    stamps = cut_stamps(raw, centres, 16)
    assert stamps.shape == (2, 16, 16)
    assert stamps.dtype == np.uint16
    np.testing.assert_array_equal(stamps[1], raw[92:108, 192:208])
    measured = measure_stamps(stamps, centres, 16)
    assert abs(measured.x[0] - 41.4) < 0.2
    assert abs(measured.y[0] - 52.8) < 0.2
    assert measured.flux[0] == pytest.approx(20000.0, rel=0.05)
    assert abs(measured.flux[1]) < 300
    with pytest.raises(ValueError, match=r"stamp at \(295, 100\) of 16 x 16 leaves"):
        cut_stamps(raw, [RoiCentre(x=295, y=100)], 16)


def test_the_simulator_renders_stars_only_in_light_frames_and_leaves_defaults_alone() -> None:
    from devices.archon.sensor import render_frame

    acf = load_acf(GUIDER_ACF)
    plain = SensorModel(seed=2)
    starry = SensorModel(seed=2, stars=5)
    times = {"dark_seconds": 0.3, "frame_number": 4}
    dark = render_frame(acf, starry, light_seconds=0.0, **times)
    np.testing.assert_array_equal(dark, render_frame(acf, plain, light_seconds=0.0, **times))
    lit = render_frame(acf, starry, light_seconds=0.2, **times).astype(np.float64)
    flat = render_frame(acf, plain, light_seconds=0.2, **times).astype(np.float64)
    stars = star_field(starry, 0, readout_window(acf).ccd_shape)
    brightest = int(np.argmax(stars.flux))
    x, y = round(stars.x[brightest]), round(stars.y[brightest])
    added = (lit - flat)[y - 6 : y + 7, x - 6 : x + 7].sum() * starry.gain
    assert added == pytest.approx(stars.flux[brightest] * 0.2, rel=0.05)
    assert np.abs(lit - flat)[:, 1024:].max() == 0  # no light in the overscan


def test_the_cadence_grid_never_drifts_and_counts_late_starts() -> None:
    now = [100.0]
    grid = CadenceGrid(1.0, clock=lambda: now[0])
    import asyncio

    assert asyncio.run(grid.wait(0)) == 0.0
    now[0] = 101.7  # frame 0 overran
    lag = asyncio.run(grid.wait(1))
    assert lag == pytest.approx(0.7)
    assert grid.is_late(lag)
    assert grid.due(2) == pytest.approx(102.0)  # the grid did not move
    assert percentile_ms([0.1, 0.2, 0.3], 50) == pytest.approx(200.0)
    assert percentile_ms([], 99) is None


# ------------------------------------------------------------------ refusals


def _guider() -> InstrumentConfig:
    return load_instrument(GUIDER_YAML)


def _problems(spec: dict[str, Any], instrument: InstrumentConfig | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        check_guide(GuideSpec.model_validate(spec), instrument or _guider())
    return "\n".join(caught.value.problems)


BASE: dict[str, Any] = {"frames": 5, "exptime": 0.1, "cadence_s": 1.0}


def test_a_region_off_the_detector_is_refused_naming_the_field() -> None:
    regions = {f"gfa{i}": [{"x": 500, "y": 500}] for i in range(6)}
    regions["gfa2"] = [{"x": 500, "y": 500}, {"x": 4000, "y": 10}]
    regions["gfa4"] = [{"x": 1000, "y": 500}]
    problems = _problems({**BASE, "regions": regions})
    assert "regions.gfa2.1: stamp at (4000, 10) of 64 x 64 lies outside the 1024 x 1024" in (
        problems
    )
    assert "regions.gfa4.0: stamp at (1000, 500)" in problems
    assert "gfa0" not in problems


def test_regions_must_name_the_guide_cameras() -> None:
    problems = _problems(
        {**BASE, "cameras": ["gfa0", "gfa1"], "regions": {"gfa0": [{"x": 500, "y": 500}]}}
    )
    assert "regions.gfa1: no stamp centres" in problems
    regions = {"gfa0": [{"x": 500, "y": 500}], "gfa3": [{"x": 500, "y": 500}]}
    problems = _problems({**BASE, "cameras": ["gfa0"], "regions": regions})
    assert "regions.gfa3: not a guide camera of this exposure" in problems


def test_stamps_larger_than_the_detector_are_refused() -> None:
    problems = _problems({**BASE, "stamp_size": 2048})
    assert "stamp_size: 2048 x 2048 stamps are larger than the 1024 x 1024 detector" in problems


def test_more_cameras_than_the_instrument_has_and_unknown_ones_are_refused() -> None:
    names = [f"gfa{i}" for i in range(7)]
    problems = _problems({**BASE, "cameras": names})
    assert "cameras: 7 guide cameras asked, ccdguide has 6" in problems
    assert "cameras.6: 'gfa6' is not a camera of ccdguide" in problems


def test_a_camera_reading_two_ccds_is_not_a_guide_camera() -> None:
    problems = _problems(BASE, load_instrument(SIM_YAML))
    assert "cameras: sim1 reads 2 CCDs; a guide camera reads one" in problems


@pytest.mark.parametrize(
    ("spec", "where"),
    [
        ({**BASE, "exptime": 1.0}, "cadence_s: a frame of 1 s cannot start every 1 s"),
        ({**BASE, "frames": 0}, "frames"),
        ({**BASE, "cameras": ["gfa1", "gfa1"]}, "cameras named twice: gfa1"),
        ({**BASE, "regions": {"gfa2": [{"x": 1, "y": 2}, {"x": -1, "y": 3}]}}, "regions.gfa2.1.x"),
        ({**BASE, "regions": {"find": 0}}, "regions.find"),
        ({**BASE, "regions": {"gfa2": [{"x": 1, "y": 2}, {"x": 1, "y": 2}]}}, "given twice"),
        ({**BASE, "header": {"NFRAMES": 3}}, "NFRAMES is written by the guide file"),
        ({**BASE, "stamp_size": 64, "colour": "red"}, "colour"),
    ],
)
def test_the_spec_alone_refuses_bad_values_naming_the_field(
    spec: dict[str, Any], where: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        GuideSpec.model_validate(spec)
    text = str(ConfigError.from_validation("guide spec", caught.value))
    assert where in text


def test_the_example_is_valid_for_the_guider_and_the_cli_refuses_bad_files(
    tmp_path: Path,
) -> None:
    plan = check_guide(load_guide_spec(EXAMPLE), _guider())
    assert plan.cameras == [f"gfa{i}" for i in range(6)]
    assert plan.rois is None
    bad = tmp_path / "bad.yaml"
    bad.write_text("frames: 3\nexptime: 0.1\ncadence_s: 1\nregions: {gfa1: [{x: 4000, y: 10}]}\n")
    result = CliRunner().invoke(app, ["guide", str(bad), "--instrument", str(GUIDER_YAML)])
    assert result.exit_code == 2
    assert "regions.gfa1.0: stamp at (4000, 10)" in result.output
    assert "regions.gfa0: no stamp centres" in result.output


# ------------------------------------------------------------------ archive layout


def test_archive_and_guide_file_layout(tmp_path: Path) -> None:
    instrument = _guider().with_overrides(data_root=tmp_path / "data")
    when = datetime.now(UTC)
    h5_path, fits_path = guide_paths(instrument, 7, when)
    centres = [RoiCentre(x=100, y=100), RoiCentre(x=300, y=400), RoiCentre(x=500, y=500)]
    layouts = [
        CameraLayout("gfa0", "g0", centres, 32, np.dtype(np.uint16), (1024, 1024), (20, 30)),
        CameraLayout("gfa1", "g1", centres[:2], 32, np.dtype(np.uint16), (1024, 1024)),
    ]
    archive = GuideArchive.create(h5_path, layouts, ["ccdtemp"], {"expnum": 7})
    for frame in range(4):
        rows = {}
        for layout in layouts:
            nroi = len(layout.centres)
            stamps = np.full((nroi, 32, 32), frame, dtype=np.uint16)
            values = {
                "frame": frame,
                "date_obs": b"2026-01-01T00:00:00.000",
                "mjd_obs": 61041.0,
                "exptime": 0.1,
                "readout_end": time.time(),
                "start_lag_ms": 0.0,
                "late": False,
                "centroid_x": np.arange(nroi, dtype=float),
                "centroid_y": np.arange(nroi, dtype=float),
                "flux": np.ones(nroi),
                "ccdtemp": -100.0,
            }
            full = np.zeros((20, 30), dtype=np.uint16) if layout.full_shape else None
            rows[layout.name] = CameraRow(stamps, values, time.perf_counter(), full)
        latencies = archive.append(rows)
        assert set(latencies) == {"gfa0", "gfa1"}
    with pytest.raises(FileExistsError):
        GuideArchive.create(h5_path, layouts, ["ccdtemp"], {})
    facts = GuideFacts(instrument, 7, 0.1, 1.0, 32, 5, 1, 1, when, None, {"PROGRAM": "field"})
    archive.close()
    written = publish_guide_files(h5_path, fits_path, ["gfa0", "gfa1"], facts)
    assert [w.path for w in written] == [h5_path, fits_path]
    assert h5_path.name == "ccdguide-guide-00000007.h5"
    assert fits_path.parent == h5_path.parent
    manifest = (h5_path.parent / MANIFEST_NAME).read_text()
    assert h5_path.name in manifest
    assert fits_path.name in manifest
    assert verify_manifest(h5_path.parent) == []
    with pytest.raises(FileExistsError):
        publish_guide_files(h5_path, fits_path, ["gfa0", "gfa1"], facts)

    with h5py.File(h5_path, "r") as h5:
        gfa0 = h5["cameras/gfa0"]
        assert gfa0["stamps"].shape == (4, 3, 32, 32)
        assert gfa0["stamps"].chunks == (1, 3, 32, 32)
        assert gfa0["full"].shape == (4, 20, 30)
        assert "full" not in h5["cameras/gfa1"]
        assert h5["cameras/gfa1/stamps"].shape == (4, 2, 32, 32)
        table = gfa0["frames"][:]
        assert table["frame"].tolist() == [0, 1, 2, 3]
        assert table["centroid_x"].shape == (4, 3)
        assert np.all(table["latency_ms"] >= 0)
        assert np.all(table["archived"] >= table["readout_end"])
        assert list(gfa0.attrs["roi_y"]) == [100, 400, 500]
    with fits.open(fits_path, checksum=True) as hdus:
        assert [h.name for h in hdus] == ["GUIDE", "GFA0", "GFA0T", "GFA1", "GFA1T"]
        primary = hdus[0].header
        assert primary["NFRAMES"] == 4
        assert primary["EXPNUM"] == 7
        assert primary["FRAMLATE"] == 1
        assert primary["PROGRAM"] == "field"
        assert hdus["GFA0"].data.shape == (4, 3, 32, 32)
        assert hdus["GFA0"].data.dtype.kind == "u"
        assert hdus["GFA0"].header["ROI2X"] == 300
        columns = hdus["GFA0T"].columns.names
        for name in ("FRAME", "DATE-OBS", "MJD-OBS", "EXPTIME", "LATENCY", "CENTX", "FLUX"):
            assert name in columns
        assert "CCDTEMP" in columns
        assert hdus["GFA0T"].data["CENTX"].shape == (4, 3)
        assert hdus["GFA1T"].data["FRAME"].tolist() == [0, 1, 2, 3]


# ------------------------------------------------------------------ end to end

STARS = SensorModel(stars=12, psf_sigma=1.5)
SEED = 11


@pytest.fixture
async def guide_cameras() -> AsyncIterator[MultiSimulator]:
    acf = load_acf(GUIDER_ACF)
    # Each guide camera has its own shutter; a fast pixel clock: 1024 x 1056 in 54 ms.
    async with MultiSimulator(
        [acf] * 3, seed=SEED, sensor=STARS, pixel_rate_hz=2e7, shared_shutter=False
    ) as group:
        yield group


def _three_guide_cameras(sims: MultiSimulator, tmp_path: Path) -> InstrumentConfig:
    data = load_instrument(GUIDER_YAML).model_dump()
    data["controllers"] = data["controllers"][:3]
    for controller, port in zip(data["controllers"], sims.ports, strict=True):
        controller.update(port=port, command_timeout_s=2.0, flush_time_s=0.01)
    data["storage"]["data_root"] = tmp_path / "data"
    data["concurrency_name"] = f"instrument-guide-{uuid.uuid4().hex[:12]}"
    return InstrumentConfig.model_validate(data)


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
async def test_guide_exposure_on_simulated_guide_cameras(
    guide_cameras: MultiSimulator, tmp_path: Path
) -> None:
    instrument = _three_guide_cameras(guide_cameras, tmp_path)
    spec = GuideSpec(frames=10, exptime=0.05, cadence_s=0.4, regions={"find": 2})
    result = await guide(spec, instrument)

    assert result.frames_taken == 10
    assert result.frames_dropped == 0
    assert result.latency_ms_p99 is not None
    assert result.cameras == ["gfa0", "gfa1", "gfa2"]
    shape = readout_window(load_acf(GUIDER_ACF)).ccd_shape
    for index, name in enumerate(result.cameras):
        stars = star_field(SensorModel(stars=12, seed=SEED + index), 0, shape)
        assert len(result.rois[name]) == 2
        for roi in result.rois[name]:
            distance = np.hypot(stars.x - roi.x, stars.y - roi.y).min()
            assert distance <= 1.5, f"{name}: ROI {roi} is {distance:.1f} px from any star"
    # Shutters closed, and each camera opened its own once per frame.
    for sim in guide_cameras:
        assert not sim.shutter_open
        assert len(sim.shutter_log) == 10
    h5_path, fits_path = result.files
    folder = h5_path.parent
    manifest = (folder / MANIFEST_NAME).read_text()
    assert h5_path.name in manifest
    assert fits_path.name in manifest
    assert verify_manifest(folder) == []
    with h5py.File(h5_path, "r") as h5:
        table = h5["cameras/gfa1/frames"][:]
        assert h5["cameras/gfa1/stamps"].shape == (10, 2, 64, 64)
        assert table["frame"].tolist() == list(range(10))
        assert np.all(np.isfinite(table["ccdtemp"]))
        rois = result.rois["gfa1"]
        for index, roi in enumerate(rois):  # the star stays in its stamp, frame after frame
            assert np.all(np.abs(table["centroid_x"][:, index] - roi.x) < 1.5)
            assert np.all(np.abs(table["centroid_y"][:, index] - roi.y) < 1.5)
    with fits.open(fits_path, checksum=True) as hdus:
        assert hdus[0].header["NFRAMES"] == 10
        assert hdus["GFA2"].data.shape == (10, 2, 64, 64)
        assert hdus["GFA2T"].data["FRAME"].tolist() == list(range(10))
