"""Stage 8: tell receivers about new files, through the durable outbox (tasks/durable/outbox.py).

Why an outbox: a receiver that is down, slow or misconfigured must never fail or delay
an exposure, and a notification must never be lost. So ``send`` first writes one entry
per notification to disk (that part may raise: a disk that cannot take a small JSON
file cannot take the exposure either), then makes one bounded attempt to deliver
everything that is due, and returns whatever happened without raising. What was not
delivered stays in the outbox for the next exposure's drain or ``ccdflow outbox drain``.

One entry per receiver and exposure for JSON receivers; for ``send_file`` receivers one
entry per file, so a failed upload retries only that file and a receiver's refusal of
one file does not hold back the others. Every request carries the entry id as its
``Idempotency-Key``: delivery is at least once (a crash mid-request repeats it), and a
receiver that deduplicates on the key sees each notification exactly once.

Requests: JSON receivers get ``POST`` with the metadata as ``application/json``;
``send_file`` receivers get a ``multipart/form-data`` POST with a ``metadata`` part
(``application/json``) and a ``file`` part, streamed from disk in a worker thread so a
large FITS file never blocks the event loop the flow's device tasks run on.

Outcomes: 2xx is delivered; 408, 429, 5xx, connection errors and timeouts are retried
after an exponential backoff (``Retry-After`` honoured up to ``backoff_max_s``); any
other status (4xx, or a redirect, which means the configured URL is wrong) is final and
the entry goes to ``dead/`` with the reason. After a transient failure, a drain stops
trying that receiver (its other due entries are *deferred*, untouched): a receiver that
is down costs one timeout per drain, not one per queued notification.

The policy (classifying a response, the backoff schedule, the next state of an entry)
is pure functions, tested without sockets or clocks. Outbox file work that may touch
many files (queueing, listing, pruning) runs in a worker thread; claiming an entry and
recording an attempt's outcome (a couple of small fsyncs) stay on the event loop, so a
cancelled drain can never leave a lock held by a thread nobody waits for.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import os
import random
import secrets
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from functools import partial
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, BinaryIO

import httpx
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.exceptions import MissingContextError
from pydantic_core import PydanticSerializationError, to_jsonable_python

from schemas.instrument import InstrumentConfig, ReceiverConfig
from schemas.products import Product
from tasks.durable.outbox import (
    CorruptEntryError,
    EntryLockedError,
    EntryState,
    Outbox,
    OutboxEntry,
    new_entry_id,
)

JITTER = 0.1
"""Backoff delays are spread by +-10 % so instruments that failed together do not all
come back in the same second."""

SEND_DEADLINE_S = 10.0
"""How long the ``send`` task may spend delivering before it leaves the rest queued."""

OUTBOX_FOLDER = "outbox"
"""The outbox lives in ``<storage.data_root>/outbox``, beside the data it announces."""

_CHUNK = 1 << 20
_EXCERPT = 200
_MEDIA_TYPES = {
    ".fits": "application/fits",
    ".fit": "application/fits",
    ".fz": "application/fits",
    ".h5": "application/x-hdf5",
    ".hdf5": "application/x-hdf5",
    ".json": "application/json",
}


# -- policy (pure) ---------------------------------------------------------------------


class Verdict(StrEnum):
    """What one attempt means for its entry."""

    DELIVERED = "delivered"
    RETRY = "retry"
    PERMANENT = "permanent"


@dataclass(frozen=True, slots=True)
class AttemptResult:
    """The outcome of one request; ``error`` says why it was not delivered."""

    verdict: Verdict
    error: str | None = None
    retry_after_s: float | None = None


def backoff_delay(
    failures: int, initial_s: float, max_s: float, *, jitter: float = 0.0, draw: float = 0.5
) -> float:
    """Seconds to wait after ``failures`` failed attempts in a row.

    ``initial_s`` after the first, doubling each time, never more than ``max_s``.
    ``jitter`` (a fraction below 1) scales the delay by ``1 + jitter * (2 * draw - 1)``;
    the caller supplies ``draw`` in [0, 1] (``random.random()``), so the function stays
    deterministic and a draw of 0.5 means no jitter.
    """
    if failures < 1:
        raise ValueError(f"failures must be >= 1, not {failures}")
    if not 0 < initial_s <= max_s:
        raise ValueError(f"need 0 < initial_s <= max_s, not {initial_s} and {max_s}")
    if not 0 <= jitter < 1:
        raise ValueError(f"jitter must be in [0, 1), not {jitter}")
    if not 0 <= draw <= 1:
        raise ValueError(f"draw must be in [0, 1], not {draw}")
    base = min(max_s, initial_s * 2.0 ** min(failures - 1, 64))
    return min(max_s, base * (1 + jitter * (2 * draw - 1)))


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """A ``Retry-After`` header as seconds from ``now`` (delay or HTTP date), or None."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def classify_response(
    status: int, body_excerpt: str = "", retry_after_s: float | None = None
) -> AttemptResult:
    """2xx delivered; 408, 429 and 5xx worth retrying; anything else final."""
    detail = f"HTTP {status}" + (f": {body_excerpt}" if body_excerpt else "")
    if 200 <= status < 300:
        return AttemptResult(Verdict.DELIVERED)
    if status in (408, 429) or 500 <= status < 600:
        return AttemptResult(Verdict.RETRY, detail, retry_after_s)
    if 300 <= status < 400:
        return AttemptResult(Verdict.PERMANENT, f"{detail} (redirect: fix the receiver url)")
    return AttemptResult(Verdict.PERMANENT, detail)


