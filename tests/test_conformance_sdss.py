"""Conformance: SDSS's own Archon client (sdss-archon) drives our simulator.

Our adapter and our simulator were written from the same notes, so a shared
misreading of the protocol would pass every test of one against the other. The
``archon`` package is an independent client that runs against real controllers at
SDSS; whatever it needs from the wire (reply framing, id echo, key names and number
formats, config memory semantics, the timing parameters it pokes) the simulator must
provide, or the simulator is wrong, not merely different from our adapter.

Every test starts a fresh simulator and a fresh ``ArchonController.start()`` (about
1.5 s: sdss always reads all 16384 config lines). Teardown checks two things sdss
only reports out of band: every command id came back (no command was left without a
reply) and sdss raised none of its protocol warnings (unparseable or unmatched
replies).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path

import numpy as np
import pytest
from archon.controller.command import ArchonCommand
from archon.controller.controller import ArchonController as SdssController
from archon.controller.maskbits import ArchonPower, ControllerStatus, ModType
from archon.exceptions import ArchonControllerError, ArchonControllerWarning, ArchonUserWarning

from devices.archon.acf import load_acf
from devices.archon.simulator import BUFFER_BASES, ArchonSimulator, CoreState

from .conftest import SIM_ACF

ACF = load_acf(SIM_ACF)
FRAME_FIELDS = (
    *("sample", "complete", "mode", "base", "frame", "width", "height", "pixels", "lines"),
    *("rawblocks", "rawlines", "rawoffset", "timestamp", "retimestamp", "fetimestamp"),
)
CS = ControllerStatus
BACKSLASH = "\\"


async def wait_for(predicate: Callable[[], bool], within: float = 5.0) -> None:
    """Poll simulator state with a deadline (sdss gives us no event to wait on)."""
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.005)


def sdss_config_lines(controller: SdssController) -> list[str]:
    """The [CONFIG] section sdss built from RCONFIG, turned back into wire form.

    sdss stores each line INI-style (``\\`` in keys, values with ``,;=`` quoted); undo
    exactly that to compare with what the simulator holds.
    """
    assert controller.acf_config is not None
    lines = []
    for key, value in controller.acf_config["CONFIG"].items():
        unquoted = value[1:-1] if value.startswith('"') and value.endswith('"') else value
        lines.append(f"{key.replace(BACKSLASH, '/')}={unquoted}")
    return lines


@pytest.fixture
async def sim() -> AsyncIterator[ArchonSimulator]:
    async with ArchonSimulator(load_acf(SIM_ACF), port=0, seed=99) as simulator:
        yield simulator
        # A command that raised inside the simulator is a simulator bug, whatever sdss saw.
        assert simulator.internal_errors == 0


@pytest.fixture
def quiet_sdss_log(caplog: pytest.LogCaptureFixture) -> None:
    """sdss logs every command at DEBUG; capturing 16k records per start() costs ~1 s."""
    caplog.set_level(logging.WARNING, logger="sdss-archon")


START_ATTEMPTS = 3
"""sdss's start() is tried this many times before the fixture fails (see sdss below)."""


@pytest.fixture
async def sdss(
    sim: ArchonSimulator, recwarn: pytest.WarningsRecorder, quiet_sdss_log: None
) -> AsyncIterator[SdssController]:
    """sdss's controller, started the way its actor starts it (config read + reset)."""
    # The id pool is a class attribute shared by every instance in the process.
    # Id 0 is exempt: sdss loses it by itself (``command_id or self._get_id()`` in
    # send_command takes a pooled 0 for "no id" and draws another one).
    for attempt in range(START_ATTEMPTS):
        ids_before = set(SdssController._id_pool) - {0}
        controller = SdssController("sim", sim.host, sim.port)
        try:
            await controller.start()
            break
        except ArchonControllerError as exc:
            # sdss reads the config as 16384 RCONFIGs, each with a fixed 0.5 s timeout,
            # on the event loop the simulator shares: a machine busy with the other
            # test worker can make one miss it. What these tests check is the answers.
            with contextlib.suppress(Exception):
                await controller.stop()
            if "RCONFIG" not in str(exc) or attempt == START_ATTEMPTS - 1:
                raise
    try:
        yield controller
    finally:
        await controller.stop()
    missing = ids_before - set(SdssController._id_pool)
    assert not missing, f"commands never answered (ids {sorted(missing)})"
    protocol_warnings = [
        str(w.message)
        for w in recwarn.list
        if issubclass(w.category, ArchonControllerWarning | ArchonUserWarning)
    ]
    assert not protocol_warnings, protocol_warnings


