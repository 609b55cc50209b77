"""A durable on-disk outbox of notifications: persistence only, no HTTP, no policy.

Why on disk: a receiver may be down for hours, and the process that took an exposure
may be killed at any moment. A notification must neither block the exposure nor be
lost, so it is written down (durably) before anyone tries to deliver it, and it is
only forgotten once the receiver has accepted it or an operator has seen it die.

Layout of the outbox folder::

    pending/<id>.json     waiting for (another) attempt
    delivered/<id>.json   accepted by the receiver; only the newest ``keep_delivered``
                          are kept, so ``outbox show`` can list recent deliveries without
                          the folder growing for ever
    dead/<id>.json        refused for good or out of attempts; kept until an operator
                          requeues them (never dropped silently)
    tmp/                  half-written files; anything old here is a crash leftover

Every file is written to ``tmp/``, fsynced, then renamed (or hard-linked, when the name
must not exist yet) into place, and the folder is fsynced: a reader sees either the old
or the new content, and a power cut never leaves a torn entry. Ids start with the UTC
time of creation (microseconds, kept increasing within a process), so sorting names
sorts by age; the random tail makes them unique across processes, so an id also serves
as the receiver's ``Idempotency-Key``.

Concurrency: a drainer claims an entry by taking an exclusive, non-blocking ``flock`` on
``pending/<id>.json`` and holds it while it talks to the receiver. Every change to a
pending entry replaces that file (a new inode) or removes it before the lock is let go,
so after locking, the claimer checks that the path still names the inode it locked:
if not, someone else has already dealt with that version. Two drainers, in one process
or in many, therefore never attempt the same version of an entry. ``flock`` locks die
with their process, so a drainer killed by SIGKILL leaves nothing to clean up.

Crash windows: moving an entry writes the new copy first and removes the old one second,
so a crash in between leaves the same id in two folders. Each write bumps the entry's
``revision``, and :meth:`Outbox.claim` keeps the copy with the higher revision: a
pending copy older than its delivered record is removed rather than sent again.
A crash *during* an HTTP request can still lead to a second request with the same
``Idempotency-Key`` (delivery is at least once); receivers should deduplicate on it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import threading
import time
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from tasks.files.publish import fsync_folder

KEEP_DELIVERED = 200
"""Delivered records kept for ``outbox show``; older ones are pruned by each drain."""

STALE_TMP_S = 3600.0
"""A temporary file this old belongs to a writer that died; it is removed."""


class EntryState(StrEnum):
    """The folder an entry is in."""

    PENDING = "pending"
    DELIVERED = "delivered"
    DEAD = "dead"


class OutboxEntry(BaseModel):
    """One notification for one receiver, as stored in its JSON file.

    ``payload`` is JSON data (already converted, so what is sent is exactly what was
    stored). ``file``, when set, is an absolute path attached to the request.
    ``attempts`` counts requests made; ``last_error`` says why the last one failed.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal[1] = 1
    id: str = Field(pattern=r"^[0-9]{8}T[0-9]{12}Z-[0-9a-f]{16}$")
    receiver: str = Field(min_length=1)
    payload: dict[str, Any]
    file: Path | None = None
    attempts: int = Field(default=0, ge=0)
    created_at: AwareDatetime
    next_attempt_at: AwareDatetime
    last_attempt_at: AwareDatetime | None = None
    last_error: str | None = None
    finished_at: AwareDatetime | None = Field(
        default=None, description="when it was delivered or declared dead"
    )
    revision: int = Field(default=0, ge=0, description="bumped by every write; newest wins")


class OutboxError(Exception):
    """A problem with the outbox itself (not with a receiver)."""


class EntryLockedError(OutboxError):
    """Another drainer holds this entry right now."""

    def __init__(self, entry_id: str) -> None:
        self.entry_id = entry_id
        super().__init__(f"outbox entry {entry_id} is being delivered by another drainer")