def after_attempt(
    entry: OutboxEntry,
    result: AttemptResult,
    receiver: ReceiverConfig,
    now: datetime,
    draw: float = 0.5,
) -> tuple[EntryState, OutboxEntry]:
    """Where an entry goes after one attempt, and what it records."""
    attempts = entry.attempts + 1
    common: dict[str, Any] = {"attempts": attempts, "last_attempt_at": now}
    if result.verdict is Verdict.DELIVERED:
        return EntryState.DELIVERED, entry.model_copy(update={**common, "finished_at": now})
    error = result.error or result.verdict.value
    if result.verdict is Verdict.PERMANENT:
        update = {**common, "last_error": error, "finished_at": now}
        return EntryState.DEAD, entry.model_copy(update=update)
    if attempts >= receiver.max_attempts:
        update = {
            **common,
            "last_error": f"{error} (gave up after {attempts} attempts)",
            "finished_at": now,
        }
        return EntryState.DEAD, entry.model_copy(update=update)
    delay = backoff_delay(
        attempts, receiver.backoff_s, receiver.backoff_max_s, jitter=JITTER, draw=draw
    )
    if result.retry_after_s is not None:
        delay = min(max(delay, result.retry_after_s), receiver.backoff_max_s)
    update = {**common, "last_error": error, "next_attempt_at": now + timedelta(seconds=delay)}
    return EntryState.PENDING, entry.model_copy(update=update)


# -- one HTTP attempt ------------------------------------------------------------------


def _user_agent() -> str:
    try:
        return f"ccdflow/{version('ccdflow')}"
    except PackageNotFoundError:
        return "ccdflow"


def _form_quote(name: str) -> str:
    """A file name fit for a quoted Content-Disposition parameter (HTML form rules)."""
    return name.replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")


def _open_binary(path: Path) -> BinaryIO:
    return open(path, "rb")


@dataclass(frozen=True, slots=True)
class MultipartBody:
    """A ``multipart/form-data`` body: a JSON ``metadata`` part and one ``file`` part.

    Built by hand rather than with httpx's ``files=`` so the file is read in a worker
    thread, chunk by chunk, and the length is known up front (no chunked encoding,
    which some receivers refuse for uploads).
    """

    metadata: bytes
    path: Path
    size: int
    boundary: str = field(default_factory=lambda: f"ccdflow-{secrets.token_hex(16)}")

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    @property
    def head(self) -> bytes:
        media = _MEDIA_TYPES.get(self.path.suffix.lower(), "application/octet-stream")
        return (
            (
                f"--{self.boundary}\r\n"
                'Content-Disposition: form-data; name="metadata"\r\n'
                "Content-Type: application/json\r\n\r\n"
            ).encode()
            + self.metadata
            + (
                f"\r\n--{self.boundary}\r\n"
                f'Content-Disposition: form-data; name="file"; '
                f'filename="{_form_quote(self.path.name)}"\r\n'
                f"Content-Type: {media}\r\n\r\n"
            ).encode()
        )

    @property
    def tail(self) -> bytes:
        return f"\r\n--{self.boundary}--\r\n".encode()

    @property
    def length(self) -> int:
        return len(self.head) + self.size + len(self.tail)

    async def stream(self) -> AsyncIterator[bytes]:
        """The body, reading the file off the event loop; fails if the file changed size."""
        yield self.head
        handle = await asyncio.to_thread(_open_binary, self.path)
        try:
            left = self.size
            while left > 0:
                chunk = await asyncio.to_thread(handle.read, min(_CHUNK, left))
                if not chunk:
                    raise OSError(f"{self.path} shrank while it was being sent")
                left -= len(chunk)
                yield chunk
        finally:
            handle.close()
        yield self.tail


