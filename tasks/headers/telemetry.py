"""Telemetry snapshots taken while an exposure runs, each within a bounded time.

A snapshot is taken at integration start and at its end, concurrently with the
integration and the readout. A source that does not answer in time is recorded as
missing (its cards are written empty and a warning is logged): a slow device never
delays the readout, and never fails the exposure.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from devices.telemetry import Reading

Reader = Callable[[], Awaitable[Mapping[str, Reading]]]
"""Reads one source's values (e.g. a controller's STATUS)."""

DEFAULT_TIMEOUT = 1.0


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Values per source, and why each missing source is missing."""

    values: dict[str, Mapping[str, Reading]] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)


async def take_snapshot(
    readers: Mapping[str, Reader], *, timeout: float = DEFAULT_TIMEOUT
) -> Snapshot:
    """Read every source at once; whatever has not answered after ``timeout`` is missing."""
    if not readers:
        return Snapshot()
    tasks = {name: asyncio.ensure_future(read()) for name, read in readers.items()}
    _, pending = await asyncio.wait(tasks.values(), timeout=timeout)
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.gather(*pending, return_exceptions=True)
    snapshot = Snapshot()
    for name, task in tasks.items():
        if task in pending:
            snapshot.missing[name] = f"no answer within {timeout:g} s"
        elif (error := task.exception()) is not None:
            snapshot.missing[name] = f"{type(error).__name__}: {error}"
        else:
            snapshot.values[name] = task.result()
    return snapshot
