"""Reading and writing the controller's configuration memory (RCONFIG / WCONFIG).

The memory has 16384 numbered lines of ``KEY=VALUE`` (wire form: ``/`` in keys, no
quotes). Lines are sent pipelined, a batch of commands in flight at once, because one
round trip per line makes a full read take seconds (sdss-archon: 1-1.4 s); the
controller answers in order, so a batch costs about one round trip plus its bytes.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Mapping, Sequence

from devices.archon.client import ArchonClient

CONFIG_LINES = 0x4000
"""Lines of configuration memory (RCONFIG0000 .. RCONFIG3FFF)."""

BATCH = 200
"""Commands in flight per batch: below the 255 command ids, with room for others."""

_TIMING_KEY = re.compile(r"^(LINES?\d*|STATES?\d*(/.*)?|CONSTANTS?\d*)$")
"""Timing-script keys: LINEn, LINES, STATEn/..., STATES, CONSTANTn, CONSTANTS."""

Progress = Callable[[int, int], None]
"""Called with (lines done, lines in all) as a config is written."""


async def read_config_lines(client: ArchonClient, *, batch: int = BATCH) -> list[str]:
    """Every used line of configuration memory, in order, up to the first empty one.

    Used lines are contiguous from 0, so the first empty reply ends the read; at
    most one batch past the last line is requested.
    """
    lines: list[str] = []
    for start in range(0, CONFIG_LINES, batch):
        stop = min(start + batch, CONFIG_LINES)
        replies = await asyncio.gather(
            *(client.send(f"RCONFIG{n:04X}") for n in range(start, stop))
        )
        for reply in replies:
            if not reply:
                return lines
            lines.append(reply)
    return lines


def apply_overrides(lines: Sequence[str], overrides: Mapping[str, object]) -> list[str]:
    """Replace the values of ``overrides``' keys (case-insensitive); append new keys.

    Keys may be given with ``\\`` (file form) or ``/`` (wire form).
    """
    wanted = {key.replace("\\", "/").upper(): (key, value) for key, value in overrides.items()}
    result: list[str] = []
    for line in lines:
        key, _, _ = line.partition("=")
        match = wanted.pop(key.upper(), None)
        result.append(f"{key}={match[1]}" if match else line)
    for key, value in wanted.values():
        result.append(f"{key.replace(chr(92), '/')}={value}")
    return result


def check_wire_lines(lines: Sequence[str]) -> None:
    """Refuse lines the controller could not store, naming the first bad one."""
    if len(lines) > CONFIG_LINES:
        raise ValueError(f"{len(lines)} config lines do not fit in {CONFIG_LINES}")
    for index, line in enumerate(lines):
        key, sep, _ = line.partition("=")
        if not sep or not key or "\n" in line or not line.isascii():
            raise ValueError(f"config line {index} is not an ASCII KEY=VALUE line: {line!r}")


async def write_config_lines(
    client: ArchonClient,
    lines: Sequence[str],
    *,
    progress: Progress | None = None,
    batch: int = BATCH,
) -> None:
    """Clear the configuration memory and write ``lines`` from line 0 on."""
    check_wire_lines(lines)
    await client.send("CLEARCONFIG")
    total = len(lines)
    for start in range(0, total, batch):
        chunk = lines[start : start + batch]
        await asyncio.gather(
            *(
                client.send(f"WCONFIG{start + offset:04X}{line}")
                for offset, line in enumerate(chunk)
            )
        )
        if progress is not None:
            progress(start + len(chunk), total)


def apply_command_for(key: str) -> str:
    """The APPLY/LOAD command that makes a change to ``key`` take effect.

    Module keys (``MOD5/...``) need APPLYMOD of that slot (written as sdss-archon does
    against real hardware: the decimal slot number, ``APPLYMOD11``), parameters
    LOADPARAMS, timing lines LOADTIMING; anything else in [CONFIG] is applied with
    APPLYCDS (geometry, taps, sample mode).
    """
    upper = key.replace("\\", "/").upper()
    head = upper.split("/", 1)[0]
    if head.startswith("MOD") and head[3:].isdigit() and "/" in upper:
        return f"APPLYMOD{int(head[3:])}"
    if upper.startswith("PARAMETER"):
        return "LOADPARAMS"
    if _TIMING_KEY.match(upper):
        return "LOADTIMING"
    return "APPLYCDS"