# ------------------------------------------------------------- start and config


async def test_start_reads_the_whole_config_and_resets(
    sim: ArchonSimulator, monkeypatch: pytest.MonkeyPatch, quiet_sdss_log: None
) -> None:
    """start() sends RCONFIG0000..3FFF (all must succeed) and gets our ACF back exactly."""
    controller = SdssController("sim", sim.host, sim.port)
    requested: list[str] = []
    send_many = controller.send_many

    async def spy(
        cmd_strs: Iterable[str], max_chunk: int = 100, timeout: float | None = None
    ) -> tuple[list[ArchonCommand], list[ArchonCommand]]:
        cmd_strs = list(cmd_strs)
        requested.extend(cmd_strs)
        done, failed = await send_many(cmd_strs, max_chunk=max_chunk, timeout=timeout)
        assert not failed
        assert len(done) == len(cmd_strs)
        return done, failed

    monkeypatch.setattr(controller, "send_many", spy)
    try:
        await controller.start()
        assert requested == [f"RCONFIG{n:04X}" for n in range(0x4000)]
        assert sdss_config_lines(controller) == ACF.wire_lines()
        _, lines = await controller.read_config()
        assert lines == ACF.wire_lines()
        # Parameters as sdss parsed them from the config it read.
        expected = {
            name.upper(): int(value) for name, value in ACF.parameters.items() if value.isdigit()
        }
        assert controller.parameters == expected
        # The reset at the end of start(): idle, powered, and the simulator's timing
        # core left flushing with nothing pending.
        assert controller.status == CS.IDLE | CS.POWERON
        assert sim.params["AutoFlush"] == 1
        assert sim.params["Exposures"] == sim.params["ReadOut"] == 0
        assert not sim.timing_held
        # start() rewrites LINECOUNT/PIXELCOUNT from the window parameters and applies
        # them (APPLYCDS): the geometry must come out unchanged.
        assert sim.acf.buffer_shape == ACF.buffer_shape == (1024, 1088)
        assert controller.default_window["lines"] == 512
        assert controller.default_window["overscanpixels"] == 32
    finally:
        await controller.stop()


@pytest.mark.parametrize("modified", [False, True], ids=["sim.acf", "modified"])
async def test_write_config_read_config_round_trip(
    sdss: SdssController, sim: ArchonSimulator, tmp_path: Path, modified: bool
) -> None:
    """write_config (CLEARCONFIG, WCONFIG each line, APPLYALL) then read_config gives it back.

    sdss upper-cases whole commands, so the memory holds upper-cased lines. The
    modified copy halves the line count; sdss re-derives LINECOUNT from the Lines
    parameter after APPLYALL, so both change together.
    """
    text = SIM_ACF.read_text()
    if modified:
        text = text.replace("LINECOUNT=512", "LINECOUNT=256").replace('"Lines=512"', '"Lines=256"')
        assert text.count("256") >= 2
    path = tmp_path / "written.acf"
    path.write_text(text)
    written = load_acf(path)
    await sdss.write_config(str(path), applyall=True)
    _, lines = await sdss.read_config()
    assert lines == [line.upper() for line in written.wire_lines()]
    assert sim.acf.line_count == (256 if modified else 512)
    assert sim.acf.buffer_shape == (2 * sim.acf.line_count, 1088)
    assert sdss.parameters["LINES"] == sim.params["Lines"] == sim.acf.line_count
    assert sdss.status == CS.IDLE | CS.POWERON


# ------------------------------------------------------------------- queries


async def test_get_system(sdss: SdssController) -> None:
    """SYSTEM: lower-cased keys, string values, a module name for every MODn_TYPE."""
    system = await sdss.get_system()
    assert all(isinstance(v, str) for v in system.values())
    for key, value in ACF.system.items():
        assert system[key.lower()] == value, key
    for n in range(1, 13):
        for field in ("type", "rev", "version", "id"):
            assert f"mod{n}_{field}" in system
        assert system[f"mod{n}_name"] == ModType(int(system[f"mod{n}_type"])).name
    assert system["mod5_name"] == "AD"
    assert system["mod2_name"] == "HEATERX"


