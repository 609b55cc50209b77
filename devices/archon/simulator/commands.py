"""The command table: every text command except FETCH, matched case-insensitively.

Clients upper-case whole commands (payloads included), so every pattern is matched
with IGNORECASE and handlers fold names themselves.  A handler returns the reply
payload or raises :class:`CommandError` for ``?xx``; FETCH is the server's, because
its reply is a block stream rather than a line.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable

from devices.archon.simulator.config_memory import config_address
from devices.archon.simulator.errors import CommandError
from devices.archon.simulator.housekeeping import PowerReport, status_reply, system_reply
from devices.archon.simulator.params import parse_int
from devices.archon.simulator.state import ControllerState

__all__ = ["CommandTable"]

_Handler = Callable[[re.Match[str]], Awaitable[str]]


class CommandTable:
    """Dispatch a command line to its handler."""

    def __init__(self, state: ControllerState) -> None:
        self._s = state
        table: list[tuple[str, _Handler]] = [
            (r"STATUS", self._status),
            (r"SYSTEM", self._system),
            (r"FRAME", self._frame),
            (r"TIMER", self._timer),
            (r"RCONFIG([0-9A-F]{4})", self._rconfig),
            (r"WCONFIG([0-9A-F]{4})(.*)", self._wconfig),
            (r"CLEARCONFIG", self._clearconfig),
            (r"APPLYALL", self._applyall),
            (r"APPLYCDS", self._applycds),
            (r"APPLY(?:SYSTEM|DIO)", self._apply_check),
            (r"APPLYMOD([0-9A-F]{1,2})", self._applymod),
            (r"LOADTIMING", self._loadtiming),
            (r"LOADPARAMS", self._loadparams),
            (r"LOADPARAM\s+(\S+)", self._loadparam),
            (r"FASTLOADPARAM\s+(\S+)\s+(\S+)", self._fastloadparam),
            (r"HOLDTIMING", self._holdtiming),
            (r"RELEASETIMING", self._releasetiming),
            (r"RESETTIMING", self._resettiming),
            (r"POWERON", self._poweron),
            (r"POWEROFF", self._poweroff),
            (r"LOCK(\d)", self._lock),
            (r"FETCHLOG", self._fetchlog),
            (r"POLLON|POLLOFF", self._ok),
        ]
        self._table = [(re.compile(p, re.IGNORECASE | re.DOTALL), h) for p, h in table]

    async def execute(self, command: str) -> str:
        for pattern, handler in self._table:
            match = pattern.fullmatch(command)
            if match:
                return await handler(match)
        raise CommandError(f"unknown command {command!r}")

    # -------------------------------------------------------------- queries

    async def _ok(self, _: re.Match[str]) -> str:
        return ""

    async def _status(self, _: re.Match[str]) -> str:
        s = self._s
        s.status_count += 1
        power = PowerReport(on=s.core.power_on, bad=s.core.power_bad)
        return status_reply(s.system, power, s.status_count, len(s.events), s.clock.seconds())

    async def _system(self, _: re.Match[str]) -> str:
        return system_reply(self._s.system)

    async def _frame(self, _: re.Match[str]) -> str:
        s = self._s
        return s.bank.frame_reply(s.clock.ticks(), time.monotonic())

    async def _timer(self, _: re.Match[str]) -> str:
        return f"TIMER={self._s.clock.ticks():X}"

    async def _fetchlog(self, _: re.Match[str]) -> str:
        return self._s.events.pop()

    # -------------------------------------------------------- configuration

    async def _rconfig(self, match: re.Match[str]) -> str:
        return self._s.memory.read(config_address(match[1]))

    async def _wconfig(self, match: re.Match[str]) -> str:
        self._s.memory.write(config_address(match[1]), match[2])
        return ""

    async def _clearconfig(self, _: re.Match[str]) -> str:
        self._s.memory.clear()
        return ""

    async def _applyall(self, _: re.Match[str]) -> str:
        acf = self._s.memory_config()
        self._s.apply(acf)
        self._s.params.load(acf)
        await self._s.core.restart()
        return ""

    async def _applycds(self, _: re.Match[str]) -> str:
        """Geometry (LINECOUNT, PIXELCOUNT, FRAMEMODE, SAMPLEMODE) takes effect."""
        self._s.apply(self._s.memory_config())
        return ""

    async def _apply_check(self, _: re.Match[str]) -> str:
        self._s.memory_config()
        return ""

    async def _applymod(self, match: re.Match[str]) -> str:
        text = match[1]
        valid = int(text, 16) in range(1, 13) or (text.isdigit() and int(text) in range(1, 13))
        if not valid:
            raise CommandError(f"no module {text}")
        self._s.memory_config()
        return ""

    # ---------------------------------------------------------------- timing

    async def _loadtiming(self, _: re.Match[str]) -> str:
        self._s.params.load(self._s.memory_config())
        await self._s.core.restart()
        return ""

    async def _loadparams(self, _: re.Match[str]) -> str:
        self._s.params.load(self._s.memory_config())
        return ""

    async def _loadparam(self, match: re.Match[str]) -> str:
        name, value = self._s.memory.parameter(match[1])
        self._s.params.define(name, value)
        return ""

    async def _fastloadparam(self, match: re.Match[str]) -> str:
        value = parse_int(match[2])
        if value is None or not self._s.params.set(match[1], value):
            raise CommandError(f"cannot set {match[1]} to {match[2]}")
        return ""

    async def _holdtiming(self, _: re.Match[str]) -> str:
        self._s.core.set_held(True)
        return ""

    async def _releasetiming(self, _: re.Match[str]) -> str:
        self._s.core.set_held(False)
        return ""

    async def _resettiming(self, _: re.Match[str]) -> str:
        await self._s.core.restart()
        return ""

    async def _poweron(self, _: re.Match[str]) -> str:
        if not self._s.core.power_on:
            self._s.events.add("power on")
            self._s.core.set_power(True)
        return ""

    async def _poweroff(self, _: re.Match[str]) -> str:
        if self._s.core.power_on:
            self._s.events.add("power off")
            self._s.core.set_power(False)
            await self._s.core.restart()
        return ""

    async def _lock(self, match: re.Match[str]) -> str:
        self._s.bank.set_lock(int(match[1]))
        return ""
