"""Exposure numbers: persistent, never reused, safe across processes."""

from __future__ import annotations

import multiprocessing
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tasks.durable.numbering import COUNTER_FILE, next_exposure_number, night_folder_name


def test_numbers_start_at_one_and_persist(tmp_path: Path) -> None:
    assert next_exposure_number(tmp_path, taken=lambda n: False) == 1
    assert next_exposure_number(tmp_path, taken=lambda n: False) == 2
    assert (tmp_path / COUNTER_FILE).read_text().strip() == "2"


def test_numbers_with_existing_files_are_skipped(tmp_path: Path) -> None:
    assert next_exposure_number(tmp_path, taken=lambda n: n in {1, 2, 3}) == 4
    assert next_exposure_number(tmp_path, taken=lambda n: False) == 5


def test_corrupt_counter_is_an_error_not_a_restart(tmp_path: Path) -> None:
    (tmp_path / COUNTER_FILE).write_text("garbage")
    with pytest.raises(ValueError, match="corrupt"):
        next_exposure_number(tmp_path, taken=lambda n: False)


def _take_many(state: str, count: int, queue: multiprocessing.Queue[int]) -> None:
    for _ in range(count):
        queue.put(next_exposure_number(Path(state), taken=lambda n: False))


def test_concurrent_processes_never_share_a_number(tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    queue: multiprocessing.Queue[int] = context.Queue()
    workers = [
        context.Process(target=_take_many, args=(str(tmp_path), 25, queue)) for _ in range(4)
    ]
    for worker in workers:
        worker.start()
    numbers = [queue.get(timeout=30) for _ in range(100)]
    for worker in workers:
        worker.join(timeout=30)
    assert sorted(numbers) == list(range(1, 101))


def test_night_folder_rolls_over_at_noon_utc() -> None:
    assert night_folder_name(datetime(2026, 11, 21, 11, 59, tzinfo=UTC)) == "20261120"
    assert night_folder_name(datetime(2026, 11, 21, 12, 0, tzinfo=UTC)) == "20261121"
    assert night_folder_name(datetime(2026, 11, 22, 3, 0, tzinfo=UTC)) == "20261121"
