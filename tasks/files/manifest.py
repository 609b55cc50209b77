"""A per-night ``SHA256SUMS`` file: what we wrote, checkable by anyone with coreutils.

The format is exactly what ``sha256sum -c`` reads (``<hex>  <name>``, names relative to
the folder), so a night's data can be checked at the archive or after a copy with no
ccdflow installed. Several writers (one per controller) append to the same night, so
each append holds an exclusive ``flock`` while it reads what is there and adds its
lines, then fsyncs: a listed name is never listed again with another hash, which would
make the manifest useless exactly when a file was rewritten by mistake.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
from collections.abc import Sequence
from pathlib import Path

from tasks.files.publish import WrittenFile, fsync_folder

MANIFEST_NAME = "SHA256SUMS"
_LINE = re.compile(r"([0-9a-f]{64}) [ *](.+)")
_HEX = re.compile(r"[0-9a-f]{64}")
_CHUNK = 1 << 20


class ManifestError(ValueError):
    """The manifest cannot take these entries, or cannot be read as a manifest."""


def append_manifest(folder: Path, files: Sequence[WrittenFile]) -> Path:
    """Add ``files`` (all in ``folder``) to ``folder/SHA256SUMS``; return its path.

    Files already listed with the same hash are skipped (so a retried write task can
    append again); a name listed with a different hash raises ManifestError and
    nothing is appended.
    """
    wanted = _new_entries(folder, files)
    manifest = folder / MANIFEST_NAME
    created = not manifest.exists()
    fd = os.open(manifest, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        listed = _parse(manifest, _read_all(fd))
        lines = []
        for name, digest in wanted.items():
            if name not in listed:
                lines.append(f"{digest}  {name}\n")
            elif listed[name] != digest:
                raise ManifestError(
                    f"{manifest}: {name} is listed with sha256 {listed[name]}, not {digest}"
                )
        if lines:
            data = "".join(lines).encode("ascii")
            written = 0
            while written < len(data):
                written += os.write(fd, data[written:])
            os.fsync(fd)
    finally:
        os.close(fd)  # releases the lock
    if created:
        fsync_folder(folder)
    return manifest


def verify_manifest(folder: Path) -> list[str]:
    """Every problem with ``folder``'s files against its manifest; empty when all good."""
    manifest = folder / MANIFEST_NAME
    try:
        fd = os.open(manifest, os.O_RDONLY)
    except FileNotFoundError:
        return [f"{manifest}: missing"]
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)  # never read half of someone's append
        text = _read_all(fd)
    finally:
        os.close(fd)
    problems: list[str] = []
    entries: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        match = _LINE.fullmatch(line)
        if match is None:
            problems.append(f"{manifest}:{number}: not '<sha256>  <name>': {line!r}")
            continue
        digest, name = match.groups()
        if entries.setdefault(name, digest) != digest:
            problems.append(f"{manifest}:{number}: {name} listed again with another sha256")
    for name, digest in entries.items():
        path = folder / name
        if not path.is_file():
            problems.append(f"{name}: missing")
        elif (actual := _sha256(path)) != digest:
            problems.append(f"{name}: sha256 is {actual}, manifest says {digest}")
    return problems


def _new_entries(folder: Path, files: Sequence[WrittenFile]) -> dict[str, str]:
    """Name -> hash for ``files``, refusing what the manifest format cannot hold."""
    entries: dict[str, str] = {}
    for written in files:
        name = written.path.name
        if written.path.parent.resolve() != folder.resolve():
            raise ManifestError(f"{written.path} is not in {folder}")
        if not name.isprintable() or "\\" in name:
            raise ManifestError(f"{name!r}: sha256sum would escape this name")
        if not _HEX.fullmatch(written.sha256):
            raise ManifestError(f"{name}: {written.sha256!r} is not a lowercase hex sha256")
        if entries.setdefault(name, written.sha256) != written.sha256:
            raise ManifestError(f"{name} given twice with different hashes")
    return entries


def _parse(manifest: Path, text: str) -> dict[str, str]:
    listed: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        match = _LINE.fullmatch(line)
        if match is None:
            raise ManifestError(f"{manifest}:{number}: not '<sha256>  <name>': {line!r}")
        digest, name = match.groups()
        if listed.setdefault(name, digest) != digest:
            raise ManifestError(f"{manifest}:{number}: {name} listed twice with other hashes")
    return listed


def _read_all(fd: int) -> str:
    chunks = []
    offset = 0
    while chunk := os.pread(fd, _CHUNK, offset):
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks).decode("utf-8")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
