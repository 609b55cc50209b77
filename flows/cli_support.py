"""What every ``ccdflow`` command shares: exiting with a message, starting Prefect's
settings (exit 1 when the server does not answer), and loading the instrument file
with the command line's overrides (exit 2 naming the field)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import typer

from flows.settings import PrefectApiUnreachableError, configure_prefect

if TYPE_CHECKING:
    from schemas.instrument import InstrumentConfig

DEFAULT_INSTRUMENT = Path("deploy/instruments/sim.yaml")


def fail(message: str, code: int = 2) -> NoReturn:
    """Print ``message`` in red on stderr and exit with ``code`` (2: bad input)."""
    typer.secho(message, fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def start_prefect() -> Path:
    """:func:`configure_prefect` for a command: a server named by PREFECT_API_URL that
    does not answer is a clear message and exit 1, never a hang or a traceback."""
    try:
        return configure_prefect()
    except PrefectApiUnreachableError as exc:
        fail(str(exc), code=1)


def instrument_config(
    path: Path,
    host: str | None = None,
    port: int | None = None,
    data: Path | None = None,
) -> InstrumentConfig:
    """The instrument file with the command line's overrides, or exit 2 saying why.

    Imports stay inside, so ``--help`` never loads pydantic models or Prefect.
    """
    from pydantic import ValidationError

    from schemas.errors import ConfigError
    from schemas.instrument import load_instrument

    try:
        return load_instrument(path).with_overrides(host=host, port=port, data_root=data)
    except ValidationError as exc:
        fail(str(ConfigError.from_validation("command-line overrides", exc)))
    except ConfigError as exc:
        fail(str(exc))
