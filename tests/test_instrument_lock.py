"""One run per instrument: a second run waits (and says why) or fails fast."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from flows.exposure import take_exposure
from schemas.exposure import ExposureSpec
from schemas.instrument import InstrumentConfig
from tasks.durable.instrument_lock import InstrumentBusyError, lock_path

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]

DARK = ExposureSpec(image_type="dark", exptime=1.0)


def _with(instrument: InstrumentConfig, **fields: object) -> InstrumentConfig:
    return InstrumentConfig.model_validate({**instrument.model_dump(), **fields})


async def test_two_runs_on_one_instrument_never_overlap(sim_instrument: InstrumentConfig) -> None:
    first, second = await asyncio.gather(
        take_exposure(DARK, sim_instrument), take_exposure(DARK, sim_instrument)
    )
    spans = sorted((e.date_obs, e.finished_at) for e in [*first, *second])
    assert len(spans) == 2
    (_, end_a), (start_b, _) = spans
    assert end_a is not None
    assert end_a <= start_b  # the second integration began after the first was written
    assert sorted(e.expnum for e in [*first, *second]) == [1, 2]
    assert json.loads(lock_path(sim_instrument).read_text() or "{}") == {}  # released


async def test_a_second_run_fails_fast_when_asked_to(sim_instrument: InstrumentConfig) -> None:
    instrument = _with(sim_instrument, on_busy="fail")
    first = asyncio.ensure_future(
        take_exposure(DARK.model_copy(update={"exptime": 3.0}), instrument)
    )
    # Wait until the first run holds the instrument (its lock file names it).
    for _ in range(600):
        text = lock_path(instrument).read_text() if lock_path(instrument).exists() else ""
        if text:
            break
        await asyncio.sleep(0.05)
    holder = json.loads(text)
    with pytest.raises(InstrumentBusyError, match=f"flow run {holder['flow_run_id']}"):
        await take_exposure(DARK, instrument)
    assert len(await first) == 1


async def test_a_wait_that_times_out_says_who_holds_the_instrument(
    sim_instrument: InstrumentConfig,
) -> None:
    instrument = _with(sim_instrument, busy_timeout_s=0.5)
    first = asyncio.ensure_future(
        take_exposure(DARK.model_copy(update={"exptime": 3.0}), instrument)
    )
    while not (lock_path(instrument).exists() and lock_path(instrument).read_text()):
        await asyncio.sleep(0.05)
    with pytest.raises(InstrumentBusyError, match=r"is busy: flow run .* gave up after 0.5 s"):
        await take_exposure(DARK, instrument)
    await first


async def test_two_data_roots_on_the_same_controllers_still_exclude_each_other(
    sim_instrument: InstrumentConfig, tmp_path: Path
) -> None:
    """The lock belongs to the hardware: another data root or config name is no way in."""
    first_config = sim_instrument.with_overrides(data_root=tmp_path / "night")
    other = _with(sim_instrument, name="engineering", on_busy="fail").with_overrides(
        data_root=tmp_path / "engineering"
    )
    assert lock_path(first_config) == lock_path(other)
    first = asyncio.ensure_future(
        take_exposure(DARK.model_copy(update={"exptime": 3.0}), first_config)
    )
    while not (lock_path(first_config).exists() and lock_path(first_config).read_text()):
        await asyncio.sleep(0.05)
    with pytest.raises(InstrumentBusyError, match="instrument engineering is busy"):
        await take_exposure(DARK, other)
    assert len(await first) == 1
