"""One HDF5 archive per sequence: a cube per CCD and a table with one row per frame.

Layout (DESI-like: pixels in cubes, facts in a table, provenance in attributes)::

    /                    attributes: software, software_version, created (UTC),
                         format, format_version, hdf5_version + the caller's provenance
    /ccds/<name>         (frames, H, W) of the archive dtype; chunks (1, H, W), one per
                         frame, so a frame is written and read as one unit; fletcher32
                         so HDF5 itself refuses to return a corrupted chunk
    /frames              one row per frame: expnum (int64), sha256_<ccd> (64 ASCII hex
                         chars per CCD) and the caller's columns (int64, float64, or
                         UTF-8 text of at most STR_BYTES bytes)

The sha256 of a frame is taken over its pixels as C-ordered little-endian bytes of the
archive dtype, so any reader can recompute it (``verify_archive`` does).

Text columns are fixed-length, null-terminated UTF-8: variable-length strings live in
HDF5's global heap, which SWMR readers cannot follow safely, and null-terminated (not
null-padded, h5py's default) so h5dump prints them without trailing ``\\000``s.

Readers can watch an archive grow: the file is created with SWMR (single writer,
multiple readers) enabled, and each append flushes. The table row is written last, so
a reader that counts rows never sees a frame whose pixels are not there yet.

The file format is bounded to HDF5 1.10 (``libver=("v110", "v110")``), the oldest that
supports SWMR: h5py wheels bundle newer HDF5 libraries, whose "latest" format the
archive's users' tools (h5dump 1.10 on Debian, for one) cannot read.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

import h5py
import numpy as np

ColumnKind = Literal["int", "float", "str"]
STR_BYTES = 80
"""Longest text value, in UTF-8 bytes (a FITS card's worth)."""
FORMAT = "ccdflow-sequence-archive"
FORMAT_VERSION = 1
LIBVER = ("v110", "v110")
_SHA = "sha256_"
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]*")
_RESERVED_ATTRS = frozenset(
    {"software", "software_version", "created", "format", "format_version", "hdf5_version"}
)


class ArchiveError(Exception):
    """An archive cannot be created or appended to as asked, or fails verification."""


class SequenceArchive:
    """Writes one sequence's archive; use ``create``, then ``append`` once per frame."""

    def __init__(
        self,
        h5: h5py.File,
        ccds: Mapping[str, tuple[int, int]],
        dtype: np.dtype[Any],
        columns: Sequence[tuple[str, ColumnKind]],
    ) -> None:
        self._h5 = h5
        self._ccds = dict(ccds)
        self._dtype = dtype
        self._columns = list(columns)
        self._row_dtype = _memory_row_dtype(list(ccds), columns)
        self._expnums: set[int] = set()

    @classmethod
    def create(
        cls,
        path: Path,
        ccds: Mapping[str, tuple[int, int]],
        *,
        dtype: np.dtype[Any],
        provenance: Mapping[str, str | int | float],
        columns: Sequence[tuple[str, ColumnKind]],
    ) -> SequenceArchive:
        """Create the archive at ``path`` (FileExistsError if it exists), SWMR enabled."""
        dtype = np.dtype(dtype)
        _check_layout(ccds, dtype, provenance, columns)
        try:
            h5 = h5py.File(path, "x", libver=LIBVER)
        except FileExistsError as exc:
            raise FileExistsError(f"refusing to overwrite {path}") from exc
        try:
            _write_attributes(h5, provenance)
            group = h5.create_group("ccds")
            for name, (height, width) in ccds.items():
                group.create_dataset(
                    name,
                    shape=(0, height, width),
                    maxshape=(None, height, width),
                    chunks=(1, height, width),
                    dtype=dtype,
                    fletcher32=True,
                )
            _create_table(h5, list(ccds), columns)
            h5.swmr_mode = True  # after the last object is created: SWMR cannot add any
            h5.flush()
        except BaseException:
            h5.close()
            path.unlink(missing_ok=True)
            raise
        return cls(h5, ccds, dtype, columns)

    @property
    def frame_count(self) -> int:
        return int(self._h5["frames"].shape[0])

    def append(
        self, expnum: int, frames: Mapping[str, np.ndarray[Any, Any]], values: Mapping[str, Any]
    ) -> None:
        """Append one frame of every CCD and its table row; all or nothing.

        Everything is checked (CCD names, shapes, dtypes, expnum not yet used, columns
        and their types) before anything is resized, so a bad append raises ArchiveError
        and leaves the archive as it was. Should HDF5 itself fail half-way, the datasets
        are shrunk back before the error is raised.
        """
        row, pixels = self._prepare(expnum, frames, values)
        count = self.frame_count
        try:
            for name, frame in pixels.items():
                dataset = self._h5["ccds"][name]
                dataset.resize(count + 1, axis=0)
                dataset[count] = frame
            self._write_row(count, row)
            self._h5.flush()
        except Exception as exc:
            self._roll_back(count)
            raise ArchiveError(f"expnum {expnum}: append failed, archive left unchanged") from exc
        self._expnums.add(expnum)

    def close(self) -> None:
        self._h5.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _prepare(
        self, expnum: int, frames: Mapping[str, np.ndarray[Any, Any]], values: Mapping[str, Any]
    ) -> tuple[np.ndarray[Any, Any], dict[str, np.ndarray[Any, Any]]]:
        if isinstance(expnum, bool) or not isinstance(expnum, int) or expnum < 0:
            raise ArchiveError(f"expnum must be a non-negative int, got {expnum!r}")
        if expnum in self._expnums:
            raise ArchiveError(f"expnum {expnum} is already in the archive")
        if set(frames) != set(self._ccds):
            raise ArchiveError(
                f"expnum {expnum}: frames for {sorted(frames)}, archive has {sorted(self._ccds)}"
            )
        pixels: dict[str, np.ndarray[Any, Any]] = {}
        row = np.zeros((), dtype=self._row_dtype)
        row["expnum"] = expnum
        for name, shape in self._ccds.items():
            frame = frames[name]
            if not isinstance(frame, np.ndarray) or frame.shape != shape:
                got = getattr(frame, "shape", type(frame).__name__)
                raise ArchiveError(f"expnum {expnum} CCD {name}: shape {got}, expected {shape}")
            if frame.dtype.str[1:] != self._dtype.str[1:]:
                raise ArchiveError(
                    f"expnum {expnum} CCD {name}: dtype {frame.dtype}, archive is {self._dtype}"
                )
            pixels[name] = frame
            row[_SHA + name] = frame_sha256(frame).encode("ascii")
        _fill_columns(row, expnum, self._columns, values)
        return row, pixels

    def _write_row(self, index: int, row: np.ndarray[Any, Any]) -> None:
        table = self._h5["frames"]
        table.resize(index + 1, axis=0)
        table[index : index + 1] = row.reshape(1)

    def _roll_back(self, count: int) -> None:
        """Best effort: HDF5 may refuse, but the table row (the commit) is never ahead."""
        for dataset in [*self._h5["ccds"].values(), self._h5["frames"]]:
            with contextlib.suppress(Exception):  # the original error is what matters
                if dataset.shape[0] > count:
                    dataset.resize(count, axis=0)


