"""The send stage: the outbox keeps every notification until a real receiver takes it.

The receiver (tests/receiver.py) is a real HTTP server on 127.0.0.1; being "down" means
its socket is closed. "Exactly once" is checked the way a receiver would: by counting
the requests it accepted and the distinct Idempotency-Keys among them.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from flows.outbox_cli import outbox_app
from schemas.instrument import InstrumentConfig, ReceiverConfig, load_instrument
from schemas.products import Product
from tasks.durable.outbox import (
    CorruptEntryError,
    EntryLockedError,
    EntryState,
    Outbox,
    new_entry_id,
)
from tasks.send import (
    AttemptResult,
    Verdict,
    after_attempt,
    backoff_delay,
    classify_response,
    drain,
    enqueue_exposure,
    parse_retry_after,
    send,
)

from .conftest import REPO, SIM_YAML
from .receiver import Receiver

TOKEN_ENV = "CCDFLOW_TEST_RECEIVER_TOKEN"
LATER = datetime.now(UTC) + timedelta(days=365)
"""A drain 'now' at which every backoff has expired."""
METADATA: dict[str, Any] = {"instrument": "ccdsim", "expnum": 7, "imagetyp": "bias"}


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as running:
        yield running


def receiver_config(receiver: Receiver, **fields: Any) -> ReceiverConfig:
    return ReceiverConfig.model_validate({"name": "archive", "url": receiver.url, **fields})


def fits_file(folder: Path, name: str, size: int = 300_000) -> Path:
    """A file whose bytes include CR, LF and every other byte value."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(os.urandom(size) + b"\r\n--\r\n\n\r" + bytes(range(256)))
    return path


def unique_keys(receiver: Receiver) -> set[str | None]:
    return {request.idempotency_key for request in receiver.accepted()}


# -- the policy, without sockets -------------------------------------------------------


def test_backoff_doubles_from_the_initial_delay_up_to_the_cap() -> None:
    delays = [backoff_delay(n, 2.0, 900.0) for n in range(1, 13)]
    assert delays[:4] == [2.0, 4.0, 8.0, 16.0]
    assert delays[-3:] == [900.0, 900.0, 900.0]
    assert delays == sorted(delays)
    assert backoff_delay(10_000, 2.0, 900.0) == 900.0  # no overflow after many failures


def test_backoff_jitter_is_bounded_and_set_by_the_draw() -> None:
    assert backoff_delay(3, 2.0, 900.0, jitter=0.1, draw=0.0) == pytest.approx(7.2)
    assert backoff_delay(3, 2.0, 900.0, jitter=0.1, draw=1.0) == pytest.approx(8.8)
    assert backoff_delay(3, 2.0, 900.0, jitter=0.1, draw=0.5) == 8.0
    assert backoff_delay(20, 2.0, 900.0, jitter=0.1, draw=1.0) == 900.0  # cap wins


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        ((0, 2.0, 900.0), {}),
        ((1, 0.0, 900.0), {}),
        ((1, 10.0, 5.0), {}),
        ((1, 2.0, 900.0), {"jitter": 1.0}),
        ((1, 2.0, 900.0), {"draw": 1.5}),
    ],
)
def test_backoff_refuses_nonsense(args: tuple[int, float, float], kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=r"must be|need"):
        backoff_delay(*args, **kwargs)


@pytest.mark.parametrize(
    ("status", "verdict"),
    [
        (200, Verdict.DELIVERED),
        (202, Verdict.DELIVERED),
        (204, Verdict.DELIVERED),
        (408, Verdict.RETRY),
        (429, Verdict.RETRY),
        (500, Verdict.RETRY),
        (503, Verdict.RETRY),
        (400, Verdict.PERMANENT),
        (401, Verdict.PERMANENT),
        (404, Verdict.PERMANENT),
        (422, Verdict.PERMANENT),
        (301, Verdict.PERMANENT),
    ],
)
def test_status_codes_are_classified(status: int, verdict: Verdict) -> None:
    result = classify_response(status, "why")
    assert result.verdict is verdict
    if verdict is not Verdict.DELIVERED:
        assert result.error is not None
        assert result.error.startswith(f"HTTP {status}: why")


