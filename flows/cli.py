"""The ``ccdflow`` command: run the demo, the simulator, exposures, or a spec file.

Heavy imports (Prefect, numpy) happen inside the commands, after the Prefect
environment is configured, so ``ccdflow --help`` is instant and Prefect never starts
with the wrong home.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
from collections.abc import Callable, Coroutine
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from flows.cli_support import DEFAULT_INSTRUMENT, fail, instrument_config, start_prefect
from flows.history_cli import history_command
from flows.outbox_cli import outbox_app
from flows.safety_cli import safe_command
from flows.server_cli import server_command

if TYPE_CHECKING:
    from schemas.fits_rules import CardValue
    from schemas.instrument import InstrumentConfig
    from schemas.results import SequenceResult

T = TypeVar("T")

app = typer.Typer(
    name="ccdflow",
    help="CCD acquisition sequences as Prefect flows.",
    no_args_is_help=True,
    add_completion=False,
)

DEMO_INSTRUMENT = Path("deploy/instruments/sim-dual.yaml")


class CliImageType(StrEnum):
    bias = "bias"
    dark = "dark"
    flat = "flat"
    object = "object"
    arc = "arc"
    test = "test"


class CliStackMethod(StrEnum):
    """StackMethod's values, repeated so ``--help`` does not import the schemas."""

    median = "median"
    mean = "mean"
    sum = "sum"


@app.command()
def demo(
    data: Annotated[Path, typer.Option(help="where FITS files go")] = Path("data"),
    instrument: Annotated[Path, typer.Option(help="instrument YAML")] = DEMO_INSTRUMENT,
) -> None:
    """Simulate the instrument's controllers, take 2 bias, 1 dark, 1 flat, 1 object."""
    home = start_prefect()
    from flows.demo import run_demo

    code = asyncio.run(run_demo(instrument_path=instrument, data_root=data, prefect_home=home))
    raise typer.Exit(code)


@app.command()
def sim(
    port: Annotated[
        int,
        typer.Option(help="TCP port on 127.0.0.1 of the first controller (0 = any free ports)"),
    ] = 4242,
    acf: Annotated[
        list[Path] | None,
        typer.Option(help="ACF of a controller; repeat for several behind one shutter"),
    ] = None,
    seed: Annotated[int, typer.Option(help="seed of the synthetic pixels")] = 0,
    pixel_rate: Annotated[
        float, typer.Option(help="pixels per second per amplifier (sets the readout time)")
    ] = 2e6,
    observatory: Annotated[
        bool,
        typer.Option(
            "--observatory",
            help="also the ASCOM Alpaca simulators: telescope, dome, filter wheel, focuser, "
            "weather ... (deploy/instruments/sim-observatory.yaml)",
        ),
    ] = False,
    alpaca_port: Annotated[
        int, typer.Option(help="port of the Alpaca simulators (ASCOM's default: 11111)")
    ] = 11111,
    stars: Annotated[
        int, typer.Option(help="Gaussian stars per amplifier in light frames (guide cameras)")
    ] = 0,
    star_jitter: Annotated[
        float, typer.Option(help="RMS shift of the stars from frame to frame, in pixels")
    ] = 0.0,
    reuse_frames: Annotated[
        bool,
        typer.Option(
            "--reuse-frames",
            help="render each kind of frame once, then serve it shifted (benchmarks: "
            "the host's CPU stays with the pipeline)",
        ),
    ] = False,
) -> None:
    """Run simulated Archon controllers in the foreground until Ctrl-C (or SIGTERM).

    Several --acf options start several controllers on consecutive ports (or free ones
    with --port 0), their CCDs behind one shared shutter; each prints its own
    "listening" line, in order. --observatory starts the third-party Alpaca
    simulators beside them, offline, on 127.0.0.1.
    """
    from devices.archon.simulator import run_simulators

    acfs = acf or [Path("deploy/instruments/sim.acf")]
    for path in acfs:
        if not path.is_file():
            fail(f"ACF not found: {path}")
    if not pixel_rate > 0:
        fail(f"--pixel-rate must be > 0, not {pixel_rate}")
    if stars < 0 or not star_jitter >= 0:
        fail(f"--stars and --star-jitter must be >= 0, not {stars} and {star_jitter}")
    ports = [0] * len(acfs) if port == 0 else [port + i for i in range(len(acfs))]
    from devices.archon.sensor import SensorModel

    # Each controller's stars differ (its seed is --seed + its place in the list).
    sensor = SensorModel(stars=stars, star_jitter=star_jitter)

    async def serve_until_signal() -> None:
        # Explicit handlers: a process started in the background may inherit an
        # ignored SIGINT, and a supervisor stops it with SIGTERM.
        server = asyncio.create_task(
            run_simulators(
                acfs,
                host="127.0.0.1",
                ports=ports,
                seed=seed,
                pixel_rate_hz=pixel_rate,
                shared_shutter=True,
                sensor=sensor,
                reuse_frames=reuse_frames,
            )
        )
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, server.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await server

    if not observatory:
        asyncio.run(serve_until_signal())
        typer.echo("simulator stopped")
        return
    from flows.observatory_sim import alpaca_simulators

    with contextlib.ExitStack() as stack:
        try:
            alpaca = stack.enter_context(alpaca_simulators(alpaca_port))
        except RuntimeError as exc:  # its port is taken, or it did not start
            fail(f"the Alpaca simulators did not start on port {alpaca_port}: {exc}", code=1)
        typer.echo(f"Alpaca simulators listening on {alpaca.base_url}")
        asyncio.run(serve_until_signal())
    typer.echo("simulators stopped")


