"""The timing core's readout: windows, skips, binning, WaitCount, 32-bit samples."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import numpy as np
import pytest

from devices.archon.acf import AcfConfig, load_acf, tap_regions
from devices.archon.sensor import SensorModel, flat_field, render_frame
from devices.archon.simulator import ArchonSimulator
from devices.archon.simulator.readout import ReadoutSchedule, flush_seconds

from .wire import QUIET, SIM_ACF, Conn, expose, fetch, set_params, wait_complete

RATE = 2_000_000.0


@pytest.fixture(scope="module")
def acf() -> AcfConfig:
    return load_acf(SIM_ACF)


def sim_params(acf: AcfConfig, **changes: int) -> dict[str, int]:
    params = {name: int(value) for name, value in acf.parameters.items()}
    return {**params, **changes}


# ---------------------------------------------------------------- schedule


def test_schedule_full_frame(acf: AcfConfig) -> None:
    plan = ReadoutSchedule.plan(acf, sim_params(acf), RATE)
    assert (plan.rows, plan.data_rows, plan.stored_rows) == (512, 512, 512)
    assert plan.row_time == pytest.approx(544 / RATE)
    assert plan.total == pytest.approx(512 * 544 / RATE)
    assert [plan.rows_done(t * plan.row_time) for t in (0, 0.5, 1.01, 100.5)] == [0, 0, 1, 100]
    assert plan.rows_done(plan.total) == 512


def test_schedule_wait_count_is_per_line(acf: AcfConfig) -> None:
    base = ReadoutSchedule.plan(acf, sim_params(acf), RATE)
    slow = ReadoutSchedule.plan(acf, sim_params(acf, WaitCount=1000), RATE)
    assert slow.row_time - base.row_time == pytest.approx(1000 * 10e-9)
    assert slow.total - base.total == pytest.approx(512 * 1000 * 10e-9)


def test_schedule_skips_are_fast_and_not_stored(acf: AcfConfig) -> None:
    params = sim_params(acf, Lines=400, OverscanLines=112, PreSkipLines=50, PostSkipLines=20)
    plan = ReadoutSchedule.plan(acf, params, RATE)
    skip_line = 544 / RATE / 10
    assert plan.preskip == pytest.approx(50 * skip_line)
    assert plan.postskip == pytest.approx(20 * skip_line)
    assert plan.rows_done(plan.preskip * 0.99) == 0
    after_data = plan.preskip + 400 * plan.row_time + 1e-9
    assert plan.rows_done(after_data) == 400
    assert plan.rows_done(after_data + plan.postskip * 0.9) == 400  # the gap stores nothing
    assert plan.rows_done(after_data + plan.postskip + 10.5 * plan.row_time) == 410


def test_schedule_skipped_pixels_and_binning(acf: AcfConfig) -> None:
    params = sim_params(acf, PreSkipPixels=100, HorizontalBinning=2, VerticalBinning=4)
    plan = ReadoutSchedule.plan(acf, params, RATE)
    samples = (512 + 32) // 2
    fast = 100 + 544 - samples
    assert plan.row_time == pytest.approx((samples + fast / 10) / RATE)
    assert plan.rows == plan.data_rows == 128
    assert flush_seconds(acf, params, RATE) == pytest.approx(512 * 644 / RATE / 10)


# --------------------------------------------------------------- on the wire


async def set_window(conn: Conn, sim: ArchonSimulator, **window: int) -> None:
    """What a client's set_window does: parameters, then LINECOUNT/PIXELCOUNT + APPLYCDS."""
    await set_params(conn, **window)
    p = sim.params
    vbin, hbin = p["VerticalBinning"], p["HorizontalBinning"]
    lines = (p["Lines"] + p["OverscanLines"]) // vbin
    pixels = (p["Pixels"] + p["OverscanPixels"]) // hbin
    await write_config(conn, LINECOUNT=lines, PIXELCOUNT=pixels)
    await conn.cmd("APPLYCDS")


async def write_config(conn: Conn, **values: int) -> None:
    for index, line in enumerate(load_acf(SIM_ACF).wire_lines()):
        key = line.partition("=")[0]
        if key in values:
            await conn.cmd(f"WCONFIG{index:04X}{key}={values[key]}")


async def test_binned_window_geometry_and_charge(sim: ArchonSimulator, conn: Conn) -> None:
    await set_window(conn, sim, Lines=256, Pixels=256, VerticalBinning=2, HorizontalBinning=2)
    n = await expose(conn, 1, int_cs=10, shutter=1)
    _, status = await wait_complete(conn, 1)
    # LINECOUNT = 256 // 2 = 128, PIXELCOUNT = (256 + 32) // 2 = 144; split mode, 4 taps.
    assert (status[f"BUF{n}WIDTH"], status[f"BUF{n}HEIGHT"]) == ("288", "256")
    assert status[f"BUF{n}LINES"] == "256"
    pixels = await fetch(conn, n, status)
    assert np.array_equal(pixels, sim.buffer_data(n))
    ((opened, closed),) = sim.shutter_log
    per_pixel = QUIET.illumination * (closed - opened) / QUIET.gain
    for tap, (rows, cols) in enumerate(tap_regions(sim.acf)):
        block = pixels[rows, cols].astype(float)
        bias = QUIET.bias_level(tap)
        assert block[:, :128].mean() - bias == pytest.approx(4 * per_pixel, rel=0.05)
        assert block[:, 128:].mean() == pytest.approx(bias, abs=0.5)  # overscan: bias only
        assert block[:, 128:].std() == pytest.approx(QUIET.read_noise, rel=0.1)


