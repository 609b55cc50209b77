"""Alpaca telescope, dome, filter wheel, focuser and flat panel as the observatory's drivers
(devices/observatory.py): each call moves and waits, bounded, with the adapter's own
checks (CanSlewAsync, a wheel that stopped at the wrong slot ...)."""

from __future__ import annotations

from collections.abc import Mapping

from devices.alpaca.covercalibrator import AlpacaCoverCalibrator, CalibratorState, CoverState
from devices.alpaca.dome import AlpacaDome, ShutterState
from devices.alpaca.filterwheel import AlpacaFilterWheel
from devices.alpaca.focuser import AlpacaFocuser
from devices.alpaca.telescope import AlpacaTelescope


class AlpacaMount:
    def __init__(self, telescope: AlpacaTelescope) -> None:
        self.telescope = telescope

    async def point(self, ra_deg: float, dec_deg: float, *, timeout_s: float) -> None:
        if await self.telescope.at_park():
            await self.telescope.unpark()
        if not await self.telescope.tracking():
            await self.telescope.set_tracking(True)
        await self.telescope.slew_to_coordinates(ra_deg / 15.0, dec_deg)
        await self.telescope.wait_until_stopped(timeout=timeout_s)

    async def park(self, *, timeout_s: float) -> None:
        await self.telescope.park()
        await self.telescope.wait_parked(timeout=timeout_s)

    async def azimuth(self) -> float:
        return await self.telescope.azimuth()

    async def parked(self) -> bool:
        return await self.telescope.at_park()


class AlpacaEnclosure:
    def __init__(self, dome: AlpacaDome) -> None:
        self.dome = dome

    async def follow(self, azimuth_deg: float, *, timeout_s: float) -> None:
        await self.dome.slew_to_azimuth(azimuth_deg % 360.0)
        await self.dome.wait_until_stopped(timeout=timeout_s)

    async def open(self, *, timeout_s: float) -> None:
        await self.dome.open_shutter()
        await self.dome.wait_shutter(ShutterState.OPEN, timeout=timeout_s)

    async def close(self, *, timeout_s: float) -> None:
        await self.dome.close_shutter()
        await self.dome.wait_shutter(ShutterState.CLOSED, timeout=timeout_s)


class AlpacaFilters:
    def __init__(self, wheel: AlpacaFilterWheel) -> None:
        self.wheel = wheel

    async def offsets(self) -> Mapping[str, int]:
        return {slot.name: slot.focus_offset for slot in await self.wheel.slots()}

    async def current(self) -> str | None:
        slots, position = await self.wheel.slots(), await self.wheel.position()
        return slots[position].name if 0 <= position < len(slots) else None

    async def select(self, name: str, *, timeout_s: float) -> int:
        return (await self.wheel.select(name, timeout=timeout_s)).focus_offset


class AlpacaFocus:
    def __init__(self, focuser: AlpacaFocuser) -> None:
        self.focuser = focuser

    async def move_to(self, position: int, *, timeout_s: float) -> None:
        await self.focuser.move(position)
        await self.focuser.wait_until_stopped(timeout=timeout_s)

    async def position(self) -> int:
        return await self.focuser.position()


class AlpacaFlatLamp:
    """A CoverCalibrator as a flat-field lamp: the cover closes over the aperture
    first (the panel is on its inside), then the light comes on."""

    def __init__(self, panel: AlpacaCoverCalibrator) -> None:
        self.panel = panel

    async def illuminate(self, brightness: int | None, *, timeout_s: float) -> int:
        caps = await self.panel.capabilities()
        if caps.has_cover and await self.panel.cover_state() != CoverState.CLOSED:
            await self.panel.close_cover()
            await self.panel.wait_cover(CoverState.CLOSED, timeout=timeout_s)
        level = (caps.max_brightness or 0) if brightness is None else brightness
        await self.panel.calibrator_on(level)
        await self.panel.wait_calibrator(CalibratorState.READY, timeout=timeout_s)
        return level

    async def darken(self, *, timeout_s: float) -> None:
        if await self.panel.calibrator_state() == CalibratorState.OFF:
            return
        await self.panel.calibrator_off()
        await self.panel.wait_calibrator(CalibratorState.OFF, timeout=timeout_s)
