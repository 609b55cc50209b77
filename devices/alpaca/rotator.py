"""The ASCOM Rotator as an Alpaca device view: sky and mechanical angles, moves, waits.

IRotatorV3 tells two angles apart: Position is the sky position angle (after any
Sync), MechanicalPosition the rotator's own. Moves are PUTs that return at once;
:meth:`AlpacaRotator.wait_until_stopped` polls IsMoving with a deadline. Absolute
targets outside [0, 360) are refused before anything is sent.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import ClassVar

from devices.alpaca.checks import check_finite, check_range, require
from devices.alpaca.client import AlpacaClient, Device
from devices.alpaca.reads import optional, present, read_all
from devices.alpaca.waits import DEFAULT_POLL, wait_for


@dataclass(frozen=True, slots=True)
class RotatorCapabilities:
    """What one rotator can do, read once."""

    can_reverse: bool
    step_size_deg: float | None
    """Degrees per step, when the rotator knows it."""


class AlpacaRotator(Device):
    """One Alpaca rotator (``/api/v1/rotator/{number}/...``) on an AlpacaClient."""

    device_type: ClassVar[str] = "rotator"

    def __init__(self, client: AlpacaClient, number: int = 0) -> None:
        super().__init__(client, number)
        self._capabilities: RotatorCapabilities | None = None

    async def capabilities(self, *, refresh: bool = False) -> RotatorCapabilities:
        """CanReverse and StepSize, read once and kept."""
        if self._capabilities is None or refresh:
            can_reverse, step = await asyncio.gather(
                self.get_bool("canreverse"), optional(self.get_float("stepsize"))
            )
            self._capabilities = RotatorCapabilities(can_reverse=can_reverse, step_size_deg=step)
        return self._capabilities

    # --- angles -------------------------------------------------------------------------

    async def position(self) -> float:
        """Position: the sky position angle, in degrees [0, 360)."""
        return await self.get_float("position")

    async def mechanical_position(self) -> float:
        """MechanicalPosition: the rotator's own angle, in degrees (IRotatorV3)."""
        return await self.get_float("mechanicalposition")

    async def target_position(self) -> float:
        """TargetPosition: where the present (or last) move goes, in degrees."""
        return await self.get_float("targetposition")

    async def is_moving(self) -> bool:
        """IsMoving."""
        return await self.get_bool("ismoving")

    async def reverse(self) -> bool:
        """Reverse: whether the rotation direction is reversed."""
        return await self.get_bool("reverse")

    async def set_reverse(self, on: bool) -> None:
        """PUT Reverse (refused before sending where CanReverse is false)."""
        caps = await self.capabilities()
        require(caps.can_reverse, "CanReverse", device=str(self.address), member="reverse")
        await self.put("reverse", Reverse=bool(on))

    # --- moves --------------------------------------------------------------------------

    async def move(self, offset_deg: float) -> None:
        """PUT Move: turn by ``offset_deg`` from the present Position (relative)."""
        offset = check_finite(offset_deg, "Position", device=str(self.address), member="move")
        await self.put("move", Position=offset)

    async def move_absolute(self, position_deg: float) -> None:
        """PUT MoveAbsolute: turn to sky position angle ``position_deg`` in [0, 360)."""
        await self.put("moveabsolute", Position=self._angle(position_deg, "moveabsolute"))

    async def move_mechanical(self, position_deg: float) -> None:
        """PUT MoveMechanical: turn to mechanical angle ``position_deg`` in [0, 360)."""
        await self.put("movemechanical", Position=self._angle(position_deg, "movemechanical"))

    async def sync(self, position_deg: float) -> None:
        """PUT Sync: declare the present sky position angle to be ``position_deg``."""
        await self.put("sync", Position=self._angle(position_deg, "sync"))

    def _angle(self, value: float, member: str) -> float:
        return check_range(
            value,
            0,
            360,
            "Position",
            device=str(self.address),
            member=member,
            high_open=True,
            unit="deg",
        )

    async def halt(self) -> None:
        """PUT Halt: stop now."""
        await self.put("halt")

    async def wait_until_stopped(self, *, timeout: float, poll: float = DEFAULT_POLL) -> float:
        """Poll IsMoving until false; returns the Position reached."""
        await wait_for(
            self.is_moving,
            lambda moving: not moving,
            timeout=timeout,
            poll=poll,
            device=str(self.address),
            member="ismoving",
            waiting_for="the rotator to stop",
        )
        return await self.position()

    # --- telemetry ----------------------------------------------------------------------

    async def telemetry(self) -> dict[str, object]:
        """Angles and motion: ``rotator_position_deg`` (FITS ROTPA),
        ``rotator_mechanical_deg``, ``rotator_moving``, ``rotator_reverse``; absent
        members are left out."""
        return present(
            await read_all(
                {
                    "rotator_position_deg": self.position(),
                    "rotator_mechanical_deg": optional(self.mechanical_position()),
                    "rotator_moving": self.is_moving(),
                    "rotator_reverse": optional(self.reverse()),
                }
            )
        )


__all__ = ["AlpacaRotator", "RotatorCapabilities"]
