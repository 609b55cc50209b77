"""The ``ccdflow`` command: run the demo, the simulator, or exposures.

Heavy imports (Prefect, numpy) happen inside the commands, after the Prefect
environment is configured, so ``ccdflow --help`` is instant and Prefect never starts
with the wrong home.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from flows.settings import configure_prefect

app = typer.Typer(
    name="ccdflow",
    help="CCD acquisition sequences as Prefect flows.",
    no_args_is_help=True,
    add_completion=False,
)

DEFAULT_INSTRUMENT = Path("deploy/instruments/sim.yaml")


class CliImageType(StrEnum):
    bias = "bias"
    dark = "dark"
    flat = "flat"
    object = "object"
    arc = "arc"
    test = "test"


def _fail(message: str, code: int = 2) -> None:
    typer.secho(message, fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


@app.command()
def demo(
    data: Annotated[Path, typer.Option(help="where FITS files go")] = Path("data"),
    instrument: Annotated[Path, typer.Option(help="instrument YAML")] = DEFAULT_INSTRUMENT,
) -> None:
    """Start the simulator, take 2 bias, 1 dark, 1 flat, 1 object, print a summary."""
    home = configure_prefect()
    from flows.demo import run_demo

    code = asyncio.run(run_demo(instrument_path=instrument, data_root=data, prefect_home=home))
    raise typer.Exit(code)


@app.command()
def sim(
    port: Annotated[int, typer.Option(help="TCP port on 127.0.0.1 (0 = any free port)")] = 4242,
    acf: Annotated[Path, typer.Option(help="ACF the simulator loads")] = Path(
        "deploy/instruments/sim.acf"
    ),
    seed: Annotated[int, typer.Option(help="seed of the synthetic pixels")] = 0,
) -> None:
    """Run the Archon simulator in the foreground until Ctrl-C (or SIGTERM)."""
    from devices.archon.simulator import run_simulator

    if not acf.is_file():
        _fail(f"ACF not found: {acf}")

    async def serve_until_signal() -> None:
        # Explicit handlers: a process started in the background may inherit an
        # ignored SIGINT, and a supervisor stops it with SIGTERM.
        server = asyncio.create_task(run_simulator(acf, host="127.0.0.1", port=port, seed=seed))
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, server.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await server

    asyncio.run(serve_until_signal())
    typer.echo("simulator stopped")


@app.command()
def expose(
    image_type: Annotated[CliImageType, typer.Option("--type", help="kind of exposure")],
    count: Annotated[int, typer.Option(help="number of frames")] = 1,
    exptime: Annotated[float, typer.Option(help="seconds (ignored for bias)")] = 0.0,
    object_name: Annotated[str | None, typer.Option("--object", help="OBJECT card")] = None,
    instrument: Annotated[Path, typer.Option(help="instrument YAML")] = DEFAULT_INSTRUMENT,
    host: Annotated[str | None, typer.Option(help="override the controller host")] = None,
    port: Annotated[int | None, typer.Option(help="override the controller port")] = None,
    data: Annotated[Path | None, typer.Option(help="override the data root")] = None,
) -> None:
    """Take COUNT frames of one kind on the instrument (e.g. a running `ccdflow sim`)."""
    from pydantic import ValidationError

    from schemas.errors import ConfigError
    from schemas.exposure import ExposureSpec, SequenceSpec
    from schemas.instrument import load_instrument

    try:
        spec = ExposureSpec(
            image_type=image_type.value, exptime=exptime, count=count, object_name=object_name
        )
    except ValidationError as exc:
        _fail(str(ConfigError.from_validation("exposure spec", exc)))
        return
    try:
        config = load_instrument(instrument).with_overrides(host=host, port=port, data_root=data)
    except ValidationError as exc:
        _fail(str(ConfigError.from_validation("command-line overrides", exc)))
        return
    except ConfigError as exc:
        _fail(str(exc))
        return
    configure_prefect()
    from flows.exposure import run_sequence
    from flows.summary import print_sequence_summary

    result = asyncio.run(
        run_sequence(SequenceSpec(name=f"expose-{image_type.value}", exposures=[spec]), config)
    )
    print_sequence_summary(result)


if __name__ == "__main__":
    app()
