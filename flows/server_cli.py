"""``ccdflow server``: the operator's console on this machine, until Ctrl-C or SIGTERM.

Starts PostgreSQL (a cluster under ``state/server/postgres``, created the first
time), the Prefect server on it, the work pool and every deployment of
deploy/prefect.yaml, and a process worker; prints the UI's address; and stops all of
it, in order, on Ctrl-C or SIGTERM. Everything listens on 127.0.0.1 unless ``--host``
says otherwise.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Annotated

import typer

from flows.cli_support import fail
from flows.reaper import start_reaper

POLL_S = 0.5


class _StopRequestedError(Exception):
    """Raised by the signal handler: ends a start in progress or the wait."""


def _on_signal(signum: int, _frame: object) -> None:
    raise _StopRequestedError(signal.Signals(signum).name)


def server_command(
    port: Annotated[int, typer.Option(help="Prefect server (API and UI) port.")] = 4200,
    db_port: Annotated[int, typer.Option(help="PostgreSQL port (127.0.0.1 only).")] = 5433,
    host: Annotated[
        str,
        typer.Option(
            help="Address the Prefect server binds. Anything but 127.0.0.1 exposes the "
            "API to the network: set PREFECT_SERVER_API_AUTH_STRING first."
        ),
    ] = "127.0.0.1",
    state: Annotated[Path, typer.Option(help="State folder (the cluster lives here).")] = Path(
        "state"
    ),
    deploy: Annotated[bool, typer.Option(help="Deploy deploy/prefect.yaml at start.")] = True,
    worker: Annotated[bool, typer.Option(help="Start a process worker.")] = True,
) -> None:
    """Run PostgreSQL, the Prefect server, the deployments and a worker until stopped."""
    import os

    from flows.console_stack import ConsoleError, ConsoleSettings, ConsoleStack
    from flows.postgres import PostgresError

    if host != "127.0.0.1" and not os.environ.get("PREFECT_SERVER_API_AUTH_STRING"):
        fail(
            f"--host {host} would open the API to the network without authentication: "
            "set PREFECT_SERVER_API_AUTH_STRING (clients then set PREFECT_API_AUTH_STRING)"
        )
    start_reaper()  # a kill -9 of this command stops everything it started
    settings = ConsoleSettings(
        state=state, host=host, port=port, db_port=db_port, deploy=deploy, worker=worker
    )
    stack = ConsoleStack(settings, say=typer.echo)
    stop_signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.signal(sig, _on_signal) for sig in stop_signals}
    code = 0
    try:
        stack.start()
        typer.secho(
            f"ccdflow server ready in {stack.timings['ready_s']:.1f} s: UI {settings.ui_url} "
            f"(API {settings.api_url}); logs in {stack.logs}. Ctrl-C stops it.",
            fg=typer.colors.GREEN,
        )
        while (problem := stack.exited()) is None:
            time.sleep(POLL_S)
        typer.secho(problem, fg=typer.colors.RED, err=True)
        code = 1
    except _StopRequestedError as stop:
        typer.echo(f"{stop}: stopping the worker, the server and PostgreSQL")
    except (ConsoleError, PostgresError) as exc:
        typer.secho(str(exc), fg=typer.colors.RED, err=True)
        code = 1
    finally:
        for sig in previous:
            signal.signal(sig, signal.SIG_IGN)
        began = time.monotonic()
        stack.stop()
        typer.echo(f"stopped in {time.monotonic() - began:.1f} s")
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if code:
        raise typer.Exit(code)
