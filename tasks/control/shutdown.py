"""Park the telescope and close the dome, in the order the building needs.

A roll-off roof must wait for the telescope to park (it would hit it); a dome whose
slit should shut first against rain closes, then parks; others do both at once. The
sky watch shuts down this way when the weather turns, and runs that opened the dome
(an observation, twilight flats, a night plan) do so when they end, whatever ended
them: a dome is never left open by a run that is over.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

from devices.base import DeviceError
from devices.observatory import DeviceSet
from schemas.instrument import InstrumentConfig

DEFAULT_TIMEOUT_S = 300.0
"""Bound on the park and on the close without a ``safety:`` section that sets it."""


def shutdown_settings(instrument: InstrumentConfig) -> tuple[str, float]:
    """(order, timeout) from the instrument's ``safety:`` section, or the defaults."""
    if instrument.safety is None:
        return "park_then_close", DEFAULT_TIMEOUT_S
    return instrument.safety.shutdown, instrument.safety.shutdown_timeout_s


async def park_and_close(drivers: DeviceSet, order: str, timeout_s: float) -> list[str]:
    """Park and close in ``order`` (park_then_close, close_then_park or together);
    every step is tried even when one fails. Returns what failed (empty: all done)."""
    mount, dome = drivers.mount, drivers.enclosure

    def park() -> Awaitable[None] | None:
        return mount.park(timeout_s=timeout_s) if mount is not None else None

    def close() -> Awaitable[None] | None:
        return dome.close(timeout_s=timeout_s) if dome is not None else None

    if order == "together":
        groups = [[park, close]]
    elif order == "park_then_close":
        groups = [[park], [close]]
    else:
        groups = [[close], [park]]
    failed: list[str] = []
    for group in groups:
        steps = [step for make in group if (step := make()) is not None]
        for outcome in await asyncio.gather(*steps, return_exceptions=True):
            if isinstance(outcome, DeviceError | TimeoutError):
                failed.append(str(outcome))
            elif isinstance(outcome, BaseException):
                raise outcome
    return failed
