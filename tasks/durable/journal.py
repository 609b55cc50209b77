"""What an interrupted sequence already took, so running it again continues it.

One journal per planned run (a sequence, a calibration set, a night plan), named by
the run's name and a digest of its exposure specs, in ``<data_root>/.ccdflow/journal``.
It is a JSON-lines file, appended and fsynced at two points of each exposure:

* ``started``: the exposure number and the files it will write, before integrating;
* ``done``: the complete :class:`ExposureResult`, once its files are written.

A rerun of the same plan on the same observing night reads it back: exposures that
are done are not taken again, and one that was started but not marked done is done
if all its files exist and pass their checksums (the crash came between writing and
journaling); otherwise it is taken again under a new number (numbers are never
reused). A run that finishes closes its journal (renamed ``*.closed``), so running the
same plan again later starts afresh; a journal from another night is set aside too.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from astropy.io import fits

from schemas.exposure import ExposureSpec, ImageType
from schemas.instrument import InstrumentConfig
from schemas.products import Product
from schemas.results import ExposureResult, FileRecord
from tasks.files.verify import ChecksumError, verify_fits_checksums

PlannedFiles = list[tuple[str, Path, Product]]
"""(CCD, or "all" for a multi-extension file; path; product) of each file an exposure
writes. Journals written before there were products list (CCD, path): those files
were processed images, the only product then."""


def plan_digest(instrument: InstrumentConfig, specs: Sequence[ExposureSpec]) -> str:
    """16 hex digits naming the planned exposures (order included) on this instrument."""
    canonical = json.dumps(
        [instrument.name, [spec.model_dump(mode="json") for spec in specs]], sort_keys=True
    )
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


@dataclass(slots=True)
class JournalState:
    """What a journal says about the planned exposures, by their index in the plan."""

    done: dict[int, ExposureResult] = field(default_factory=dict)
    started: dict[int, tuple[int, PlannedFiles]] = field(default_factory=dict)
    night: str | None = None


def _append(path: Path, record: dict[str, Any]) -> None:
    line = json.dumps(record, separators=(",", ":")) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def _planned(item: list[str]) -> tuple[str, Path, Product]:
    if len(item) == 2:
        return str(item[0]), Path(item[1]), Product.PROCESSED
    return str(item[0]), Path(item[1]), Product(item[2])


def _files_intact(files: PlannedFiles) -> bool:
    if not files or not all(path.is_file() for _, path, _ in files):
        return False
    try:
        for _, path, _ in files:
            verify_fits_checksums(path)
    except (ChecksumError, OSError):
        return False
    return True


class SequenceJournal:
    """The journal of one planned run (module docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def for_plan(
        cls, instrument: InstrumentConfig, name: str, specs: Sequence[ExposureSpec]
    ) -> SequenceJournal:
        folder = instrument.storage.data_root / ".ccdflow" / "journal"
        return cls(folder / f"{name}-{plan_digest(instrument, specs)}.jsonl")

    def read(self) -> JournalState:
        """The journal as it stands; a torn last line (a crash mid-append) is ignored."""
        state = JournalState()
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return state
        for line in lines:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            kind, index = record.get("event"), int(record.get("index", -1))
            if kind == "opened":
                state.night = record.get("night")
            elif kind == "started":
                files = [_planned(item) for item in record["files"]]
                state.started[index] = (int(record["expnum"]), files)
            elif kind == "done":
                state.done[index] = ExposureResult.model_validate(record["result"])
        return state

    def resume(self, night: str) -> dict[int, ExposureResult]:
        """Open the journal for a run on ``night``; return the exposures already done.

        A journal of another night is closed first (that run is not continued).
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        state = self.read()
        if state.night is not None and state.night != night:
            self.close()
            state = JournalState()
        if state.night is None:
            _append(self.path, {"event": "opened", "night": night})
        done = dict(state.done)
        for index, (expnum, files) in state.started.items():
            if index not in done and _files_intact(files):
                # Written, then interrupted before it was journaled: it is done.
                done[index] = _recovered_result(expnum, files)
                self.done(index, done[index])
        return done

    def started(self, index: int, expnum: int, files: PlannedFiles) -> None:
        listed = [[ccd, str(path), product.value] for ccd, path, product in files]
        _append(self.path, {"event": "started", "index": index, "expnum": expnum, "files": listed})

    def done(self, index: int, result: ExposureResult) -> None:
        _append(
            self.path, {"event": "done", "index": index, "result": result.model_dump(mode="json")}
        )

    def close(self) -> None:
        """The run is over: keep the journal for the record, never resume it."""
        if self.path.exists():
            stamp = datetime.now().strftime("%Y%m%dT%H%M%S")
            self.path.rename(self.path.with_name(f"{self.path.stem}.{stamp}.closed"))


def _recovered_result(expnum: int, files: PlannedFiles) -> ExposureResult:
    """The result of an exposure whose files were written but not journaled."""
    with fits.open(files[0][1]) as hdus:
        header = hdus[0].header
        image_type, exptime = ImageType(header["IMAGETYP"]), float(header["EXPTIME"])
        date_obs = datetime.fromisoformat(f"{header['DATE-OBS']}+00:00")
        date_end = (
            datetime.fromisoformat(f"{header['DATE-END']}+00:00") if "DATE-END" in header else None
        )
        measured = float(header["EXPMEAS"]) if "EXPMEAS" in header else None
        source = str(header["TIMESRC"]) if "TIMESRC" in header else None
        uncertainty = float(header["TIMSYER"]) if "TIMSYER" in header else None
        flagged = bool(header.get("EXPFLAG", False))
    records = [
        FileRecord(
            path=path,
            ccd=ccd,
            sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
            nbytes=path.stat().st_size,
            product=product,
        )
        for ccd, path, product in files
    ]
    return ExposureResult(
        expnum=expnum,
        image_type=image_type,
        exptime=exptime,
        date_obs=date_obs,
        date_end=date_end,
        exptime_measured=measured,
        time_source=source,
        time_uncertainty_s=uncertainty,
        exptime_flagged=flagged,
        files=records,
        timings={},
    )
