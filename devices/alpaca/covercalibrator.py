"""The ASCOM CoverCalibrator as an Alpaca device view: a telescope cover and a flat lamp.

A device may have a cover, a calibrator (lamp or panel), or both; the missing one says
NotPresent in its state, which is read once into :class:`CoverCalibratorCapabilities`
so a call to a part that is not there is refused before anything is sent, as is a
brightness above MaxBrightness. Actions send their PUT and return; ``wait_cover`` and
``wait_calibrator`` poll CoverState / CalibratorState with a deadline, and an Error
state ends the wait at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass
from enum import IntEnum
from typing import ClassVar

from devices.alpaca.checks import check_integer_range, require
from devices.alpaca.client import AlpacaClient, Device
from devices.alpaca.reads import as_enum, enum_name, optional, present, read_all
from devices.alpaca.waits import DEFAULT_POLL, wait_for

DEFAULT_COVER_TIMEOUT = 120.0
"""Seconds a cover may take to open or close, or a lamp to warm up, with margin."""


_NO_COVER = "the device has no cover (CoverState is NotPresent)"
_NO_CALIBRATOR = "the device has no calibrator (CalibratorState is NotPresent)"


class CoverState(IntEnum):
    """ASCOM CoverStatus."""

    NOT_PRESENT = 0
    CLOSED = 1
    MOVING = 2
    OPEN = 3
    UNKNOWN = 4
    ERROR = 5


class CalibratorState(IntEnum):
    """ASCOM CalibratorStatus."""

    NOT_PRESENT = 0
    OFF = 1
    NOT_READY = 2
    READY = 3
    UNKNOWN = 4
    ERROR = 5


@dataclass(frozen=True, slots=True)
class CoverCalibratorCapabilities:
    """Which parts the device has, and the lamp's brightest setting."""

    has_cover: bool
    has_calibrator: bool
    max_brightness: int | None
    """MaxBrightness (None without a calibrator)."""


