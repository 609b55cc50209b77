"""``ccdflow demo``: a real short sequence on the simulated instrument.

One simulator process serving every controller of the instrument config (each on a
free 127.0.0.1 port, found by the simulator itself and read from its output lines,
all CCDs behind one shared shutter),
then the run-sequence flow on embedded Prefect, a checksum check of every file, a
summary table, and the simulators stopped whatever happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shlex
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

from rich.console import Console

from flows.exposure import run_sequence
from flows.summary import print_sequence_summary
from schemas.errors import ConfigError
from schemas.exposure import ExposureSpec, ImageType, SequenceSpec
from schemas.instrument import InstrumentConfig, load_instrument
from tasks.files.verify import verify_fits_checksums

LISTENING = re.compile(rb"listening on 127\.0\.0\.1:(\d+)")
SIM_START_TIMEOUT = 60.0

DEMO_SEQUENCE = SequenceSpec(
    name="demo",
    exposures=[
        ExposureSpec(image_type=ImageType.BIAS, count=2),
        ExposureSpec(image_type=ImageType.DARK, exptime=1.0),
        ExposureSpec(image_type=ImageType.FLAT, exptime=0.5),
        ExposureSpec(image_type=ImageType.OBJECT, exptime=2.0, object_name="demo field"),
    ],
)


async def _start_simulators(
    acfs: list[Path],
    pixel_rate: float | None,
    stars: int = 0,
    star_jitter: float = 0.0,
    reuse_frames: bool = False,
) -> tuple[asyncio.subprocess.Process, list[int]]:
    """One simulator process for all controllers (they share one shutter); ``stars``
    per amplifier in light frames (guide cameras), moved by ``star_jitter`` px rms."""
    rate = [] if pixel_rate is None else ["--pixel-rate", repr(pixel_rate)]
    if stars:
        rate += ["--stars", str(stars), "--star-jitter", repr(star_jitter)]
    if reuse_frames:
        rate.append("--reuse-frames")
    acf_options = [option for acf in acfs for option in ("--acf", str(acf))]
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "flows.cli",
        "sim",
        "--port",
        "0",
        *acf_options,
        *rate,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert process.stdout is not None
    seen = b""
    ports: list[int] = []
    try:
        async with asyncio.timeout(SIM_START_TIMEOUT):
            while len(ports) < len(acfs):
                line = await process.stdout.readline()
                if not line:
                    raise RuntimeError(f"simulator exited before listening: {seen.decode()}")
                seen += line
                match = LISTENING.search(line)
                if match:
                    ports.append(int(match.group(1)))
        return process, ports
    except BaseException:
        await _stop(process)
        raise


async def _stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            process.kill()
            await process.wait()


@contextlib.asynccontextmanager
async def simulated_instrument(
    config: InstrumentConfig,
    *,
    pixel_rate: float | None = None,
    stars: int = 0,
    star_jitter: float = 0.0,
    reuse_frames: bool = False,
) -> AsyncIterator[InstrumentConfig]:
    """Simulate every controller of ``config``; yield the config pointed at them.

    ``reuse_frames``: the simulator renders each kind of frame once (benchmarks of
    large instruments; devices/archon/simulator/reused_frames.py)."""
    data = config.model_dump()
    acfs = [Path(controller["acf"]) for controller in data["controllers"]]
    process, ports = await _start_simulators(acfs, pixel_rate, stars, star_jitter, reuse_frames)
    try:
        for controller, port in zip(data["controllers"], ports, strict=True):
            controller["host"], controller["port"] = "127.0.0.1", port
        yield InstrumentConfig.model_validate(data)
    finally:
        await _stop(process)


def _command(name: str) -> str:
    """How to call one of this environment's commands from here: its path in the
    environment's bin folder (uv may not be on the user's PATH), else the bare name."""
    path = Path(sys.executable).parent / name
    if not path.exists():
        return name
    try:
        return shlex.quote(os.path.relpath(path))
    except ValueError:
        return shlex.quote(str(path))


async def run_demo(instrument_path: Path, data_root: Path, prefect_home: Path) -> int:
    """Run the demo; return the process exit code."""
    console = Console()
    try:
        config = load_instrument(instrument_path).with_overrides(data_root=data_root)
    except ConfigError as exc:
        console.print(f"[red]{exc}[/red]")
        return 2
    async with simulated_instrument(config) as live:
        ports = ", ".join(f"{c.name} on 127.0.0.1:{c.port}" for c in live.controllers)
        console.print(f"simulated Archon controllers: {ports}")
        result = await run_sequence(DEMO_SEQUENCE, live)
    files = [record.path for exposure in result.exposures for record in exposure.files]
    for path in files:
        verify_fits_checksums(path)
    print_sequence_summary(result, console)
    console.print(f"CHECKSUM/DATASUM verified with astropy for all {len(files)} files.")
    console.print(
        f"Run history: flow run {result.flow_run_id} in the Prefect database under "
        f"{prefect_home}.\n  List it: {_command('ccdflow')} history\n"
        f"  Browse it: PREFECT_HOME={prefect_home} {_command('prefect')} server "
        "start --host 127.0.0.1, then open http://127.0.0.1:4200/runs"
    )
    return 0
