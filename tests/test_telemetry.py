"""Telemetry snapshots: bounded in time, a silent or failing source is only 'missing'."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping

import numpy as np
import pytest

from schemas.exposure import StackMethod
from tasks.headers.telemetry import take_snapshot
from tasks.post_process import AmplifierResult, Box, CcdImage
from tasks.processing.stack import combine


async def test_a_silent_source_is_missing_and_does_not_delay_the_others() -> None:
    async def quick() -> Mapping[str, float]:
        return {"TEMP": -100.0}

    async def silent() -> Mapping[str, float]:
        await asyncio.sleep(3600)
        return {}

    async def broken() -> Mapping[str, float]:
        raise ConnectionError("link down")

    start = time.monotonic()
    snapshot = await take_snapshot({"a": quick, "b": silent, "c": broken}, timeout=0.2)
    assert time.monotonic() - start < 1.0
    assert snapshot.values == {"a": {"TEMP": -100.0}}
    assert snapshot.missing["b"] == "no answer within 0.2 s"
    assert snapshot.missing["c"] == "ConnectionError: link down"


async def test_no_sources_is_an_empty_snapshot() -> None:
    snapshot = await take_snapshot({})
    assert snapshot.values == {}
    assert snapshot.missing == {}


def _image(value: float, level: float) -> CcdImage:
    data = np.full((4, 6), value, dtype=np.float32)
    amp = AmplifierResult("A", Box(0, 4, 0, 4), Box(0, 4, 4, 6), level)
    return CcdImage("r1", data, (amp,), Box(0, 4, 0, 4), Box(0, 4, 4, 6), {})


@pytest.mark.parametrize(
    ("method", "expected"),
    [(StackMethod.MEDIAN, 2.0), (StackMethod.MEAN, 4.0), (StackMethod.SUM, 12.0)],
)
def test_combine(method: StackMethod, expected: float) -> None:
    frames = [_image(1.0, 1000.0), _image(2.0, 1002.0), _image(9.0, 1004.0)]
    combined = combine(frames, method)
    assert float(combined.data[0, 0]) == expected
    assert combined.amplifiers[0].overscan_level == 1002.0
    assert combined.stats["mean"] == expected


def test_combine_refuses_mixed_ccds() -> None:
    other = _image(1.0, 0.0)
    other = CcdImage("b1", other.data, other.amplifiers, other.datasec, other.biassec, {})
    with pytest.raises(ValueError, match="different CCDs"):
        combine([_image(1.0, 0.0), other], StackMethod.MEAN)
