"""The Archon adapter end to end against the simulator on 127.0.0.1."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator

import numpy as np
import pytest

from devices.archon.acf import load_acf
from devices.archon.controller import ArchonController, ControllerTiming, fetch_pieces
from devices.archon.errors import (
    ArchonCommandError,
    ArchonConnectionError,
    ArchonPowerError,
    ArchonTimeoutError,
)
from devices.archon.sensor import SensorModel
from devices.archon.simulator import ArchonSimulator
from devices.archon.status import PowerState

from .conftest import SIM_ACF

ACF = load_acf(SIM_ACF)


@pytest.fixture
async def controller(archon_sim: ArchonSimulator) -> AsyncIterator[ArchonController]:
    timing = ControllerTiming(command_timeout=2.0, readout_timeout=20.0)
    async with ArchonController("127.0.0.1", archon_sim.port, ACF, timing=timing) as ctrl:
        await ctrl.reset()
        yield ctrl


async def test_status_system_and_frame_are_typed(controller: ArchonController) -> None:
    status = await controller.status()
    assert status.power is PowerState.ON
    assert status.power_good
    system = await controller.system()
    assert system.backplane_id
    assert system.modules
    assert all(module.type != 6 for module in system.modules)
    frame = await controller.frame()
    assert len(frame.buffers) == 3
    assert {b.number for b in frame.buffers} == {1, 2, 3}


async def test_bias_frame_is_read_and_fetched_at_the_bias_level(
    controller: ArchonController, archon_sim: ArchonSimulator
) -> None:
    await controller.flush(1)
    await controller.expose(0.0, open_shutter=False)
    buffer = await controller.readout()
    pixels = await controller.fetch(buffer)
    assert pixels.shape == ACF.buffer_shape
    assert pixels.dtype == np.uint16
    stored = archon_sim.buffer_data(buffer)
    assert stored is not None
    np.testing.assert_array_equal(pixels, stored)
    model = SensorModel()
    overscan = pixels[:512, 512:544].astype(float)  # tap 0's overscan columns
    assert abs(overscan.mean() - model.bias_level(0)) < 1.0
    assert abs(overscan.std() - model.read_noise) < 0.5


async def test_consecutive_readouts_use_different_buffers(controller: ArchonController) -> None:
    seen = []
    for _ in range(3):
        await controller.expose(0.0, open_shutter=False)
        seen.append(await controller.readout())
    assert len(set(seen)) == 3


async def test_shutter_opens_only_for_light_frames(
    controller: ArchonController, archon_sim: ArchonSimulator
) -> None:
    await controller.expose(0.2, open_shutter=False)
    await controller.readout()
    assert archon_sim.shutter_log == []
    await controller.expose(0.2, open_shutter=True)
    await controller.readout()
    assert len(archon_sim.shutter_log) == 1
    opened, closed = archon_sim.shutter_log[0]
    assert 0.15 < closed - opened < 0.5
    assert not archon_sim.shutter_open


async def test_cancelling_an_integration_closes_the_shutter(
    controller: ArchonController, archon_sim: ArchonSimulator
) -> None:
    task = asyncio.create_task(controller.expose(30.0, open_shutter=True))
    await asyncio.sleep(0.3)
    assert archon_sim.shutter_open
    cancelled_at = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    while archon_sim.shutter_open and time.monotonic() - cancelled_at < 1.0:
        await asyncio.sleep(0.01)
    assert not archon_sim.shutter_open, "shutter still open 1 s after cancellation"


async def test_a_silent_controller_times_out_instead_of_hanging(
    archon_sim: ArchonSimulator,
) -> None:
    timing = ControllerTiming(command_timeout=0.3)
    async with ArchonController("127.0.0.1", archon_sim.port, ACF, timing=timing) as ctrl:
        archon_sim.inject_silence("STATUS")
        start = time.monotonic()
        with pytest.raises(ArchonTimeoutError, match=r"STATUS.*0\.3 s"):
            await ctrl.status()
        assert time.monotonic() - start < 1.5
        archon_sim.clear_faults()
        # The late reply never comes, but the connection stays usable.
        assert (await ctrl.frame()).buffers


@pytest.mark.parametrize("fault", ["truncate", "drop"])
async def test_a_cut_fetch_is_fetched_again_intact(
    controller: ArchonController, archon_sim: ArchonSimulator, fault: str
) -> None:
    """A short block stream (timeout) or a dropped connection: same frame, intact."""
    await controller.expose(0.0, open_shutter=False)
    buffer = await controller.readout()
    if fault == "truncate":
        archon_sim.truncate_fetch(100, times=1)
        controller.timing = ControllerTiming(command_timeout=0.5)
    else:
        archon_sim.drop_connection_during_fetch(50, times=1)
    pixels = await controller.fetch(buffer)
    np.testing.assert_array_equal(pixels, archon_sim.buffer_data(buffer))


def test_a_buffer_is_fetched_in_pieces_that_cover_it_once() -> None:
    pieces = fetch_pieces(0xA0000000, 2500, 1024)
    assert [(p.command, p.offset, p.blocks) for p in pieces] == [
        ("FETCHA000000000000400", 0, 1024),
        ("FETCHA010000000000400", 1024 * 1024, 1024),
        ("FETCHA0200000000001C4", 2048 * 1024, 452),
    ]
    assert [p.command for p in fetch_pieces(0xC0000000, 2500, 0)] == ["FETCHC0000000000009C4"]
    assert len(fetch_pieces(0xC0000000, 2500, 4096)) == 1


async def test_other_commands_are_answered_while_a_frame_is_fetched(
    archon_sim: ArchonSimulator,
) -> None:
    """A slow link and a fetch in pieces: STATUS is answered while the fetch goes on,
    and the frame still arrives whole (the next exposure's commands do not wait for
    the previous frame's transfer)."""
    timing = ControllerTiming(command_timeout=5.0, fetch_piece_blocks=128)
    async with ArchonController("127.0.0.1", archon_sim.port, ACF, timing=timing) as ctrl:
        await ctrl.reset()
        await ctrl.expose(0.0, open_shutter=False)
        buffer = await ctrl.readout()
        archon_sim.bandwidth_limit_bps = 16e6  # about a second for this frame
        started = time.monotonic()
        fetching = asyncio.ensure_future(ctrl.fetch(buffer))
        await asyncio.sleep(0.1)
        status = await ctrl.status()
        answered = time.monotonic() - started
        assert status.power is PowerState.ON
        pixels = await fetching
        fetched = time.monotonic() - started
        # One FETCH would hold STATUS to the end of the transfer (answered ~ fetched).
        assert answered < fetched / 2, f"STATUS at {answered:.2f} s of a {fetched:.2f} s fetch"
        np.testing.assert_array_equal(pixels, archon_sim.buffer_data(buffer))


async def test_unknown_command_is_a_command_error(controller: ArchonController) -> None:
    with pytest.raises(ArchonCommandError, match="NOSUCHTHING"):
        await controller.client.send("NOSUCHTHING")


async def test_exposing_without_power_is_refused(
    controller: ArchonController, archon_sim: ArchonSimulator
) -> None:
    await controller.client.send("POWEROFF")
    with pytest.raises(ArchonPowerError, match="OFF"):
        await controller.expose(1.0, open_shutter=True)
    assert not archon_sim.shutter_open


async def test_nobody_listening_is_a_clear_connection_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    ctrl = ArchonController("127.0.0.1", port, ACF)
    with pytest.raises(ArchonConnectionError, match=f"127.0.0.1:{port}"):
        await ctrl.connect()


def test_an_acf_without_the_timing_parameters_is_refused() -> None:
    from devices.archon.acf import parse_acf

    text = SIM_ACF.read_text().replace('"Exposures=0"', '"Exposurez=0"')
    with pytest.raises(ValueError, match="lacks the timing parameters Exposures"):
        ArchonController("127.0.0.1", 1, parse_acf(text))


@pytest.mark.slow
async def test_a_real_lvm_acf_takes_a_bias_and_refuses_light_without_a_shutter() -> None:
    """LVM's timing script has no OpenShutter: biases work; light frames say why not."""
    from .conftest import LVM_ACF

    if not LVM_ACF.is_file():
        pytest.skip("LVM reference ACF not present")
    acf = load_acf(LVM_ACF)
    async with (
        ArchonSimulator(acf, port=0, pixel_rate_hz=20e6) as sim,
        ArchonController("127.0.0.1", sim.port, acf, timing=ControllerTiming()) as ctrl,
    ):
        await ctrl.reset()
        with pytest.raises(ValueError, match="cannot open a shutter"):
            await ctrl.expose(1.0, open_shutter=True)
        await ctrl.expose(0.0, open_shutter=False)
        pixels = await ctrl.fetch(await ctrl.readout())
        assert pixels.shape == (4080, 12360)
        assert not sim.shutter_log
