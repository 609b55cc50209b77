"""The post-processing chain on synthetic buffers: overscan methods, trim, gain,
saturation, master frames, user steps. Pure functions, no servers."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from devices.archon.acf import ccd_layout, load_acf, tap_regions
from schemas.exposure import ExposureSpec, StackMethod
from schemas.instrument import InstrumentConfig, load_instrument
from schemas.processing import MasterFrames, OverscanMethod, ProcessingConfig
from tasks.control.instrument import plan_instrument
from tasks.headers.header import ExposureFacts, ccd_cards
from tasks.post_process import ReadoutNumbers, process_buffer, processed_shape
from tasks.processing.master_build import CombinedCcd, MasterInput, combine_ccd, write_master
from tasks.processing.masters import (
    MasterFrameError,
    master_problems,
    masters_for,
    read_master_info,
)
from tasks.processing.overscan import correct_overscan
from tasks.processing.processing_steps import StepError

from .conftest import LVM_ACF, SIM_ACF, SIM_YAML

BIAS = ExposureSpec(image_type="bias")
OBJECT = ExposureSpec(image_type="object", exptime=2.0, filter=None)


def _sim_buffer(levels: list[float], signal: float = 100.0, noise: float = 0.0) -> np.ndarray:
    """Each tap at its own bias, plus a per-row drift of +row/100 in data and overscan."""
    acf = load_acf(SIM_ACF)
    rng = np.random.default_rng(7)
    buffer = np.zeros(acf.buffer_shape, dtype=np.uint16)
    for level, (rows, cols) in zip(levels, tap_regions(acf), strict=True):
        height, width = rows.stop - rows.start, cols.stop - cols.start
        block = np.full((height, width), float(level)) + np.arange(height)[:, None] / 100
        block[:, :512] += signal
        block += rng.normal(0, noise, block.shape) if noise else 0
        buffer[rows, cols] = np.round(block).astype(np.uint16)
    return buffer


def _instrument(**processing: object) -> InstrumentConfig:
    data = load_instrument(SIM_YAML).model_dump()
    data["processing"] = processing
    return InstrumentConfig.model_validate(data)


def _process(instrument: InstrumentConfig, buffer: np.ndarray, spec: ExposureSpec = OBJECT):
    plan = plan_instrument(instrument)[0]
    return process_buffer(buffer, plan, spec, instrument.processing)


# --- overscan ---------------------------------------------------------------------


@pytest.mark.parametrize("method", list(OverscanMethod))
def test_overscan_methods(method: OverscanMethod) -> None:
    block = np.zeros((100, 12), dtype=np.float32)
    block += np.arange(100, dtype=np.float32)[:, None]  # a bias that drifts by line
    block[:, 10:] += 1000
    block[:, :10] += 1000 + 50  # signal 50 in the data columns
    before = block.copy()
    level = correct_overscan(block, pixels=10, overscan=2, lines=90, method=method)
    if method is OverscanMethod.NONE:
        assert level == 0.0
        assert np.array_equal(block, before)
    elif method is OverscanMethod.MEDIAN:
        # One level for the amplifier: the drift stays.
        assert level == pytest.approx(1044.5)
        assert block[0, 0] == pytest.approx(50 - 44.5)
    else:
        # Line by line: the drift is gone from the science lines.
        assert level == pytest.approx(1044.5)
        assert np.allclose(block[:90, :10], 50)
        assert np.allclose(block[:90, 10:], 0)
        # Overscan lines take the overall level.
        assert block[95, 0] == pytest.approx(1095 + 50 - 1044.5)


def test_no_overscan_columns_means_no_correction() -> None:
    block = np.full((4, 4), 7, dtype=np.float32)
    assert (
        correct_overscan(block, pixels=4, overscan=0, lines=4, method=OverscanMethod.MEDIAN_ROW)
        == 0
    )
    assert np.all(block == 7)


# --- trim, gain, saturation -------------------------------------------------------


def test_trim_keeps_only_science_pixels_in_place() -> None:
    instrument = _instrument(trim=True)
    r1, _b1 = _process(instrument, _sim_buffer([1000, 1100, 1200, 1300]))
    assert r1.data.shape == (1024, 512)
    assert r1.trimmed
    assert r1.biassec is None
    assert r1.datasec is not None
    assert r1.datasec.fits() == "[1:512,1:1024]"
    assert [a.data.fits() for a in r1.amplifiers] == ["[1:512,1:512]", "[1:512,513:1024]"]
    assert np.allclose(r1.data, 100, atol=0.6)  # the signal, nothing else
    plan = plan_instrument(instrument)[0]
    assert processed_shape(plan.layout[0], ReadoutNumbers.of(plan), trim=True) == (1024, 512)
    assert processed_shape(plan.layout[0], ReadoutNumbers.of(plan), trim=False) == (1024, 544)


def test_trim_packs_four_quadrants_of_the_lvm_ccd() -> None:
    if not LVM_ACF.is_file():
        pytest.skip("LVM reference ACF not present")
    from tasks.post_process import ProcessingInputs, process_ccd

    acf = load_acf(LVM_ACF)
    region = ccd_layout(acf, 3)[0]
    buffer = np.full(acf.buffer_shape, 1000, dtype=np.uint16)
    ccd = load_instrument(SIM_YAML).controllers[0].ccds[0]
    inputs = ProcessingInputs(ccd, OBJECT, ProcessingConfig(trim=True))
    image = process_ccd(buffer, region, "b1", pixels=2040, overscan=20, lines=2040, inputs=inputs)
    assert image.data.shape == (4080, 4080)
    assert image.datasec is not None
    assert image.datasec.fits() == "[1:4080,1:4080]"
    assert sorted(a.data.fits() for a in image.amplifiers) == [
        "[1:2040,1:2040]",
        "[1:2040,2041:4080]",
        "[2041:4080,1:2040]",
        "[2041:4080,2041:4080]",
    ]


def test_electrons_use_per_amplifier_gain() -> None:
    data = load_instrument(SIM_YAML).model_dump()
    data["processing"] = {"electrons": True, "trim": True}
    data["controllers"][0]["ccds"][0]["amplifiers"] = [
        {"name": "A", "gain": 2.0, "read_noise": 5},
        {"name": "B", "gain": 3.0, "read_noise": 5},
    ]
    instrument = InstrumentConfig.model_validate(data)
    r1, b1 = _process(instrument, _sim_buffer([1000] * 4))
    assert r1.bunit == "electron"
    assert np.allclose(r1.data[:512], 200, atol=1.5)  # amp A: 100 ADU x 2
    assert np.allclose(r1.data[512:], 300, atol=1.5)  # amp B (flipped to the top) x 3
    assert np.allclose(b1.data, 150, atol=1)  # CCD gain 1.5


def test_saturated_pixels_are_counted_on_the_raw_data() -> None:
    buffer = _sim_buffer([1000] * 4)
    acf = load_acf(SIM_ACF)
    rows, cols = tap_regions(acf)[0]
    buffer[rows.start + 5, cols.start : cols.start + 7] = 65535  # 7 in r1's science pixels
    buffer[rows.start + 6, cols.start + 520] = 65535  # one in the overscan: not science
    r1, b1 = _process(_instrument(), buffer)
    assert r1.stats["saturated"] == 7
    assert b1.stats["saturated"] == 0
    data = load_instrument(SIM_YAML).model_dump()
    data["controllers"][0]["ccds"][1]["saturation_adu"] = 1000  # every b1 pixel is above
    b1_low = _process(InstrumentConfig.model_validate(data), buffer)[1]
    assert b1_low.stats["saturated"] == 1024 * 512


# --- user steps -------------------------------------------------------------------


def test_user_steps_run_in_order_and_are_recorded() -> None:
    instrument = _instrument(
        trim=True,
        steps=["tests.steps_for_tests:add_ten", "tests.steps_for_tests:clip_negative"],
    )
    r1 = _process(instrument, _sim_buffer([1000] * 4))[0]
    assert np.allclose(r1.data, 110, atol=0.6)
    assert [c for c in r1.cards if c[0] == "HISTORY"] == [
        ("HISTORY", "ccdflow step tests.steps_for_tests:add_ten", ""),
        ("HISTORY", "ccdflow step tests.steps_for_tests:clip_negative", ""),
    ]


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("tests.no_such_module:f", "cannot import"),
        ("tests.steps_for_tests:missing", "has no attribute"),
        ("tests.steps_for_tests:NOT_CALLABLE", "not callable"),
        ("tests.steps_for_tests:one_argument", "takes (image, context)"),
        ("just_a_name", "package.module:function"),
    ],
)
def test_bad_steps_are_refused_when_the_config_loads(name: str, reason: str) -> None:
    with pytest.raises(ValidationError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        ProcessingConfig(steps=[name])


def test_a_step_returning_the_wrong_shape_names_itself() -> None:
    instrument = _instrument(steps=["tests.steps_for_tests:wrong_shape"])
    with pytest.raises(StepError, match="wrong_shape returned"):
        _process(instrument, _sim_buffer([1000] * 4))


# --- master frames ----------------------------------------------------------------


def _master(tmp_path: Path, kind: str, value: float, shape=(1024, 512), bunit="adu") -> Path:
    instrument = load_instrument(SIM_YAML).with_overrides(data_root=tmp_path)
    combined = [
        CombinedCcd(ccd, np.full(shape, value, dtype=np.float32), "1 1", bunit, {}, 0.0)
        for ccd in ("r1", "b1")
    ]
    inputs = {
        ccd: [MasterInput(tmp_path / f"in-{n}.fits", ccd, n, 1.0, "ab" * 32) for n in (1, 2, 3)]
        for ccd in ("r1", "b1")
    }
    written = write_master(
        instrument,
        kind,
        "none",
        StackMethod.MEDIAN,
        combined,
        inputs,
        datetime(2026, 11, 21, 20, tzinfo=UTC),
    )
    return written.path


def test_masters_apply_by_image_type(tmp_path: Path) -> None:
    bias = _master(tmp_path, "bias", 5.0)
    dark = _master(tmp_path / "d", "dark", 2.0, bunit="adu/s")
    flat = _master(tmp_path / "f", "flat", 0.5)
    masters = MasterFrames(bias=bias, dark=dark, flats={"none": flat})
    assert set(masters_for(OBJECT, masters)) == {"bias", "dark", "flat"}
    assert set(masters_for(ExposureSpec(image_type="flat", exptime=1), masters)) == {
        "bias",
        "dark",
    }
    assert set(masters_for(ExposureSpec(image_type="dark", exptime=1), masters)) == {"bias"}
    assert masters_for(BIAS, masters) == {}
    assert masters_for(
        ExposureSpec(image_type="object", exptime=1, filter="g"), masters
    ).keys() == {
        "bias",
        "dark",
    }

    instrument = _instrument(trim=True, masters=masters.model_dump())
    r1 = _process(instrument, _sim_buffer([1000] * 4), OBJECT)[0]
    # (100 - 5 - 2 x 2 s) / 0.5
    assert np.allclose(r1.data, (100 - 5 - 4) / 0.5, atol=1.5)
    keys = {c[0]: c[1] for c in r1.cards}
    assert keys["ZEROCOR"] == bias.name
    assert keys["DARKCOR"] == dark.name
    assert keys["FLATCOR"] == flat.name


def test_master_that_does_not_fit_is_refused_before_exposing(tmp_path: Path) -> None:
    small = _master(tmp_path, "bias", 5.0, shape=(512, 256))
    masters = MasterFrames(bias=small)
    shapes = {"r1": (1024, 512), "b1": (1024, 512)}
    problems = master_problems(OBJECT, masters, shapes, "adu")
    assert len(problems) == 2
    assert "(512, 256) binned 1 1 for r1" in problems[0]
    dark_as_bias = MasterFrames(bias=_master(tmp_path / "d", "dark", 1.0, bunit="adu/s"))
    assert "is a master dark, not a bias" in master_problems(OBJECT, dark_as_bias, shapes, "adu")[0]
    fits_bias = MasterFrames(bias=_master(tmp_path / "b", "bias", 1.0))
    assert master_problems(OBJECT, fits_bias, shapes, "adu") == []
    assert (
        "this exposure needs electron" in master_problems(OBJECT, fits_bias, shapes, "electron")[0]
    )
    not_fits = tmp_path / "junk.fits"
    not_fits.write_text("junk")
    with pytest.raises(MasterFrameError, match="not a master frame file"):
        read_master_info(not_fits)


def test_master_files_are_valid_fits_with_provenance(tmp_path: Path) -> None:
    from astropy.io import fits

    from .fitscheck import assert_fitsverify_clean

    path = _master(tmp_path, "bias", 5.0)
    assert_fitsverify_clean(path)
    header = fits.getheader(path)
    assert header["IMAGETYP"] == "master_bias"
    assert header["NCOMBINE"] == 3
    assert [header[f"IMCMB00{n}"] for n in (1, 2, 3)] == ["in-1.fits", "in-2.fits", "in-3.fits"]
    assert header.comments["IMCMB002"].startswith("EXPNUM 2 sha256 abab")
    info = read_master_info(path)
    assert info.kind == "bias"
    assert set(info.ccds) == {"r1", "b1"}


def test_combine_reduces_darks_and_normalizes_flats(tmp_path: Path) -> None:
    """Frames written as the flow writes them, combined as a worker does."""
    from tasks.files.fits_files import ImagePart, write_fits

    rng = np.random.default_rng(3)

    def frame(name: str, value: float) -> Path:
        data = (value + rng.normal(0, 1, (600, 40))).astype(np.float32)
        cards = [("CCDNAME", "r1", ""), ("CCDSUM", "1 1", ""), ("BUNIT", "adu", "")]
        return write_fits(tmp_path / name, [ImagePart(data, cards)]).path

    bias = _bias_file(tmp_path)
    darks = [MasterInput(frame(f"d{i}.fits", 2 + 3 * 4.0), "r1", i, 4.0, "00") for i in range(5)]
    dark = combine_ccd(darks, "dark", StackMethod.MEDIAN, bias=bias)
    assert dark.bunit == "adu/s"
    assert dark.corrections == {"ZEROCOR": bias.name}
    assert abs(float(np.median(dark.data)) - 3.0) < 0.05  # (14 - 2) / 4 s

    flats = [
        MasterInput(frame(f"f{i}.fits", 2 + level), "r1", 10 + i, 1.0, "00")
        for i, level in enumerate((1000.0, 2000.0, 1500.0))
    ]
    flat = combine_ccd(flats, "flat", StackMethod.MEAN, bias=bias)
    assert flat.data.shape == (600, 40)  # combined in bands of rows, all rows present
    assert abs(float(np.median(flat.data)) - 1.0) < 1e-6
    assert float(flat.data.std()) < 0.01  # lamp levels normalized away before combining
    with pytest.raises(ValueError, match="no input frames"):
        combine_ccd([], "bias", StackMethod.MEDIAN)


def _bias_file(tmp_path: Path) -> Path:
    instrument = load_instrument(SIM_YAML).with_overrides(data_root=tmp_path / "bias")
    combined = [CombinedCcd("r1", np.full((600, 40), 2.0, np.float32), "1 1", "adu", {}, 0.0)]
    inputs = {"r1": [MasterInput(tmp_path / "b.fits", "r1", 1, 0.0, "00")]}
    when = datetime(2026, 11, 21, 20, tzinfo=UTC)
    return write_master(instrument, "bias", "none", StackMethod.MEDIAN, combined, inputs, when).path


def test_header_records_the_chain(tmp_path: Path) -> None:
    instrument = _instrument(trim=True, electrons=True)
    r1 = _process(instrument, _sim_buffer([1000] * 4))[0]
    facts = ExposureFacts(OBJECT, 1, datetime(2026, 11, 21, tzinfo=UTC), 2.0, None)
    cards = {c[0]: c[1] for c in ccd_cards(r1, instrument.controllers[0].ccds[0], "sim1", 0, facts)}
    assert cards["BUNIT"] == "electron"
    assert cards["OVERSCAN"] == "median_row"
    assert "TRIMSEC" not in cards
    assert cards["NSATURAT"] == 0
    assert cards["QMEDIAN"] == pytest.approx(150, abs=1)