InstrumentOption = Annotated[Path, typer.Option(help="instrument YAML")]
HostOption = Annotated[str | None, typer.Option(help="override the controller host")]
PortOption = Annotated[int | None, typer.Option(help="override the controller port")]
DataOption = Annotated[Path | None, typer.Option(help="override the data root")]


def _run_flow(flow_call: Coroutine[Any, Any, SequenceResult]) -> None:
    """Run a flow and print its summary; a spec the controllers refuse exits 2.

    The flow checks each spec against the controllers' geometry and timing script
    once connected (windows, readout delay, shutter): that is still bad input, not
    a failure of the run, so it gets the same exit code as the checks made here.
    """
    from flows.summary import print_sequence_summary
    from schemas.errors import ConfigError

    try:
        result = asyncio.run(flow_call)
    except ConfigError as exc:
        fail(str(exc))
    print_sequence_summary(result)


_BINNING = re.compile(r"\s*(\d+)\s*[xX]\s*(\d+)\s*")
_INTEGER = re.compile(r"[+-]?\d+")
_REAL = re.compile(r"[+-]?(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?")


def parse_binning(text: str) -> dict[str, int] | None:
    """``2x2`` -> ``{"x": 2, "y": 2}``; None if ``text`` is not of that form.

    Only the form is checked here; the limits (1 to 16) are the model's to report.
    """
    match = _BINNING.fullmatch(text)
    return {"x": int(match[1]), "y": int(match[2])} if match else None


def parse_card_value(text: str) -> CardValue:
    """A header value as typed: an integer, else a real, else true/false, else text.

    Numbers are recognised by their written form, not by ``int()``/``float()``, which
    also accept ``1_000``, ``nan`` and ``inf``: those stay text, as typed, instead of
    becoming values FITS cannot store or the operator did not mean.
    """
    if _INTEGER.fullmatch(text):
        return int(text)
    if _REAL.fullmatch(text):
        return float(text)
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    return text


def _header_cards(pairs: list[str], problems: list[str]) -> dict[str, CardValue]:
    """``KEY=VALUE`` options as header cards; malformed or repeated ones go to problems.

    A repeated key is refused rather than the last one winning, since a dict would
    otherwise drop the first value without a word.
    """
    cards: dict[str, CardValue] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            problems.append(f"header: {pair!r} is not KEY=VALUE (--header)")
        elif key in cards:
            problems.append(f"header.{key}: given twice (--header)")
        else:
            cards[key] = parse_card_value(value)
    return cards