def test_retry_after_takes_seconds_or_a_date() -> None:
    now = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("120", now) == 120.0
    assert parse_retry_after("Wed, 01 Jan 2025 12:01:30 GMT", now) == 90.0
    assert parse_retry_after("Wed, 01 Jan 2025 11:00:00 GMT", now) == 0.0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None


def _entry(receiver: ReceiverConfig, attempts: int = 0) -> Any:
    from tasks.durable.outbox import OutboxEntry

    now = datetime(2025, 1, 1, tzinfo=UTC)
    return OutboxEntry(
        id=new_entry_id(now),
        receiver=receiver.name,
        payload={},
        attempts=attempts,
        created_at=now,
        next_attempt_at=now,
    )


def test_after_attempt_schedules_retries_then_gives_up() -> None:
    config = ReceiverConfig(
        name="a", url="http://127.0.0.1:1/", max_attempts=3, backoff_s=5, backoff_max_s=60
    )
    now = datetime(2025, 1, 1, tzinfo=UTC)
    failure = AttemptResult(Verdict.RETRY, "HTTP 503")
    state, first = after_attempt(_entry(config), failure, config, now)
    assert state is EntryState.PENDING
    assert (first.attempts, first.last_error) == (1, "HTTP 503")
    assert first.next_attempt_at == now + timedelta(seconds=5)
    state, second = after_attempt(first, failure, config, now)
    assert second.next_attempt_at == now + timedelta(seconds=10)
    state, third = after_attempt(second, failure, config, now)
    assert state is EntryState.DEAD
    assert third.last_error == "HTTP 503 (gave up after 3 attempts)"
    assert third.finished_at == now


def test_after_attempt_honours_retry_after_up_to_the_cap() -> None:
    config = ReceiverConfig(name="a", url="http://127.0.0.1:1/", backoff_s=5, backoff_max_s=60)
    now = datetime(2025, 1, 1, tzinfo=UTC)
    _, entry = after_attempt(_entry(config), AttemptResult(Verdict.RETRY, "429", 30), config, now)
    assert entry.next_attempt_at == now + timedelta(seconds=30)
    _, entry = after_attempt(_entry(config), AttemptResult(Verdict.RETRY, "429", 3600), config, now)
    assert entry.next_attempt_at == now + timedelta(seconds=60)


def test_after_attempt_kills_a_permanent_failure_at_once() -> None:
    config = ReceiverConfig(name="a", url="http://127.0.0.1:1/")
    now = datetime(2025, 1, 1, tzinfo=UTC)
    result = AttemptResult(Verdict.PERMANENT, "HTTP 422: bad field")
    state, entry = after_attempt(_entry(config), result, config, now)
    assert state is EntryState.DEAD
    assert (entry.attempts, entry.last_error) == (1, "HTTP 422: bad field")


def test_receiver_config_checks_its_backoff() -> None:
    config = ReceiverConfig(name="a", url="http://127.0.0.1:1/")
    assert (config.max_attempts, config.backoff_s, config.backoff_max_s) == (20, 2.0, 900.0)
    with pytest.raises(ValidationError, match="backoff_max_s"):
        ReceiverConfig(name="a", url="http://127.0.0.1:1/", backoff_s=60, backoff_max_s=10)
    with pytest.raises(ValidationError, match="max_attempts"):
        ReceiverConfig(name="a", url="http://127.0.0.1:1/", max_attempts=0)


# -- the outbox on disk ----------------------------------------------------------------


def test_ids_sort_in_creation_order_and_are_unique() -> None:
    now = datetime(2025, 1, 1, tzinfo=UTC)
    ids = [new_entry_id(now) for _ in range(200)]
    assert ids == sorted(ids)
    assert len(set(ids)) == 200


def test_enqueue_writes_one_file_per_notification(tmp_path: Path, receiver: Receiver) -> None:
    files = [fits_file(tmp_path / "night", f"ccd{i}.fits", 10) for i in range(2)]
    receivers = [
        receiver_config(receiver, name="meta"),
        receiver_config(receiver, name="files", send_file=True),
    ]
    entries = enqueue_exposure(tmp_path / "outbox", receivers, METADATA, files)
    outbox = Outbox(tmp_path / "outbox")
    assert [(e.receiver, e.file) for e in entries] == [
        ("meta", None),
        ("files", files[0]),
        ("files", files[1]),
    ]
    assert outbox.ids(EntryState.PENDING) == [e.id for e in entries]
    stored = json.loads(outbox.path(EntryState.PENDING, entries[1].id).read_text())
    assert stored["payload"] == METADATA
    assert stored["file"] == str(files[0])
    assert list((tmp_path / "outbox" / "tmp").iterdir()) == []


