"""Dead time per exposure: pipelined vs sequential vs an sdss-archon-delegate-like cycle.

One simulator process with a realistic readout (pixel rate set so the sim
instrument reads out in about 1.4 s), the same dark sequence three ways, in one run:

* ``pipelined``: run_sequence, exposure N finished while N+1 integrates;
* ``sequential``: run_sequence(pipelined=False);
* ``sdss_like``: sdss-archon's own ArchonController (3 s before readout polling, 1 s
  polls, 1.2 s per flush) with our post-processing and writing after each fetch.

Dead time = (wall time - N x (exptime + nominal readout)) / N, the readout time
being what the simulator's clocking takes (LINECOUNT x PIXELCOUNT / pixel rate).
Also: peak RSS over a long bias sequence, sampled while it runs, to show it is flat.

    uv run python -m bench.pipeline [--exposures 6] [--memory-exposures 200]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import platform
import resource
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

from flows.settings import configure_prefect
from schemas.instrument import InstrumentConfig

RESULTS = Path(__file__).resolve().parent / "results"
PIXEL_RATE = 2e5
"""Pixels per second per amplifier: 512 x 544 pixels read in about 1.4 s."""


def _rss_mb() -> float:
    """Resident set size of this process now, from /proc (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def _sdss_like(
    instrument: InstrumentConfig, exposures: int, exptime: float, data_root: Path
) -> float:
    """sdss-archon's cycle on the same simulator; returns the wall time."""
    from archon.controller.controller import ArchonController as SdssController

    from schemas.exposure import ExposureSpec
    from tasks.control.instrument import plan_instrument
    from tasks.durable.numbering import next_exposure_number
    from tasks.headers.header import ExposureFacts
    from tasks.processing.ccd_products import buffer_products
    from tasks.write import write_exposure_files

    config = instrument.with_overrides(data_root=data_root / "sdss")
    plan = plan_instrument(config)[0]
    spec = ExposureSpec(image_type="dark", exptime=exptime)
    for name in ("archon", "sdss-archon"):
        logging.getLogger(name).setLevel(logging.WARNING)  # its DEBUG floods the table
    sdss = SdssController("bench", "127.0.0.1", config.controllers[0].port)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        await sdss.start()
        start = time.perf_counter()
        for _ in range(exposures):
            await sdss.flush(1)
            integration = await sdss.expose(exptime, readout=False)
            await integration
            buffer = await sdss.readout()
            pixels = await sdss.fetch(buffer)
            now = datetime.now(UTC)
            products = await asyncio.to_thread(buffer_products, pixels, plan, spec, config, buffer)
            facts = ExposureFacts(
                spec=spec,
                expnum=next_exposure_number(config.storage.data_root, taken=lambda n: False),
                date_obs=now,
                darktime=exptime,
                flow_run_id=None,
            )
            await asyncio.to_thread(write_exposure_files, products, facts, config, now)
        wall = time.perf_counter() - start
        await sdss.stop()
    return wall


async def _memory(instrument: InstrumentConfig, exposures: int) -> dict[str, float]:
    """RSS sampled every 0.25 s while a long bias sequence runs."""
    from flows.exposure import run_sequence
    from schemas.exposure import ExposureSpec, SequenceSpec

    samples: list[float] = []

    async def sample() -> None:
        while True:
            samples.append(_rss_mb())
            await asyncio.sleep(0.25)

    sampler = asyncio.ensure_future(sample())
    try:
        await run_sequence(
            SequenceSpec(
                name="memory", exposures=[ExposureSpec(image_type="bias", count=exposures)]
            ),
            instrument,
        )
    finally:
        sampler.cancel()
    quarter = max(1, len(samples) // 4)
    first, last = samples[:quarter], samples[-quarter:]
    return {
        "exposures": exposures,
        "samples": len(samples),
        "rss_mb_first_quarter_max": round(max(first), 1),
        "rss_mb_last_quarter_max": round(max(last), 1),
        "rss_growth_mb": round(max(last) - max(first), 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


async def run(exposures: int, exptime: float, memory_exposures: int) -> dict[str, Any]:
    from devices.archon.acf import load_acf
    from flows.demo import simulated_instrument
    from flows.exposure import run_sequence
    from schemas.exposure import ExposureSpec, SequenceSpec
    from schemas.instrument import ArchonControllerConfig, load_instrument

    report: dict[str, Any] = {}
    with TemporaryDirectory(prefix="ccdflow-bench-") as tmp:
        base = load_instrument("deploy/instruments/sim.yaml").with_overrides(data_root=Path(tmp))
        archon = base.controllers[0]
        assert isinstance(archon, ArchonControllerConfig), "the pipeline bench runs an Archon"
        acf = load_acf(archon.acf)
        readout = acf.line_count * acf.pixel_count / PIXEL_RATE
        sequence = SequenceSpec(
            name="dead-time",
            exposures=[ExposureSpec(image_type="dark", exptime=exptime, count=exposures)],
        )
        async with simulated_instrument(base, pixel_rate=PIXEL_RATE) as live:
            await run_sequence(
                SequenceSpec(name="warmup", exposures=[ExposureSpec(image_type="bias")]), live
            )
            walls: dict[str, float] = {}
            for mode, pipelined in (("pipelined", True), ("sequential", False)):
                result = await run_sequence(sequence, live, pipelined=pipelined)
                walls[mode] = result.elapsed_s
            walls["sdss_like"] = await _sdss_like(live, exposures, exptime, Path(tmp))
        useful = exposures * (exptime + readout)
        report["dead_time_s"] = {
            mode: round((wall - useful) / exposures, 3) for mode, wall in walls.items()
        }
        report["wall_s"] = {mode: round(wall, 2) for mode, wall in walls.items()}
        report["exposures"] = exposures
        report["exptime_s"] = exptime
        report["nominal_readout_s"] = round(readout, 3)
        if memory_exposures:
            fast = base.with_overrides(data_root=Path(tmp) / "memory")
            async with simulated_instrument(fast) as live:
                report["memory"] = await _memory(live, memory_exposures)
    report.update(
        benchmark="pipeline",
        date=datetime.now(UTC).isoformat(timespec="seconds"),
        machine={"python": platform.python_version()},
    )
    return report


def print_table(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=(
            f"dead time per exposure: {report['exposures']} darks of {report['exptime_s']} s, "
            f"readout {report['nominal_readout_s']} s"
        )
    )
    table.add_column("cycle")
    table.add_column("wall s", justify="right")
    table.add_column("dead time / exposure s", justify="right")
    table.add_column("vs pipelined", justify="right")
    dead = report["dead_time_s"]
    for mode in ("pipelined", "sequential", "sdss_like"):
        ratio = dead[mode] / dead["pipelined"] if dead["pipelined"] > 0 else float("nan")
        table.add_row(mode, f"{report['wall_s'][mode]:.2f}", f"{dead[mode]:.3f}", f"{ratio:.1f}x")
    console = Console()
    console.print(table)
    if "memory" in report:
        memory = report["memory"]
        console.print(
            f"memory over {memory['exposures']} bias exposures: RSS max "
            f"{memory['rss_mb_first_quarter_max']} MB in the first quarter, "
            f"{memory['rss_mb_last_quarter_max']} MB in the last "
            f"(growth {memory['rss_growth_mb']} MB); peak {memory['peak_rss_mb']} MB"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--exposures", type=int, default=6)
    parser.add_argument("--exptime", type=float, default=1.0)
    parser.add_argument("--memory-exposures", type=int, default=200)
    args = parser.parse_args()
    configure_prefect()
    report = asyncio.run(run(args.exposures, args.exptime, args.memory_exposures))
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "pipeline.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print_table(report)
    print(f"JSON: {out}")


if __name__ == "__main__":
    main()
