"""When did the shutter open and close? ExposureTimes checked against the simulator's blade.

The simulator's timing core latches BUFnRETIMESTAMP/FETIMESTAMP from its TIMER (which
is ``time.monotonic()`` rebased) in the same step as it opens and closes the blade, and
the blade logs those moments in ``time.monotonic()``. The test converts them to UTC
with its own reading of ``time.time() - time.monotonic()``; the adapter never sees
that offset, only FRAME replies, so agreement means its TIMER-to-UTC mapping works.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC

import pytest

from devices.archon.acf import load_acf
from devices.archon.controller import (
    CONTROLLER_TIMER,
    HOST_CLOCK,
    ArchonController,
    ControllerTiming,
    IntegrationRecord,
    TimerSample,
)
from devices.archon.simulator import ArchonSimulator
from devices.archon.status import BufferInfo
from devices.base import ExposureTimes

from .conftest import SIM_ACF
from .test_link_faults import FakeArchon

ACF = load_acf(SIM_ACF)

TIMER_ALLOWANCE = 0.001
"""Error outside the adapter's stated uncertainty in the controller-timer comparison:
the test's own monotonic-to-UTC offset (two clock reads, microseconds apart),
``datetime``'s rounding to 1 us, and an NTP slew of the host clock during the test
(at most 500 ppm, so 0.5 ms over its second). The simulator latches each edge in the
same synchronous step as it moves the blade, so scheduling adds nothing here."""

HOST_ALLOWANCE = 0.010
"""Error outside the stated uncertainty in the host-clock comparisons, besides the
above: the simulator's timing core is an asyncio task in this test's event loop, so
it may move the blade a loop iteration after it acknowledged a command, and it times
the integration with an asyncio timer that fires late by epoll's millisecond
rounding plus whatever else the loop is doing (measured: 1.2 ms on an idle machine,
5.5 ms with both cores busy with other processes); a real controller times the
integration in hardware. The host clock cannot see that lateness; the controller
timer does, which is why it is the preferred source."""


def _utc_offset() -> float:
    """``time.time() - time.monotonic()``, from the tightest of a few paired reads."""
    pairs = []
    for _ in range(5):
        before = time.monotonic()
        wall = time.time()
        after = time.monotonic()
        pairs.append((after - before, wall - (before + after) / 2))
    return min(pairs)[1]


@asynccontextmanager
async def _controller(
    sim: ArchonSimulator, *, shutter_timestamps: bool
) -> AsyncIterator[ArchonController]:
    timing = ControllerTiming(
        command_timeout=2.0, readout_timeout=20.0, shutter_timestamps=shutter_timestamps
    )
    async with ArchonController("127.0.0.1", sim.port, ACF, timing=timing) as ctrl:
        await ctrl.reset()
        yield ctrl


def _blade_utc(sim: ArchonSimulator, offset: float) -> tuple[float, float]:
    opened, closed = sim.shutter_log[-1]
    return opened + offset, closed + offset


async def test_a_light_exposure_is_dated_by_the_controller_timer(
    archon_sim: ArchonSimulator,
) -> None:
    offset = _utc_offset()
    async with _controller(archon_sim, shutter_timestamps=True) as ctrl:
        await ctrl.expose(0.5, open_shutter=True)
        await ctrl.readout()
        times = ctrl.exposure_times()
    opened, closed = _blade_utc(archon_sim, offset)
    assert times.source == CONTROLLER_TIMER
    assert times.fallback_reason is None
    assert times.start.tzinfo is UTC
    assert times.uncertainty_s is not None
    assert times.uncertainty_s < 0.005  # loopback round trips: a bound worth checking
    bound = times.uncertainty_s + TIMER_ALLOWANCE
    assert abs(times.start.timestamp() - opened) <= bound
    assert abs(times.end.timestamp() - closed) <= bound
    assert abs(times.measured_s - (closed - opened)) <= 2 * bound
    assert times.requested_s == 0.5
    assert abs(times.measured_s - times.requested_s) < 0.05  # the simulator's own timer


async def test_without_shutter_timestamps_the_host_clock_brackets_the_shutter(
    archon_sim: ArchonSimulator,
) -> None:
    offset = _utc_offset()
    async with _controller(archon_sim, shutter_timestamps=False) as ctrl:
        await ctrl.expose(0.5, open_shutter=True)
        await ctrl.readout()
        times = ctrl.exposure_times()
    opened, closed = _blade_utc(archon_sim, offset)
    assert times.source == HOST_CLOCK
    assert times.fallback_reason is None
    assert times.uncertainty_s is not None
    assert times.uncertainty_s < 0.005
    bound = times.uncertainty_s + HOST_ALLOWANCE
    assert times.start.timestamp() - bound <= opened
    assert closed <= times.end.timestamp() + bound
    assert abs(times.start.timestamp() - opened) <= bound
    # The end is the start plus what the controller was told to integrate (IntMS).
    assert times.measured_s == pytest.approx(0.5, abs=2e-6)
    assert times.requested_s == 0.5


@pytest.mark.parametrize("shutter_timestamps", [False, True])
async def test_an_aborted_exposure_ends_at_the_abort(
    archon_sim: ArchonSimulator, shutter_timestamps: bool
) -> None:
    offset = _utc_offset()
    async with _controller(archon_sim, shutter_timestamps=shutter_timestamps) as ctrl:
        task = asyncio.create_task(ctrl.expose(5.0, open_shutter=True))
        while not archon_sim.shutter_open:
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        times = ctrl.exposure_times()
    opened, closed = _blade_utc(archon_sim, offset)
    assert times.source == HOST_CLOCK
    assert times.uncertainty_s is not None
    bound = times.uncertainty_s + HOST_ALLOWANCE
    assert abs(times.end.timestamp() - closed) <= bound
    assert abs(times.start.timestamp() - opened) <= bound
    assert times.requested_s == 5.0
    assert 0.25 < times.measured_s < 1.0
    if shutter_timestamps:  # aborted without a readout: no frame carries the edges
        assert times.fallback_reason is not None
        assert "no frame" in times.fallback_reason
    else:
        assert times.fallback_reason is None


async def test_a_reset_during_an_integration_ends_it_there(archon_sim: ArchonSimulator) -> None:
    """A reset (the make-safe path) ends the integration like an abort does."""
    offset = _utc_offset()
    async with _controller(archon_sim, shutter_timestamps=False) as ctrl:
        task = asyncio.create_task(ctrl.expose(1.0, open_shutter=True))
        while not archon_sim.shutter_open:
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.2)
        await ctrl.reset()
        await task
        times = ctrl.exposure_times()
    opened, closed = _blade_utc(archon_sim, offset)
    assert times.uncertainty_s is not None
    assert abs(times.end.timestamp() - closed) <= times.uncertainty_s + HOST_ALLOWANCE
    assert times.measured_s == pytest.approx(closed - opened, abs=2 * HOST_ALLOWANCE)
    assert 0.15 < times.measured_s < 0.5


async def test_before_any_integration_there_are_no_times() -> None:
    ctrl = ArchonController("127.0.0.1", 1, ACF)
    with pytest.raises(RuntimeError, match="no integration"):
        ctrl.exposure_times()


@pytest.mark.parametrize("stamps", [False, True])
async def test_a_timing_script_without_edges_falls_back_to_the_host_clock(stamps: bool) -> None:
    """Over the wire: an older controller's FRAME has no RE/FETIMESTAMP keys at all."""
    peer = FakeArchon(stamps=stamps)
    timing = ControllerTiming(command_timeout=2.0, readout_timeout=5.0, shutter_timestamps=True)
    try:
        async with ArchonController("127.0.0.1", await peer.start(), ACF, timing=timing) as ctrl:
            await ctrl.expose(0.05, open_shutter=False)
            await ctrl.readout()
            times = ctrl.exposure_times()
    finally:
        await peer.stop()
    if stamps:
        assert times.source == CONTROLLER_TIMER
        assert times.fallback_reason is None
    else:
        assert times.source == HOST_CLOCK
        assert times.fallback_reason is not None
        assert "(zero)" in times.fallback_reason
    assert times.uncertainty_s is not None
    assert times.measured_s == pytest.approx(0.05, abs=2 * times.uncertainty_s + 1e-5)