class CorruptEntryError(OutboxError):
    """An entry file that is not a valid entry (edited by hand, or a disk fault)."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"unreadable outbox entry {path}: {reason}")


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_id_lock = threading.Lock()
_last_id_us = 0


def new_entry_id(now: datetime | None = None) -> str:
    """A unique id whose string order is creation order within this process.

    ``YYYYMMDDTHHMMSSffffffZ-<16 hex>``: the time is bumped by a microsecond when two
    ids would share one, so entries enqueued back to back keep their order.
    """
    global _last_id_us
    when = now or datetime.now(UTC)
    micros = (when - _EPOCH) // timedelta(microseconds=1)
    with _id_lock:
        micros = max(micros, _last_id_us + 1)
        _last_id_us = micros
    stamp = _EPOCH + timedelta(microseconds=micros)
    return f"{stamp:%Y%m%dT%H%M%S%f}Z-{secrets.token_hex(8)}"


def _read_fd(fd: int) -> bytes:
    chunks = []
    offset = 0
    while chunk := os.pread(fd, 1 << 16, offset):
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks)


def _parse(data: bytes, path: Path) -> OutboxEntry:
    try:
        entry = OutboxEntry.model_validate_json(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "(top level)"
        raise CorruptEntryError(path, f"{where}: {first['msg']}") from exc
    if entry.id != path.stem:
        raise CorruptEntryError(path, f"holds entry {entry.id}, not {path.stem}")
    return entry


class Outbox:
    """The outbox folder at ``root`` (created on first write)."""

    def __init__(self, root: Path, *, keep_delivered: int = KEEP_DELIVERED) -> None:
        if keep_delivered < 0:
            raise ValueError(f"keep_delivered must be >= 0, not {keep_delivered}")
        self.root = root
        self.keep_delivered = keep_delivered
        self.tmp_dir = root / "tmp"

    def folder(self, state: EntryState) -> Path:
        return self.root / state.value

    def path(self, state: EntryState, entry_id: str) -> Path:
        return self.folder(state) / f"{entry_id}.json"

    def _ensure(self) -> None:
        for folder in (*(self.folder(state) for state in EntryState), self.tmp_dir):
            folder.mkdir(parents=True, exist_ok=True)

    # -- writing ---------------------------------------------------------------------

    def _write(self, target: Path, entry: OutboxEntry, *, replace: bool) -> None:
        """Write ``entry`` to ``target`` atomically and durably.

        ``replace=False`` links the finished temporary file to its name, which fails
        with FileExistsError instead of overwriting an entry that already exists.
        """
        self._ensure()
        data = entry.model_dump_json(indent=1).encode()
        tmp = self.tmp_dir / f"{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            if replace:
                os.replace(tmp, target)
            else:
                os.link(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        fsync_folder(target.parent)

    def _remove(self, path: Path) -> None:
        path.unlink(missing_ok=True)
        fsync_folder(path.parent)

    def add(self, entry: OutboxEntry) -> None:
        """Store a new pending entry; it is on disk when this returns."""
        self._write(self.path(EntryState.PENDING, entry.id), entry, replace=False)

    # -- reading ---------------------------------------------------------------------

    def ids(self, state: EntryState) -> list[str]:
        """Ids in ``state``, oldest first."""
        try:
            names = os.listdir(self.folder(state))
        except FileNotFoundError:
            return []
        return sorted(name[:-5] for name in names if name.endswith(".json"))

    def load(self, state: EntryState, entry_id: str) -> OutboxEntry:
        """One entry as it is now; FileNotFoundError if it has left ``state``."""
        path = self.path(state, entry_id)
        return _parse(path.read_bytes(), path)

    def scan(self, state: EntryState) -> tuple[list[OutboxEntry], list[CorruptEntryError]]:
        """Every readable entry in ``state`` (oldest first), and the unreadable ones."""
        entries: list[OutboxEntry] = []
        corrupt: list[CorruptEntryError] = []
        for entry_id in self.ids(state):
            try:
                entries.append(self.load(state, entry_id))
            except FileNotFoundError:
                continue  # moved on while we were listing
            except CorruptEntryError as exc:
                corrupt.append(exc)
        return entries, corrupt

    # -- claiming --------------------------------------------------------------------

    def _lock_live(self, path: Path) -> int | None:
        """An fd of ``path`` under an exclusive lock, or None if the file is gone.

        Raises EntryLockedError if someone else holds it. The inode check catches the case
        where the holder replaced or removed the file between our open and our lock.
        """
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise EntryLockedError(path.stem) from None
        except BaseException:
            os.close(fd)
            raise
        try:
            on_disk = os.stat(path)
        except FileNotFoundError:
            os.close(fd)
            return None
        held = os.fstat(fd)
        if (on_disk.st_dev, on_disk.st_ino) != (held.st_dev, held.st_ino):
            os.close(fd)
            return None
        return fd

    def _superseded(self, entry: OutboxEntry) -> bool:
        """Settle a crash leftover: the same id in pending and in delivered or dead.

        The copy with the higher revision is the truth; the other one is removed.
        Returns True when the pending copy lost (and has been removed).
        """
        for state in (EntryState.DELIVERED, EntryState.DEAD):
            try:
                other = self.load(state, entry.id)
            except (FileNotFoundError, CorruptEntryError):
                continue
            if other.revision >= entry.revision:
                self._remove(self.path(EntryState.PENDING, entry.id))
                return True
            self._remove(self.path(state, entry.id))
        return False

    def claim(self, entry_id: str) -> Claim | None:
        """Lock a pending entry for one attempt; use the result as a context manager.

        Returns None when the entry is no longer pending (another drainer finished it).
        Raises EntryLockedError when another drainer holds it, CorruptEntryError if unreadable.
        """
        path = self.path(EntryState.PENDING, entry_id)
        fd = self._lock_live(path)
        if fd is None:
            return None
        try:
            entry = _parse(_read_fd(fd), path)
            if self._superseded(entry):
                os.close(fd)
                return None
        except BaseException:
            os.close(fd)
            raise
        return Claim(self, fd, entry)

    # -- maintenance -----------------------------------------------------------------

    def requeue_dead(self, now: datetime, *, receiver: str | None = None) -> list[str]:
        """Move dead entries (of one receiver, or all) back to pending, due at ``now``.

        Their attempt count starts again from zero; ``last_error`` is kept so the
        reason they died stays visible until the next attempt. Returns the ids moved.
        """
        moved: list[str] = []
        for entry_id in self.ids(EntryState.DEAD):
            path = self.path(EntryState.DEAD, entry_id)
            try:
                fd = self._lock_live(path)
            except EntryLockedError:
                continue  # another requeue is moving it
            if fd is None:
                continue
            try:
                entry = _parse(_read_fd(fd), path)
                if receiver is not None and entry.receiver != receiver:
                    continue
                revived = entry.model_copy(
                    update={
                        "attempts": 0,
                        "next_attempt_at": now,
                        "finished_at": None,
                        "revision": entry.revision + 1,
                    }
                )
                try:
                    self._write(self.path(EntryState.PENDING, entry_id), revived, replace=False)
                except FileExistsError:
                    continue  # a crash leftover; claim() settles it by revision
                self._remove(path)
                moved.append(entry_id)
            finally:
                os.close(fd)
        return moved

    def prune_delivered(self) -> int:
        """Drop the oldest delivered records beyond ``keep_delivered``; return how many."""
        ids = self.ids(EntryState.DELIVERED)
        excess = ids[: max(0, len(ids) - self.keep_delivered)]
        for entry_id in excess:
            self.path(EntryState.DELIVERED, entry_id).unlink(missing_ok=True)
        if excess:
            fsync_folder(self.folder(EntryState.DELIVERED))
        return len(excess)

    def sweep_tmp(self, older_than_s: float = STALE_TMP_S) -> int:
        """Remove temporary files left by writers that died; return how many."""
        try:
            names = os.listdir(self.tmp_dir)
        except FileNotFoundError:
            return 0
        cutoff = time.time() - older_than_s
        removed = 0
        for name in names:
            path = self.tmp_dir / name
            with contextlib.suppress(FileNotFoundError):
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
        return removed


class Claim:
    """An exclusively locked pending entry; finish it with exactly one outcome.

    Leaving the ``with`` block without an outcome releases the lock and leaves the
    entry as it was (for example when the drain is cancelled mid-request).
    """

    def __init__(self, outbox: Outbox, fd: int, entry: OutboxEntry) -> None:
        self._outbox = outbox
        self._fd: int | None = fd
        self.entry = entry

    def __enter__(self) -> Claim:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()

    def release(self) -> None:
        """Let go of the lock (closing the fd releases the flock)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _next(self, updated: OutboxEntry) -> OutboxEntry:
        if self._fd is None:
            raise RuntimeError(f"claim on outbox entry {self.entry.id} was already released")
        if updated.id != self.entry.id or updated.receiver != self.entry.receiver:
            raise ValueError(f"cannot turn outbox entry {self.entry.id} into {updated.id}")
        return updated.model_copy(update={"revision": self.entry.revision + 1})

    def reschedule(self, updated: OutboxEntry) -> None:
        """Keep it pending with new attempt data (replaces the file, then unlocks)."""
        entry = self._next(updated)
        self._outbox._write(self._pending_path, entry, replace=True)
        self.entry = entry
        self.release()

    def deliver(self, updated: OutboxEntry) -> None:
        """Record the delivery, then remove the pending file, then unlock."""
        self._move(EntryState.DELIVERED, updated)

    def kill(self, updated: OutboxEntry) -> None:
        """Declare it dead (kept in ``dead/``), then remove the pending file, then unlock."""
        self._move(EntryState.DEAD, updated)

    @property
    def _pending_path(self) -> Path:
        return self._outbox.path(EntryState.PENDING, self.entry.id)

    def _move(self, state: EntryState, updated: OutboxEntry) -> None:
        entry = self._next(updated)
        self._outbox._write(self._outbox.path(state, entry.id), entry, replace=True)
        self._outbox._remove(self._pending_path)
        self.entry = entry
        self.release()