class AlpacaCoverCalibrator(Device):
    """One Alpaca cover calibrator (``/api/v1/covercalibrator/{number}/...``)."""

    device_type: ClassVar[str] = "covercalibrator"

    def __init__(self, client: AlpacaClient, number: int = 0) -> None:
        super().__init__(client, number)
        self._capabilities: CoverCalibratorCapabilities | None = None

    async def capabilities(self, *, refresh: bool = False) -> CoverCalibratorCapabilities:
        """Whether a cover and a calibrator are present, and MaxBrightness; read once."""
        if self._capabilities is None or refresh:
            cover, calibrator = await asyncio.gather(self.cover_state(), self.calibrator_state())
            has_calibrator = calibrator != CalibratorState.NOT_PRESENT
            self._capabilities = CoverCalibratorCapabilities(
                has_cover=cover != CoverState.NOT_PRESENT,
                has_calibrator=has_calibrator,
                max_brightness=await self.max_brightness() if has_calibrator else None,
            )
        return self._capabilities

    # --- states -------------------------------------------------------------------------

    async def cover_state(self) -> CoverState | int:
        """CoverState (an unknown code is kept as its number)."""
        return as_enum(CoverState, await self.get_int("coverstate"))

    async def calibrator_state(self) -> CalibratorState | int:
        """CalibratorState (an unknown code is kept as its number)."""
        return as_enum(CalibratorState, await self.get_int("calibratorstate"))

    async def cover_moving(self) -> bool:
        """CoverMoving (ICoverCalibratorV2)."""
        return await self.get_bool("covermoving")

    async def calibrator_changing(self) -> bool:
        """CalibratorChanging (ICoverCalibratorV2)."""
        return await self.get_bool("calibratorchanging")

    async def brightness(self) -> int:
        """Brightness of the calibrator now (0 when off)."""
        return await self.get_int("brightness")

    async def max_brightness(self) -> int:
        """MaxBrightness: the brightest setting (1 for an on/off lamp)."""
        return await self.get_int("maxbrightness")

    # --- cover --------------------------------------------------------------------------

    async def _require_cover(self, member: str) -> None:
        caps = await self.capabilities()
        require(
            caps.has_cover, "CoverState", device=str(self.address), member=member, detail=_NO_COVER
        )

    async def open_cover(self) -> None:
        """PUT OpenCover; :meth:`wait_cover` waits for Open."""
        await self._require_cover("opencover")
        await self.put("opencover")

    async def close_cover(self) -> None:
        """PUT CloseCover; :meth:`wait_cover` waits for Closed."""
        await self._require_cover("closecover")
        await self.put("closecover")

    async def halt_cover(self) -> None:
        """PUT HaltCover: stop the cover where it is (NotImplemented for covers that
        move synchronously)."""
        await self._require_cover("haltcover")
        await self.put("haltcover")

    async def wait_cover(
        self,
        state: CoverState,
        *,
        timeout: float = DEFAULT_COVER_TIMEOUT,
        poll: float = DEFAULT_POLL,
    ) -> None:
        """Poll CoverState until it is ``state``; Error ends the wait at once."""
        await wait_for(
            self.cover_state,
            lambda status: status == state,
            timeout=timeout,
            poll=poll,
            device=str(self.address),
            member="coverstate",
            waiting_for=f"the cover to be {state.name}",
            fault=lambda status: (
                "the cover reports Error"
                if status == CoverState.ERROR and state != CoverState.ERROR
                else None
            ),
        )

    # --- calibrator ---------------------------------------------------------------------

    async def calibrator_on(self, brightness: int) -> None:
        """PUT CalibratorOn at ``brightness`` (0 .. MaxBrightness, refused before sending
        otherwise); :meth:`wait_calibrator` waits for Ready."""
        caps = await self.capabilities()
        where = str(self.address)
        require(
            caps.has_calibrator,
            "CalibratorState",
            device=where,
            member="calibratoron",
            detail=_NO_CALIBRATOR,
        )
        check_integer_range(
            brightness,
            0,
            caps.max_brightness or 0,
            "Brightness",
            device=where,
            member="calibratoron",
            what="0..MaxBrightness",
        )
        await self.put("calibratoron", Brightness=brightness)

    async def calibrator_off(self) -> None:
        """PUT CalibratorOff; :meth:`wait_calibrator` waits for Off."""
        caps = await self.capabilities()
        where = str(self.address)
        require(
            caps.has_calibrator,
            "CalibratorState",
            device=where,
            member="calibratoroff",
            detail=_NO_CALIBRATOR,
        )
        await self.put("calibratoroff")

    async def wait_calibrator(
        self,
        state: CalibratorState,
        *,
        timeout: float = DEFAULT_COVER_TIMEOUT,
        poll: float = DEFAULT_POLL,
    ) -> None:
        """Poll CalibratorState until it is ``state`` (Ready after on, Off after off);
        Error ends the wait at once."""
        await wait_for(
            self.calibrator_state,
            lambda status: status == state,
            timeout=timeout,
            poll=poll,
            device=str(self.address),
            member="calibratorstate",
            waiting_for=f"the calibrator to be {state.name}",
            fault=lambda status: (
                "the calibrator reports Error"
                if status == CalibratorState.ERROR and state != CalibratorState.ERROR
                else None
            ),
        )

    # --- telemetry ----------------------------------------------------------------------

    async def telemetry(self) -> dict[str, object]:
        """``cover`` and ``calibrator`` (state names) and ``calibrator_brightness`` where
        there is a calibrator."""
        caps = await self.capabilities()
        reads: dict[str, Awaitable[object]] = {
            "cover": self.cover_state(),
            "calibrator": self.calibrator_state(),
        }
        if caps.has_calibrator:
            reads["calibrator_brightness"] = optional(self.brightness())
        values = await read_all(reads)
        return present({key: enum_name(value) for key, value in values.items()})


__all__ = [
    "DEFAULT_COVER_TIMEOUT",
    "AlpacaCoverCalibrator",
    "CalibratorState",
    "CoverCalibratorCapabilities",
    "CoverState",
]
