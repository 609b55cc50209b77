"""A protocol-faithful STA Archon simulator: a real asyncio TCP server.

Why a simulator and not mocks: the client must be exercised over a real socket, with
pipelined requests, binary FETCH streams, slow or missing replies and dropped
connections, and the flows must see exposures take real time.  Everything on the
wire follows ``shared/design/archon-protocol.md``; the frame-buffer layout follows
the convention of :mod:`devices.archon.acf`.

What is modelled:

* configuration memory (WCONFIG/RCONFIG/CLEARCONFIG) and the APPLY*/LOAD* commands
  that derive the applied geometry and timing parameters from it;
* a timing core driven by the timing parameters (Exposures, IntCS/IntMS, ReadOut,
  AbortExposure, DoFlush/FlushCount, AutoFlush, OpenShutter, WaitCount, window
  parameters) rather than by interpreting the ACF's timing script;
* three frame buffers with FRAME bookkeeping, LOCKn and FETCH;
* a shutter, and the time since the CCD was last cleared (for dark current);
* fault injection for client robustness tests.

The modelled script is the one in ``deploy/instruments/sim.acf``: idle -> integrate
when Exposures > 0 (Exposures is decremented) -> read out if ReadOut > 0, else wait
without flushing until ReadOut is set.  ReadOut and AbortExposure are left for the
client to clear; DoFlush is cleared when the flushes are done.  Real scripts differ
in details (LVM's polls ReadOut in its main loop, decrements it, and flushes the
charge after an integration when AutoFlush is on), so a client should hold the
timing core while it changes parameters and clear AutoFlush for deferred readouts.

HOLDTIMING gates the core's *decisions* (starting an exposure, a flush or a readout);
an integration or readout already running finishes.  The real controller freezes
its sequencer instead; for the command sequences clients use (hold, set parameters,
reset or release) the two are indistinguishable.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import logging
import math
import os
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from devices.archon.acf import AcfConfig, AcfError, load_acf, parse_wire_lines
from devices.archon.sensor import SensorModel, render_frame

__all__ = ["BUFFER_BASES", "ArchonSimulator", "CoreState", "run_simulator"]

log = logging.getLogger(__name__)

BUFFER_BASES = (0xA0000000, 0xC0000000, 0xE0000000)
BLOCK_SIZE = 1024
MAX_LINE = 4096
CONFIG_SLOTS = 0x4000
TIMER_HZ = 100_000_000
_MIB = 1024 * 1024
# Frames are streamed in chunks of this many blocks: big enough that numpy does the
# framing, small enough that a 100 MB frame does not need a second 100 MB copy.
_FETCH_CHUNK_BLOCKS = 4096
_MAX_LOG = 64

_DEFAULT_SYSTEM: dict[str, str] = {
    "BACKPLANE_TYPE": "1",
    "BACKPLANE_REV": "3",
    "BACKPLANE_VERSION": "1.0.1200",
    "BACKPLANE_ID": "0000CCDF00000000",
    "POWER_ID": "00000000C0DE",
    "MOD5_TYPE": "2",
    "MOD5_REV": "8",
    "MOD5_VERSION": "1.0.1200",
    "MOD5_ID": "0000CCDF00000005",
}
# (name, volts when powered, amps when powered); P2V5 and P5V feed the digital
# side and stay up when the CCD bias/clock power is off.
_SUPPLIES: tuple[tuple[str, float, float, bool], ...] = (
    ("P2V5", 2.5, 0.412, True),
    ("P5V", 5.0, 0.873, True),
    ("P6V", 6.0, 0.305, False),
    ("N6V", -6.0, 0.281, False),
    ("P17V", 17.0, 0.052, False),
    ("N17V", -17.0, 0.048, False),
    ("P35V", 35.0, 0.011, False),
    ("N35V", -35.0, 0.009, False),
    ("P100V", 100.0, 0.002, False),
    ("N100V", -100.0, 0.002, False),
)
_HEATER_TYPES = frozenset({5, 11})


class CoreState(enum.Enum):
    """What the timing core is doing."""

    IDLE = "idle"
    FLUSHING = "flushing"
    INTEGRATING = "integrating"
    WAITING_READOUT = "waiting_readout"
    READING = "reading"


class _CommandError(Exception):
    """The command is refused: the reply is ``?xx``."""


@dataclass
class _FrameBuffer:
    """One of the controller's frame buffers and its FRAME bookkeeping."""

    base: int
    complete: bool = False
    frame: int = 0
    width: int = 0
    height: int = 0
    sample: int = 0
    mode: int = 0
    timestamp: int = 0
    re_timestamp: int = 0
    fe_timestamp: int = 0
    lines: int = 0
    data: npt.NDArray[Any] | None = None
    read_start: float | None = None
    line_time: float = 0.0
    rows_per_line: int = 1
    lines_per_tap: int = 0

    def lines_now(self, now: float) -> int:
        """Buffer rows written so far; grows with time during readout."""
        if self.read_start is None:
            return self.lines
        elapsed = max(0.0, now - self.read_start)
        done = min(self.lines_per_tap, int(elapsed / self.line_time)) if self.line_time else 0
        return done * self.rows_per_line