def test_each_receiver_gets_the_products_it_asked_for(tmp_path: Path, receiver: Receiver) -> None:
    raw = fits_file(tmp_path / "night", "r1.fits", 10)
    processed = fits_file(tmp_path / "night", "r1-proc.fits", 10)
    records = [
        {"path": str(raw), "product": "raw"},
        {"path": str(processed), "product": "processed"},
    ]
    metadata = {"instrument": "ccdsim", "exposure": {"expnum": 3, "files": records}}
    receivers = [
        receiver_config(receiver, name="archive", send_file=True, products=["raw"]),
        receiver_config(receiver, name="quicklook", send_file=True, products=["processed"]),
        receiver_config(receiver, name="both"),
    ]
    entries = enqueue_exposure(
        tmp_path / "outbox",
        receivers,
        metadata,
        [raw, processed],
        products=[Product.RAW, Product.PROCESSED],
    )
    assert [(e.receiver, e.file) for e in entries] == [
        ("archive", raw),
        ("quicklook", processed),
        ("both", None),
    ]
    told = [[f["product"] for f in e.payload["exposure"]["files"]] for e in entries]
    assert told == [["raw"], ["processed"], ["raw", "processed"]]


def test_enqueue_refuses_bad_input(tmp_path: Path, receiver: Receiver) -> None:
    one = receiver_config(receiver, send_file=True)
    with pytest.raises(ValueError, match="not JSON data"):
        enqueue_exposure(tmp_path, [one], {"x": object()}, [])
    with pytest.raises(ValueError, match="repeated: archive"):
        enqueue_exposure(tmp_path, [one, one], METADATA, [])
    with pytest.raises(FileNotFoundError, match=r"missing\.fits"):
        enqueue_exposure(tmp_path, [one], METADATA, [tmp_path / "missing.fits"])
    assert Outbox(tmp_path).ids(EntryState.PENDING) == []


def test_a_claimed_entry_cannot_be_claimed_again(tmp_path: Path, receiver: Receiver) -> None:
    (entry,) = enqueue_exposure(tmp_path, [receiver_config(receiver)], METADATA, [])
    outbox = Outbox(tmp_path)
    claim = outbox.claim(entry.id)
    assert claim is not None
    with claim:
        with pytest.raises(EntryLockedError):
            outbox.claim(entry.id)
        claim.reschedule(claim.entry.model_copy(update={"attempts": 1}))
        assert outbox.load(EntryState.PENDING, entry.id).revision == 1
    again = outbox.claim(entry.id)
    assert again is not None
    with again:
        again.deliver(again.entry)
    assert outbox.claim(entry.id) is None


# -- delivery to a real receiver -------------------------------------------------------


