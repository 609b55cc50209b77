"""Publish a new file atomically, never replacing an existing one, with its sha256.

The file is written to ``.NAME.PID.tmp`` in the target folder (same filesystem, so it
can be linked), fsynced, then hard-linked to its final name: ``link`` fails if the name
exists, so an existing file is never overwritten, and the final name only ever refers
to a complete, durable file. The temporary name is removed whatever happens, and the
folder is fsynced so the new name survives a power cut.

The digest is taken while the bytes stream out when the writer can stream
(``publish_stream``), or read back once from the temporary file before linking when the
writer needs a path it can seek in (``publish_by_path``; cfitsio rewrites headers after
the data). Either way the published name never has to be read again.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

_CHUNK = 1 << 20
# Names we publish also go into SHA256SUMS and through cfitsio's filename parser, which
# gives meaning to brackets, '!' and spaces: keep them plain.
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")


@dataclass(frozen=True, slots=True)
class WrittenFile:
    """A published file: where it is, its sha256 (hex) and its size in bytes."""

    path: Path
    sha256: str
    nbytes: int


class HashingWriter:
    """A write-only stream that hashes and counts what passes through to ``handle``.

    It deliberately has no ``seek``: a writer that went back would make the running
    digest wrong, so it must fail instead (astropy streams when it cannot seek). It is
    not an ``io.FileIO`` either, so numpy's ``tofile`` cannot bypass ``write``.
    """

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._digest = hashlib.sha256()
        self._nbytes = 0

    def write(self, data: bytes | bytearray | memoryview) -> int:
        view = memoryview(data).cast("B")
        self._digest.update(view)
        written = 0
        while written < len(view):
            written += os.write(self._fd, view[written:])
        self._nbytes += written
        return written

    def tell(self) -> int:
        return self._nbytes

    def flush(self) -> None:
        """Nothing is buffered: every write went straight to the file descriptor."""

    @property
    def sha256(self) -> str:
        return self._digest.hexdigest()

    @property
    def nbytes(self) -> int:
        return self._nbytes


def check_publishable(path: Path) -> None:
    """Fail early (before any pixels are encoded) if ``path`` cannot be published."""
    if not _SAFE_NAME.fullmatch(path.name):
        raise ValueError(f"{path.name!r}: file names are A-Z a-z 0-9 . _ + - only")
    if path.exists():
        raise FileExistsError(f"refusing to overwrite {path}")


def publish_stream(path: Path, fill: Callable[[HashingWriter], None]) -> WrittenFile:
    """Publish what ``fill`` streams into the writer it is given, hashed on the way."""
    check_publishable(path)
    with _temporary_beside(path) as (tmp, fd):
        writer = HashingWriter(fd)
        fill(writer)
        os.fsync(fd)
        _link_new(tmp, path)
    fsync_folder(path.parent)
    return WrittenFile(path=path, sha256=writer.sha256, nbytes=writer.nbytes)


def publish_by_path(path: Path, fill: Callable[[Path], None]) -> WrittenFile:
    """Publish the file ``fill`` writes at the (existing, empty) path it is given.

    ``fill`` owns the temporary file while it runs and must close it before returning;
    it may replace the empty file (cfitsio's ``!`` clobber does) but nothing else.
    """
    check_publishable(path)
    with _temporary_beside(path) as (tmp, _fd):
        fill(tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())  # fill() closed its own descriptor without fsync
            digest = hashlib.sha256()
            nbytes = 0
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
                nbytes += len(chunk)
        _link_new(tmp, path)
    fsync_folder(path.parent)
    return WrittenFile(path=path, sha256=digest.hexdigest(), nbytes=nbytes)


@contextmanager
def _temporary_beside(path: Path) -> Iterator[tuple[Path, int]]:
    """Create ``.NAME.PID.tmp`` exclusively next to ``path``; always remove it after."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError as exc:
        raise FileExistsError(f"{tmp} exists: is {path.name} being written twice?") from exc
    try:
        yield tmp, fd
    finally:
        os.close(fd)
        tmp.unlink(missing_ok=True)


def _link_new(tmp: Path, path: Path) -> None:
    try:
        os.link(tmp, path)  # atomic, and fails instead of replacing an existing file
    except FileExistsError as exc:
        raise FileExistsError(f"refusing to overwrite {path}") from exc


def fsync_folder(folder: Path) -> None:
    """Make a new or removed name in ``folder`` durable (the file's own fsync does not)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