@dataclass
class _Faults:
    reply_delay: float = 0.0
    silence: str | None = None
    drop_after: int | None = None
    drop_times: int | None = None
    truncate_at: int | None = None
    truncate_times: int | None = None


_Handler = Callable[[re.Match[str]], Awaitable[str]]


class ArchonSimulator:
    """An Archon controller on 127.0.0.1 speaking the real wire protocol."""

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
    ) -> None:
        """``seed`` seeds the pixels (it replaces ``sensor.seed``)."""
        if pixel_rate_hz <= 0:
            raise ValueError("pixel_rate_hz must be > 0")
        self._sensor = dataclasses.replace(sensor or SensorModel(), seed=seed)
        self._check_sensor(acf)
        self._host = host
        self._requested_port = port
        self._pixel_rate = pixel_rate_hz
        self._power = power_on
        self._changed = asyncio.Event()
        self._system = self._system_info(acf.system)
        self._memory: dict[int, str] = dict(enumerate(acf.wire_lines()))
        self._acf = acf
        self._check_capacity(acf)
        self._params: dict[str, int] = {}
        self._param_names: dict[str, str] = {}
        self._load_params(acf)
        self._t0 = time.monotonic()
        self._buffers = [_FrameBuffer(base) for base in BUFFER_BASES]
        self._lock = 0
        self._wbuf = 1
        self._last_written = -1
        self._frame_counter = 0
        self._held = False
        self._state = CoreState.IDLE
        self._core_task: asyncio.Task[None] | None = None
        self._server: asyncio.Server | None = None
        self._handlers: dict[asyncio.Task[Any], asyncio.StreamWriter] = {}
        self._connections = 0
        self._status_count = 0
        self._log: list[str] = []
        self._faults = _Faults()
        self._shutter_opened: float | None = None
        self._shutter_log: list[tuple[float, float]] = []
        self._last_clear = self._t0
        self._light_seconds = 0.0
        self._int_start_timer = 0
        self._int_end_timer = 0
        self._frames_completed = 0
        self._commands = self._command_table()

    # ----------------------------------------------------------- public state

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        """The bound port (the real one when constructed with port 0)."""
        if self._server is None or not self._server.sockets:
            return self._requested_port
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def acf(self) -> AcfConfig:
        """The configuration currently applied (changes after WCONFIG + APPLYALL/APPLYCDS)."""
        return self._acf

    @property
    def shutter_open(self) -> bool:
        return self._shutter_opened is not None

    @property
    def shutter_log(self) -> list[tuple[float, float]]:
        """(open, close) ``time.monotonic()`` pairs of every completed shutter opening."""
        return list(self._shutter_log)

    @property
    def frames_completed(self) -> int:
        return self._frames_completed

    @property
    def params(self) -> dict[str, int]:
        """Current timing parameters, named as in the ACF that first defined them."""
        return {self._param_names[k]: v for k, v in self._params.items()}

    @property
    def connections(self) -> int:
        """Client connections open right now."""
        return self._connections

    @property
    def core_state(self) -> CoreState:
        return self._state

    @property
    def power_on(self) -> bool:
        return self._power

    @property
    def timing_held(self) -> bool:
        return self._held

    def buffer_data(self, n: int) -> npt.NDArray[Any] | None:
        """Pixels stored in buffer ``n`` (1-based), for tests to compare with FETCH."""
        return self._buffers[n - 1].data

    # --------------------------------------------------------- fault injection

    def inject_reply_delay(self, seconds: float) -> None:
        """Delay every reply (and FETCH stream) by ``seconds`` after executing it."""
        self._faults.reply_delay = max(0.0, seconds)

    def inject_silence(self, command_prefix: str | None = None) -> None:
        """Ignore (neither execute nor answer) commands starting with the prefix; None: all."""
        self._faults.silence = (command_prefix or "").upper()

    def drop_connection_during_fetch(self, after_blocks: int, *, times: int | None = 1) -> None:
        """Close the connection after ``after_blocks`` blocks of the next ``times`` FETCHes."""
        self._faults.drop_after = max(0, after_blocks)
        self._faults.drop_times = times

    def truncate_fetch(self, blocks: int, *, times: int | None = 1) -> None:
        """Send only ``blocks`` blocks for the next ``times`` FETCHes (None: every one)."""
        self._faults.truncate_at = max(0, blocks)
        self._faults.truncate_times = times

    def clear_faults(self) -> None:
        self._faults = _Faults()

    # -------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("simulator already started")
        self._server = await asyncio.start_server(self._serve, self._host, self._requested_port)
        self._changed = asyncio.Event()
        self._start_core()

    async def stop(self) -> None:
        """Stop serving, end the timing core and close every client connection."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        await self._stop_core()
        handlers = dict(self._handlers)
        # Closing the transports lets each handler end on its own; cancelling them
        # instead makes Python 3.11's stream callback log a spurious CancelledError.
        for writer in handlers.values():
            writer.close()
        if handlers:
            _, late = await asyncio.wait(handlers, timeout=1.0)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        if server is not None:
            await server.wait_closed()

    async def __aenter__(self) -> ArchonSimulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------- configuration

    def _check_sensor(self, acf: AcfConfig) -> None:
        bias = self._sensor.bias
        if bias is not None and len(bias) < len(acf.taps):
            raise ValueError(f"sensor has {len(bias)} bias levels for {len(acf.taps)} taps")

    @staticmethod
    def _check_capacity(acf: AcfConfig) -> None:
        capacity = (768 if acf.bigbuf else 512) * _MIB
        if acf.buffer_bytes > capacity:
            raise AcfError(
                f"frame of {acf.buffer_bytes} bytes exceeds the {capacity} byte buffer",
                source=acf.source,
            )

    @staticmethod
    def _system_info(system: Mapping[str, str]) -> dict[str, str]:
        """[SYSTEM] keys upper-cased, or our defaults; module type 6 is refused."""
        info = {k.upper(): v for k, v in system.items()} if system else dict(_DEFAULT_SYSTEM)
        for n in range(1, 13):
            if info.get(f"MOD{n}_TYPE", "0").strip() == "6":
                raise ValueError(f"MOD{n}_TYPE=6 is not a valid Archon module type")
        return info

    def _memory_config(self) -> AcfConfig:
        """Parse configuration memory; a bad memory makes the APPLY command fail."""
        lines = [self._memory[k] for k in sorted(self._memory)]
        try:
            acf = parse_wire_lines(lines, system=self._acf.system, source="config memory")
            self._check_capacity(acf)
            self._check_sensor(acf)
        except (AcfError, ValueError) as exc:
            self._add_log(f"configuration error: {exc}")
            raise _CommandError(str(exc)) from exc
        return acf

    def _load_params(self, acf: AcfConfig) -> None:
        """Load integer parameters; names keep the spelling they were first seen with."""
        for name, value in acf.parameters.items():
            try:
                number = int(value)
            except ValueError:
                continue
            self._param_names.setdefault(name.lower(), name)
            self._params[name.lower()] = number
        self._notify()

    def _p(self, name: str, default: int = 0) -> int:
        return self._params.get(name.lower(), default)

    def _set_param(self, name: str, value: int) -> None:
        if name.lower() in self._params:
            self._params[name.lower()] = value
            self._notify()

    def _notify(self) -> None:
        """Wake the timing core: something it may be waiting on changed."""
        self._changed.set()

    def _add_log(self, message: str) -> None:
        self._log.append(message)
        del self._log[:-_MAX_LOG]

    def _timer(self) -> int:
        return int((time.monotonic() - self._t0) * TIMER_HZ)

    # ------------------------------------------------------------ networking

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One connection: split the byte stream into lines and run them in order."""
        task = asyncio.current_task()
        if task is not None:
            self._handlers[task] = writer
        self._connections += 1
        try:
            await self._read_loop(reader, writer)
        except (ConnectionError, OSError):
            pass  # the client went away; nothing to answer
        finally:
            self._connections -= 1
            if task is not None:
                self._handlers.pop(task, None)
            writer.close()

    async def _read_loop(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        pending = bytearray()
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                return
            pending += chunk
            start = 0
            while (end := pending.find(b"\n", start)) >= 0:
                line = bytes(pending[start:end])
                start = end + 1
                if len(line) > MAX_LINE or not await self._handle_line(line, writer):
                    return
            del pending[:start]
            if len(pending) > MAX_LINE:
                return  # a line that never ends: protect ourselves, drop the client

    async def _handle_line(self, raw: bytes, writer: asyncio.StreamWriter) -> bool:
        """Execute one request line and answer it; False closes the connection."""
        text = raw.decode("latin-1").rstrip("\r")
        if len(text) < 3 or not _is_hex(text[1:3]):
            return True  # no readable id: nothing we could answer
        marker, cid, command = text[0], text[1:3], text[3:]
        if marker != ">":
            await self._reply(writer, f"?{cid}\n")
            return True
        silence = self._faults.silence
        if silence is not None and command.upper().startswith(silence):
            return True
        fetch = _FETCH_RE.fullmatch(command)
        if fetch:
            return await self._fetch(writer, cid, int(fetch[1], 16), int(fetch[2], 16))
        try:
            payload = await self._execute(command)
        except _CommandError:
            await self._reply(writer, f"?{cid}\n")
        else:
            await self._reply(writer, f"<{cid}{payload}\n")
        return True

    async def _reply(self, writer: asyncio.StreamWriter, text: str) -> None:
        if self._faults.reply_delay:
            await asyncio.sleep(self._faults.reply_delay)
        writer.write(text.encode("latin-1"))
        await writer.drain()

    async def _execute(self, command: str) -> str:
        for pattern, handler in self._commands:
            match = pattern.fullmatch(command)
            if match:
                return await handler(match)
        raise _CommandError(f"unknown command {command!r}")

    def _command_table(self) -> list[tuple[re.Pattern[str], _Handler]]:
        table: list[tuple[str, _Handler]] = [
            (r"STATUS", self._cmd_status),
            (r"SYSTEM", self._cmd_system),
            (r"FRAME", self._cmd_frame),
            (r"TIMER", self._cmd_timer),
            (r"RCONFIG([0-9A-F]{4})", self._cmd_rconfig),
            (r"WCONFIG([0-9A-F]{4})(.*)", self._cmd_wconfig),
            (r"CLEARCONFIG", self._cmd_clearconfig),
            (r"APPLYALL", self._cmd_applyall),
            (r"APPLYCDS", self._cmd_applycds),
            (r"APPLY(?:SYSTEM|DIO)", self._cmd_apply_check),
            (r"APPLYMOD([0-9A-F]{1,2})", self._cmd_applymod),
            (r"LOADTIMING", self._cmd_loadtiming),
            (r"LOADPARAMS", self._cmd_loadparams),
            (r"LOADPARAM\s+(\S+)", self._cmd_loadparam),
            (r"FASTLOADPARAM\s+(\S+)\s+(\S+)", self._cmd_fastloadparam),
            (r"HOLDTIMING", self._cmd_holdtiming),
            (r"RELEASETIMING", self._cmd_releasetiming),
            (r"RESETTIMING", self._cmd_resettiming),
            (r"POWERON", self._cmd_poweron),
            (r"POWEROFF", self._cmd_poweroff),
            (r"LOCK(\d)", self._cmd_lock),
            (r"FETCHLOG", self._cmd_fetchlog),
            (r"POLLON|POLLOFF", self._cmd_ok),
        ]
        return [(re.compile(p, re.IGNORECASE | re.DOTALL), h) for p, h in table]

    # -------------------------------------------------------------- commands

    async def _cmd_ok(self, _: re.Match[str]) -> str:
        return ""

    async def _cmd_status(self, _: re.Match[str]) -> str:
        self._status_count += 1
        now = time.monotonic() - self._t0
        items: list[tuple[str, object]] = [
            ("VALID", 1),
            ("COUNT", self._status_count),
            ("LOG", len(self._log)),
            ("POWER", 4 if self._power else 2),
            ("POWERGOOD", int(self._power)),
            ("OVERHEAT", 0),
            ("BACKPLANE_TEMP", f"{31.5 + 0.25 * math.sin(now / 60):.3f}"),
        ]
        for name, volts, amps, always in _SUPPLIES:
            on = self._power or always
            items += [(f"{name}_V", f"{volts if on else 0.0:.3f}")]
            items += [(f"{name}_I", f"{amps if on else 0.0:.3f}")]
        items += self._module_status(now)
        return " ".join(f"{k}={v}" for k, v in items)

    def _module_status(self, now: float) -> list[tuple[str, object]]:
        items: list[tuple[str, object]] = []
        for n in range(1, 13):
            mod_type = _int_or_none(self._system.get(f"MOD{n}_TYPE", "0")) or 0
            if not mod_type:
                continue
            items.append((f"MOD{n}/TEMP", f"{33.0 + 0.5 * n:.3f}"))
            if mod_type in _HEATER_TYPES:
                ccd_temp = -110.0 + 0.05 * math.sin(now / 7)
                items += [
                    (f"MOD{n}/TEMPA", f"{ccd_temp:.3f}"),
                    (f"MOD{n}/TEMPB", f"{ccd_temp + 4.0:.3f}"),
                    (f"MOD{n}/TEMPC", f"{21.0:.3f}"),
                    (f"MOD{n}/HEATERAOUTPUT", f"{1.250:.3f}"),
                    (f"MOD{n}/HEATERBOUTPUT", f"{0.0:.3f}"),
                ]
        return items

    async def _cmd_system(self, _: re.Match[str]) -> str:
        info = self._system
        present = info.get("MOD_PRESENT")
        if present is None:
            mask = sum(
                1 << (n - 1) for n in range(1, 13) if _int_or_none(info.get(f"MOD{n}_TYPE", "0"))
            )
            present = f"{mask:X}"
        items = [
            ("BACKPLANE_TYPE", info.get("BACKPLANE_TYPE", "1")),
            ("BACKPLANE_REV", info.get("BACKPLANE_REV", "0")),
            ("BACKPLANE_VERSION", info.get("BACKPLANE_VERSION", "1.0.0")),
            ("BACKPLANE_ID", info.get("BACKPLANE_ID", "0000000000000000")),
            ("POWER_ID", info.get("POWER_ID", "000000000000")),
            ("MOD_PRESENT", present),
        ]
        for n in range(1, 13):
            items += [
                (f"MOD{n}_TYPE", info.get(f"MOD{n}_TYPE", "0")),
                (f"MOD{n}_REV", info.get(f"MOD{n}_REV", "0")),
                (f"MOD{n}_VERSION", info.get(f"MOD{n}_VERSION", "0.0.0")),
                (f"MOD{n}_ID", info.get(f"MOD{n}_ID", "0000000000000000")),
            ]
        return " ".join(f"{k}={v}" for k, v in items)

    async def _cmd_frame(self, _: re.Match[str]) -> str:
        now = time.monotonic()
        items: list[tuple[str, object]] = [
            ("TIMER", f"{self._timer():X}"),
            ("RBUF", self._lock),
            ("WBUF", self._wbuf),
        ]
        for n, buf in enumerate(self._buffers, start=1):
            b = f"BUF{n}"
            items += [
                (f"{b}SAMPLE", buf.sample),
                (f"{b}COMPLETE", int(buf.complete)),
                (f"{b}MODE", buf.mode),
                (f"{b}BASE", buf.base),
                (f"{b}FRAME", buf.frame),
                (f"{b}WIDTH", buf.width),
                (f"{b}HEIGHT", buf.height),
                (f"{b}PIXELS", buf.width if buf.frame else 0),
                (f"{b}LINES", buf.lines_now(now)),
                (f"{b}RAWBLOCKS", 0),
                (f"{b}RAWLINES", 0),
                (f"{b}RAWOFFSET", 0),
                (f"{b}TIMESTAMP", f"{buf.timestamp:X}"),
                (f"{b}RETIMESTAMP", f"{buf.re_timestamp:X}"),
                (f"{b}FETIMESTAMP", f"{buf.fe_timestamp:X}"),
            ]
        return " ".join(f"{k}={v}" for k, v in items)

    async def _cmd_timer(self, _: re.Match[str]) -> str:
        return f"TIMER={self._timer():X}"

    async def _cmd_rconfig(self, match: re.Match[str]) -> str:
        return self._memory.get(_config_address(match[1]), "")

    async def _cmd_wconfig(self, match: re.Match[str]) -> str:
        address, line = _config_address(match[1]), match[2]
        if not line:
            self._memory.pop(address, None)
        elif "=" not in line:
            raise _CommandError("WCONFIG line without '='")
        else:
            self._memory[address] = line
        return ""

    async def _cmd_clearconfig(self, _: re.Match[str]) -> str:
        self._memory.clear()
        return ""

    async def _cmd_applyall(self, _: re.Match[str]) -> str:
        acf = self._memory_config()
        self._acf = acf
        self._load_params(acf)
        await self._restart_core()
        return ""

    async def _cmd_applycds(self, _: re.Match[str]) -> str:
        self._acf = self._memory_config()
        return ""

    async def _cmd_apply_check(self, _: re.Match[str]) -> str:
        self._memory_config()
        return ""

    async def _cmd_applymod(self, match: re.Match[str]) -> str:
        text = match[1]
        valid = int(text, 16) in range(1, 13) or (text.isdigit() and int(text) in range(1, 13))
        if not valid:
            raise _CommandError(f"no module {text}")
        self._memory_config()
        return ""

    async def _cmd_loadtiming(self, _: re.Match[str]) -> str:
        self._load_params(self._memory_config())
        await self._restart_core()
        return ""

    async def _cmd_loadparams(self, _: re.Match[str]) -> str:
        self._load_params(self._memory_config())
        return ""

    async def _cmd_loadparam(self, match: re.Match[str]) -> str:
        wanted = match[1]
        for key, _, value in (line.partition("=") for line in self._memory.values()):
            slot = _PARAMETER_SLOT_RE.fullmatch(key.strip())
            name, sep, number = value.partition("=")
            if not slot or not sep:
                continue
            if slot[1] == wanted or name.strip().lower() == wanted.lower():
                value_int = _int_or_none(number)
                if value_int is None:
                    raise _CommandError(f"parameter {name} is not an integer")
                self._param_names.setdefault(name.strip().lower(), name.strip())
                self._params[name.strip().lower()] = value_int
                self._notify()
                return ""
        raise _CommandError(f"no parameter {wanted}")

    async def _cmd_fastloadparam(self, match: re.Match[str]) -> str:
        name, value = match[1].lower(), _int_or_none(match[2])
        if name not in self._params or value is None:
            raise _CommandError(f"cannot set {match[1]} to {match[2]}")
        self._params[name] = value
        self._notify()
        return ""

    async def _cmd_holdtiming(self, _: re.Match[str]) -> str:
        self._held = True
        self._notify()
        return ""

    async def _cmd_releasetiming(self, _: re.Match[str]) -> str:
        self._held = False
        self._notify()
        return ""

    async def _cmd_resettiming(self, _: re.Match[str]) -> str:
        await self._restart_core()
        return ""

    async def _cmd_poweron(self, _: re.Match[str]) -> str:
        if not self._power:
            self._power = True
            self._add_log("power on")
            self._notify()
        return ""

    async def _cmd_poweroff(self, _: re.Match[str]) -> str:
        if self._power:
            self._power = False
            self._add_log("power off")
            await self._restart_core()
        return ""

    async def _cmd_lock(self, match: re.Match[str]) -> str:
        n = int(match[1])
        if n > self._n_buffers():
            raise _CommandError(f"no buffer {n}")
        self._lock = n
        self._notify()
        return ""

    async def _cmd_fetchlog(self, _: re.Match[str]) -> str:
        return self._log.pop(0) if self._log else "(null)"

    # ----------------------------------------------------------------- fetch

    async def _fetch(
        self, writer: asyncio.StreamWriter, cid: str, address: int, blocks: int
    ) -> bool:
        """Stream ``blocks`` 1028-byte blocks of a buffer; False if the connection is dropped."""
        capacity = (768 if self._acf.bigbuf else 512) * _MIB
        if (
            address not in BUFFER_BASES[: self._n_buffers()]
            or blocks == 0
            or blocks * BLOCK_SIZE > capacity
        ):
            await self._reply(writer, f"?{cid}\n")
            return True
        data = self._buffers[BUFFER_BASES.index(address)].data
        raw = _as_le_bytes(data)
        send, drop = self._fetch_limits(blocks)
        if self._faults.reply_delay:
            await asyncio.sleep(self._faults.reply_delay)
        header = np.frombuffer(f"<{cid}:".encode("latin-1"), dtype=np.uint8)
        for first in range(0, send, _FETCH_CHUNK_BLOCKS):
            count = min(_FETCH_CHUNK_BLOCKS, send - first)
            # One flat byte view: the transport slices what it could not send by
            # bytes, which a 2-D view would get wrong.
            writer.write(_frame_blocks(raw, header, first, count).reshape(-1).data)
            await writer.drain()
        if drop:
            writer.close()
            return False
        return True

    def _fetch_limits(self, blocks: int) -> tuple[int, bool]:
        """How many blocks this FETCH sends and whether it then drops the connection."""
        faults = self._faults
        if faults.drop_after is not None and faults.drop_times != 0:
            if faults.drop_times is not None:
                faults.drop_times -= 1
            return min(blocks, faults.drop_after), True
        if faults.truncate_at is not None and faults.truncate_times != 0:
            if faults.truncate_times is not None:
                faults.truncate_times -= 1
            return min(blocks, faults.truncate_at), False
        return blocks, False

    def _n_buffers(self) -> int:
        """BIGBUF=1 trades three buffers for two larger ones."""
        return 2 if self._acf.bigbuf else 3

    # ----------------------------------------------------------- timing core

    @property
    def _runnable(self) -> bool:
        return self._power and not self._held

    def _start_core(self) -> None:
        self._state = CoreState.IDLE
        self._core_task = asyncio.create_task(self._run_core(), name="archon-sim-core")
        self._core_task.add_done_callback(_log_core_exit)

    async def _stop_core(self) -> None:
        task, self._core_task = self._core_task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _restart_core(self) -> None:
        """RESETTIMING semantics: abandon whatever runs, close the shutter, go idle."""
        await self._stop_core()
        if self._server is not None:
            self._start_core()

    async def _run_core(self) -> None:
        try:
            while True:
                await self._idle()
                if self._p("Exposures") > 0:
                    await self._expose()
                else:
                    await self._flush()
        finally:
            self._close_shutter()
            self._state = CoreState.IDLE

    async def _wait_until(
        self, predicate: Callable[[], bool], deadline: float | None = None
    ) -> bool:
        """Sleep until ``predicate`` holds (re-checked on every change) or the deadline."""
        while not predicate():
            self._changed.clear()
            if deadline is None:
                await self._changed.wait()
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)
        return True

    async def _idle(self) -> None:
        """Wait for work; while AutoFlush runs, the CCD is continuously cleared."""
        self._state = CoreState.IDLE
        while True:
            clearing = self._runnable and self._p("AutoFlush") > 0
            if self._runnable and (self._p("Exposures") > 0 or self._p("DoFlush") > 0):
                if clearing:
                    self._cleared()
                return
            self._changed.clear()
            await self._changed.wait()
            if clearing:
                self._cleared()

    async def _flush(self) -> None:
        self._state = CoreState.FLUSHING
        per_flush = self._acf.line_count * self._acf.pixel_count / self._pixel_rate / 10
        await asyncio.sleep(max(1, self._p("FlushCount")) * per_flush)
        self._set_param("DoFlush", 0)
        self._cleared()

    def _integration_seconds(self) -> float:
        cs = self._p("IntCS")
        return cs / 100 if cs > 0 else max(0, self._p("IntMS")) / 1000

    async def _expose(self) -> None:
        self._state = CoreState.INTEGRATING
        deadline = time.monotonic() + self._integration_seconds()
        self._int_start_timer = self._timer()
        if self._p("OpenShutter") == 1:
            self._open_shutter()
        await self._wait_until(lambda: self._p("AbortExposure") != 0, deadline)
        self._close_shutter()
        self._int_end_timer = self._timer()
        self._set_param("Exposures", max(0, self._p("Exposures") - 1))
        self._state = CoreState.WAITING_READOUT
        await self._wait_until(
            lambda: self._runnable and self._p("ReadOut") > 0 and self._free_buffer() is not None
        )
        await self._readout()

    def _free_buffer(self) -> int | None:
        """Next unlocked buffer after the last one written (0-based), if any."""
        n = self._n_buffers()
        for step in range(1, n + 1):
            index = (self._last_written + step) % n
            if index + 1 != self._lock:
                return index
        return None

    async def _readout(self) -> None:
        index = self._free_buffer()
        assert index is not None  # guaranteed by the caller's wait
        acf, params = self._acf, self.params
        buf = self._begin_frame(index, acf)
        pixel_time = acf.pixel_count / self._pixel_rate
        skip = (self._p("PreSkipLines") + self._p("PostSkipLines")) * pixel_time / 10
        buf.line_time = pixel_time + max(0, self._p("WaitCount")) * 1e-8
        buf.read_start = time.monotonic() + self._p("PreSkipLines") * pixel_time / 10
        render = asyncio.ensure_future(
            asyncio.to_thread(
                render_frame,
                acf,
                self._sensor,
                dark_seconds=time.monotonic() - self._last_clear,
                light_seconds=self._light_seconds,
                frame_number=buf.frame,
                params=params,
            )
        )
        try:
            await asyncio.sleep(acf.line_count * buf.line_time + skip)
            data = await render
        except BaseException:
            render.cancel()
            buf.lines = buf.lines_now(time.monotonic())
            buf.read_start = None
            raise
        buf.data, buf.lines, buf.read_start, buf.complete = data, buf.height, None, True
        self._frames_completed += 1
        self._cleared()

    def _begin_frame(self, index: int, acf: AcfConfig) -> _FrameBuffer:
        """The frame clock: claim buffer ``index`` and reset its FRAME bookkeeping."""
        self._state = CoreState.READING
        self._frame_counter += 1
        self._last_written = index
        self._wbuf = index + 1
        height, width = acf.buffer_shape
        buf = self._buffers[index]
        buf.complete = False
        buf.frame = self._frame_counter
        buf.width, buf.height = width, height
        buf.sample, buf.mode = acf.sample_mode, acf.frame_mode
        buf.timestamp = self._timer()
        buf.re_timestamp, buf.fe_timestamp = self._int_start_timer, self._int_end_timer
        buf.lines = 0
        buf.rows_per_line = 2 if acf.frame_mode == 2 else 1
        buf.lines_per_tap = acf.line_count
        return buf

    def _cleared(self) -> None:
        """The CCD has just been emptied: dark and light accumulate from now."""
        self._last_clear = time.monotonic()
        self._light_seconds = 0.0

    def _open_shutter(self) -> None:
        if self._shutter_opened is None:
            self._shutter_opened = time.monotonic()

    def _close_shutter(self) -> None:
        opened, self._shutter_opened = self._shutter_opened, None
        if opened is not None:
            closed = time.monotonic()
            self._shutter_log.append((opened, closed))
            self._light_seconds += closed - opened