def _excerpt(response: httpx.Response) -> str:
    text = " ".join(response.text.split())
    return text if len(text) <= _EXCERPT else text[: _EXCERPT - 3] + "..."


async def attempt_delivery(
    client: httpx.AsyncClient,
    receiver: ReceiverConfig,
    entry: OutboxEntry,
    *,
    timeout_s: float,
    now: datetime,
) -> AttemptResult:
    """Make one request for ``entry``; every failure becomes a result, none is raised.

    ``timeout_s`` bounds the whole request (connect, upload, answer), which httpx's own
    per-operation timeouts do not.
    """
    headers = {"Idempotency-Key": entry.id, "User-Agent": _user_agent()}
    if receiver.token_env is not None:
        token = os.environ.get(receiver.token_env)
        if not token:
            return AttemptResult(
                Verdict.RETRY,
                f"environment variable {receiver.token_env} (bearer token of receiver "
                f"{receiver.name}) is not set",
            )
        headers["Authorization"] = f"Bearer {token}"
    metadata = json.dumps(entry.payload, ensure_ascii=False).encode()
    content: bytes | AsyncIterator[bytes]
    if entry.file is None:
        content = metadata
        headers["Content-Type"] = "application/json"
    else:
        try:
            size = os.stat(entry.file).st_size
        except FileNotFoundError:
            return AttemptResult(Verdict.PERMANENT, f"attached file {entry.file} does not exist")
        except OSError as exc:
            return AttemptResult(Verdict.RETRY, f"cannot read attached file: {exc}")
        body = MultipartBody(metadata, entry.file, size)
        content = body.stream()
        headers["Content-Type"] = body.content_type
        headers["Content-Length"] = str(body.length)
    url = str(receiver.url)
    try:
        async with asyncio.timeout(timeout_s):
            response = await client.post(
                url, content=content, headers=headers, timeout=receiver.timeout_s
            )
    except TimeoutError:
        return AttemptResult(Verdict.RETRY, f"no answer from {url} within {timeout_s:g} s")
    except httpx.TimeoutException as exc:
        return AttemptResult(Verdict.RETRY, f"{url} timed out ({type(exc).__name__})")
    except httpx.TransportError as exc:
        return AttemptResult(Verdict.RETRY, f"cannot reach {url}: {exc or type(exc).__name__}")
    except OSError as exc:
        return AttemptResult(Verdict.RETRY, f"cannot read attached file: {exc}")
    retry_after = parse_retry_after(response.headers.get("Retry-After"), now)
    return classify_response(response.status_code, _excerpt(response), retry_after)


# -- enqueue and drain -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EntryError:
    """Why one entry was not delivered in this drain."""

    entry_id: str
    receiver: str
    outcome: str
    """``retry``, ``dead``, ``unknown-receiver``, ``corrupt`` or ``outbox``."""
    error: str


@dataclass
class DrainReport:
    """What one drain did.

    ``skipped_locked``: entries another drainer held, or had just finished.
    ``deferred``: due but not tried (their receiver just failed, or the deadline came).
    ``not_due``: waiting for their backoff. ``unknown_receiver``: their receiver is
    not in the configuration given (left alone: it may belong to another config).
    ``retry_at``: for each receiver that failed transiently, when to try it again.
    """

    delivered: int = 0
    retry_later: int = 0
    dead: int = 0
    skipped_locked: int = 0
    deferred: int = 0
    not_due: int = 0
    unknown_receiver: int = 0
    errors: list[EntryError] = field(default_factory=list)
    retry_at: dict[str, datetime] = field(default_factory=dict)

    @property
    def waiting(self) -> int:
        """Entries this drain left pending, for whatever reason."""
        return (
            self.retry_later
            + self.skipped_locked
            + self.deferred
            + self.not_due
            + self.unknown_receiver
        )


def _check_unique_names(receivers: Sequence[ReceiverConfig]) -> dict[str, ReceiverConfig]:
    by_name = {receiver.name: receiver for receiver in receivers}
    if len(by_name) != len(receivers):
        names = [receiver.name for receiver in receivers]
        repeated = sorted({name for name in names if names.count(name) > 1})
        raise ValueError(f"receiver names must be unique; repeated: {', '.join(repeated)}")
    return by_name