# -- the arithmetic, without I/O ------------------------------------------------------


def _record(
    rising: int, falling: int, *, before: int = 1_000, frame_start: int = 200_000_000
) -> IntegrationRecord:
    info = BufferInfo(
        number=2,
        sample=0,
        complete=True,
        mode=0,
        base=0xC0000000,
        frame=7,
        width=8,
        height=8,
        lines=8,
        timestamp=frame_start,
        re_timestamp=rising,
        fe_timestamp=falling,
    )
    return IntegrationRecord(
        requested_s=1.0,
        programmed_s=1.0,
        sent=1_000.000,
        acked=1_000.002,
        before=TimerSample(sent=999.999, received=1_000.000, ticks=before),
        buffer=info,
    )


@pytest.mark.parametrize(
    ("rising", "falling", "reason"),
    [
        (0, 0, "(zero)"),
        (0, 100_000_000, "(zero)"),
        (150_000_000, 50_000_000, "precedes RETIMESTAMP"),
        (500, 100_000_500, "predates the TIMER"),
        (100_000, 250_000_000, "not this frame's"),
    ],
)
def test_unusable_edges_fall_back_to_the_host_clock_and_say_why(
    rising: int, falling: int, reason: str
) -> None:
    record = _record(rising, falling)
    times = record.times(use_timer=True, rate_tolerance=50e-6)
    assert times.source == HOST_CLOCK
    assert times.fallback_reason is not None
    assert reason in times.fallback_reason
    assert times == replace(record.host_clock_times(50e-6), fallback_reason=times.fallback_reason)
    # The host clock's view: the start acknowledged, plus the programmed second.
    assert times.start.timestamp() == pytest.approx(1_000.002, abs=1e-6)
    assert times.measured_s == pytest.approx(1.0, abs=1e-6)


