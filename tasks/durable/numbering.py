"""Exposure numbers that are never reused, and the folder of each observing night.

The counter is one small file next to the data, changed under an exclusive lock and
replaced atomically (write, fsync, rename), so two processes never get the same
number and a crash never rolls it back. A number whose files already exist (a counter
restored from an old backup, say) is skipped, never overwritten.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tasks.files.publish import fsync_folder

COUNTER_FILE = "expnum.txt"
NIGHT_OFFSET = timedelta(hours=12)
"""A night's folder is named by the UTC date 12 h before: one folder spans noon to noon."""


def night_folder_name(when: datetime) -> str:
    """``YYYYMMDD`` of the observing night ``when`` belongs to."""
    return (when.astimezone(UTC) - NIGHT_OFFSET).strftime("%Y%m%d")


@contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _read_counter(path: Path) -> int:
    try:
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        return 0
    if not text.isdigit():
        raise ValueError(f"exposure counter {path} is corrupt: {text[:40]!r}")
    return int(text)


def _write_counter(path: Path, value: int) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="ascii") as handle:
        handle.write(f"{value}\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    fsync_folder(path.parent)


def next_exposure_number(state_dir: Path, taken: Callable[[int], bool]) -> int:
    """Reserve and return the next exposure number (starting at 1).

    ``taken(n)`` says whether files for number n already exist; such numbers are
    skipped and stay used. The reservation is on disk before this returns.
    """
    path = state_dir / COUNTER_FILE
    with _locked(state_dir / f"{COUNTER_FILE}.lock"):
        number = _read_counter(path) + 1
        while taken(number):
            number += 1
        _write_counter(path, number)
    return number
