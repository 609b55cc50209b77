"""The ASCOM Switch as an Alpaca device view: named switches, checked before set.

A switch device holds MaxSwitch switches (ids 0 .. MaxSwitch-1), each boolean or
multi-valued with its own Minimum, Maximum and Step. These are read once per switch
into :class:`SwitchInfo`, so an unknown id, a read-only switch, a value out of range
or off the step grid is refused before anything is sent (a dimmer asked for 0.75 in
steps of 0.1 is a caller's mistake, not a driver's rounding to find later).

Platform 7's asynchronous SetAsync/SetAsyncValue are not used: every set here is the
synchronous SetSwitch/SetSwitchValue.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass
from typing import ClassVar

from devices.alpaca.checks import (
    AlpacaCapabilityError,
    AlpacaValueError,
    check_finite,
    check_integer_range,
)
from devices.alpaca.client import AlpacaClient, Device
from devices.alpaca.reads import read_all

STEP_TOLERANCE = 1e-6
"""How far off the step grid a value may be, as a fraction of the step (float noise)."""


@dataclass(frozen=True, slots=True)
class SwitchInfo:
    """One switch's identity and limits, read once."""

    id: int
    name: str
    description: str
    can_write: bool
    minimum: float
    maximum: float
    step: float

    @property
    def is_boolean(self) -> bool:
        """A plain on/off switch: two values, 0 and 1 (or any single step)."""
        return self.maximum - self.minimum <= self.step


def check_switch_value(info: SwitchInfo, value: float, *, device: str = "") -> float:
    """``value`` if switch ``info`` can take it: within Minimum..Maximum, on the Step grid."""
    member = "setswitchvalue"
    number = check_finite(value, "Value", device=device, member=member)
    limits = f"switch {info.id} ({info.name!r}) takes {info.minimum:g}..{info.maximum:g}"
    if not info.minimum <= number <= info.maximum:
        raise AlpacaValueError("Value", value, limits, device=device, member=member)
    if info.step > 0:
        steps = (number - info.minimum) / info.step
        if not math.isclose(steps, round(steps), abs_tol=STEP_TOLERANCE):
            raise AlpacaValueError(
                "Value", value, f"{limits} in steps of {info.step:g}", device=device, member=member
            )
    return number


class AlpacaSwitch(Device):
    """One Alpaca switch device (``/api/v1/switch/{number}/...``) on an AlpacaClient."""

    device_type: ClassVar[str] = "switch"

    def __init__(self, client: AlpacaClient, number: int = 0) -> None:
        super().__init__(client, number)
        self._switches: tuple[SwitchInfo, ...] | None = None

    async def max_switch(self) -> int:
        """MaxSwitch: how many switches (ids 0 .. MaxSwitch-1)."""
        return await self.get_int("maxswitch")

    async def switches(self, *, refresh: bool = False) -> tuple[SwitchInfo, ...]:
        """Every switch's name, description, writability and limits, read once and kept."""
        if self._switches is None or refresh:
            count = await self.max_switch()
            self._switches = tuple(
                await asyncio.gather(*(self._read_info(i) for i in range(count)))
            )
        return self._switches

    async def _read_info(self, switch_id: int) -> SwitchInfo:
        name, description, can_write, minimum, maximum, step = await asyncio.gather(
            self.switch_name(switch_id),
            self.switch_description(switch_id),
            self.can_write(switch_id),
            self.get_float("minswitchvalue", Id=switch_id),
            self.get_float("maxswitchvalue", Id=switch_id),
            self.get_float("switchstep", Id=switch_id),
        )
        return SwitchInfo(switch_id, name, description, can_write, minimum, maximum, step)

    async def info(self, switch_id: int) -> SwitchInfo:
        """One switch's :class:`SwitchInfo`; an id the device does not have is refused."""
        switches = await self.switches()
        check_integer_range(
            switch_id,
            0,
            len(switches) - 1,
            "Id",
            device=str(self.address),
            member="getswitch",
            what=f"{len(switches)} switches",
        )
        return switches[switch_id]

    async def find(self, name: str) -> SwitchInfo:
        """The switch called ``name`` (exactly); refused, listing the names, if none is."""
        switches = await self.switches()
        for info in switches:
            if info.name == name:
                return info
        listed = ", ".join(repr(info.name) for info in switches) or "none"
        raise AlpacaValueError(
            "name", name, f"the switches are {listed}", device=str(self.address), member=""
        )

    # --- per-switch reads ---------------------------------------------------------------

    async def switch_name(self, switch_id: int) -> str:
        """GetSwitchName."""
        return await self.get_str("getswitchname", Id=switch_id)

    async def switch_description(self, switch_id: int) -> str:
        """GetSwitchDescription."""
        return await self.get_str("getswitchdescription", Id=switch_id)

    async def can_write(self, switch_id: int) -> bool:
        """CanWrite: whether the switch can be set (else it only reports)."""
        return await self.get_bool("canwrite", Id=switch_id)

    async def get_switch(self, switch_id: int) -> bool:
        """GetSwitch: the switch as on/off (a multi-valued one is on above its minimum)."""
        return await self.get_bool("getswitch", Id=switch_id)

    async def get_value(self, switch_id: int) -> float:
        """GetSwitchValue: the switch's value, Minimum..Maximum."""
        return await self.get_float("getswitchvalue", Id=switch_id)

    # --- sets ---------------------------------------------------------------------------

    async def set_switch(self, switch_id: int, state: bool) -> None:
        """PUT SetSwitch; refused before sending for an unknown id or a read-only switch."""
        info = await self._writable(switch_id, "setswitch")
        await self.put("setswitch", Id=info.id, State=bool(state))

    async def set_value(self, switch_id: int, value: float) -> None:
        """PUT SetSwitchValue; refused before sending unless the switch is writable and
        ``value`` is within Minimum..Maximum on the Step grid."""
        info = await self._writable(switch_id, "setswitchvalue")
        number = check_switch_value(info, value, device=str(self.address))
        await self.put("setswitchvalue", Id=info.id, Value=number)

    async def _writable(self, switch_id: int, member: str) -> SwitchInfo:
        info = await self.info(switch_id)
        if not info.can_write:
            raise AlpacaCapabilityError(
                "CanWrite",
                device=str(self.address),
                member=member,
                detail=f"switch {switch_id} ({info.name!r}) is read-only (CanWrite is False)",
            )
        return info

    # --- telemetry ----------------------------------------------------------------------

    async def telemetry(self) -> dict[str, object]:
        """Every switch's value, ``switch_<id>`` (e.g. ``switch_0``), read concurrently."""
        switches = await self.switches()
        return await read_all(
            {f"switch_{info.id}": self.get_float("getswitchvalue", Id=info.id) for info in switches}
        )


__all__ = ["STEP_TOLERANCE", "AlpacaSwitch", "SwitchInfo", "check_switch_value"]