def test_each_edge_is_mapped_through_the_reading_that_bounds_it_best() -> None:
    """A close reading with a slow round trip, or a far one with a fast round trip:
    at 1000 ppm of assumed rate error, distance costs 1 ms per second."""
    rising, falling = 1_001_000, 200_001_000  # 10 ms and 2 s after the first reading
    record = _record(rising, falling, frame_start=200_100_000)
    # A later reading with a 0.2 ms round trip, 0.09 ms after the falling edge.
    record.samples.append(TimerSample(sent=1_002.0000, received=1_002.0002, ticks=200_010_000))
    times = record.times(use_timer=True, rate_tolerance=1e-3)
    assert times.source == CONTROLLER_TIMER
    # Start: through the first reading (midpoint 999.9995; 0.5 ms + 10 us bound).
    assert times.start.timestamp() == pytest.approx(999.9995 + 0.01, abs=1e-6)
    # End: through the later one (midpoint 1002.0001; 0.1 ms + 0.09 us bound).
    assert times.end.timestamp() == pytest.approx(1_002.0001 - 0.00009, abs=1e-6)
    assert times.uncertainty_s == pytest.approx(0.0005 + 1e-8 + 1e-3 * 0.01, rel=1e-6)


def test_an_abort_after_the_integration_ended_does_not_move_its_end() -> None:
    record = _record(0, 0)
    record.abort_sent, record.abort_acked = 1_005.0, 1_005.001
    assert record.host_clock_times(0.0).end.timestamp() == pytest.approx(1_001.002, abs=1e-6)
    record.abort_sent, record.abort_acked = 1_000.400, 1_000.403
    times = record.host_clock_times(0.0)
    assert times.end.timestamp() == pytest.approx(1_000.403, abs=1e-6)
    assert times.uncertainty_s == pytest.approx(0.003)


def test_measured_s_is_end_minus_start() -> None:
    record = _record(0, 0)
    times = record.host_clock_times(0.0)
    assert isinstance(times, ExposureTimes)
    assert times.measured_s == (times.end - times.start).total_seconds()