async def test_skipped_lines_take_less_time(sim: ArchonSimulator, conn: Conn) -> None:
    sim.pixel_rate_hz = 1e6
    await set_window(conn, sim, Lines=256, PreSkipLines=256)
    start = time.monotonic()
    await expose(conn, 1)
    elapsed = time.monotonic() - start
    # 256 skipped lines at a tenth of 544 us, then 256 read lines of 544 us: 0.153 s.
    # Reading all 512 would take 0.279 s.
    assert 0.14 < elapsed < 0.26
    assert sim.buffer_data(1) is not None
    assert sim.buffer_data(1).shape == (512, 1088)


async def test_lines_stay_zero_during_preskip(sim: ArchonSimulator, conn: Conn) -> None:
    sim.pixel_rate_hz = 1e6
    await set_window(conn, sim, Lines=16, PreSkipLines=4000, WaitCount=0)
    await set_params(conn, IntCS=0, ReadOut=1, Exposures=1)
    await conn.cmd("RELEASETIMING")
    seen: list[tuple[float, int]] = []
    start = time.monotonic()
    while True:
        frame = await conn.kv("FRAME")
        if frame["BUF1FRAME"] == "1":
            seen.append((time.monotonic() - start, int(frame["BUF1LINES"])))
            if frame["BUF1COMPLETE"] == "1":
                break
        await asyncio.sleep(0.005)
    # 4000 skipped lines of 54.4 us: 0.22 s with nothing stored.
    assert [lines for t, lines in seen if t < 0.18] == [0] * sum(t < 0.18 for t, _ in seen)
    assert seen[-1][1] == 32  # 16 lines per tap, both halves of the split buffer
    assert seen[-1][0] > 0.2


async def test_thirty_two_bit_samples() -> None:
    bright = SensorModel(cosmic_rate=0.0, illumination=2e6, full_well=1e7)
    async with ArchonSimulator(load_acf(SIM_ACF), sensor=bright) as sim:
        conn = await Conn.open(sim)
        await write_config(conn, SAMPLEMODE=1)
        await conn.cmd("APPLYCDS")
        n = await expose(conn, 1, int_cs=10, shutter=1)  # 2e5 e- / 1.5: above 16 bits
        _, status = await wait_complete(conn, 1)
        assert status[f"BUF{n}SAMPLE"] == "1"
        pixels = await fetch(conn, n, status)  # 4 bytes per pixel on the wire
        await conn.close()
    stored = sim.buffer_data(n)
    assert stored is not None
    assert stored.dtype == np.uint32
    assert np.array_equal(pixels, stored)
    assert pixels[:512, :512].min() > 65535
    assert pixels[:512, 512:544].max() < 2000  # overscan: bias only


def test_binned_pixels_sum_charge_with_one_read_noise(acf: AcfConfig) -> None:
    model = SensorModel(cosmic_rate=0.0, dark_current=100.0, read_noise=5.0)
    params = {"VerticalBinning": 2, "HorizontalBinning": 4}
    frame = render_frame(
        acf, model, dark_seconds=10, light_seconds=0, frame_number=1, params=params
    )
    data = frame[:256, :128].astype(float)  # 512 / 2 rows, 512 / 4 columns
    signal_e = 8 * 100.0 * 10
    assert data.mean() == pytest.approx(model.bias_level(0) + signal_e / model.gain, abs=1)
    expected_noise = np.sqrt(model.read_noise**2 + signal_e / model.gain**2)
    assert data.std() == pytest.approx(expected_noise, rel=0.05)


def test_skipped_window_sees_its_part_of_the_flat(acf: AcfConfig) -> None:
    model = SensorModel(cosmic_rate=0.0, read_noise=1.0, illumination=1e5, full_well=1e6)
    sample_32 = dataclasses.replace(acf, sample_mode=1)
    params = {"Lines": 256, "PreSkipLines": 200, "PostSkipLines": 56}
    frame = render_frame(
        sample_32, model, dark_seconds=0, light_seconds=0.5, frame_number=1, params=params
    )
    rows = frame[:256, :512].astype(float).mean(axis=1) - model.bias_level(0)
    flat = flat_field(model, 0, (512, 512))
    expected = 0.5e5 / model.gain * flat.mean(axis=1)
    assert np.allclose(rows, expected[200:456], rtol=2e-3)
    assert not np.allclose(rows, expected[:256], rtol=2e-3)  # the offset matters
