"""The sequence journal and save-points on their own: what a rerun will believe."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from schemas.exposure import ExposureSpec
from schemas.instrument import InstrumentConfig, load_instrument
from schemas.products import Product
from schemas.results import ExposureResult, FileRecord
from tasks.durable.journal import SequenceJournal, plan_digest
from tasks.durable.savepoint import (
    FrameIdentity,
    SavePoint,
    pending_savepoints,
    remove_savepoint,
    set_aside,
    write_savepoint,
)
from tasks.files.fits_files import ImagePart, write_fits

from .conftest import SIM_YAML

SPECS = [ExposureSpec(image_type="bias", count=3)]


@pytest.fixture
def instrument(tmp_path: Path) -> InstrumentConfig:
    return load_instrument(SIM_YAML).with_overrides(data_root=tmp_path / "data")


def _result(expnum: int, path: Path) -> ExposureResult:
    return ExposureResult(
        expnum=expnum,
        image_type="bias",
        exptime=0.0,
        date_obs=datetime(2026, 11, 21, 20, tzinfo=UTC),
        files=[FileRecord(path=path, ccd="r1", sha256="0" * 64, nbytes=1)],
        timings={},
    )


def _fits(path: Path, expnum: int) -> Path:
    cards = [
        ("EXPNUM", expnum, ""),
        ("IMAGETYP", "bias", ""),
        ("EXPTIME", 0.0, ""),
        ("DATE-OBS", "2026-11-21T20:00:00.000", ""),
        ("CCDNAME", "r1", ""),
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_fits(path, [ImagePart(np.zeros((4, 4), np.float32), cards)]).path


def test_digest_depends_on_the_plan_and_the_instrument(instrument: InstrumentConfig) -> None:
    assert plan_digest(instrument, SPECS) == plan_digest(instrument, list(SPECS))
    assert plan_digest(instrument, SPECS) != plan_digest(
        instrument, [ExposureSpec(image_type="bias", count=4)]
    )
    other = InstrumentConfig.model_validate({**instrument.model_dump(), "name": "other"})
    assert plan_digest(instrument, SPECS) != plan_digest(other, SPECS)


def test_resume_returns_done_exposures_and_ignores_a_torn_line(
    instrument: InstrumentConfig, tmp_path: Path
) -> None:
    journal = SequenceJournal.for_plan(instrument, "seq", SPECS)
    assert journal.resume("20261121") == {}
    journal.started(0, 7, [("r1", tmp_path / "a.fits", Product.RAW)])
    journal.done(0, _result(7, tmp_path / "a.fits"))
    journal.started(1, 8, [("r1", tmp_path / "b.fits", Product.RAW)])  # never written
    with journal.path.open("a") as handle:
        handle.write('{"event": "done", "index": 2, "resu')  # a crash mid-append
    again = SequenceJournal.for_plan(instrument, "seq", SPECS).resume("20261121")
    assert list(again) == [0]
    assert again[0].expnum == 7


def test_a_started_exposure_whose_files_are_intact_counts_as_done(
    instrument: InstrumentConfig, tmp_path: Path
) -> None:
    journal = SequenceJournal.for_plan(instrument, "seq", SPECS)
    journal.resume("20261121")
    path = _fits(tmp_path / "night" / "c.fits", 9)
    proc = _fits(tmp_path / "night" / "c-proc.fits", 9)
    journal.started(0, 9, [("r1", path, Product.RAW), ("r1", proc, Product.PROCESSED)])
    corrupt = _fits(tmp_path / "night" / "d.fits", 10)
    corrupt.write_bytes(corrupt.read_bytes()[:-2880])  # truncated: checksums fail
    journal.started(1, 10, [("r1", corrupt, Product.RAW)])
    done = SequenceJournal.for_plan(instrument, "seq", SPECS).resume("20261121")
    assert list(done) == [0]
    assert done[0].expnum == 9
    assert [(f.path, f.product) for f in done[0].files] == [
        (path, Product.RAW),
        (proc, Product.PROCESSED),
    ]
    # ... and it is now journaled as done, so a third reading agrees without the files.
    assert 0 in SequenceJournal.for_plan(instrument, "seq", SPECS).read().done


def test_a_journal_from_before_products_lists_processed_files(
    instrument: InstrumentConfig, tmp_path: Path
) -> None:
    """Journals written before raw frames existed list (CCD, path): processed images."""
    journal = SequenceJournal.for_plan(instrument, "seq", SPECS)
    journal.resume("20261121")
    path = _fits(tmp_path / "night" / "old.fits", 11)
    with journal.path.open("a") as handle:
        handle.write(
            json.dumps({"event": "started", "index": 0, "expnum": 11, "files": [["r1", str(path)]]})
            + "\n"
        )
    (_, files) = journal.read().started[0]
    assert files == [("r1", path, Product.PROCESSED)]


def test_a_closed_journal_or_another_nights_is_not_resumed(
    instrument: InstrumentConfig, tmp_path: Path
) -> None:
    journal = SequenceJournal.for_plan(instrument, "seq", SPECS)
    journal.resume("20261120")
    journal.done(0, _result(1, tmp_path / "a.fits"))
    assert SequenceJournal.for_plan(instrument, "seq", SPECS).resume("20261121") == {}
    closed = list(journal.path.parent.glob("*.closed"))
    assert len(closed) == 1  # kept for the record
    journal.done(0, _result(2, tmp_path / "b.fits"))
    journal.close()
    assert SequenceJournal.for_plan(instrument, "seq", SPECS).resume("20261121") == {}


def test_savepoints_round_trip_and_are_set_aside_with_a_reason(
    instrument: InstrumentConfig,
) -> None:
    point = SavePoint(
        instrument=instrument.name,
        expnum=12,
        spec=ExposureSpec(image_type="dark", exptime=2),
        when=datetime(2026, 11, 21, 20, tzinfo=UTC),
        date_obs=datetime(2026, 11, 21, 20, 0, 1, tzinfo=UTC),
        darktime=2.01,
        flow_run_id=None,
        frames={"sim1": FrameIdentity(buffer=2, frame=7, timestamp=123456)},
        status_start={"sim1": {"MOD2/TEMPA": -100.0}},
    )
    write_savepoint(instrument, point)
    assert pending_savepoints(instrument) == [point]
    lost = set_aside(instrument, 12, "buffer 2 of sim1 now holds another frame")
    assert pending_savepoints(instrument) == []
    assert lost.with_suffix(".reason.txt").read_text().startswith("buffer 2")
    write_savepoint(instrument, point)
    remove_savepoint(instrument, 12)
    assert pending_savepoints(instrument) == []