def frame_sha256(frame: np.ndarray[Any, Any]) -> str:
    """sha256 of a frame's pixels as C-ordered little-endian bytes of its dtype."""
    little = np.ascontiguousarray(frame, dtype=frame.dtype.newbyteorder("<"))
    return hashlib.sha256(little.data).hexdigest()


def verify_archive(path: Path) -> int:
    """Recompute every frame's sha256 and compare with the table; return the frame count.

    Raises ArchiveError naming the frame (index and expnum) and CCD on any mismatch, an
    unreadable (fletcher32-failing) chunk, or a cube whose length disagrees with the
    table. Works on an archive still being written (opened as a SWMR reader).
    """
    with h5py.File(path, "r", libver="latest", swmr=True) as h5:
        table = h5["frames"][:]
        names = [field[len(_SHA) :] for field in table.dtype.names if field.startswith(_SHA)]
        if sorted(names) != sorted(h5["ccds"]):
            raise ArchiveError(f"{path}: table has CCDs {names}, cubes are {sorted(h5['ccds'])}")
        expnums = table["expnum"].tolist()
        if len(set(expnums)) != len(expnums):
            raise ArchiveError(f"{path}: an expnum appears twice in /frames")
        for name in names:
            cube = h5["ccds"][name]
            if cube.shape[0] != len(table):
                raise ArchiveError(
                    f"{path}: CCD {name} has {cube.shape[0]} frames, /frames {len(table)} rows"
                )
            for index, (expnum, recorded) in enumerate(
                zip(expnums, table[_SHA + name], strict=True)
            ):
                where = f"{path}: frame {index} (expnum {expnum}) CCD {name}"
                try:
                    frame = cube[index]
                except OSError as exc:  # fletcher32 mismatch or unreadable chunk
                    raise ArchiveError(f"{where}: unreadable: {exc}") from exc
                if frame_sha256(frame) != recorded.decode("ascii"):
                    raise ArchiveError(f"{where}: sha256 differs from /frames")
        return len(table)