# ----------------------------------------------------------------- helpers

_FETCH_RE = re.compile(r"FETCH([0-9A-F]{8})([0-9A-F]{8})", re.IGNORECASE)
_PARAMETER_SLOT_RE = re.compile(r"PARAMETER(\d+)", re.IGNORECASE)


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdefABCDEF" for c in text)


def _int_or_none(text: str) -> int | None:
    try:
        return int(text.strip())
    except ValueError:
        return None


def _config_address(text: str) -> int:
    address = int(text, 16)
    if address >= CONFIG_SLOTS:
        raise _CommandError(f"config address {text} out of range")
    return address


def _as_le_bytes(data: npt.NDArray[Any] | None) -> npt.NDArray[np.uint8]:
    """A buffer's bytes as the controller sends them: little-endian, row-major."""
    if data is None:
        return np.zeros(0, dtype=np.uint8)
    little = data.astype(data.dtype.newbyteorder("<"), copy=False)
    return np.ascontiguousarray(little).reshape(-1).view(np.uint8)


def _frame_blocks(
    raw: npt.NDArray[np.uint8], header: npt.NDArray[np.uint8], first: int, count: int
) -> npt.NDArray[np.uint8]:
    """Blocks ``first .. first+count`` as one (count, 4 + 1024) array, zero padded."""
    out = np.zeros((count, len(header) + BLOCK_SIZE), dtype=np.uint8)
    out[:, : len(header)] = header
    start = first * BLOCK_SIZE
    stop = min(len(raw), start + count * BLOCK_SIZE)
    if stop > start:
        full, rest = divmod(stop - start, BLOCK_SIZE)
        payload = out[:, len(header) :]
        payload[:full] = raw[start : start + full * BLOCK_SIZE].reshape(full, BLOCK_SIZE)
        if rest:
            payload[full, :rest] = raw[start + full * BLOCK_SIZE : stop]
    return out


def _log_core_exit(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("Archon simulator timing core crashed", exc_info=task.exception())


async def run_simulator(
    acf_path: str | os.PathLike[str],
    host: str = "127.0.0.1",
    port: int = 4242,
    **kwargs: Any,
) -> None:
    """Serve ``acf_path`` until cancelled (the ``ccdflow sim`` command)."""
    acf = load_acf(acf_path)
    async with ArchonSimulator(acf, host=host, port=port, **kwargs) as sim:
        message = f"Archon simulator listening on {sim.host}:{sim.port} (ACF {acf_path})"
        log.info(message)
        print(message, flush=True)
        await asyncio.Event().wait()