def enqueue_exposure(
    outbox_dir: Path,
    receivers: Sequence[ReceiverConfig],
    metadata: dict[str, Any],
    files: Sequence[Path],
    *,
    products: Sequence[Product] | None = None,
    now: datetime | None = None,
) -> list[OutboxEntry]:
    """Write the notifications of one exposure to the outbox, due at once.

    One entry per JSON receiver, one per file for each ``send_file`` receiver (one
    JSON-only entry if there are no files). ``products`` names each file's product
    (default: all raw); a receiver gets only the files of its ``products``, and the
    exposure's file list in its metadata is cut to those. File paths are stored
    absolute, so a drain from another working directory finds them. Raises ValueError
    for metadata that is not JSON data, FileNotFoundError for a file to attach that
    does not exist, and OSError when the outbox cannot be written; nothing is sent.
    """
    _check_unique_names(receivers)
    try:
        payload = to_jsonable_python(metadata)
    except PydanticSerializationError as exc:
        raise ValueError(f"notification metadata is not JSON data: {exc}") from exc
    attachments = [Path(file).resolve() for file in files]
    kinds = list(products) if products is not None else [Product.RAW] * len(attachments)
    if len(kinds) != len(attachments):
        raise ValueError(f"{len(kinds)} products named for {len(attachments)} files")
    if any(receiver.send_file for receiver in receivers):
        for path in attachments:
            if not path.is_file():
                raise FileNotFoundError(f"file to send does not exist: {path}")
    when = now or datetime.now(UTC)
    outbox = Outbox(outbox_dir)
    entries: list[OutboxEntry] = []
    for receiver in receivers:
        wanted = set(receiver.products)
        mine = [path for path, kind in zip(attachments, kinds, strict=True) if kind in wanted]
        targets: list[Path | None] = list(mine) if receiver.send_file and mine else [None]
        for target in targets:
            entry = OutboxEntry(
                id=new_entry_id(when),
                receiver=receiver.name,
                payload=_for_products(payload, wanted),
                file=target,
                created_at=when,
                next_attempt_at=when,
            )
            outbox.add(entry)
            entries.append(entry)
    return entries


def _for_products(payload: Any, wanted: set[Product]) -> Any:
    """The notification with the exposure's file list cut to ``wanted`` products."""
    exposure = payload.get("exposure") if isinstance(payload, dict) else None
    if not isinstance(exposure, dict) or not isinstance(exposure.get("files"), list):
        return payload
    kept = [
        record
        for record in exposure["files"]
        if not isinstance(record, dict) or record.get("product", Product.RAW.value) in wanted
    ]
    return {**payload, "exposure": {**exposure, "files": kept}}


@dataclass
class _Drain:
    """The shared state of one drain: outbox, client, clock, deadline, report."""

    outbox: Outbox
    client: httpx.AsyncClient
    clock: Callable[[], datetime]
    deadline: float | None
    report: DrainReport = field(default_factory=DrainReport)

    def remaining(self) -> float | None:
        if self.deadline is None:
            return None
        return self.deadline - asyncio.get_running_loop().time()

    def error(self, entry: OutboxEntry, outcome: str, message: str) -> None:
        self.report.errors.append(EntryError(entry.id, entry.receiver, outcome, message))

    async def receiver(self, receiver: ReceiverConfig, entries: list[OutboxEntry]) -> None:
        """Try one receiver's due entries in order; stop at its first transient failure."""
        report = self.report
        for index, listed in enumerate(entries):
            remaining = self.remaining()
            if remaining is not None and remaining <= 0:
                report.deferred += len(entries) - index
                return
            try:
                claim = self.outbox.claim(listed.id)
            except EntryLockedError:
                report.skipped_locked += 1
                continue
            except CorruptEntryError as exc:
                self.error(listed, "corrupt", str(exc))
                continue
            except OSError as exc:
                self.error(listed, "outbox", f"cannot claim: {exc}")
                continue
            if claim is None:
                report.skipped_locked += 1
                continue
            with claim:
                entry = claim.entry
                if entry.next_attempt_at > self.clock():
                    report.not_due += 1  # another drainer rescheduled it meanwhile
                    continue
                timeout = receiver.timeout_s if remaining is None else remaining
                result = await attempt_delivery(
                    self.client,
                    receiver,
                    entry,
                    timeout_s=min(receiver.timeout_s, timeout),
                    now=self.clock(),
                )
                state, updated = after_attempt(
                    entry, result, receiver, self.clock(), random.random()
                )
                try:
                    if state is EntryState.DELIVERED:
                        claim.deliver(updated)
                    elif state is EntryState.DEAD:
                        claim.kill(updated)
                    else:
                        claim.reschedule(updated)
                except OSError as exc:
                    self.error(entry, "outbox", f"cannot record the outcome ({state}): {exc}")
                    report.deferred += len(entries) - index - 1
                    return
            if state is EntryState.DELIVERED:
                report.delivered += 1
            elif state is EntryState.DEAD:
                report.dead += 1
                self.error(entry, "dead", updated.last_error or "")
            else:
                report.retry_later += 1
                report.retry_at[receiver.name] = updated.next_attempt_at
                self.error(entry, "retry", updated.last_error or "")
                report.deferred += len(entries) - index - 1
                return