async def test_get_device_status(sdss: SdssController) -> None:
    """STATUS: every value parses as int or float; power ON and good; COUNT counts."""
    first = await sdss.get_device_status()  # and a second STATUS, to set power bits
    second = await sdss.get_device_status(update_power_bits=False)
    assert first["power"] == ArchonPower.ON.value
    assert first["powergood"] == 1
    assert second["count"] == first["count"] + 2
    assert isinstance(first["p5v_v"], float)
    assert first["p5v_v"] == 5.0
    assert isinstance(first["mod2/tempa"], float)
    assert all(isinstance(first[k], int) for k in ("valid", "count", "log", "overheat"))
    # get_device_status() refreshes sdss's power bits from POWER/POWERGOOD.
    assert CS.POWERON in sdss.status
    assert CS.POWERBAD not in sdss.status


async def test_get_frame(sdss: SdssController) -> None:
    """FRAME: sdss turns every value into an int (hex for *TIME*), so formats must match."""
    frame = await sdss.get_frame()
    expected = {"timer", "rbuf", "wbuf"} | {f"buf{n}{f}" for n in (1, 2, 3) for f in FRAME_FIELDS}
    assert set(frame) == expected
    assert all(isinstance(v, int) for v in frame.values())
    assert [frame[f"buf{n}base"] for n in (1, 2, 3)] == list(BUFFER_BASES)
    await asyncio.sleep(0.05)
    later = await sdss.get_frame()
    assert 0.04e8 < later["timer"] - frame["timer"] < 2e8  # 100 MHz ticks


async def test_many_concurrent_commands(sdss: SdssController) -> None:
    """100 commands in flight, ids handed out by sdss: each reply reaches its own command."""
    commands = [sdss.send_command(f"RCONFIG{n:04X}", timeout=5) for n in range(100)]
    assert len({c.command_id for c in commands}) == 100
    done: list[ArchonCommand] = await asyncio.gather(*commands)
    for n, command in enumerate(done):
        assert command.succeeded(), command
        assert [r.command_id for r in command.replies] == [command.command_id]
        assert str(command.replies[0]) == ACF.wire_lines()[n]
    # And sdss's own batching helper, on a command whose replies all differ.
    ok, failed = await sdss.send_many(["STATUS"] * 100, max_chunk=100, timeout=5)
    assert not failed
    counts = sorted(int(re.search(r"\bCOUNT=(\d+)", str(c.replies[0]))[1]) for c in ok)  # type: ignore[index]
    assert counts == list(range(counts[0], counts[0] + 100))


# ------------------------------------------------------------------- power


async def test_power_off_and_on(sdss: SdssController, sim: ArchonSimulator) -> None:
    """power(False) / power(True) as sdss does it (each waits 1 s, then reads STATUS)."""
    assert await sdss.power(False) == ArchonPower.OFF
    assert not sim.power_on
    assert (await sdss.get_device_status(update_power_bits=False))["power"] == 2
    assert await sdss.power(True) == ArchonPower.ON
    assert sim.power_on
    assert CS.POWERON in sdss.status
    assert CS.POWERBAD not in sdss.status


async def test_power_off_is_a_clean_off_for_sdss(sdss: SdssController) -> None:
    """After POWEROFF sdss should say POWEROFF, not POWERBAD (which blocks its expose)."""
    await sdss.power(False)
    assert CS.POWEROFF in sdss.status
    assert CS.POWERBAD not in sdss.status


# ----------------------------------------------------------------- exposures


@pytest.mark.slow
async def test_expose_readout_fetch(sdss: SdssController, sim: ArchonSimulator) -> None:
    """sdss's exposure path (expose without readout, readout, fetch) returns our buffer.

    This is how its actor's delegate drives a controller. readout() sleeps 3 s before
    it polls FRAME, so this test takes about 5 s.
    """
    task = await sdss.expose(0.1, readout=False)
    assert sim.params["IntCS"] == 10
    assert sim.params["Exposures"] == 1 or sim.frames_completed == 0
    await task
    assert sdss.status == CS.IDLE | CS.READOUT_PENDING | CS.POWERON
    buffer = await sdss.readout()
    assert sim.frames_completed == 1
    assert sdss.status == CS.IDLE | CS.POWERON
    data, fetched = await sdss.fetch(-1, return_buffer=True)
    assert fetched == buffer == 1
    stored = sim.buffer_data(buffer)
    assert stored is not None
    assert data.shape == stored.shape == ACF.buffer_shape
    assert data.dtype == stored.dtype == np.uint16
    assert np.array_equal(data, stored)
    again = await sdss.fetch(buffer)
    assert np.array_equal(again, stored)
    frame = await sdss.get_frame()
    assert frame["rbuf"] == 0  # LOCK0 after the transfer
    assert frame["buf1complete"] == 1
    assert frame["buf1frame"] == 1


