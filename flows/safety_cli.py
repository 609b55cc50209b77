"""``ccdflow safe``: make the instrument safe now and print what each controller says.

The instrument file is read and checked first (a bad one exits 2, naming the field,
before Prefect starts); the controllers are then aborted and reset directly, and only
then is Prefect configured and the ``make-safe`` flow run, for the record. Exit 0 when
every controller is confirmed safe, 1 when one is not, so scripts and operators'
tooling can act on the code alone.

This module does not import ``flows.cli`` (which registers this command), so there
is no import cycle; the few option declarations it shares are repeated here.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from flows.cli_support import DEFAULT_INSTRUMENT, fail, instrument_config, start_prefect

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from schemas.instrument import InstrumentConfig
    from schemas.safety import ControllerSafety, SafetyReport


def safety_table(report: SafetyReport) -> Table:
    """One row per controller, narrow enough for an 80-column terminal.

    Plain text cells, so names with brackets print as they are. Buffers and errors are
    long, so :func:`print_report` prints them under the table, one line each.
    """
    from rich import box
    from rich.table import Table
    from rich.text import Text

    verdict = "SAFE" if report.safe else "NOT SAFE"
    table = Table(
        title=f"make-safe {report.instrument}: {verdict}",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )
    for heading in ("controller", "address", "safe", "actions", "power", "idle"):
        table.add_column(heading, no_wrap=True)
    table.add_column("s", justify="right", no_wrap=True)
    for item in report.controllers:
        power = item.power or "?"
        if item.power_good is False:
            power += " (not good)"
        table.add_row(
            Text(item.controller),
            Text(item.address),
            Text("yes" if item.safe else "NO", style="green" if item.safe else "bold red"),
            Text(", ".join(item.actions) or "none"),
            Text(power),
            Text({True: "yes", False: "no", None: "?"}[item.idle]),
            Text(f"{item.seconds:.3f}"),
        )
    return table


def print_report(report: SafetyReport, console: Console | None = None) -> None:
    """The table, then each controller's frame buffers, then its error in red."""
    from rich.console import Console
    from rich.text import Text

    from flows.safety import describe_buffers

    console = console or Console()
    console.print(safety_table(report))
    for item in report.controllers:
        if item.reached:
            console.print(Text(f"{item.controller} buffers: {describe_buffers(item.buffers)}"))
    for item in report.controllers:
        if item.error:
            console.print(Text(f"{item.controller}: {item.error}", style="red"))


def _act_now(config: InstrumentConfig, timeout_s: float) -> None:
    """Secure every camera (abort; an Archon is also reset) before Prefect is even imported.

    Importing Prefect and starting its embedded API takes 7 to 15 s; an operator who
    types this command wants the shutter closed now. The flow then does the same
    (idempotent) actions again, for the run history, the artifact and the report.
    """
    from schemas.errors import ConfigError
    from tasks.control.instrument import plan_instrument
    from tasks.control.safety import make_controller_safe

    try:
        plans = plan_instrument(config)
    except ConfigError as exc:
        fail(str(exc))

    async def every_controller() -> list[ControllerSafety]:
        return list(
            await asyncio.gather(*(make_controller_safe(p, timeout_s=timeout_s) for p in plans))
        )

    for item in asyncio.run(every_controller()):
        done = ", ".join(item.actions) or "nothing done"
        typer.echo(f"{item.controller}: {done} ({item.seconds:.3f} s)")
    typer.echo("recording it with Prefect ...")


def safe_command(
    instrument: Annotated[Path, typer.Option(help="instrument YAML")] = DEFAULT_INSTRUMENT,
    host: Annotated[str | None, typer.Option(help="override the controller host")] = None,
    port: Annotated[int | None, typer.Option(help="override the controller port")] = None,
    data: Annotated[Path | None, typer.Option(help="override the data root")] = None,
    timeout: Annotated[
        float, typer.Option(min=0.1, max=600, help="seconds each step on a controller may take")
    ] = 5.0,
) -> None:
    """Make the instrument safe: end any exposure, shutter closed, every camera idle.

    Works while another run holds the instrument (it takes no lock). The cameras are
    secured at once (an Archon aborted and reset, an Alpaca camera aborted), then the
    make-safe flow runs and reports. Exit 0 if every camera is confirmed safe, 1 if
    not, 2 for a bad instrument file.
    """
    config = instrument_config(instrument, host, port, data)
    _act_now(config, timeout)
    start_prefect()
    from flows.safety import make_safe
    from schemas.errors import ConfigError
    from tasks.control.safety import InstrumentNotSafeError

    try:
        report = asyncio.run(make_safe(config, timeout_s=timeout))
    except ConfigError as exc:  # an ACF the controllers cannot be planned from
        fail(str(exc))
    except InstrumentNotSafeError as exc:
        print_report(exc.report)
        fail(str(exc), code=1)
    print_report(report)