@app.command()
def expose(
    image_type: Annotated[CliImageType, typer.Option("--type", help="kind of exposure")],
    count: Annotated[int, typer.Option(help="number of frames")] = 1,
    exptime: Annotated[float, typer.Option(help="seconds (ignored for bias)")] = 0.0,
    object_name: Annotated[str | None, typer.Option("--object", help="OBJECT card")] = None,
    filter_name: Annotated[
        str | None, typer.Option("--filter", metavar="NAME", help="one of the instrument's")
    ] = None,
    binning: Annotated[
        str | None, typer.Option("--bin", metavar="XxY", help="on-chip binning, e.g. 2x2")
    ] = None,
    stack: Annotated[
        int | None, typer.Option(metavar="N", help="combine N readouts into each frame")
    ] = None,
    stack_method: Annotated[
        CliStackMethod | None, typer.Option(help="how stacked readouts combine (default: median)")
    ] = None,
    header: Annotated[
        list[str] | None,
        typer.Option(
            metavar="KEY=VALUE",
            help="extra FITS card (repeatable); VALUE is read as int, float, true/false or text",
        ),
    ] = None,
    instrument: InstrumentOption = DEFAULT_INSTRUMENT,
    host: HostOption = None,
    port: PortOption = None,
    data: DataOption = None,
) -> None:
    """Take COUNT frames of one kind on the instrument (e.g. a running `ccdflow sim`)."""
    from pydantic import ValidationError

    from flows.spec_files import check_filters
    from schemas.errors import ConfigError
    from schemas.exposure import ExposureSpec, SequenceSpec

    # Option-syntax problems and the model's are reported together, every one at once.
    problems: list[str] = []
    fields: dict[str, Any] = {
        "image_type": image_type.value,
        "exptime": exptime,
        "count": count,
        "object_name": object_name,
        "filter": filter_name,
        "header": _header_cards(header or [], problems),
    }
    if binning is not None:
        parsed = parse_binning(binning)
        if parsed is None:
            problems.append(f"binning: {binning!r} is not XxY, e.g. 2x2 (--bin)")
        else:
            fields["binning"] = parsed
    if stack is not None:
        fields["stacking"] = {"frames": stack}
        if stack_method is not None:
            fields["stacking"]["method"] = stack_method.value
    elif stack_method is not None:
        problems.append("stacking: --stack-method needs --stack N, the readouts to combine")
    try:
        spec = ExposureSpec.model_validate(fields)
    except ValidationError as exc:
        problems += ConfigError.from_validation("exposure spec", exc).problems
    if problems:
        fail(str(ConfigError("exposure spec", problems)))
    config = instrument_config(instrument, host, port, data)
    try:
        check_filters(spec, config, f"exposure spec for {config.name}")
    except ConfigError as exc:
        fail(str(exc))
    start_prefect()
    from flows.exposure import run_sequence

    _run_flow(
        run_sequence(SequenceSpec(name=f"expose-{image_type.value}", exposures=[spec]), config)
    )


@app.command()
def run(
    file: Annotated[
        Path,
        typer.Argument(
            metavar="FILE",
            help="a sequence (has exposures) or calibration set (biases, darks, flats, arcs), "
            "YAML or JSON",
            show_default=False,
        ),
    ],
    instrument: InstrumentOption = DEFAULT_INSTRUMENT,
    host: HostOption = None,
    port: PortOption = None,
    data: DataOption = None,
) -> None:
    """Run the sequence or calibration set in FILE (see deploy/examples/)."""
    from flows.spec_files import load_spec_file
    from schemas.exposure import CalibrationSpec

    spec, config = _checked_file(file, load_spec_file, instrument, host, port, data)
    from flows.exposure import calibrations, run_sequence

    if isinstance(spec, CalibrationSpec):
        _run_flow(calibrations(spec, config))
    else:
        _run_flow(run_sequence(spec, config))


def _checked_file(
    file: Path,
    load: Callable[[Path], T],
    instrument: Path,
    host: str | None,
    port: int | None,
    data: Path | None,
) -> tuple[T, InstrumentConfig]:
    """Load a spec file and the instrument, check the filters, then start Prefect.

    Every refusal exits 2 naming the field, before Prefect is imported.
    """
    from flows.spec_files import check_filters
    from schemas.errors import ConfigError
    from schemas.exposure import NightPlan, SequenceSpec
    from schemas.observation import ObservationSpec
    from schemas.twilight import TwilightFlatSpec

    try:
        spec = load(file)
    except ConfigError as exc:
        fail(str(exc))
    config = instrument_config(instrument, host, port, data)
    steps: list[Any] = list(spec.steps) if isinstance(spec, NightPlan) else [spec]
    if isinstance(spec, ObservationSpec | TwilightFlatSpec):
        steps = [SequenceSpec(name=spec.name, exposures=spec.expand())]
    try:
        for step in steps:
            where = f", step {step.name}" if isinstance(spec, NightPlan) else ""
            check_filters(step, config, f"spec file {file}{where} for {config.name}")
    except ConfigError as exc:
        fail(str(exc))
    start_prefect()
    return spec, config


