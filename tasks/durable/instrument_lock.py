"""One run drives an instrument at a time: a host lock plus a Prefect concurrency limit.

Two layers, because each covers what the other cannot:

* **Host locks**: an exclusive ``flock`` per controller, on a file named by the
  controller's address in a folder shared by the whole machine (:func:`lock_folder`),
  so two configs or two data roots that name the same controllers still exclude each
  other. The kernel releases a lock when its process dies, however it dies (kill -9
  included), so a crashed run never blocks the next one. The files name the holder
  (flow run, pid, start time), so a waiting run can say who it waits for.
* **Prefect global concurrency limit** (``instrument.concurrency_limit_name``, created
  with one slot when missing): visible in the Prefect UI, and it serializes runs
  started on other hosts against the same API.

A crashed holder's slot is reclaimed by a Prefect server's lease "repossessor", but
the embedded API (no PREFECT_API_URL) runs no such service: the slot would stay taken
forever. So when this run holds the host lock (no live run on this host) and the
embedded API still reports the slot taken after a grace period, the slot is known to
be stale and is released, with a warning. (The embedded API's database belongs to
this machine's PREFECT_HOME, so any live holder of its slot is a process here, and
would hold the controllers' locks.)

``on_busy`` in the instrument config decides what a second run does: ``wait`` (log
who holds the instrument, then wait up to ``busy_timeout_s``) or ``fail`` at once
with :class:`InstrumentBusyError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import socket
import tempfile
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from prefect import get_run_logger
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import (
    GlobalConcurrencyLimitCreate,
    GlobalConcurrencyLimitUpdate,
)
from prefect.concurrency.asyncio import concurrency
from prefect.exceptions import ObjectNotFound
from prefect.runtime import flow_run

from schemas.instrument import BusyPolicy, InstrumentConfig

POLL_S = 0.2
STALE_GRACE_S = 5.0
"""Embedded API: how long a taken slot may stay taken before it is known to be stale."""
MIN_ACQUIRE_S = 10.0
"""Server: the least time given to acquiring the slot (an API round trip on a busy
server), even when failing fast: this run already holds the controllers' locks, so
only a run elsewhere can hold the slot."""
LEASE_S = 60.0
"""Prefect renews the lease while the run lives; a dead holder's lease ends after this."""


class InstrumentBusyError(RuntimeError):
    """Another run holds the instrument (``on_busy: fail``, or the wait timed out)."""


LOCK_DIR_ENV = "CCDFLOW_LOCK_DIR"


def lock_folder() -> Path:
    """Where controller locks live: ``$CCDFLOW_LOCK_DIR``, else one folder per machine
    in the temporary directory (every user and every data root shares it)."""
    configured = os.environ.get(LOCK_DIR_ENV)
    return Path(configured) if configured else Path(tempfile.gettempdir()) / "ccdflow-locks"


def lock_paths(instrument: InstrumentConfig) -> list[Path]:
    """One lock per controller, named by its address: the hardware, not the config, is
    what two runs must not share (two configs, or two data roots, may name the same
    controllers). Sorted, so every run takes them in the same order."""
    folder = lock_folder()
    names = {f"{c.host}_{c.port}.lock".replace("/", "_") for c in instrument.controllers}
    return [folder / name for name in sorted(names)]


def lock_path(instrument: InstrumentConfig) -> Path:
    """The first of :func:`lock_paths` (each names the holder)."""
    return lock_paths(instrument)[0]


def _holder_text(handle: IO[str]) -> str:
    handle.seek(0)
    try:
        holder: dict[str, Any] = json.loads(handle.read() or "{}")
    except json.JSONDecodeError:
        return "another process"
    if not holder:
        return "another process"
    run = holder.get("flow_run_id") or "no flow run"
    where = f"pid {holder.get('pid')} on {holder.get('host')}"
    return f"flow run {run} ({where}, since {holder.get('since')})"


def _try_flock(handle: IO[str]) -> bool:
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _try_all(handles: list[IO[str]]) -> IO[str] | None:
    """Lock every handle, or none: the first busy one (the others are let go)."""
    taken: list[IO[str]] = []
    for handle in handles:
        if not _try_flock(handle):
            for held in taken:
                fcntl.flock(held, fcntl.LOCK_UN)
            return handle
        taken.append(handle)
    return None


def _busy_message(instrument: InstrumentConfig, holder: str) -> str:
    return (
        f"instrument {instrument.name} is busy: {holder} is driving it "
        f"(on_busy: {instrument.on_busy.value})"
    )