async def test_json_and_files_arrive_with_token_and_idempotency_key(
    tmp_path: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(TOKEN_ENV, "s3cret")
    receiver.token = "s3cret"
    files = [fits_file(tmp_path / "night", f"ccdsim-r{i}-00000007.fits") for i in range(2)]
    receivers = [
        receiver_config(receiver, name="meta", token_env=TOKEN_ENV),
        receiver_config(receiver, name="files", token_env=TOKEN_ENV, send_file=True),
    ]
    entries = enqueue_exposure(tmp_path / "outbox", receivers, METADATA, files)

    report = await drain(tmp_path / "outbox", receivers)

    assert (report.delivered, report.retry_later, report.dead, report.errors) == (3, 0, 0, [])
    requests = receiver.requests
    assert [r.status for r in requests] == [200, 200, 200]
    assert {r.idempotency_key for r in requests} == {e.id for e in entries}
    assert all(r.headers["authorization"] == "Bearer s3cret" for r in requests)
    assert all(r.metadata == METADATA for r in requests)
    (plain,) = [r for r in requests if not r.files]
    assert plain.headers["content-type"] == "application/json"
    uploads = {name: data for r in requests for name, data in r.files.items()}
    assert uploads == {path.name: path.read_bytes() for path in files}
    assert all(r.part_types["metadata"] == "application/json" for r in requests if r.files)
    assert all(r.part_types["file"] == "application/fits" for r in requests if r.files)
    outbox = Outbox(tmp_path / "outbox")
    assert outbox.ids(EntryState.PENDING) == []
    assert sorted(outbox.ids(EntryState.DELIVERED)) == sorted(e.id for e in entries)
    delivered = outbox.load(EntryState.DELIVERED, entries[0].id)
    assert delivered.attempts == 1
    assert delivered.finished_at is not None


async def test_receiver_down_then_up_gets_each_notification_once(
    tmp_path: Path, receiver: Receiver
) -> None:
    config = receiver_config(receiver)
    receiver.stop()
    entries = [
        entry
        for expnum in range(4)
        for entry in enqueue_exposure(tmp_path, [config], {"expnum": expnum}, [])
    ]

    down = await drain(tmp_path, [config])
    assert (down.delivered, down.retry_later, down.deferred) == (0, 1, 3)
    assert "cannot reach" in down.errors[0].error
    assert config.name in down.retry_at
    assert len(Outbox(tmp_path).ids(EntryState.PENDING)) == 4

    receiver.start()  # same port
    up = await drain(tmp_path, [config], now=LATER)

    assert up.delivered == 4
    assert len(receiver.requests) == 4
    assert unique_keys(receiver) == {e.id for e in entries}
    assert [r.metadata for r in receiver.requests] == [{"expnum": n} for n in range(4)]
    assert Outbox(tmp_path).ids(EntryState.PENDING) == []


async def test_503_is_retried_after_the_backoff(tmp_path: Path, receiver: Receiver) -> None:
    config = receiver_config(receiver, backoff_s=30)
    receiver.status = 503
    (entry,) = enqueue_exposure(tmp_path, [config], METADATA, [])

    first = await drain(tmp_path, [config])
    assert first.retry_later == 1
    assert first.errors[0].error.startswith("HTTP 503")
    waiting = Outbox(tmp_path).load(EntryState.PENDING, entry.id)
    assert waiting.attempts == 1
    assert waiting.last_error is not None
    assert waiting.last_error.startswith("HTTP 503")

    receiver.status = 200
    too_soon = await drain(tmp_path, [config])
    assert (too_soon.not_due, len(receiver.requests)) == (1, 1)

    later = await drain(tmp_path, [config], now=LATER)
    assert later.delivered == 1
    assert unique_keys(receiver) == {entry.id}
    assert len(receiver.accepted()) == 1


async def test_4xx_is_dead_at_once_with_the_reason_and_can_be_requeued(
    tmp_path: Path, receiver: Receiver
) -> None:
    config = receiver_config(receiver)
    receiver.status = 422
    (entry,) = enqueue_exposure(tmp_path, [config], METADATA, [])

    report = await drain(tmp_path, [config])

    assert (report.dead, report.retry_later) == (1, 0)
    outbox = Outbox(tmp_path)
    dead = outbox.load(EntryState.DEAD, entry.id)
    assert dead.last_error is not None
    assert dead.last_error.startswith("HTTP 422")
    assert outbox.ids(EntryState.PENDING) == []
    await drain(tmp_path, [config], now=LATER)
    assert len(receiver.requests) == 1  # the dead are not retried

    receiver.status = 200
    assert outbox.requeue_dead(datetime.now(UTC)) == [entry.id]
    again = await drain(tmp_path, [config])
    assert again.delivered == 1
    assert outbox.ids(EntryState.DEAD) == []


async def test_missing_token_is_recorded_not_raised(
    tmp_path: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    receiver.token = "s3cret"
    config = receiver_config(receiver, token_env=TOKEN_ENV)
    (entry,) = enqueue_exposure(tmp_path, [config], METADATA, [])

    report = await drain(tmp_path, [config])

    assert report.retry_later == 1
    assert receiver.requests == []
    recorded = Outbox(tmp_path).load(EntryState.PENDING, entry.id).last_error
    assert recorded is not None
    assert f"environment variable {TOKEN_ENV}" in recorded
    assert "not set" in recorded

    monkeypatch.setenv(TOKEN_ENV, "s3cret")
    assert (await drain(tmp_path, [config], now=LATER)).delivered == 1


async def test_wrong_token_is_refused_for_good(
    tmp_path: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(TOKEN_ENV, "wrong")
    receiver.token = "s3cret"
    config = receiver_config(receiver, token_env=TOKEN_ENV)
    enqueue_exposure(tmp_path, [config], METADATA, [])
    report = await drain(tmp_path, [config])
    assert report.dead == 1
    assert report.errors[0].error.startswith("HTTP 401")


async def test_attempts_run_out_and_the_entry_is_kept_dead(
    tmp_path: Path, receiver: Receiver
) -> None:
    config = receiver_config(receiver, max_attempts=2)
    receiver.stop()
    (entry,) = enqueue_exposure(tmp_path, [config], METADATA, [])
    assert (await drain(tmp_path, [config])).retry_later == 1
    assert (await drain(tmp_path, [config], now=LATER)).dead == 1
    dead = Outbox(tmp_path).load(EntryState.DEAD, entry.id)
    assert dead.attempts == 2
    assert dead.last_error is not None
    assert "gave up after 2 attempts" in dead.last_error


async def test_a_deleted_attachment_is_dead_not_retried(tmp_path: Path, receiver: Receiver) -> None:
    config = receiver_config(receiver, send_file=True)
    path = fits_file(tmp_path / "night", "gone.fits", 10)
    enqueue_exposure(tmp_path / "outbox", [config], METADATA, [path])
    path.unlink()
    report = await drain(tmp_path / "outbox", [config])
    assert report.dead == 1
    assert "does not exist" in report.errors[0].error
    assert receiver.requests == []


async def test_the_deadline_bounds_a_drain_against_a_hanging_receiver(
    tmp_path: Path, receiver: Receiver
) -> None:
    config = receiver_config(receiver)
    for expnum in range(3):
        enqueue_exposure(tmp_path, [config], {"expnum": expnum}, [])
    receiver.release.clear()
    started = time.monotonic()
    try:
        report = await drain(tmp_path, [config], deadline_s=0.5)
    finally:
        receiver.release.set()
    assert time.monotonic() - started < 2.0
    assert (report.retry_later, report.deferred) == (1, 2)
    assert "no answer" in report.errors[0].error


async def test_unknown_receivers_and_corrupt_entries_are_reported_and_left(
    tmp_path: Path, receiver: Receiver
) -> None:
    config = receiver_config(receiver)
    other = receiver_config(receiver, name="elsewhere")
    (foreign,) = enqueue_exposure(tmp_path, [other], METADATA, [])
    (good,) = enqueue_exposure(tmp_path, [config], METADATA, [])
    outbox = Outbox(tmp_path)
    broken = outbox.path(EntryState.PENDING, new_entry_id())
    broken.write_text("{not json")

    report = await drain(tmp_path, [config])

    assert (report.delivered, report.unknown_receiver) == (1, 1)
    assert {e.outcome for e in report.errors} == {"unknown-receiver", "corrupt"}
    assert unique_keys(receiver) == {good.id}
    assert foreign.id in outbox.ids(EntryState.PENDING)
    assert broken.exists()
    with pytest.raises(CorruptEntryError):
        outbox.claim(broken.stem)


async def test_a_pending_copy_left_by_a_crash_after_delivery_is_not_resent(
    tmp_path: Path, receiver: Receiver
) -> None:
    config = receiver_config(receiver)
    (entry,) = enqueue_exposure(tmp_path, [config], METADATA, [])
    outbox = Outbox(tmp_path)
    stale = outbox.path(EntryState.PENDING, entry.id).read_bytes()
    assert (await drain(tmp_path, [config])).delivered == 1
    # A crash between writing the delivered record and removing the pending file:
    outbox.path(EntryState.PENDING, entry.id).write_bytes(stale)

    report = await drain(tmp_path, [config])

    assert report.delivered == 0
    assert len(receiver.requests) == 1
    assert outbox.ids(EntryState.PENDING) == []


# -- concurrency and crashes -------------------------------------------------------------


async def test_two_concurrent_drains_never_send_twice(tmp_path: Path, receiver: Receiver) -> None:
    config = receiver_config(receiver)
    entries = [
        entry
        for expnum in range(6)
        for entry in enqueue_exposure(tmp_path, [config], {"expnum": expnum}, [])
    ]
    receiver.release.clear()  # hold the first request so both drains overlap
    first = asyncio.create_task(drain(tmp_path, [config]))
    second = asyncio.create_task(drain(tmp_path, [config]))
    assert await asyncio.to_thread(receiver.arrived.wait, 5)
    await asyncio.sleep(0.05)
    receiver.release.set()
    reports = await asyncio.gather(first, second)

    assert sum(r.delivered for r in reports) == 6
    assert sum(r.skipped_locked for r in reports) >= 1
    assert len(receiver.requests) == 6
    assert unique_keys(receiver) == {e.id for e in entries}


_DRAIN_SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from schemas.instrument import ReceiverConfig
    from tasks.send import drain
    config = ReceiverConfig(name="archive", url=sys.argv[2])
    print("ready", flush=True)
    sys.stdin.readline()  # start together
    report = asyncio.run(drain(Path(sys.argv[1]), [config]))
    print(report.delivered, report.skipped_locked, flush=True)
    """
)


async def test_two_drainer_processes_never_send_twice(tmp_path: Path, receiver: Receiver) -> None:
    config = receiver_config(receiver)
    entries = [
        entry
        for expnum in range(30)
        for entry in enqueue_exposure(tmp_path, [config], {"expnum": expnum}, [])
    ]
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _DRAIN_SCRIPT,
            str(tmp_path),
            receiver.url,
            cwd=REPO,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        for _ in range(2)
    ]
    for process in processes:
        assert process.stdout is not None
        assert await asyncio.wait_for(process.stdout.readline(), 60) == b"ready\n"
    for process in processes:
        assert process.stdin is not None
        process.stdin.write(b"go\n")
    outputs = [await asyncio.wait_for(process.communicate(), 60) for process in processes]

    assert [process.returncode for process in processes] == [0, 0]
    delivered = [int(out.split()[0]) for out, _ in outputs]
    assert sum(delivered) == 30
    assert len(receiver.requests) == 30
    assert unique_keys(receiver) == {e.id for e in entries}


_ENQUEUE_THEN_DIE = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from schemas.instrument import ReceiverConfig
    from tasks.send import enqueue_exposure
    config = ReceiverConfig(name="archive", url=sys.argv[2])
    enqueue_exposure(Path(sys.argv[1]), [config], {"expnum": 42}, [])
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


async def test_a_notification_survives_sigkill_right_after_enqueue(
    tmp_path: Path, receiver: Receiver
) -> None:
    config = receiver_config(receiver)
    process = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", _ENQUEUE_THEN_DIE, str(tmp_path), receiver.url],
        cwd=REPO,
        timeout=60,
    )
    assert process.returncode == -signal.SIGKILL
    assert receiver.requests == []

    report = await drain(tmp_path, [config])

    assert report.delivered == 1
    assert [r.metadata for r in receiver.accepted()] == [{"expnum": 42}]


_ENQUEUE_AND_DRAIN = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from schemas.instrument import ReceiverConfig
    from tasks.send import drain, enqueue_exposure
    config = ReceiverConfig(name="archive", url=sys.argv[2])
    enqueue_exposure(Path(sys.argv[1]), [config], {"expnum": 43}, [])
    asyncio.run(drain(Path(sys.argv[1]), [config]))
    """
)


async def test_a_drainer_killed_mid_request_leaves_the_entry_for_the_next(
    tmp_path: Path, receiver: Receiver
) -> None:
    config = receiver_config(receiver)
    receiver.release.clear()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _ENQUEUE_AND_DRAIN, str(tmp_path), receiver.url, cwd=REPO
    )
    try:
        assert await asyncio.to_thread(receiver.arrived.wait, 30)
    finally:
        process.kill()
        await asyncio.wait_for(process.wait(), 10)
    assert process.returncode == -signal.SIGKILL
    receiver.release.set()

    report = await drain(tmp_path, [config])

    assert report.delivered == 1
    (entry_id,) = Outbox(tmp_path).ids(EntryState.DELIVERED)
    # At least once across a crash: the receiver may see the key twice, never two keys.
    assert unique_keys(receiver) == {entry_id}
    assert Outbox(tmp_path).ids(EntryState.PENDING) == []


# -- the Prefect task's body and the CLI ---------------------------------------------------


def _instrument(data_root: Path, *receivers: ReceiverConfig) -> InstrumentConfig:
    base = load_instrument(SIM_YAML).with_overrides(data_root=data_root)
    return base.model_copy(update={"receivers": list(receivers)})


async def test_send_never_raises_when_the_receiver_is_down(
    tmp_path: Path, receiver: Receiver
) -> None:
    config = receiver_config(receiver)
    receiver.stop()
    instrument = _instrument(tmp_path / "data", config)

    report = await send.fn(instrument, METADATA, [], deadline_s=2.0)

    assert report.retry_later == 1
    pending = Outbox(tmp_path / "data" / "outbox").ids(EntryState.PENDING)
    assert len(pending) == 1


async def test_send_without_receivers_does_nothing(tmp_path: Path) -> None:
    report = await send.fn(_instrument(tmp_path / "data"), METADATA, [])
    assert report.delivered == 0
    assert not (tmp_path / "data").exists()


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
async def test_send_runs_as_a_prefect_task_in_a_flow(tmp_path: Path, receiver: Receiver) -> None:
    from prefect import flow

    instrument = _instrument(tmp_path / "data", receiver_config(receiver))

    @flow
    async def notify() -> int:
        report = await send(instrument, METADATA, [])
        return report.delivered

    assert await notify() == 1
    assert [r.metadata for r in receiver.accepted()] == [METADATA]


def _write_instrument(folder: Path, receiver: Receiver) -> Path:
    """sim.yaml with one receiver, next to a copy of its ACF."""
    import yaml

    data = yaml.safe_load(SIM_YAML.read_text())
    data["controllers"][0]["acf"] = str(SIM_YAML.parent / data["controllers"][0]["acf"])
    data["receivers"] = [{"name": "archive", "url": receiver.url, "backoff_s": 0.2}]
    path = folder / "instrument.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_cli_shows_and_drains_an_outbox(tmp_path: Path, receiver: Receiver) -> None:
    runner = CliRunner()
    instrument = _write_instrument(tmp_path, receiver)
    config = load_instrument(instrument)
    data = tmp_path / "data"
    common = ["--instrument", str(instrument), "--data", str(data)]
    wide = {"COLUMNS": "200"}

    empty = runner.invoke(outbox_app, ["show", *common], env=wide)
    assert empty.exit_code == 0, empty.output
    assert "0 pending, 0 dead, 0 delivered" in empty.output

    receiver.status = 503
    (entry,) = enqueue_exposure(data / "outbox", config.receivers, METADATA, [])
    failed = runner.invoke(outbox_app, ["drain", *common], env=wide)
    assert failed.exit_code == 1
    assert "1 pending, 0 dead" in failed.output
    shown = runner.invoke(outbox_app, ["show", *common], env=wide)
    assert "1 pending" in shown.output
    assert entry.id in shown.output
    assert "HTTP 503" in shown.output

    receiver.status = 200
    drained = runner.invoke(
        outbox_app, ["drain", *common, "--until-empty", "--timeout", "10"], env=wide
    )
    assert drained.exit_code == 0, drained.output
    assert "delivered 1" in drained.output
    assert "0 pending, 0 dead" in drained.output
    assert unique_keys(receiver) == {entry.id}
    after = runner.invoke(outbox_app, ["show", *common], env=wide)
    assert "0 pending, 0 dead, 1 delivered" in after.output
    assert "recently delivered" in after.output


def test_cli_requeues_the_dead_and_drain_reports_them(tmp_path: Path, receiver: Receiver) -> None:
    runner = CliRunner()
    instrument = _write_instrument(tmp_path, receiver)
    common = ["--instrument", str(instrument), "--data", str(tmp_path / "data")]
    config = load_instrument(instrument)
    receiver.status = 400
    enqueue_exposure(tmp_path / "data" / "outbox", config.receivers, METADATA, [])

    refused = runner.invoke(outbox_app, ["drain", *common])
    assert refused.exit_code == 1
    assert "0 pending, 1 dead" in refused.output
    assert "HTTP 400" in refused.output

    receiver.status = 200
    requeued = runner.invoke(outbox_app, ["requeue", *common, "--receiver", "archive"])
    assert "requeued 1" in requeued.output
    assert runner.invoke(outbox_app, ["drain", *common]).exit_code == 0


def test_cli_names_a_missing_instrument_file(tmp_path: Path) -> None:
    result = CliRunner().invoke(outbox_app, ["show", "--instrument", str(tmp_path / "no.yaml")])
    assert result.exit_code == 2
    assert "no.yaml" in result.output
