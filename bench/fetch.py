"""FETCH throughput and connect time: our adapter against sdss-archon, same simulator.

One simulator process serves an LVM-size frame buffer (100.9 MB). One exposure is
read out, then both clients fetch that same buffer in turns, uncapped and with the
simulator's 1 Gb/s cap; then both connect and read the configuration memory. The
simulator runs in its own process so that it does not share an event loop (or the
GIL) with the client under test; on a 2-core machine that is as fair as it gets.

Each fetched array is compared with the first one: a benchmark that returns wrong
data is worthless. Medians over repeats (runs alternate between the two clients);
a table on stdout and JSON in bench/results/fetch.json.

    uv run python -m bench.fetch            # or: --repeats 7 --connects 7
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import inspect
import json
import math
import os
import platform
import re
import signal
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from devices.archon.acf import AcfConfig, load_acf

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
LVM_ACF = REPO.parent / "shared" / "reference" / "lvm-100khz.acf"
SIM_ACF = REPO / "deploy" / "instruments" / "sim.acf"
CAP_BPS = 1e9
CONFIG_LINES = 0x4000
RCONFIG_BATCH = 200
BLOCK = 1024
WIRE_BLOCK = BLOCK + 4  # "<xx:" + 1024 bytes
SEED = 4242
_LISTENING = re.compile(r"listening on 127\.0\.0\.1:(\d+)")


# ---------------------------------------------------------------- the ACF


def lvm_like_acf_text() -> str:
    """An ACF with LVM's geometry built from sim.acf, for machines without the LVM file.

    Split mode, 12 taps, 2040 lines x 2060 pixels, 16-bit: 12360 x 4080, 100.9 MB.
    The timing PARAMETERS are sim.acf's, with the window parameters set to this
    geometry (Lines 2040, Pixels 2040 + 20 overscan): sdss-archon's start() rewrites
    LINECOUNT/PIXELCOUNT from them, and sim.acf's 512-line window would shrink the
    buffer under the benchmark.
    """
    out: list[str] = []
    taps_written = False
    for line in SIM_ACF.read_text().splitlines():
        key = line.partition("=")[0].strip().upper()
        if re.fullmatch(r"TAPLINE\d+", key):
            continue
        if key == "TAPLINES":
            out.append("TAPLINES=12")
            out += [f'TAPLINE{n}="AD{n + 1}L, 1, 1000"' for n in range(12)]
            taps_written = True
            continue
        replaced = {
            "FRAMEMODE": "FRAMEMODE=2",
            "LINECOUNT": "LINECOUNT=2040",
            "PIXELCOUNT": "PIXELCOUNT=2060",
            "SAMPLEMODE": "SAMPLEMODE=0",
        }.get(key)
        line = replaced or line
        line = re.sub(r'"Lines=\d+"', '"Lines=2040"', line)
        line = re.sub(r'"Pixels=\d+"', '"Pixels=2040"', line)
        line = re.sub(r'"OverscanLines=\d+"', '"OverscanLines=0"', line)
        line = re.sub(r'"OverscanPixels=\d+"', '"OverscanPixels=20"', line)
        out.append(line)
    if not taps_written:
        raise RuntimeError(f"{SIM_ACF} has no TAPLINES line to replace")
    return "\n".join(out) + "\n"


def resolve_acf(tmp: Path, generated: bool = False) -> tuple[Path, str]:
    """The LVM reference ACF when present (read in place), else a generated one."""
    if LVM_ACF.is_file() and not generated:
        return LVM_ACF, str(LVM_ACF)
    path = tmp / "lvm-like.acf"
    path.write_text(lvm_like_acf_text())
    return path, "generated from deploy/instruments/sim.acf (LVM geometry)"


# ------------------------------------------------------- simulator process


def cap_supported() -> bool:
    from devices.archon.simulator import ArchonSimulator

    return "bandwidth_limit_bps" in inspect.signature(ArchonSimulator).parameters


async def serve(acf_path: Path) -> None:
    """Child process: one simulator; stdin lines ``cap <bps>|none`` change the FETCH cap.

    Answers each stdin line with one stdout line; exits when stdin closes (the parent
    is gone) or on SIGTERM.
    """
    from devices.archon.simulator import ArchonSimulator

    async with ArchonSimulator(load_acf(acf_path), port=0, seed=SEED) as sim:
        print(f"Archon simulator listening on 127.0.0.1:{sim.port}", flush=True)
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        stopped = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stopped.set)
        stop_wait = asyncio.ensure_future(stopped.wait())
        while True:
            read = asyncio.ensure_future(reader.readline())
            await asyncio.wait({read, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
            if not read.done():
                read.cancel()
                break
            line = read.result().decode().split()
            if not line:
                break
            if line[0] == "cap" and len(line) == 2:
                if not cap_supported():
                    print("cap unavailable", flush=True)
                    continue
                value = None if line[1] == "none" else float(line[1])
                sim.bandwidth_limit_bps = value
                print(f"cap {value}", flush=True)
            else:
                print(f"unknown {line}", flush=True)


@dataclass
class SimProcess:
    process: asyncio.subprocess.Process
    port: int

    async def command(self, line: str) -> str:
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.write(f"{line}\n".encode())
        await self.process.stdin.drain()
        return (await asyncio.wait_for(self.process.stdout.readline(), 10)).decode().strip()


@contextlib.asynccontextmanager
async def simulator_process(acf_path: Path) -> AsyncIterator[SimProcess]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.fetch",
        "--serve",
        str(acf_path),
        cwd=REPO,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 60)).decode()
        match = _LISTENING.search(line)
        if match is None:
            raise RuntimeError(f"simulator did not start: {line!r}")
        yield SimProcess(process, int(match[1]))
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()


# ----------------------------------------------------------------- clients


async def timed(call: Callable[[], Awaitable[Any]]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = await call()
    return time.perf_counter() - start, result


def sdss_controller(port: int) -> Any:
    from archon.controller.controller import ArchonController as SdssController

    return SdssController("bench", "127.0.0.1", port)


@contextlib.contextmanager
def sdss_quiet() -> Iterator[None]:
    """sdss warns on parameter names it cannot parse (LVM's STM1, PIXEL_CLOCK)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


async def take_frame(ours: Any, sdss: Any) -> tuple[int, str]:
    """One bias frame into a buffer: with our adapter, else (recorded) with sdss.

    Our adapter's reset/expose FASTLOADPARAM every parameter it knows (OpenShutter
    included) and the controller refuses names its ACF lacks: LVM's ACF has no
    OpenShutter. sdss skips unknown names, so it can still take the frame; the fetch
    comparison does not depend on who exposed.
    """
    from devices.archon.errors import ArchonCommandError

    try:
        await ours.reset()
        await ours.expose(0.0, open_shutter=False)
        return await ours.readout(), "ours"
    except ArchonCommandError as exc:
        note = f"sdss (our adapter failed: {exc})"
    with sdss_quiet():
        await sdss.reset()
        task = await sdss.expose(0.0, readout=False)
        await task
        return await sdss.readout(), note


async def fetch_round(
    ours: Any, sdss: Any, buffer: int, repeats: int, reference: npt.NDArray[Any] | None
) -> tuple[dict[str, list[float]], npt.NDArray[Any]]:
    """``repeats`` fetches with each client, alternating who goes first; check every array."""
    times: dict[str, list[float]] = {"ours": [], "sdss": []}

    async def run_ours() -> npt.NDArray[Any]:
        return await ours.fetch(buffer)  # type: ignore[no-any-return]

    async def run_sdss() -> npt.NDArray[Any]:
        with sdss_quiet():
            return await sdss.fetch(buffer)  # type: ignore[no-any-return]

    if reference is None:
        # Untimed warm-up: the first transfer of a process pays for faulting in 100 MB
        # of fresh memory, which is not what either client's fetch costs afterwards.
        reference = np.array(await run_ours(), copy=True)
        if not np.array_equal(await run_sdss(), reference):
            raise AssertionError("sdss warm-up fetch differs from ours")
    for i in range(repeats):
        order = [("ours", run_ours), ("sdss", run_sdss)]
        for name, call in order if i % 2 == 0 else order[::-1]:
            seconds, data = await timed(call)
            times[name].append(seconds)
            if not (data.dtype == reference.dtype and np.array_equal(data, reference)):
                raise AssertionError(f"{name} fetch {i} differs from the first fetched array")
            del data
    assert reference is not None
    return times, reference


async def read_all_lines(client: Any) -> list[str]:
    """Every one of the 16384 lines through our client, pipelined (what sdss reads)."""
    lines: list[str] = []
    for start in range(0, CONFIG_LINES, RCONFIG_BATCH):
        stop = min(start + RCONFIG_BATCH, CONFIG_LINES)
        lines += await asyncio.gather(*(client.send(f"RCONFIG{n:04X}") for n in range(start, stop)))
    return lines


async def connect_round(port: int, acf: AcfConfig, repeats: int) -> dict[str, list[float]]:
    """Connect + read the configuration: ours (up to the last used line, and all 16384
    lines) and sdss start() (all 16384 lines, then its window reset and timing reset)."""
    from devices.archon.controller import ArchonController

    expected = acf.wire_lines()
    times: dict[str, list[float]] = {"ours": [], "ours_all_lines": [], "sdss": []}
    has_read_config = hasattr(ArchonController, "read_config")

    async def ours() -> None:
        ctrl = ArchonController("127.0.0.1", port, acf)
        await ctrl.connect()
        try:
            if has_read_config:
                read = await ctrl.read_config()
                if read.wire_lines() != expected:
                    raise AssertionError("our read_config() differs from the served ACF")
            else:
                lines = await read_all_lines(ctrl.client)
                if lines[: len(expected)] != expected:
                    raise AssertionError("our RCONFIG read differs from the served ACF")
        finally:
            await ctrl.close()

    async def ours_all() -> None:
        ctrl = ArchonController("127.0.0.1", port, acf)
        await ctrl.connect()
        try:
            lines = await read_all_lines(ctrl.client)
            if lines[: len(expected)] != expected or any(lines[len(expected) :]):
                raise AssertionError("our RCONFIG read differs from the served ACF")
        finally:
            await ctrl.close()

    async def sdss() -> None:
        controller = sdss_controller(port)
        try:
            with sdss_quiet():
                await controller.start()
            section = controller.acf_config["CONFIG"]
            if len(section) != len(expected):
                raise AssertionError("sdss start() read a different number of lines")
        finally:
            await controller.stop()

    runs: list[tuple[str, Callable[[], Awaitable[None]]]] = [
        ("ours", ours),
        ("ours_all_lines", ours_all),
        ("sdss", sdss),
    ]
    for i in range(repeats):
        for name, call in runs if i % 2 == 0 else runs[::-1]:
            seconds, _ = await timed(call)
            times[name].append(seconds)
    return times


# ------------------------------------------------------------------- run


def _median(values: list[float]) -> float:
    return statistics.median(values)


async def run(repeats: int, connects: int, generated: bool = False) -> dict[str, Any]:
    from devices.archon.controller import ArchonController

    with tempfile.TemporaryDirectory(prefix="ccdflow-bench-fetch-") as tmp:
        acf_path, acf_source = resolve_acf(Path(tmp), generated)
        acf = load_acf(acf_path)
        height, width = acf.buffer_shape
        nbytes = height * width * acf.bytes_per_pixel
        wire_bytes = math.ceil(nbytes / BLOCK) * WIRE_BLOCK
        async with simulator_process(acf_path) as sim:
            ours = ArchonController("127.0.0.1", sim.port, acf, name="bench")
            await ours.connect()
            sdss = sdss_controller(sim.port)
            try:
                with sdss_quiet():
                    await sdss.start()
                buffer, exposure_by = await take_frame(ours, sdss)

                uncapped, reference = await fetch_round(ours, sdss, buffer, repeats, None)
                capped: dict[str, list[float]] | None = None
                cap_note = "cap not available"
                answer = await sim.command(f"cap {CAP_BPS:g}")
                if answer.startswith("cap ") and answer != "cap unavailable":
                    capped, reference = await fetch_round(ours, sdss, buffer, repeats, reference)
                    cap_note = f"{CAP_BPS:g} bit/s on the wire, block headers included"
                    await sim.command("cap none")
                shape, dtype = list(reference.shape), str(reference.dtype)
                del reference
            finally:
                await ours.close()
                await sdss.stop()
            connect_times = await connect_round(sim.port, acf, connects)

    def fetch_summary(times: dict[str, list[float]]) -> dict[str, Any]:
        med = {name: _median(values) for name, values in times.items()}
        mbps = {name: nbytes / 1e6 / seconds for name, seconds in med.items()}
        summary: dict[str, Any] = {
            "runs_s": {k: [round(v, 4) for v in vs] for k, vs in times.items()},
            "median_s": {k: round(v, 4) for k, v in med.items()},
            "mb_per_s": {k: round(v, 1) for k, v in mbps.items()},
            "ours_over_sdss": round(mbps["ours"] / mbps["sdss"], 3),
        }
        return summary

    results_uncapped = fetch_summary(uncapped)
    results_capped = fetch_summary(capped) if capped is not None else None
    if results_capped is not None and capped is not None:
        results_capped["percent_of_cap"] = {
            name: round(100 * wire_bytes * 8 / _median(values) / CAP_BPS, 1)
            for name, values in capped.items()
        }
    connect_med = {name: _median(values) for name, values in connect_times.items()}
    return {
        "benchmark": "fetch",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "acf": acf_source,
        "buffer_shape": shape,
        "dtype": dtype,
        "buffer_mb": round(nbytes / 1e6, 2),
        "wire_mb": round(wire_bytes / 1e6, 2),
        "repeats": repeats,
        "exposure_by": exposure_by,
        "arrays_identical": True,  # fetch_round raises otherwise
        "fetch_uncapped": results_uncapped,
        "fetch_capped": results_capped,
        "cap": cap_note,
        "connect": {
            "repeats": connects,
            "what": {
                "ours": "connect() + read_config()"
                if hasattr(ArchonController, "read_config")
                else "connect() + pipelined RCONFIG of all 16384 lines",
                "ours_all_lines": "connect() + pipelined RCONFIG of all 16384 lines",
                "sdss": "start(): RCONFIG of all 16384 lines, SYSTEM, window + timing reset",
            },
            "runs_s": {k: [round(v, 4) for v in vs] for k, vs in connect_times.items()},
            "median_s": {k: round(v, 4) for k, v in connect_med.items()},
            "sdss_over_ours": round(connect_med["sdss"] / connect_med["ours"], 2),
            "sdss_over_ours_all_lines": round(
                connect_med["sdss"] / connect_med["ours_all_lines"], 2
            ),
        },
    }


def print_table(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(
        title=(
            f"FETCH of one {report['buffer_mb']} MB buffer {tuple(report['buffer_shape'])} "
            f"{report['dtype']}, medians of {report['repeats']}"
        )
    )
    table.add_column("link")
    table.add_column("ours MB/s", justify="right")
    table.add_column("sdss MB/s", justify="right")
    table.add_column("ours / sdss", justify="right")
    table.add_column("ours % of cap", justify="right")
    table.add_column("sdss % of cap", justify="right")
    rows = [("uncapped", report["fetch_uncapped"]), ("1 Gb/s cap", report["fetch_capped"])]
    for label, data in rows:
        if data is None:
            table.add_row(label, "-", "-", "-", report["cap"], "")
            continue
        pct = data.get("percent_of_cap", {})
        table.add_row(
            label,
            f"{data['mb_per_s']['ours']:.1f}",
            f"{data['mb_per_s']['sdss']:.1f}",
            f"{data['ours_over_sdss']:.2f}",
            f"{pct['ours']:.1f}" if pct else "",
            f"{pct['sdss']:.1f}" if pct else "",
        )
    console.print(table)
    connect = report["connect"]
    ctable = Table(title=f"connect + config read, medians of {connect['repeats']}")
    ctable.add_column("client")
    ctable.add_column("what")
    ctable.add_column("median s", justify="right")
    for name in ("ours", "ours_all_lines", "sdss"):
        ctable.add_row(name, connect["what"][name], f"{connect['median_s'][name]:.3f}")
    console.print(ctable)
    console.print(
        f"sdss / ours: {connect['sdss_over_ours']:.2f} "
        f"(all 16384 lines both: {connect['sdss_over_ours_all_lines']:.2f}); "
        f"ACF: {report['acf']}; fetched arrays identical: {report['arrays_identical']}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="fetches per client and cap")
    parser.add_argument("--connects", type=int, default=5, help="connects per client")
    parser.add_argument(
        "--generated-acf",
        action="store_true",
        help="use the generated LVM-size ACF even when the LVM reference ACF exists",
    )
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve is not None:
        asyncio.run(serve(args.serve))
        return
    if args.repeats < 3 or args.connects < 1:
        parser.error("--repeats must be >= 3 and --connects >= 1")
    report = asyncio.run(run(args.repeats, args.connects, args.generated_acf))
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "fetch.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print_table(report)
    print(f"JSON: {out}")


if __name__ == "__main__":
    main()
