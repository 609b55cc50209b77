"""Splitting a buffer into CCDs: overscan levels removed, amplifiers flipped into place."""

from __future__ import annotations

import numpy as np

from devices.archon.acf import ccd_layout, load_acf, tap_regions
from schemas.instrument import load_instrument
from tasks.control.instrument import plan_instrument
from tasks.post_process import Box, process_buffer, process_ccd

from .conftest import LVM_ACF, SIM_ACF, SIM_YAML


def _buffer_with_levels(levels: list[float], signal: float = 0.0) -> np.ndarray:
    """Sim-ACF buffer: each tap at its own bias; data columns carry a row ramp + signal."""
    acf = load_acf(SIM_ACF)
    buffer = np.zeros(acf.buffer_shape, dtype=np.uint16)
    for level, (rows, cols) in zip(levels, tap_regions(acf), strict=True):
        block = np.full((rows.stop - rows.start, cols.stop - cols.start), float(level))
        ramp = np.arange(block.shape[0])[:, None]  # readout-order row index
        block[:, :512] += signal + ramp
        buffer[rows, cols] = block.astype(np.uint16)
    return buffer


def test_overscan_is_subtracted_per_amplifier_and_recorded() -> None:
    plan = plan_instrument(load_instrument(SIM_YAML))[0]
    images = process_buffer(_buffer_with_levels([1000, 1100, 1200, 1300], signal=50), plan)
    assert [image.name for image in images] == ["r1", "b1"]
    r1, b1 = images
    assert [a.overscan_level for a in r1.amplifiers] == [1000.0, 1200.0]
    assert [a.overscan_level for a in b1.amplifiers] == [1100.0, 1300.0]
    # Overscan columns are ~0 after subtraction; data keep only the signal + ramp.
    assert np.all(r1.data[:, 512:] == 0)
    assert r1.data[0, 0] == 50.0  # first line read by amplifier A is the bottom row
    assert r1.data[1023, 0] == 50.0  # ... and by amplifier B (flipped) the top row
    assert r1.data[511, 0] == 50.0 + 511


def test_sections_describe_the_written_image() -> None:
    plan = plan_instrument(load_instrument(SIM_YAML))[0]
    image = process_buffer(_buffer_with_levels([1000] * 4), plan)[0]
    assert image.datasec is not None
    assert image.datasec.fits() == "[1:512,1:1024]"
    assert image.biassec is not None
    assert image.biassec.fits() == "[513:544,1:1024]"
    assert [a.data.fits() for a in image.amplifiers] == ["[1:512,1:512]", "[1:512,513:1024]"]


def test_box_fits_section_is_one_based_inclusive() -> None:
    assert Box(0, 10, 5, 20).fits() == "[6:20,1:10]"


def test_lvm_geometry_flips_right_amplifiers_and_has_no_single_datasec() -> None:
    if not LVM_ACF.is_file():
        import pytest

        pytest.skip("LVM reference ACF not present")
    acf = load_acf(LVM_ACF)
    region = ccd_layout(acf, 3)[0]
    buffer = np.full(acf.buffer_shape, 1000, dtype=np.uint16)
    image = process_ccd(buffer, region, "b1", pixels=2040, overscan=20, lines=2040)
    assert image.data.shape == (4080, 4120)
    right_bottom = next(a for a in image.amplifiers if a.data.c0 > 0 and a.data.r0 == 0)
    # A right-hand amplifier's overscan ends up next to the CCD's middle, left of its data.
    assert right_bottom.bias is not None
    assert right_bottom.bias.c1 == right_bottom.data.c0
    assert image.datasec is None  # data of the four quadrants are not one rectangle
    assert np.allclose(image.data, 0.0)
