"""``ccdflow outbox``: see and deliver the notifications waiting for receivers.

``show`` lists pending, dead and recently delivered notifications; ``drain`` delivers
what is due now (or, with ``--until-empty``, keeps going as backoffs expire until
nothing is pending or the timeout passes); ``requeue`` gives dead notifications a new
round of attempts once the receiver is fixed. ``drain`` exits 1 while anything is
still pending or dead, so a cron job or an operator sees that the outbox is not clear.

Kept apart from ``flows/cli.py`` (which mounts it) and with imports inside the
commands, so ``--help`` is instant and Prefect (imported by tasks.send) is imported
only after ``configure_prefect`` has chosen its home.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from flows.cli_support import instrument_config, start_prefect

if TYPE_CHECKING:
    from rich.table import Table

    from schemas.instrument import InstrumentConfig, ReceiverConfig
    from tasks.durable.outbox import OutboxEntry
    from tasks.send import DrainReport

outbox_app = typer.Typer(
    name="outbox",
    help="Notifications to receivers: show what waits, deliver it, requeue the dead.",
    no_args_is_help=True,
    add_completion=False,
)

DEFAULT_INSTRUMENT = Path("deploy/instruments/sim.yaml")
OUTBOX_FOLDER = "outbox"
"""Same as tasks.send.OUTBOX_FOLDER, repeated so ``show`` does not import Prefect."""

InstrumentOption = Annotated[Path, typer.Option(help="instrument YAML (its receivers)")]
DataOption = Annotated[
    Path | None, typer.Option(help="data root instead of the instrument's (outbox: DATA/outbox)")
]


def _outbox_dir(config: InstrumentConfig) -> Path:
    return config.storage.data_root / OUTBOX_FOLDER


def _local(when: datetime | None) -> str:
    return when.astimezone().strftime("%Y-%m-%d %H:%M:%S") if when else ""


def _next_attempt(entry: OutboxEntry, now: datetime) -> str:
    return "due" if entry.next_attempt_at <= now else _local(entry.next_attempt_at)


def _entries_table(
    title: str, entries: list[OutboxEntry], configured: set[str], now: datetime, *, dead: bool
) -> Table:
    """Plain text cells (no rich markup), so error messages print as they are."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False, title_justify="left")
    table.add_column("id", no_wrap=True)
    table.add_column("receiver", no_wrap=True)
    table.add_column("file")
    table.add_column("attempts", justify="right")
    table.add_column("died" if dead else "next attempt", no_wrap=True)
    table.add_column("last error")
    for entry in entries:
        receiver = entry.receiver if entry.receiver in configured else f"{entry.receiver} (?)"
        table.add_row(
            Text(entry.id),
            Text(receiver),
            Text(entry.file.name if entry.file else ""),
            Text(str(entry.attempts)),
            Text(_local(entry.finished_at) if dead else _next_attempt(entry, now)),
            Text(entry.last_error or "", style="red" if dead else ""),
        )
    return table


def _delivered_table(entries: list[OutboxEntry]) -> Table:
    from rich import box
    from rich.table import Table
    from rich.text import Text

    table = Table(
        title="recently delivered (newest first)",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        title_justify="left",
    )
    for heading in ("id", "receiver", "file", "attempts", "delivered"):
        table.add_column(heading, no_wrap=heading != "file")
    for entry in entries:
        table.add_row(
            Text(entry.id),
            Text(entry.receiver),
            Text(entry.file.name if entry.file else ""),
            Text(str(entry.attempts)),
            Text(_local(entry.finished_at)),
        )
    return table


@outbox_app.command()
def show(
    instrument: InstrumentOption = DEFAULT_INSTRUMENT,
    data: DataOption = None,
    delivered: Annotated[int, typer.Option(min=0, help="how many recent deliveries to list")] = 10,
) -> None:
    """Counts, then the pending and dead notifications and the latest deliveries.

    A receiver marked ``(?)`` is not in this instrument's configuration: its
    notifications wait until a configuration naming it drains them.
    """
    config = instrument_config(instrument, data=data)
    from rich.console import Console

    from tasks.durable.outbox import CorruptEntryError, EntryState, Outbox

    outbox = Outbox(_outbox_dir(config))
    configured = {receiver.name for receiver in config.receivers}
    now = datetime.now(UTC)
    pending, bad_pending = outbox.scan(EntryState.PENDING)
    dead, bad_dead = outbox.scan(EntryState.DEAD)
    done = outbox.ids(EntryState.DELIVERED)
    console = Console()
    console.print(
        f"outbox {outbox.root}: {len(pending) + len(bad_pending)} pending, "
        f"{len(dead) + len(bad_dead)} dead, {len(done)} delivered (recent kept)",
        markup=False,
        highlight=False,
    )
    if pending:
        console.print(_entries_table("pending", pending, configured, now, dead=False))
    if dead:
        console.print(_entries_table("dead", dead, configured, now, dead=True))
    for bad in (*bad_pending, *bad_dead):
        console.print(f"unreadable: {bad}", markup=False, highlight=False, style="red")
    recent = []
    for entry_id in reversed(done[-delivered:] if delivered else []):
        try:
            recent.append(outbox.load(EntryState.DELIVERED, entry_id))
        except (FileNotFoundError, CorruptEntryError):
            continue  # pruned meanwhile, or unreadable: it was delivered either way
    if recent:
        console.print(_delivered_table(recent))


