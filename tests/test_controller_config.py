"""Configuration memory, window, power and the rest of the adapter's operations."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import numpy as np
import pytest

from devices.archon.acf import AcfError, load_acf
from devices.archon.config_io import apply_command_for, apply_overrides
from devices.archon.controller import ArchonController, ControllerTiming
from devices.archon.simulator import ArchonSimulator
from devices.archon.status import PowerState

from .conftest import SIM_ACF

ACF = load_acf(SIM_ACF)


@pytest.fixture
async def controller(archon_sim: ArchonSimulator) -> AsyncIterator[ArchonController]:
    timing = ControllerTiming(command_timeout=2.0, readout_timeout=20.0, power_timeout=3.0)
    async with ArchonController("127.0.0.1", archon_sim.port, ACF, timing=timing) as ctrl:
        await ctrl.reset()
        yield ctrl


async def test_read_config_returns_the_loaded_acf(controller: ArchonController) -> None:
    config = await controller.read_config()
    assert config.wire_lines() == ACF.wire_lines()
    assert config.buffer_shape == ACF.buffer_shape


async def test_write_config_round_trip_with_overrides_and_progress(
    controller: ArchonController,
) -> None:
    seen: list[tuple[int, int]] = []
    written = await controller.write_config(
        SIM_ACF, overrides={"RAWSEL": 3, "NEWKEY": "x"}, progress=lambda d, t: seen.append((d, t))
    )
    assert seen[-1] == (len(ACF.wire_lines()) + 1, len(ACF.wire_lines()) + 1)
    back = await controller.read_config()
    assert back.wire_lines() == written.wire_lines()
    assert "RAWSEL=3" in back.wire_lines()
    assert back.wire_lines()[-1] == "NEWKEY=x"


async def test_bad_acf_text_is_refused_before_the_memory_is_cleared(
    controller: ArchonController,
) -> None:
    with pytest.raises(AcfError, match="FRAMEMODE"):
        await controller.write_config("[CONFIG]\nFRAMEMODE=9\nLINECOUNT=1\nPIXELCOUNT=1\n")
    assert (await controller.read_config()).wire_lines() == ACF.wire_lines()


async def test_set_window_changes_the_stored_frame(controller: ArchonController) -> None:
    window = await controller.set_window(lines=256)
    assert window.line_count == 256
    await controller.expose(0.0, open_shutter=False)
    buffer = await controller.readout()
    pixels = await controller.fetch(buffer)
    assert pixels.shape == (2 * 256, ACF.buffer_shape[1])
    await controller.reset_window()
    await controller.expose(0.0, open_shutter=False)
    assert (await controller.fetch(await controller.readout())).shape == ACF.buffer_shape


async def test_write_line_updates_memory(controller: ArchonController) -> None:
    await controller.write_line("RAWSEL", 2, apply=False)
    assert "RAWSEL=2" in (await controller.read_config()).wire_lines()
    with pytest.raises(KeyError, match="NOSUCHKEY"):
        await controller.write_line("NOSUCHKEY", 1)


def test_apply_commands_and_overrides() -> None:
    assert apply_command_for("MOD11\\HEATERAP") == "APPLYMOD11"
    assert apply_command_for("PARAMETER3") == "LOADPARAMS"
    assert apply_command_for("LINE12") == "LOADTIMING"
    assert apply_command_for("LINECOUNT") == "APPLYCDS"
    assert apply_overrides(["A=1", "MOD2/X=3"], {"a": 2, "MOD2\\X": 4, "B": 5}) == [
        "A=2",
        "MOD2/X=4",
        "B=5",
    ]


async def test_power_off_and_on(controller: ArchonController, archon_sim: ArchonSimulator) -> None:
    assert await controller.power(False) is PowerState.OFF
    assert await controller.power() is PowerState.OFF
    assert await controller.power(True) is PowerState.ON
    status = await controller.status()
    assert status.power_good


async def test_expose_with_readout_and_fetch_newest(controller: ArchonController) -> None:
    await controller.expose(0.1, open_shutter=False, readout=True)
    first = await controller.readout()
    await controller.expose(0.0, open_shutter=False)
    second = await controller.readout()
    assert first != second
    newest = await controller.fetch(-1)
    np.testing.assert_array_equal(newest, await controller.fetch(second))


async def test_abort_with_readout_keeps_the_frame(
    controller: ArchonController, archon_sim: ArchonSimulator
) -> None:
    task = asyncio.create_task(controller.expose(30.0, open_shutter=True))
    await asyncio.sleep(0.3)
    await controller.abort(readout=True)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not archon_sim.shutter_open
    opened, closed = archon_sim.shutter_log[-1]
    assert closed - opened < 2.0


async def test_status_stream_polls(controller: ArchonController) -> None:
    counts = []
    async for status in controller.status_stream(interval=0.05):
        counts.append(status.values["COUNT"])
        if len(counts) == 3:
            break
    assert counts == sorted(counts)
    assert len(set(counts)) == 3


async def test_one_hundred_commands_in_flight(controller: ArchonController) -> None:
    replies = await asyncio.gather(*(controller.client.send("TIMER") for _ in range(100)))
    timers = [int(r.split("=")[1], 16) for r in replies]
    assert len(timers) == 100
    assert all(r.startswith("TIMER=") for r in replies)
