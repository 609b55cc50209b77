"""Header save-points: what is needed to write a frame that was read out but not saved.

Between the end of a readout and the files on disk, an exposure exists only in the
controller's frame buffer and in this process's memory. If the process dies there
(kill -9, a power cut of the acquisition computer), the pixels are still in the
controller. So before each fetch, a save-point is written (atomically, fsynced) with
everything else the files need: the spec, the exposure number and time, the
telemetry read so far, and, per controller, the buffer and the identity of the frame
in it (frame counter and timestamp, so a later readout into the same buffer is never
mistaken for it). It is removed once the exposure's files are written and journaled.
``tasks/recovery.py`` turns a left-over save-point back into files.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from devices.base import ExposureTimes
from devices.telemetry import Reading
from schemas.exposure import ExposureSpec
from schemas.instrument import InstrumentConfig
from tasks.files.publish import fsync_folder


class FrameIdentity(BaseModel):
    """A frame in a controller's buffer, as FRAME reported it after the readout."""

    model_config = ConfigDict(frozen=True)

    buffer: int
    frame: int
    timestamp: int


class SavePoint(BaseModel):
    """One exposure read out and not yet written (module docstring)."""

    model_config = ConfigDict(frozen=True)

    instrument: str
    expnum: int
    spec: ExposureSpec
    when: datetime
    """The time the exposure was numbered: it names the night folder and the files."""
    date_obs: datetime
    times: ExposureTimes | None = None
    """The integration as measured (DATE-OBS, DATE-END and their source)."""
    darktime: float
    flow_run_id: str | None
    frames: dict[str, FrameIdentity]
    status_start: dict[str, dict[str, Reading]] = {}
    failed: dict[str, str] = {}
    journal: Path | None = None
    index: int | None = None
    """Where the sequence journal records this exposure, to mark it done once written."""


def savepoint_folder(instrument: InstrumentConfig) -> Path:
    return instrument.storage.data_root / ".ccdflow" / "savepoints"


def savepoint_path(instrument: InstrumentConfig, expnum: int) -> Path:
    return savepoint_folder(instrument) / f"{instrument.name}-{expnum:08d}.json"


def write_savepoint(instrument: InstrumentConfig, point: SavePoint) -> Path:
    """Write ``point`` durably (temp file, fsync, rename, fsync the folder)."""
    path = savepoint_path(instrument, point.expnum)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(point.model_dump_json())
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    fsync_folder(path.parent)
    return path


def remove_savepoint(instrument: InstrumentConfig, expnum: int) -> None:
    """The exposure is safe on disk: forget its save-point."""
    path = savepoint_path(instrument, expnum)
    path.unlink(missing_ok=True)


def pending_savepoints(instrument: InstrumentConfig) -> list[SavePoint]:
    """Save-points of this instrument left by runs that did not finish, oldest first.

    A file that does not parse (torn by a crash before its rename could not be; this
    is someone else's file) is skipped, never deleted.
    """
    folder = savepoint_folder(instrument)
    points = []
    for path in sorted(folder.glob(f"{instrument.name}-*.json")):
        try:
            points.append(SavePoint.model_validate_json(path.read_text(encoding="utf-8")))
        except ValueError:
            continue
    return points


def set_aside(instrument: InstrumentConfig, expnum: int, reason: str) -> Path:
    """Move a save-point that cannot be recovered to ``lost/``, with the reason beside it."""
    path = savepoint_path(instrument, expnum)
    lost = path.parent / "lost"
    lost.mkdir(parents=True, exist_ok=True)
    target = lost / path.name
    os.replace(path, target)
    target.with_suffix(".reason.txt").write_text(reason + "\n", encoding="utf-8")
    return target


def snapshot_values(
    values: Mapping[str, Mapping[str, Reading]],
) -> dict[str, dict[str, Reading]]:
    return {source: dict(readings) for source, readings in values.items()}