def _add(total: DrainReport, report: DrainReport) -> None:
    """Fold one pass into the running total: final outcomes add up, the rest is the last."""
    total.delivered += report.delivered
    total.dead += report.dead
    total.retry_later = report.retry_later
    total.skipped_locked = report.skipped_locked
    total.deferred = report.deferred
    total.not_due = report.not_due
    total.unknown_receiver = report.unknown_receiver
    total.errors.extend(report.errors)
    total.retry_at = report.retry_at


def _next_wake(
    outbox_dir: Path, receivers: list[ReceiverConfig], report: DrainReport
) -> datetime | None:
    """When the earliest pending entry of a configured receiver may be tried, or None.

    A receiver that just failed is not tried again before its ``retry_at``, even for
    entries that are due: they were only deferred because that receiver was down.
    """
    from tasks.durable.outbox import EntryState, Outbox

    names = {receiver.name for receiver in receivers}
    entries, _ = Outbox(outbox_dir).scan(EntryState.PENDING)
    wakes = [
        max(entry.next_attempt_at, report.retry_at.get(entry.receiver, entry.next_attempt_at))
        for entry in entries
        if entry.receiver in names
    ]
    return min(wakes, default=None)


async def _drain(
    outbox_dir: Path, receivers: list[ReceiverConfig], until_empty: bool, timeout_s: float
) -> DrainReport:
    from tasks.send import DrainReport, drain

    loop = asyncio.get_running_loop()
    end = loop.time() + timeout_s
    total = DrainReport()
    while True:
        report = await drain(outbox_dir, receivers, deadline_s=max(0.0, end - loop.time()))
        _add(total, report)
        if not until_empty:
            return total
        wake = _next_wake(outbox_dir, receivers, report)
        if wake is None:
            return total
        pause = max(0.05, (wake - datetime.now(UTC)).total_seconds())
        if loop.time() + pause >= end:
            return total
        await asyncio.sleep(pause)


@outbox_app.command("drain")
def drain_command(
    instrument: InstrumentOption = DEFAULT_INSTRUMENT,
    data: DataOption = None,
    until_empty: Annotated[
        bool, typer.Option("--until-empty", help="keep retrying as backoffs expire")
    ] = False,
    timeout: Annotated[
        float, typer.Option(min=0.1, help="seconds to spend in all, then stop")
    ] = 60.0,
) -> None:
    """Deliver the due notifications now; exit 1 if any stay pending or dead."""
    config = instrument_config(instrument, data=data)
    start_prefect()
    from tasks.durable.outbox import EntryState, Outbox

    outbox_dir = _outbox_dir(config)
    report = asyncio.run(_drain(outbox_dir, list(config.receivers), until_empty, timeout))
    for problem in report.errors:
        typer.secho(
            f"{problem.receiver} {problem.entry_id}: {problem.outcome}: {problem.error}",
            fg=typer.colors.RED if problem.outcome == "dead" else typer.colors.YELLOW,
            err=True,
        )
    outbox = Outbox(outbox_dir)
    pending = len(outbox.ids(EntryState.PENDING))
    dead = len(outbox.ids(EntryState.DEAD))
    typer.echo(
        f"delivered {report.delivered}, died {report.dead}; "
        f"outbox now holds {pending} pending, {dead} dead"
    )
    if pending or dead:
        raise typer.Exit(1)


@outbox_app.command()
def requeue(
    instrument: InstrumentOption = DEFAULT_INSTRUMENT,
    data: DataOption = None,
    receiver: Annotated[
        str | None, typer.Option(help="only this receiver's dead notifications")
    ] = None,
) -> None:
    """Give dead notifications a fresh round of attempts (after fixing the receiver)."""
    config = instrument_config(instrument, data=data)
    from tasks.durable.outbox import Outbox

    moved = Outbox(_outbox_dir(config)).requeue_dead(datetime.now(UTC), receiver=receiver)
    typer.echo(f"requeued {len(moved)} dead notification(s); run `ccdflow outbox drain`")