async def drain(
    outbox_dir: Path,
    receivers: Sequence[ReceiverConfig],
    *,
    now: datetime | None = None,
    deadline_s: float | None = None,
) -> DrainReport:
    """Attempt every due pending entry once (receivers in parallel, each in order).

    ``now`` fixes the clock (tests; "treat everything as due"), ``deadline_s`` bounds the
    whole drain: entries not reached in time are deferred. Receiver trouble never
    raises; it is counted and listed in the report. Entries of receivers not in
    ``receivers`` are left alone.
    """
    by_name = _check_unique_names(receivers)
    outbox = Outbox(outbox_dir)

    def clock() -> datetime:
        return now if now is not None else datetime.now(UTC)

    loop = asyncio.get_running_loop()
    deadline = None if deadline_s is None else loop.time() + deadline_s
    report = DrainReport()
    queues: dict[str, list[OutboxEntry]] = {}
    entries, corrupt = await asyncio.to_thread(outbox.scan, EntryState.PENDING)
    for bad in corrupt:
        report.errors.append(EntryError(bad.path.stem, "?", "corrupt", str(bad)))
    start = clock()
    for entry in entries:
        if entry.receiver not in by_name:
            report.unknown_receiver += 1
            report.errors.append(
                EntryError(
                    entry.id,
                    entry.receiver,
                    "unknown-receiver",
                    f"receiver {entry.receiver} is not configured",
                )
            )
        elif entry.next_attempt_at > start:
            report.not_due += 1
        else:
            queues.setdefault(entry.receiver, []).append(entry)
    if queues:
        async with httpx.AsyncClient(follow_redirects=False) as client:
            state = _Drain(outbox, client, clock, deadline, report)
            results = await asyncio.gather(
                *(state.receiver(by_name[name], queue) for name, queue in queues.items()),
                return_exceptions=True,
            )
        for result in results:
            if isinstance(result, BaseException):
                raise result
    await asyncio.to_thread(outbox.prune_delivered)
    await asyncio.to_thread(outbox.sweep_tmp)
    return report


# -- the Prefect task --------------------------------------------------------------------


def _logger() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    """The run's logger, so warnings show in the run's log in the UI."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger(__name__)


@task(name="send", cache_policy=NO_CACHE, persist_result=False)
async def send(
    instrument: InstrumentConfig,
    metadata: dict[str, Any],
    files: list[Path],
    *,
    products: list[Product] | None = None,
    deadline_s: float = SEND_DEADLINE_S,
) -> DrainReport:
    """Queue this exposure's notifications, then deliver what is due within ``deadline_s``.

    A no-op without receivers. Queueing errors raise (the notification could not be
    recorded); delivery trouble only logs warnings, and the entries wait in
    ``<data_root>/outbox`` for a later drain.
    """
    if not instrument.receivers:
        return DrainReport()
    outbox_dir = instrument.storage.data_root / OUTBOX_FOLDER
    await asyncio.to_thread(
        partial(enqueue_exposure, products=products),
        outbox_dir,
        instrument.receivers,
        metadata,
        files,
    )
    logger = _logger()
    try:
        report = await drain(outbox_dir, instrument.receivers, deadline_s=deadline_s)
    except OSError as exc:
        logger.warning("outbox %s: drain failed, notifications stay queued: %s", outbox_dir, exc)
        return DrainReport(errors=[EntryError("", "", "outbox", str(exc))])
    for problem in report.errors:
        logger.warning(
            "receiver %s, notification %s: %s (%s)",
            problem.receiver,
            problem.entry_id,
            problem.error,
            problem.outcome,
        )
    if report.waiting:
        logger.warning(
            "%d notification(s) stay queued in %s for a later drain", report.waiting, outbox_dir
        )
    return report