async def test_abort_without_readout(sdss: SdssController, sim: ArchonSimulator) -> None:
    """abort(readout=False) ends a 5 s integration at once and leaves the frame pending."""
    await sdss.expose(5.0, readout=False)
    await wait_for(lambda: sim.core_state is CoreState.INTEGRATING, within=1.0)
    start = time.monotonic()
    await sdss.abort(readout=False)
    await wait_for(lambda: sim.core_state is CoreState.WAITING_READOUT, within=0.5)
    assert time.monotonic() - start < 0.5
    assert sdss.status == CS.IDLE | CS.READOUT_PENDING | CS.POWERON
    assert sim.params["AbortExposure"] == 1
    assert sim.params["ReadOut"] == 0
    await asyncio.sleep(0.1)
    assert sim.frames_completed == 0
    with pytest.raises(ArchonControllerError, match="not exposing"):
        await sdss.abort()


async def test_abort_with_readout_then_fetch(sdss: SdssController, sim: ArchonSimulator) -> None:
    """abort(readout=True) reads the cut-short frame out; sdss then fetches it intact."""
    await sdss.expose(5.0, readout=False)
    await wait_for(lambda: sim.core_state is CoreState.INTEGRATING, within=1.0)
    await sdss.abort(readout=True)
    assert CS.READING in sdss.status
    await wait_for(lambda: sim.frames_completed == 1, within=2.0)
    data, buffer = await sdss.fetch(-1, return_buffer=True)
    stored = sim.buffer_data(buffer)
    assert stored is not None
    assert np.array_equal(data, stored)


async def test_flush(sdss: SdssController, sim: ArchonSimulator) -> None:
    """flush(n): FlushCount n, DoFlush 1; the simulator clears DoFlush once it has flushed."""
    await sdss.flush(3, wait_for=0.1)
    assert sim.params["FlushCount"] == 3
    assert sim.params["DoFlush"] == 0  # sdss set it to 1; only a finished flush clears it
    assert sim.core_state is CoreState.IDLE
    assert sdss.status == CS.IDLE | CS.POWERON


async def test_set_window_and_reset_window(sdss: SdssController, sim: ArchonSimulator) -> None:
    """set_window: FASTLOADPARAM the window, WCONFIG LINECOUNT/PIXELCOUNT, APPLYCDS."""
    window = await sdss.set_window(lines=256, pixels=200, vbin=2)
    assert window["lines"] == 256
    assert (sim.params["Lines"], sim.params["Pixels"], sim.params["VerticalBinning"]) == (
        256,
        200,
        2,
    )
    # LINECOUNT = (256 + 0) // 2, PIXELCOUNT = (200 + 32) // 1, applied at once.
    assert (sim.acf.line_count, sim.acf.pixel_count) == (128, 232)
    assert sim.acf.buffer_shape == (256, 464)
    _, lines = await sdss.read_config()
    assert "LINECOUNT=128" in lines
    assert "PIXELCOUNT=232" in lines
    await sdss.reset_window()
    assert sim.acf.buffer_shape == ACF.buffer_shape
    assert sim.params["VerticalBinning"] == 1


async def test_reset_with_resettiming(sdss: SdssController, sim: ArchonSimulator) -> None:
    """reset(reset_timing=True) during an integration: core idle, exposure discarded."""
    await sdss.expose(5.0, readout=False)
    await wait_for(lambda: sim.core_state is CoreState.INTEGRATING, within=1.0)
    await sdss.reset(reset_timing=True)
    assert sim.core_state is CoreState.IDLE
    assert sim.params["Exposures"] == 0
    assert sdss.status == CS.IDLE | CS.POWERON
    await asyncio.sleep(0.1)
    assert sim.frames_completed == 0