@app.command()
def observe(
    file: Annotated[Path, typer.Argument(metavar="FILE", help="an observation, YAML or JSON")],
    instrument: InstrumentOption = DEFAULT_INSTRUMENT,
    host: HostOption = None,
    port: PortOption = None,
    data: DataOption = None,
) -> None:
    """Observe a target: point, follow with the dome, set filter and focus, expose."""
    from datetime import UTC, datetime

    from flows.spec_files import load_observation
    from schemas.errors import ConfigError

    spec, config = _checked_file(file, load_observation, instrument, host, port, data)
    from flows.observe import check_observation, observe
    from flows.summary import print_sequence_summary

    try:
        check_observation(spec, config, datetime.now(UTC))
        result = asyncio.run(observe(spec, config))
    except ConfigError as exc:
        fail(str(exc))
    print_sequence_summary(result)


@app.command()
def flats(
    file: Annotated[Path, typer.Argument(metavar="FILE", help="twilight flats, YAML or JSON")],
    instrument: InstrumentOption = DEFAULT_INSTRUMENT,
    host: HostOption = None,
    port: PortOption = None,
    data: DataOption = None,
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="wait for the twilight, or say when it is")
    ] = True,
) -> None:
    """Twilight sky flats: wait for the twilight, keep each frame on its level, build
    a master flat per filter."""
    from flows.spec_files import load_twilight_flats
    from schemas.errors import ConfigError

    spec, config = _checked_file(file, load_twilight_flats, instrument, host, port, data)
    from flows.summary import print_sequence_summary
    from flows.twilight import check_twilight, twilight_flats

    try:
        check_twilight(spec, config)
        result = asyncio.run(twilight_flats(spec, config, wait_for_twilight=wait))
    except ConfigError as exc:
        fail(str(exc))
    print_sequence_summary(result)


@app.command()
def guide(
    file: Annotated[Path, typer.Argument(metavar="FILE", help="a guide exposure, YAML or JSON")],
    instrument: InstrumentOption = DEFAULT_INSTRUMENT,
    host: HostOption = None,
    port: PortOption = None,
    data: DataOption = None,
) -> None:
    """Guide and focus: many frames on the guide cameras at a fixed cadence, stamps of
    the brightest (or given) stars archived per frame, a FITS guide file at the end."""
    from flows.spec_files import load_guide_spec
    from schemas.errors import ConfigError
    from tasks.control.instrument import plan_instrument
    from tasks.guide.plan import plan_guide

    config = instrument_config(instrument, host, port, data)
    try:
        spec = load_guide_spec(file)
        plan_guide(spec, config, plan_instrument(config))  # refused before Prefect starts
    except ConfigError as exc:
        fail(str(exc))
    start_prefect()
    from flows.guide import guide as guide_flow
    from flows.guide_summary import print_guide_summary

    try:
        result = asyncio.run(guide_flow(spec, config))
    except ConfigError as exc:
        fail(str(exc))
    print_guide_summary(result)


@app.command()
def night(
    file: Annotated[Path, typer.Argument(metavar="FILE", help="a night plan, YAML or JSON")],
    instrument: InstrumentOption = DEFAULT_INSTRUMENT,
    host: HostOption = None,
    port: PortOption = None,
    data: DataOption = None,
) -> None:
    """Run a night plan: its steps (sequences, calibration sets) in order."""
    from flows.spec_files import load_night_plan

    plan, config = _checked_file(file, load_night_plan, instrument, host, port, data)
    from flows.exposure import observe_night
    from flows.summary import print_sequence_summary
    from schemas.errors import ConfigError

    try:
        results = asyncio.run(observe_night(plan, config))
    except ConfigError as exc:
        fail(str(exc))
    for result in results:
        print_sequence_summary(result)


@app.command()
def recover(
    instrument: InstrumentOption = DEFAULT_INSTRUMENT,
    host: HostOption = None,
    port: PortOption = None,
    data: DataOption = None,
) -> None:
    """Write frames an interrupted run left in the controllers' buffers.

    Runs do this themselves when they start; this is for getting the frames now.
    """
    config = instrument_config(instrument, host, port, data)
    start_prefect()
    from flows.recovery import recover as recover_flow

    results = asyncio.run(recover_flow(config))
    if not results:
        typer.echo("nothing to recover")
    for result in results:
        names = ", ".join(str(record.path) for record in result.files)
        typer.echo(f"exposure {result.expnum} recovered: {names}")


# Commands defined in their own modules.
app.command("history")(history_command)
app.add_typer(outbox_app, name="outbox")
app.command("safe")(safe_command)
app.command("server")(server_command)


if __name__ == "__main__":
    app()
