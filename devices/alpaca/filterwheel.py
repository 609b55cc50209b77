"""The ASCOM FilterWheel as an Alpaca device view: filters by name, moves, waits.

An observing plan names filters ("r", "Halpha"), not slots, so the wheel's Names are
read once and a name is turned into a slot here; a name the wheel does not have is
refused before the wheel moves, with the wheel's own names in the error. Position is
-1 while the wheel turns (IFilterWheel), which :meth:`AlpacaFilterWheel.wait_until_stopped`
polls through.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from devices.alpaca.checks import AlpacaDeviceFaultError, AlpacaValueError, check_integer_range
from devices.alpaca.client import AlpacaClient, Device
from devices.alpaca.errors import AlpacaProtocolError
from devices.alpaca.reads import as_int_list
from devices.alpaca.waits import DEFAULT_POLL, wait_for

MOVING = -1
"""Position while the wheel turns."""

DEFAULT_MOVE_TIMEOUT = 60.0
"""Seconds a filter change may take: a large wheel turning half way round, and margin."""


@dataclass(frozen=True, slots=True)
class FilterSlot:
    """One filter: its slot (from 0), its name and its focus offset in focuser steps."""

    position: int
    name: str
    focus_offset: int


def filter_position(names: Sequence[str], wanted: str, *, device: str = "") -> int:
    """The slot of the filter called ``wanted``.

    An exact name wins (the first, if a wheel holds two filters of one name); else one
    name equal but for case and surrounding spaces ("Red" for "red "). A name matching
    none, or several only loosely, is refused, listing the wheel's names.
    """
    if wanted in names:
        return list(names).index(wanted)
    key = wanted.strip().casefold()
    loose = [slot for slot, name in enumerate(names) if name.strip().casefold() == key]
    if len(loose) == 1:
        return loose[0]
    listed = ", ".join(repr(name) for name in names) or "none"
    why = "is ambiguous" if loose else "is not in the wheel"
    raise AlpacaValueError(
        "name",
        wanted,
        f"{wanted!r} {why}; its filters are {listed}",
        device=device,
        member="position",
    )


class AlpacaFilterWheel(Device):
    """One Alpaca filter wheel (``/api/v1/filterwheel/{number}/...``) on an AlpacaClient."""

    device_type: ClassVar[str] = "filterwheel"

    def __init__(self, client: AlpacaClient, number: int = 0) -> None:
        super().__init__(client, number)
        self._slots: tuple[FilterSlot, ...] | None = None

    async def names(self) -> list[str]:
        """Names: one per slot, slot 0 first."""
        return await self.get_str_list("names")

    async def focus_offsets(self) -> list[int]:
        """FocusOffsets: focuser steps to add for each slot's filter (same order as Names)."""
        return as_int_list(*await self._typed("focusoffsets"))

    async def slots(self, *, refresh: bool = False) -> tuple[FilterSlot, ...]:
        """Every filter with its slot and focus offset, read once and kept.

        A wheel's filters change only when someone swaps them by hand; ``refresh``
        reads them again after that.
        """
        if self._slots is None or refresh:
            names, offsets = await asyncio.gather(self.names(), self.focus_offsets())
            if len(offsets) != len(names):
                raise AlpacaProtocolError(
                    f"{len(names)} Names but {len(offsets)} FocusOffsets; "
                    "IFilterWheel gives one of each per slot",
                    device=str(self.address),
                    member="focusoffsets",
                )
            self._slots = tuple(
                FilterSlot(slot, name, offset)
                for slot, (name, offset) in enumerate(zip(names, offsets, strict=True))
            )
        return self._slots

    async def position(self) -> int:
        """Position: the slot in the beam, or -1 (:data:`MOVING`) while the wheel turns."""
        return await self.get_int("position")

    async def move_to(self, position: int) -> None:
        """PUT Position: start turning to slot ``position`` (0 .. filters-1).

        A slot the wheel does not have is refused before sending. The move is not
        awaited: :meth:`wait_until_stopped` does that.
        """
        slots = await self.slots()
        check_integer_range(
            position,
            0,
            len(slots) - 1,
            "Position",
            device=str(self.address),
            member="position",
            what=f"{len(slots)} filters",
        )
        await self.put("position", Position=position)

    async def move_to_name(self, name: str) -> int:
        """Start turning to the filter called ``name``; returns its slot.

        A name the wheel does not have is refused, listing the wheel's names, before
        anything is sent (see :func:`filter_position`).
        """
        slots = await self.slots()
        position = filter_position([slot.name for slot in slots], name, device=str(self.address))
        await self.move_to(position)
        return position

    async def wait_until_stopped(self, *, timeout: float, poll: float = DEFAULT_POLL) -> int:
        """Poll Position until it is not -1; returns the slot the wheel stopped at."""
        return await wait_for(
            self.position,
            lambda position: position != MOVING,
            timeout=timeout,
            poll=poll,
            device=str(self.address),
            member="position",
            waiting_for="the wheel to stop (Position -1 while moving)",
        )

    async def select(
        self, name: str, *, timeout: float = DEFAULT_MOVE_TIMEOUT, poll: float = DEFAULT_POLL
    ) -> FilterSlot:
        """Put the filter called ``name`` in the beam and return it once it is there.

        Move, wait, then check the wheel stopped at that slot: a wheel that stops
        elsewhere (a jam, a missed index) is an :class:`AlpacaDeviceFaultError`, not a
        frame taken through the wrong filter.
        """
        position = await self.move_to_name(name)
        reached = await self.wait_until_stopped(timeout=timeout, poll=poll)
        if reached != position:
            raise AlpacaDeviceFaultError(
                f"sent to slot {position} ({name!r}) but stopped at slot {reached}",
                device=str(self.address),
                member="position",
            )
        return (await self.slots())[position]

    async def telemetry(self) -> dict[str, object]:
        """The filter in the beam: ``filter_position`` and ``filter_name`` (FITS FILTER).

        While the wheel turns, ``filter_position`` is -1 and no name is given.
        """
        slots, position = await asyncio.gather(self.slots(), self.position())
        values: dict[str, object] = {"filter_position": position}
        if 0 <= position < len(slots):
            values["filter_name"] = slots[position].name
            values["filter_focus_offset"] = slots[position].focus_offset
        return values


__all__ = [
    "DEFAULT_MOVE_TIMEOUT",
    "MOVING",
    "AlpacaFilterWheel",
    "FilterSlot",
    "filter_position",
]
