"""The ASCOM Focuser as an Alpaca device view: limits read once, moves checked first.

IFocuser has two kinds: an absolute focuser moves to a step in ``0..MaxStep``; a
relative one moves by ``-MaxIncrement..MaxIncrement`` steps and may not report a
position at all. Which kind, and its limits, are read once into
:class:`FocuserCapabilities`, so a move the focuser cannot make is refused before it
is sent (some drivers clamp silently instead: the frame would be out of focus with no
error anywhere).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import ClassVar

from devices.alpaca.checks import check_integer_range, require
from devices.alpaca.client import AlpacaClient, Device
from devices.alpaca.reads import optional, present, read_all
from devices.alpaca.waits import DEFAULT_POLL, wait_for


@dataclass(frozen=True, slots=True)
class FocuserCapabilities:
    """What one focuser can do, read from its properties once."""

    absolute: bool
    """True: Move takes a step position; False: Move takes a signed step count."""
    max_step: int
    """The highest position (absolute), or the largest travel (relative)."""
    max_increment: int
    """The most steps one Move may travel (relative focusers)."""
    step_size_um: float | None
    """Microns per step, when the focuser knows it."""
    temp_comp_available: bool

    def position_range(self) -> tuple[int, int]:
        """The positions an absolute Move takes."""
        return 0, self.max_step

    def increment_range(self) -> tuple[int, int]:
        """The step counts a relative Move takes."""
        return -self.max_increment, self.max_increment


class AlpacaFocuser(Device):
    """One Alpaca focuser (``/api/v1/focuser/{number}/...``) on an AlpacaClient."""

    device_type: ClassVar[str] = "focuser"

    def __init__(self, client: AlpacaClient, number: int = 0) -> None:
        super().__init__(client, number)
        self._capabilities: FocuserCapabilities | None = None

    # --- limits -------------------------------------------------------------------------

    async def absolute(self) -> bool:
        """Absolute: whether Move takes a position (True) or a step count (False)."""
        return await self.get_bool("absolute")

    async def max_step(self) -> int:
        """MaxStep: the highest position an absolute focuser reaches."""
        return await self.get_int("maxstep")

    async def max_increment(self) -> int:
        """MaxIncrement: the most steps a single Move may travel."""
        return await self.get_int("maxincrement")

    async def step_size(self) -> float:
        """StepSize, in microns (NotImplemented where the focuser does not know it)."""
        return await self.get_float("stepsize")

    async def temp_comp_available(self) -> bool:
        """TempCompAvailable: whether temperature compensation can be switched on."""
        return await self.get_bool("tempcompavailable")

    async def capabilities(self, *, refresh: bool = False) -> FocuserCapabilities:
        """Kind and limits, read once and kept (they are fixed for a focuser)."""
        if self._capabilities is None or refresh:
            absolute, max_step, max_increment, step_size, temp_comp = await asyncio.gather(
                self.absolute(),
                self.max_step(),
                self.max_increment(),
                optional(self.step_size()),
                self.temp_comp_available(),
            )
            self._capabilities = FocuserCapabilities(
                absolute=absolute,
                max_step=max_step,
                max_increment=max_increment,
                step_size_um=step_size,
                temp_comp_available=temp_comp,
            )
        return self._capabilities

    # --- state --------------------------------------------------------------------------

    async def position(self) -> int:
        """Position, in steps (NotImplemented on most relative focusers)."""
        return await self.get_int("position")

    async def is_moving(self) -> bool:
        """IsMoving."""
        return await self.get_bool("ismoving")

    async def temperature(self) -> float:
        """Temperature at the focuser, in degrees Celsius (NotImplemented where absent)."""
        return await self.get_float("temperature")

    async def temp_comp(self) -> bool:
        """TempComp: whether temperature compensation is on."""
        return await self.get_bool("tempcomp")

    async def set_temp_comp(self, on: bool) -> None:
        """PUT TempComp (refused before sending where TempCompAvailable is false)."""
        caps = await self.capabilities()
        if on:
            require(
                caps.temp_comp_available,
                "TempCompAvailable",
                device=str(self.address),
                member="tempcomp",
            )
        await self.put("tempcomp", TempComp=bool(on))

    # --- moves --------------------------------------------------------------------------

    async def move(self, position: int) -> None:
        """PUT Move to step ``position`` (absolute focusers), checked against 0..MaxStep.

        A relative focuser has no positions to go to: it is refused (use
        :meth:`move_by`). The move is not awaited; see :meth:`wait_until_stopped`.
        """
        caps = await self.capabilities()
        where = str(self.address)
        require(caps.absolute, "Absolute", device=where, member="move")
        low, high = caps.position_range()
        check_integer_range(
            position, low, high, "Position", device=where, member="move", what="0..MaxStep"
        )
        await self.put("move", Position=position)

    async def move_by(self, steps: int) -> None:
        """Move ``steps`` from here (positive outward), within MaxIncrement per move.

        A relative focuser is sent ``steps`` as is; an absolute one is sent the
        position ``steps`` away, which must also lie in 0..MaxStep.
        """
        caps = await self.capabilities()
        where = str(self.address)
        low, high = caps.increment_range()
        check_integer_range(
            steps, low, high, "steps", device=where, member="move", what="+-MaxIncrement"
        )
        if not caps.absolute:
            await self.put("move", Position=steps)
            return
        await self.move(await self.position() + steps)

    async def halt(self) -> None:
        """PUT Halt: stop now, wherever the focuser is."""
        await self.put("halt")

    async def wait_until_stopped(self, *, timeout: float, poll: float = DEFAULT_POLL) -> None:
        """Poll IsMoving until false."""
        await wait_for(
            self.is_moving,
            lambda moving: not moving,
            timeout=timeout,
            poll=poll,
            device=str(self.address),
            member="ismoving",
            waiting_for="the focuser to stop",
        )

    # --- telemetry ----------------------------------------------------------------------

    async def telemetry(self) -> dict[str, object]:
        """Position, motion, temperature and compensation; what the focuser lacks is left out.

        Keys: ``focus_position`` (steps), ``focus_moving``, ``focus_temperature_c``,
        ``focus_temp_comp``.
        """
        return present(
            await read_all(
                {
                    "focus_position": optional(self.position()),
                    "focus_moving": self.is_moving(),
                    "focus_temperature_c": optional(self.temperature()),
                    "focus_temp_comp": optional(self.temp_comp()),
                }
            )
        )


__all__ = ["AlpacaFocuser", "FocuserCapabilities"]
