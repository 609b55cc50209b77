"""Polling a device until it is where it was sent, within a deadline.

Alpaca has no events: a slew, a filter change or a shutter is followed by reading a
property (Slewing, Position, ShutterStatus ...) until it says "done". Every such wait
here has a timeout, and its :class:`~devices.alpaca.errors.AlpacaTimeoutError` names
the device, the property polled, what we waited for and the last value seen, because
"the dome did not open" is only actionable with "it still said Opening".

A poll is one GET (about 1.4 ms on the simulator), so ``poll`` is mostly sleep; it
bounds how late after the event the wait returns.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from devices.alpaca.checks import AlpacaDeviceFaultError
from devices.alpaca.errors import AlpacaTimeoutError

T = TypeVar("T")

DEFAULT_POLL = 0.1
"""Seconds between polls: slow enough not to load an embedded server, quick enough that
a one-second move is not reported late by much."""


async def wait_for(
    read: Callable[[], Awaitable[T]],
    done: Callable[[T], bool],
    *,
    timeout: float,
    device: str,
    member: str,
    waiting_for: str,
    poll: float = DEFAULT_POLL,
    fault: Callable[[T], str | None] | None = None,
) -> T:
    """Call ``read`` until ``done(value)``; return that value.

    ``fault(value)``, when given, returns why a value means the device failed (a
    shutter in Error): the wait ends at once with :class:`AlpacaDeviceFaultError`
    instead of running to its timeout. The deadline is checked after each read, so
    the device is always asked at least once.
    """
    if not timeout > 0 or not poll > 0:
        raise ValueError(f"timeout and poll must be positive, not {timeout} and {poll}")
    deadline = time.monotonic() + timeout
    while True:
        value = await read()
        if fault is not None and (why := fault(value)) is not None:
            raise AlpacaDeviceFaultError(
                f"{why} while waiting for {waiting_for}", device=device, member=member
            )
        if done(value):
            return value
        if time.monotonic() >= deadline:
            raise AlpacaTimeoutError(
                timeout,
                device=device,
                member=member,
                detail=f"waited for {waiting_for}; {member} was last {_shown(value)}",
            )
        await asyncio.sleep(poll)


def _shown(value: object) -> str:
    name = getattr(value, "name", None)
    return name if isinstance(name, str) else repr(value)


__all__ = ["DEFAULT_POLL", "wait_for"]