def _open_lock_file(path: Path) -> IO[str]:
    """The lock file, opened for reading and writing (a local file: instant).

    The folder is shared by every user of the machine, so it and its files are
    world-writable (the sticky bit keeps users from removing each other's files).
    """
    if not path.parent.is_dir():
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError):
            path.parent.chmod(0o1777)
    handle = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - closed by the caller's with
    with contextlib.suppress(OSError):
        path.chmod(0o666)
    return handle


@contextlib.asynccontextmanager
async def _host_lock(instrument: InstrumentConfig) -> AsyncIterator[None]:
    logger = get_run_logger()
    with contextlib.ExitStack() as files:
        handles = [files.enter_context(_open_lock_file(p)) for p in lock_paths(instrument)]
        busy = _try_all(handles)
        if busy is not None:
            message = _busy_message(instrument, _holder_text(busy))
            if instrument.on_busy is BusyPolicy.FAIL:
                raise InstrumentBusyError(message)
            logger.warning("%s; waiting", message)
            deadline = time.monotonic() + (instrument.busy_timeout_s or float("inf"))
            while _try_all(handles) is not None:
                if time.monotonic() > deadline:
                    raise InstrumentBusyError(
                        f"{message}; gave up after {instrument.busy_timeout_s} s"
                    )
                await asyncio.sleep(POLL_S)
        run_id = flow_run.get_id()
        holder = json.dumps(
            {
                "flow_run_id": str(run_id) if run_id else None,
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "instrument": instrument.name,
                "since": datetime.now(UTC).isoformat(timespec="seconds"),
            }
        )
        try:
            for handle in handles:
                handle.seek(0)
                handle.truncate()
                handle.write(holder)
                handle.flush()
            yield
        finally:
            for handle in handles:
                handle.seek(0)
                handle.truncate()
                handle.flush()
                fcntl.flock(handle, fcntl.LOCK_UN)


def _embedded_api() -> bool:
    from prefect.settings import PREFECT_API_URL

    return not PREFECT_API_URL.value()


async def ensure_limit(name: str) -> None:
    """Create the instrument's concurrency limit (one slot) if it does not exist.

    An existing limit is left as the operator configured it.
    """
    async with get_client() as client:
        try:
            await client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            with contextlib.suppress(Exception):  # created by a concurrent run: fine
                await client.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(name=name, limit=1)
                )


async def _release_stale_slot(name: str) -> bool:
    """Free a slot the embedded API keeps for a dead holder; True if one was freed."""
    async with get_client() as client:
        limit = await client.read_global_concurrency_limit_by_name(name)
        if limit.active_slots < limit.limit:
            return False
        await client.update_global_concurrency_limit(
            name, GlobalConcurrencyLimitUpdate(active_slots=0)
        )
        return True


@contextlib.asynccontextmanager
async def _prefect_slot(instrument: InstrumentConfig) -> AsyncIterator[None]:
    logger = get_run_logger()
    name = instrument.concurrency_limit_name
    await ensure_limit(name)
    timeout: float | None = STALE_GRACE_S
    if not _embedded_api():
        waited = instrument.busy_timeout_s
        if instrument.on_busy is BusyPolicy.FAIL:
            timeout = MIN_ACQUIRE_S
        else:
            timeout = None if waited is None else max(waited, MIN_ACQUIRE_S)
    acquired = False
    try:
        async with concurrency(name, occupy=1, timeout_seconds=timeout, lease_duration=LEASE_S):
            acquired = True
            yield
            return
    except TimeoutError:
        if acquired:  # a timeout inside the run, not waiting for the slot
            raise
        if not _embedded_api():
            raise InstrumentBusyError(
                f"instrument {instrument.name}: concurrency limit {name!r} has no free slot"
            ) from None
    # Embedded API and this process holds the host lock: nobody alive holds the slot.
    if await _release_stale_slot(name):
        logger.warning(
            "concurrency limit %r was held by a run that no longer exists; released it", name
        )
    async with concurrency(name, occupy=1, timeout_seconds=30, lease_duration=LEASE_S):
        yield


@contextlib.asynccontextmanager
async def instrument_lock(instrument: InstrumentConfig) -> AsyncIterator[None]:
    """Hold the instrument for this run (module docstring); InstrumentBusyError if not."""
    async with _host_lock(instrument), _prefect_slot(instrument):
        yield