def _check_layout(
    ccds: Mapping[str, tuple[int, int]],
    dtype: np.dtype[Any],
    provenance: Mapping[str, str | int | float],
    columns: Sequence[tuple[str, ColumnKind]],
) -> None:
    if not ccds:
        raise ArchiveError("an archive needs at least one CCD")
    for name, shape in ccds.items():
        if not _NAME.fullmatch(name):
            raise ArchiveError(f"CCD name {name!r}: letters, digits, _ . + - only")
        if len(shape) != 2 or not all(isinstance(n, int) and n > 0 for n in shape):
            raise ArchiveError(f"CCD {name}: shape {shape} is not (height, width) > 0")
    if dtype.kind not in "uif":
        raise ArchiveError(f"dtype {dtype}: pixels are integers or floats")
    names = [name for name, _ in columns]
    if len(set(names)) != len(names):
        raise ArchiveError(f"column names repeat: {names}")
    for name, kind in columns:
        if not _NAME.fullmatch(name) or name == "expnum" or name.startswith(_SHA):
            raise ArchiveError(f"column name {name!r} is invalid or reserved")
        if kind not in ("int", "float", "str"):
            raise ArchiveError(f"column {name}: kind {kind!r} is not int, float or str")
    for key, value in provenance.items():
        if key in _RESERVED_ATTRS:
            raise ArchiveError(f"provenance {key!r} is written by the archive itself")
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise ArchiveError(f"provenance {key!r}: {type(value).__name__} is not str/int/float")


def _write_attributes(h5: h5py.File, provenance: Mapping[str, str | int | float]) -> None:
    h5.attrs["software"] = "ccdflow"
    try:
        h5.attrs["software_version"] = version("ccdflow")
    except PackageNotFoundError:
        h5.attrs["software_version"] = "unknown"
    h5.attrs["created"] = datetime.now(UTC).isoformat(timespec="milliseconds")
    h5.attrs["format"] = FORMAT
    h5.attrs["format_version"] = FORMAT_VERSION
    h5.attrs["hdf5_version"] = h5py.version.hdf5_version
    for key, value in provenance.items():
        h5.attrs[key] = value


def _row_fields(
    ccds: list[str], columns: Sequence[tuple[str, ColumnKind]]
) -> list[tuple[str, np.dtype[Any]]]:
    kinds = {
        "int": np.dtype("<i8"),
        "float": np.dtype("<f8"),
        "str": h5py.string_dtype("utf-8", STR_BYTES + 1),
    }
    return [
        ("expnum", np.dtype("<i8")),
        *((_SHA + name, np.dtype("S64")) for name in ccds),
        *((name, kinds[kind]) for name, kind in columns),
    ]


def _memory_row_dtype(ccds: list[str], columns: Sequence[tuple[str, ColumnKind]]) -> np.dtype[Any]:
    """The packed numpy row: what h5py converts to and from the table's file type."""
    return np.dtype(_row_fields(ccds, columns))


def _create_table(
    h5: h5py.File, ccds: list[str], columns: Sequence[tuple[str, ColumnKind]]
) -> None:
    """/frames through the low-level API: h5py cannot ask for null-terminated strings."""
    text = {name for name, kind in columns if kind == "str"}
    fields = _row_fields(ccds, columns)
    compound = h5py.h5t.create(h5py.h5t.COMPOUND, sum(dtype.itemsize for _, dtype in fields))
    offset = 0
    for name, field_dtype in fields:  # packed, in the order of _memory_row_dtype
        member = h5py.h5t.py_create(field_dtype, logical=True)
        if name in text:
            member = member.copy()
            member.set_strpad(h5py.h5t.STR_NULLTERM)
        compound.insert(name.encode(), offset, member)
        offset += field_dtype.itemsize
    plist = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    plist.set_chunk((64,))
    plist.set_fletcher32()
    space = h5py.h5s.create_simple((0,), (h5py.h5s.UNLIMITED,))
    h5py.h5d.create(h5.id, b"frames", compound, space, dcpl=plist)


def _fill_columns(
    row: np.ndarray[Any, Any],
    expnum: int,
    columns: Sequence[tuple[str, ColumnKind]],
    values: Mapping[str, Any],
) -> None:
    expected = {name for name, _ in columns}
    if set(values) != expected:
        raise ArchiveError(
            f"expnum {expnum}: values for {sorted(values)}, expected {sorted(expected)}"
        )
    for name, kind in columns:
        value = values[name]
        where = f"expnum {expnum} column {name}"
        if kind == "int":
            if isinstance(value, bool) or not isinstance(value, int):
                raise ArchiveError(f"{where}: {value!r} is not an int")
            if not -(2**63) <= value < 2**63:
                raise ArchiveError(f"{where}: {value} does not fit in int64")
            row[name] = value
        elif kind == "float":
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ArchiveError(f"{where}: {value!r} is not a float")
            try:
                row[name] = float(value)
            except OverflowError as exc:
                raise ArchiveError(f"{where}: {value} does not fit in float64") from exc
        else:
            if not isinstance(value, str):
                raise ArchiveError(f"{where}: {value!r} is not a str")
            encoded = value.encode("utf-8")
            if len(encoded) > STR_BYTES or b"\0" in encoded:
                raise ArchiveError(f"{where}: text is over {STR_BYTES} UTF-8 bytes or holds NUL")
            row[name] = encoded
