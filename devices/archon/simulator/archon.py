""":class:`ArchonSimulator`: one simulated controller, and the handles tests hold it by.

The parts live in their own modules (state, timing core, buffers, server); this class
owns their lifecycle and is the only public face: what a test may observe (shutter,
buffers, parameters, connections) and the faults it may switch on while a client is
connected.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy.typing as npt

from devices.archon.acf import AcfConfig
from devices.archon.sensor import SensorModel
from devices.archon.simulator.core import CoreState
from devices.archon.simulator.faults import Faults
from devices.archon.simulator.reused_frames import ReusedFrames
from devices.archon.simulator.server import ArchonServer
from devices.archon.simulator.shutter import ShutterBlade
from devices.archon.simulator.state import ControllerState

__all__ = ["ArchonSimulator"]


class ArchonSimulator:
    """An Archon controller on a TCP port speaking the real wire protocol."""

    def __init__(
        self,
        acf: AcfConfig,
        *,
        sensor: SensorModel | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        pixel_rate_hz: float = 2_000_000.0,
        seed: int = 0,
        power_on: bool = True,
        bandwidth_limit_bps: float | None = None,
        shutter_blade: ShutterBlade | None = None,
        reuse_frames: bool = False,
    ) -> None:
        """``seed`` seeds the pixels (it replaces ``sensor.seed``).

        ``reuse_frames`` renders each kind of frame once and serves it shifted
        (simulator/reused_frames.py): for benchmarks, where rendering would take the
        host's CPU from the pipeline under test.

        ``shutter_blade`` puts this controller's CCDs behind a shutter shared with
        other simulated controllers (see MultiSimulator); by default it has its own.

        ``bandwidth_limit_bps`` caps FETCH streams at that many bits per second on the
        wire (1e9 models gigabit Ethernet); None streams as fast as the socket takes.
        """
        model = dataclasses.replace(sensor or SensorModel(), seed=seed)
        self._state = ControllerState(
            acf, model, pixel_rate_hz=pixel_rate_hz, power_on=power_on, shutter_blade=shutter_blade
        )
        if reuse_frames:
            self._state.core.render = ReusedFrames()
        self._server = ArchonServer(self._state, host, port, bandwidth_limit_bps)

    # ----------------------------------------------------------- public state

    @property
    def host(self) -> str:
        return self._server.host

    @property
    def port(self) -> int:
        """The bound port (the real one when constructed with port 0)."""
        return self._server.port

    @property
    def acf(self) -> AcfConfig:
        """The configuration in force (changes after WCONFIG + APPLYALL/APPLYCDS)."""
        return self._state.acf

    @property
    def shutter_open(self) -> bool:
        return self._state.shutter.is_open

    @property
    def shutter_log(self) -> list[tuple[float, float]]:
        """(open, close) ``time.monotonic()`` pairs of every completed shutter opening."""
        return list(self._state.shutter.log)

    @property
    def frames_completed(self) -> int:
        return self._state.core.frames_completed

    @property
    def params(self) -> dict[str, int]:
        """Current timing parameters, named as in the ACF that first defined them."""
        return self._state.params.snapshot()

    @property
    def connections(self) -> int:
        """Client connections open right now."""
        return self._server.connections

    @property
    def internal_errors(self) -> int:
        """Commands that raised an unexpected exception (a simulator bug; should stay 0)."""
        return self._server.internal_errors

    @property
    def core_state(self) -> CoreState:
        return self._state.core.state

    @property
    def power_on(self) -> bool:
        return self._state.core.power_on

    @property
    def power_bad(self) -> bool:
        return self._state.core.power_bad

    @property
    def timing_held(self) -> bool:
        return self._state.core.held

    @property
    def pixel_rate_hz(self) -> float:
        """Pixels per second per tap; a change applies from the next readout or flush."""
        return self._state.core.pixel_rate_hz

    @pixel_rate_hz.setter
    def pixel_rate_hz(self, value: float) -> None:
        self._state.core.pixel_rate_hz = value

    @property
    def bandwidth_limit_bps(self) -> float | None:
        """FETCH cap in bits per second on the wire (None: no cap); settable at run time."""
        return self._server.bandwidth_limit_bps

    @bandwidth_limit_bps.setter
    def bandwidth_limit_bps(self, value: float | None) -> None:
        self._server.bandwidth_limit_bps = value

    def buffer_data(self, n: int) -> npt.NDArray[Any] | None:
        """Pixels stored in buffer ``n`` (1-based), for tests to compare with FETCH."""
        return self._state.bank.buffers[n - 1].data

    # --------------------------------------------------------- fault injection

    def inject_reply_delay(self, seconds: float) -> None:
        """Delay every reply (and FETCH stream) by ``seconds`` after executing it."""
        self._server.faults.reply_delay = max(0.0, seconds)

    def inject_silence(self, command_prefix: str | None = None) -> None:
        """Ignore (neither execute nor answer) commands starting with the prefix; None: all."""
        self._server.faults.silence = (command_prefix or "").upper()

    def inject_command_failure(
        self, command_prefix: str | None = None, *, times: int | None = None
    ) -> None:
        """Answer ``?xx`` (without executing) to commands starting with the prefix.

        None fails every command.  ``times`` limits it to the next that many matching
        commands (None: until :meth:`clear_faults`).  FETCH matches too.
        """
        self._server.faults.failure = (command_prefix or "").upper()
        self._server.faults.failure_times = times

    def drop_connection_during_fetch(self, after_blocks: int, *, times: int | None = 1) -> None:
        """Close the connection after ``after_blocks`` blocks of the next ``times`` FETCHes."""
        self._server.faults.drop_after = max(0, after_blocks)
        self._server.faults.drop_times = times

    def truncate_fetch(self, blocks: int, *, times: int | None = 1) -> None:
        """Send only ``blocks`` blocks for the next ``times`` FETCHes (None: every one)."""
        self._server.faults.truncate_at = max(0, blocks)
        self._server.faults.truncate_times = times

    def set_power_bad(self, bad: bool) -> None:
        """A supply out of range: STATUS POWER=3 (intermediate), POWERGOOD=0, analogue
        rails low.  While bad, the timing core starts no exposure, flush or readout;
        one already running finishes.  Only reported while power is on."""
        if bad != self._state.core.power_bad:
            self._state.events.add("power supply fault" if bad else "power supply restored")
        self._state.core.set_power_bad(bad)

    def clear_faults(self) -> None:
        """Back to a healthy link (a supply fault is cleared with set_power_bad(False))."""
        self._server.faults = Faults()

    # -------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        if self._server.serving:
            raise RuntimeError("simulator already started")
        await self._server.start()
        self._state.core.start()

    async def stop(self) -> None:
        """Stop serving, end the timing core and close every client connection."""
        await self._state.core.stop()
        await self._server.close()

    async def __aenter__(self) -> ArchonSimulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
