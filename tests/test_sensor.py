"""Synthetic pixels: levels, noise, dark, flat, cosmics, reproducibility, speed."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from devices.archon.acf import AcfConfig, amplifier_data, ccd_layout, load_acf, tap_regions
from devices.archon.sensor import SensorModel, data_region, flat_field, render_frame

REPO = Path(__file__).resolve().parents[1]
SIM_ACF = REPO / "deploy" / "instruments" / "sim.acf"
LVM_ACF = Path(__file__).resolve().parents[2] / "shared/reference/lvm-100khz.acf"

QUIET = SensorModel(cosmic_rate=0.0)


@pytest.fixture(scope="module")
def acf() -> AcfConfig:
    return load_acf(SIM_ACF)


def blocks(acf: AcfConfig, frame: np.ndarray) -> list[np.ndarray]:
    return [frame[rows, cols] for rows, cols in tap_regions(acf)]


def test_bias_frame_sits_at_bias_within_noise(acf: AcfConfig) -> None:
    frame = render_frame(acf, QUIET, dark_seconds=0, light_seconds=0, frame_number=1)
    assert frame.dtype == np.uint16
    assert frame.shape == acf.buffer_shape
    for tap, block in enumerate(blocks(acf, frame)):
        level = QUIET.bias_level(tap)
        assert level == 1000 + 100 * tap
        assert abs(block.mean() - level) < 0.05
        assert block.std() == pytest.approx(QUIET.read_noise, rel=0.03)
        assert QUIET.noise_adu() == QUIET.read_noise


def test_bias_override_and_validation(acf: AcfConfig) -> None:
    model = SensorModel(bias=(500.0, 600.0, 700.0, 800.0), cosmic_rate=0.0)
    frame = render_frame(acf, model, dark_seconds=0, light_seconds=0, frame_number=0)
    assert [round(float(b.mean())) for b in blocks(acf, frame)] == [500, 600, 700, 800]
    with pytest.raises(ValueError, match="bias"):
        render_frame(acf, SensorModel(bias=(1.0,)), dark_seconds=0, light_seconds=0, frame_number=0)
    with pytest.raises(ValueError, match="gain"):
        SensorModel(gain=0)


def test_dark_grows_with_dark_time(acf: AcfConfig) -> None:
    model = SensorModel(dark_current=30.0, cosmic_rate=0.0)
    pixels = acf.parameter_int("Pixels")
    means = []
    for seconds in (0.0, 10.0, 50.0):
        frame = render_frame(acf, model, dark_seconds=seconds, light_seconds=0, frame_number=2)
        data = frame[:512, :pixels].astype(float)
        expected = model.expected_adu(0, dark_seconds=seconds)
        assert data.mean() == pytest.approx(expected, abs=0.1)
        assert data.std() == pytest.approx(model.noise_adu(dark_seconds=seconds), rel=0.03)
        means.append(data.mean())
    assert means[0] < means[1] < means[2]
    assert means[2] - means[0] == pytest.approx(30.0 * 50 / model.gain, rel=0.01)


def test_flat_flux_only_with_light(acf: AcfConfig) -> None:
    pixels = acf.parameter_int("Pixels")
    dark = render_frame(acf, QUIET, dark_seconds=3, light_seconds=0, frame_number=3)
    lit = render_frame(acf, QUIET, dark_seconds=3, light_seconds=2, frame_number=3)
    dark_level = dark[:512, :pixels].mean() - QUIET.bias_level(0)
    lit_level = lit[:512, :pixels].mean() - QUIET.bias_level(0)
    assert dark_level == pytest.approx(2.0 * 3 / 1.5, abs=0.1)
    assert lit_level == pytest.approx((2.0 * 3 + 4000 * 2) / 1.5, rel=0.002)
    # The flat has structure: the smoothed image varies by a few percent.
    flat = flat_field(QUIET, 0, (512, pixels))
    assert flat.mean() == pytest.approx(1.0, abs=1e-4)
    assert 0.01 < float(flat.max() - flat.min()) < 0.2
    assert np.array_equal(flat, flat_field(QUIET, 0, (512, pixels)))
    assert not np.array_equal(flat, flat_field(QUIET, 1, (512, pixels)))


def test_overscan_has_no_signal(acf: AcfConfig) -> None:
    model = SensorModel(cosmic_rate=1e-3)
    frame = render_frame(acf, model, dark_seconds=20, light_seconds=10, frame_number=4)
    lines, pixels = data_region(acf)
    assert (lines, pixels) == (512, 512)
    for tap, block in enumerate(blocks(acf, frame)):
        overscan = block[:, pixels:].astype(float)
        assert abs(overscan.mean() - model.bias_level(tap)) < 0.3
        assert overscan.std() == pytest.approx(model.read_noise, rel=0.1)
        assert overscan.max() < model.bias_level(tap) + 10 * model.read_noise
        assert block[:, :pixels].mean() > model.bias_level(tap) + 1000


def test_window_parameters_override(acf: AcfConfig) -> None:
    frame = render_frame(
        acf, QUIET, dark_seconds=0, light_seconds=1, frame_number=5, params={"PIXELS": 500}
    )
    block = frame[:512, :544]
    assert block[:, :500].mean() > 2000
    assert block[:, 500:].mean() == pytest.approx(QUIET.bias_level(0), abs=0.5)


def test_cosmic_rays_hit_data_pixels(acf: AcfConfig) -> None:
    model = SensorModel(cosmic_rate=1e-4)
    frame = render_frame(acf, model, dark_seconds=10, light_seconds=0, frame_number=6)
    hot = frame[:512, :512] > model.bias_level(0) + 200
    # about 262 hits per tap; each lights up a few pixels
    assert 100 < hot.sum() < 2000
    clean = render_frame(acf, QUIET, dark_seconds=10, light_seconds=0, frame_number=6)
    assert (clean[:512, :512] > QUIET.bias_level(0) + 200).sum() == 0


def test_saturation_clips_to_sample_range(acf: AcfConfig) -> None:
    frame = render_frame(acf, QUIET, dark_seconds=1, light_seconds=1e4, frame_number=7)
    data = frame[:512, :512]
    full_well_adu = QUIET.bias_level(0) + QUIET.full_well / QUIET.gain
    assert full_well_adu > 65535
    assert data.min() == 65535


def test_seed_and_frame_reproducibility(acf: AcfConfig) -> None:
    def frame(seed: int, number: int) -> np.ndarray:
        model = SensorModel(seed=seed)
        return render_frame(acf, model, dark_seconds=5.0, light_seconds=1.0, frame_number=number)

    a, b, c, d = frame(9, 11), frame(9, 11), frame(9, 12), frame(10, 11)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert not np.array_equal(a, d)


def test_partial_readout_leaves_later_lines_empty(acf: AcfConfig) -> None:
    full = render_frame(acf, QUIET, dark_seconds=1, light_seconds=1, frame_number=8)
    part = render_frame(acf, QUIET, dark_seconds=1, light_seconds=1, frame_number=8, lines_read=100)
    for amp in ccd_layout(acf, 2)[0].amplifiers:
        p = amplifier_data(part, amp)
        assert p[100:].max() == 0
        assert p[:100].min() > 0
    # the first tap's first lines are drawn first from the same stream
    assert np.array_equal(part[:100, :544], full[:100, :544])


def test_thirty_two_bit_mode(acf: AcfConfig) -> None:
    from devices.archon.acf import parse_wire_lines

    lines = [line if line != "SAMPLEMODE=0" else "SAMPLEMODE=1" for line in acf.wire_lines()]
    wide = parse_wire_lines(lines)
    frame = render_frame(wide, QUIET, dark_seconds=0, light_seconds=1e4, frame_number=1)
    assert frame.dtype == np.uint32
    assert frame[:512, :512].mean() > 65535


def test_lvm_frame_is_fast() -> None:
    if not LVM_ACF.exists():
        pytest.skip("reference ACF not available")
    lvm = load_acf(LVM_ACF)
    start = time.perf_counter()
    frame = render_frame(lvm, SensorModel(), dark_seconds=900, light_seconds=0, frame_number=1)
    elapsed = time.perf_counter() - start
    assert frame.shape == (4080, 12360)
    assert frame.dtype == np.uint16
    assert elapsed < 2.5, f"LVM frame took {elapsed:.2f} s"
    # LVM data: 2040 x 2040 per tap, 20 overscan columns.
    assert abs(frame[:2040, 2040:2060].mean() - 1000) < 1
