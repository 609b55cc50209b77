"""Time the stages of one exposure: through the Prefect flow, and bare (no Prefect).

Both paths drive the same simulator process over TCP on 127.0.0.1 in the same run, so
the difference is what the flow machinery costs. Reported as medians over several
bias frames (machines here are noisy); a table on stdout and JSON in bench/results/.

    make bench            # or: uv run python -m bench.stages --frames 7
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path
from tempfile import TemporaryDirectory

from flows.settings import configure_prefect
from schemas.instrument import InstrumentConfig

RESULTS = Path(__file__).resolve().parent / "results"
STAGES = ("flush", "expose", "readout", "savepoint", "fetch", "process_write")
"""post_process and write are one stage: the flow runs them together on Dask workers.
The save-point (what a crash recovery needs, written before the fetch) exists only in
the flow: the bare adapter's column is 0, and its cost shows in the flow's."""


def _stage(timings: dict[str, float], stage: str) -> float:
    if stage == "process_write" and "process_write" not in timings:
        return timings["post_process"] + timings["write"]
    if stage == "savepoint":
        return timings.get(stage, 0.0)
    return timings[stage]


async def _bare_frames(
    instrument: InstrumentConfig, frames: int, data_root: Path
) -> list[dict[str, float]]:
    """The same six stages called directly on the adapter and the pure functions."""
    from schemas.exposure import ExposureSpec
    from tasks.control.instrument import open_instrument, plan_instrument
    from tasks.durable.numbering import next_exposure_number
    from tasks.headers.header import ExposureFacts
    from tasks.processing.ccd_products import buffer_products
    from tasks.write import write_exposure_files

    bare = instrument.with_overrides(data_root=data_root / "bare")
    spec = ExposureSpec(image_type="bias")
    plans = plan_instrument(bare)
    timings: list[dict[str, float]] = []
    async with open_instrument(plans) as sessions:
        session = sessions[0]
        ctrl = session.controller
        for _ in range(frames):
            t: dict[str, float] = {}
            start = time.perf_counter()
            await ctrl.flush(session.plan.config.flush_count)
            t["flush"] = time.perf_counter() - start
            start = time.perf_counter()
            await ctrl.expose(0.0, open_shutter=False)
            t["expose"] = time.perf_counter() - start
            start = time.perf_counter()
            buffer = await ctrl.readout()
            t["readout"] = time.perf_counter() - start
            start = time.perf_counter()
            pixels = await ctrl.fetch(buffer)
            t["fetch"] = time.perf_counter() - start
            start = time.perf_counter()
            products = await asyncio.to_thread(
                buffer_products, pixels, session.plan, spec, bare, buffer
            )
            t["post_process"] = time.perf_counter() - start
            start = time.perf_counter()
            now = datetime.now(UTC)
            facts = ExposureFacts(
                spec=spec,
                expnum=next_exposure_number(bare.storage.data_root, taken=lambda n: False),
                date_obs=now,
                darktime=0.0,
                flow_run_id=None,
            )
            await asyncio.to_thread(write_exposure_files, products, facts, bare, now)
            t["write"] = time.perf_counter() - start
            timings.append(t)
    return timings


async def run(frames: int) -> dict[str, object]:
    from flows.demo import simulated_instrument
    from flows.exposure import run_sequence
    from schemas.exposure import ExposureSpec, SequenceSpec
    from schemas.instrument import load_instrument

    with TemporaryDirectory(prefix="ccdflow-bench-") as tmp:
        config = load_instrument("deploy/instruments/sim.yaml").with_overrides(data_root=Path(tmp))
        async with simulated_instrument(config) as live:
            # One warm-up flow so the embedded API start-up is not in the figures.
            await run_sequence(
                SequenceSpec(name="warmup", exposures=[ExposureSpec(image_type="bias")]), live
            )
            start = time.perf_counter()
            result = await run_sequence(
                SequenceSpec(
                    name="bench", exposures=[ExposureSpec(image_type="bias", count=frames)]
                ),
                live,
            )
            flow_wall = (time.perf_counter() - start) / frames
            start = time.perf_counter()
            bare = await _bare_frames(live, frames, Path(tmp))
            bare_wall = (time.perf_counter() - start) / frames
        nbytes = 0
        acf_shape: tuple[int, int] | None = None
        from devices.archon.acf import load_acf
        from schemas.instrument import ArchonControllerConfig

        archon = live.controllers[0]
        assert isinstance(archon, ArchonControllerConfig), "the stage bench runs an Archon"
        acf = load_acf(archon.acf)
        acf_shape = acf.buffer_shape
        nbytes = acf.buffer_shape[0] * acf.buffer_shape[1] * acf.bytes_per_pixel

    flow_medians = {
        s: statistics.median(_stage(e.timings, s) for e in result.exposures) for s in STAGES
    }
    bare_medians = {s: statistics.median(_stage(t, s) for t in bare) for s in STAGES}
    return {
        "benchmark": "stages",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "cpus": __import__("os").cpu_count()},
        "frames": frames,
        "buffer_shape": acf_shape,
        "buffer_mb": round(nbytes / 1e6, 2),
        "median_s": {"flow": flow_medians, "bare": bare_medians},
        "per_frame_wall_s": {"flow": round(flow_wall, 4), "bare": round(bare_wall, 4)},
        "flow_over_bare": round(flow_wall / bare_wall, 3),
        # What the flow machinery (Prefect, pipelining) adds per exposure, and that as
        # a share of a 10 s exposure cycle (the yardstick: at most 5 %).
        "prefect_overhead_s_per_exposure": round(flow_wall - bare_wall, 4),
        "prefect_overhead_fraction_of_10s_cycle": round((flow_wall - bare_wall) / 10.0, 4),
        "fetch_mb_per_s_bare": round(nbytes / 1e6 / bare_medians["fetch"], 1),
    }


def print_table(report: dict[str, object]) -> None:
    from rich.console import Console
    from rich.table import Table

    medians = report["median_s"]
    assert isinstance(medians, dict)
    table = Table(
        title=f"one bias exposure, {report['buffer_mb']} MB buffer, medians of {report['frames']}"
    )
    table.add_column("stage")
    table.add_column("flow (Prefect) s", justify="right")
    table.add_column("bare adapter s", justify="right")
    table.add_column("flow / bare", justify="right")
    for stage in STAGES:
        flow_s, bare_s = medians["flow"][stage], medians["bare"][stage]
        ratio = f"{flow_s / bare_s:.2f}" if bare_s else "-"
        table.add_row(stage, f"{flow_s:.4f}", f"{bare_s:.4f}", ratio)
    walls = report["per_frame_wall_s"]
    assert isinstance(walls, dict)
    table.add_row(
        "frame wall time",
        f"{walls['flow']:.4f}",
        f"{walls['bare']:.4f}",
        f"{report['flow_over_bare']:.2f}",
    )
    console = Console()
    console.print(table)
    console.print(f"bare fetch throughput: {report['fetch_mb_per_s_bare']} MB/s")
    fraction = report["prefect_overhead_fraction_of_10s_cycle"]
    assert isinstance(fraction, float)
    console.print(
        f"flow overhead per exposure: {report['prefect_overhead_s_per_exposure']} s = "
        f"{100 * fraction:.2f} % of a 10 s cycle"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=7)
    args = parser.parse_args()
    configure_prefect()
    report = asyncio.run(run(args.frames))
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "stages.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print_table(report)
    print(f"JSON: {out}")


if __name__ == "__main__":
    main()
