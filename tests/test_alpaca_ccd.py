"""Counts as the stage tasks take them: unsigned, 16-bit when they fit."""

from __future__ import annotations

import numpy as np
import pytest

from devices.alpaca.ccd import as_unsigned
from devices.base import DeviceStateError


def test_counts_that_fit_in_16_bits_are_uint16_in_the_same_orientation() -> None:
    pixels = np.arange(12, dtype=np.int32).reshape(3, 4)
    counts = as_unsigned(pixels)
    assert counts.dtype == np.uint16
    assert counts.flags.c_contiguous
    np.testing.assert_array_equal(counts, pixels)


def test_wider_counts_are_uint32_not_wrapped() -> None:
    pixels = np.array([[0, 70_000]], dtype=np.int32)
    counts = as_unsigned(pixels)
    assert counts.dtype == np.uint32
    assert int(counts[0, 1]) == 70_000


@pytest.mark.parametrize(
    ("pixels", "message"),
    [
        (np.array([[-1, 5]], dtype=np.int32), "negative counts"),
        (np.array([[1.5]], dtype=np.float64), "floating-point"),
    ],
)
def test_what_no_adc_gives_is_refused(pixels: np.ndarray, message: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(DeviceStateError, match=message):
        as_unsigned(pixels)
