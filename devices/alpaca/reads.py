"""Reading many properties at once, and telling "absent" from "failed".

Telemetry and capabilities are a dozen GETs each; sent together they cost about one
round trip instead of twelve (the client's pool bounds how many are in flight).
A member a device does not implement is absent (None), never an error, while every
other error is real and propagates, as :func:`devices.alpaca.camera.optional` decides.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Mapping
from enum import IntEnum
from typing import Any, TypeVar

from devices.alpaca.camera import optional
from devices.alpaca.errors import AlpacaProtocolError, AlpacaValueNotSetError
from devices.alpaca.protocol import AlpacaRequest

T = TypeVar("T")
E = TypeVar("E", bound=IntEnum)


async def unset_or_absent(call: Awaitable[T]) -> T | None:
    """Like :func:`optional`, and ValueNotSet (a target never set) is absent too."""
    try:
        return await optional(call)
    except AlpacaValueNotSetError:
        return None


async def read_all(reads: Mapping[str, Awaitable[object]]) -> dict[str, object]:
    """Await every read concurrently; the values by key, in the order given.

    Fails like ``asyncio.gather`` (the first error, not an ExceptionGroup), and the
    reads still running are cancelled and awaited first, so none outlives the call.
    """
    tasks: dict[str, asyncio.Future[Any]] = {
        key: asyncio.ensure_future(read) for key, read in reads.items()
    }
    try:
        await asyncio.gather(*tasks.values())
    except BaseException:
        for task in tasks.values():
            task.cancel()
        await asyncio.gather(*tasks.values(), return_exceptions=True)
        raise
    return {key: task.result() for key, task in tasks.items()}


def present(values: Mapping[str, object]) -> dict[str, object]:
    """The values that are not None: telemetry leaves out what a device lacks."""
    return {key: value for key, value in values.items() if value is not None}


def as_int_list(request: AlpacaRequest, value: object) -> list[int]:
    """A Value that must be a list of integers (FocusOffsets, TrackingRates)."""
    if not isinstance(value, list) or not all(
        isinstance(item, int) and not isinstance(item, bool) for item in value
    ):
        raise AlpacaProtocolError(
            f"Value should be a list of integers, got {value!r}"[:300],
            device=request.label,
            member=request.member,
        )
    return list(value)


def as_enum(kind: type[E], code: int) -> E | int:
    """``code`` as a member of ``kind``; a code the enum does not know is kept as is.

    A newer interface may add states (CoverState, ShutterState ...); an unknown number
    is reported, not turned into an error or, worse, into a wrong known state.
    """
    try:
        return kind(code)
    except ValueError:
        return code


def enum_name(value: object) -> object:
    """An enum member's name for telemetry (``OPEN``); anything else as it is."""
    name = getattr(value, "name", None)
    return name if isinstance(name, str) else value


__all__ = [
    "as_enum",
    "as_int_list",
    "enum_name",
    "optional",
    "present",
    "read_all",
    "unset_or_absent",
]
