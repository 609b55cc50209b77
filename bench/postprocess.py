"""Post-processing one 4-CCD exposure: serial vs Dask threads vs Dask processes.

Each case turns one raw buffer into overscan-corrected per-CCD FITS files (process +
write + manifest), the work ``tasks/processing/ccd_work.py`` ships to Dask workers:

* serial: ``process_buffer`` then ``write_exposure_files``, in this thread;
* Dask threads: ``process_exposure_on_dask`` on the in-process cluster ccdflow opens
  (``LocalCluster(processes=False)``, 1 worker x 2 threads);
* Dask processes: the same on ``LocalCluster(processes=True)``, 2 workers x 1 thread,
  on 127.0.0.1: each CCD's pixels are pickled to a worker process.

The controller is made up here: split frame mode, LINECOUNT=2048, PIXELCOUNT=2080
(2048 pixels + 32 overscan), ``--taps`` taps shared by 4 CCDs: 16 taps give 4 CCDs
of 4096 x 4160 (4k x 4k of data, a 136 MB buffer, the size in
shared/design/prefect.md), 8 taps 4 CCDs of 4096 x 2080. Files go to a temporary
folder inside the repository (the data's disk, never /dev/shm), deleted after each
run. One untimed warm-up per case (imports in fresh worker processes), then medians
of ``--repeats``; cluster start-up is reported apart.

    make bench            # or: uv run --frozen python -m bench.postprocess --repeats 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from flows.settings import configure_prefect

if TYPE_CHECKING:  # imported lazily below: Prefect must be configured before import
    from distributed import Client, LocalCluster

    from schemas.instrument import InstrumentConfig
    from tasks.control.instrument import ControllerPlan
    from tasks.headers.header import ExposureFacts

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parents[1]
SIM_ACF = REPO / "deploy" / "instruments" / "sim.acf"
CCDS = 4
LINES, PIXELS, OVERSCAN = 2048, 2048, 32
CASES = ("serial", "dask threads", "dask processes")


def acf_text(taps: int, lines: int = LINES, pixels: int = PIXELS, overscan: int = OVERSCAN) -> str:
    """The bench controller's ACF: our geometry plus the sim ACF's timing parameters."""
    parameters = [
        line
        for line in SIM_ACF.read_text(encoding="utf-8").splitlines()
        if re.match(r"PARAMETERS?\d*=", line)
    ]
    values = {"Lines": lines, "Pixels": pixels, "OverscanPixels": overscan}
    for name, value in values.items():
        parameters = [re.sub(rf'"{name}=\d+"', f'"{name}={value}"', p) for p in parameters]
    tapl = [f'TAPLINE{j}="AD{j + 1}L, 1, 1000"' for j in range(taps)]
    return "\n".join(
        [
            "[CONFIG]",
            "FRAMEMODE=2",
            "SAMPLEMODE=0",
            f"LINECOUNT={lines}",
            f"PIXELCOUNT={pixels + overscan}",
            f"TAPLINES={taps}",
            *tapl,
            *parameters,
            "",
        ]
    )


def bench_instrument(acf: Path, data_root: Path) -> InstrumentConfig:
    from schemas.instrument import InstrumentConfig

    ccds = [{"name": f"c{i}", "gain": 1.5, "read_noise": 5.0} for i in range(CCDS)]
    return InstrumentConfig.model_validate(
        {
            "name": "bench",
            "controllers": [{"name": "ctl", "acf": acf, "ccds": ccds}],
            "storage": {"data_root": data_root},
        }
    )


def raw_buffer(shape: tuple[int, int]) -> npt.NDArray[np.uint16]:
    """Bias-like: a level of 1000 ADU and 4.5 ADU of read noise."""
    rng = np.random.default_rng(7)
    return (rng.standard_normal(shape, dtype=np.float32) * 4.5 + 1000).astype(np.uint16)


class Runner:
    """Runs one exposure per call under a fresh EXPNUM and removes its files after."""

    def __init__(
        self, plan: ControllerPlan, instrument: InstrumentConfig, buffer: npt.NDArray[np.uint16]
    ) -> None:
        self.plan, self.instrument, self.buffer = plan, instrument, buffer
        self.expnum = 0

    def facts(self) -> ExposureFacts:
        from schemas.exposure import ExposureSpec
        from tasks.headers.header import ExposureFacts

        self.expnum += 1
        spec = ExposureSpec(image_type="bias")
        now = datetime.now(UTC)
        return ExposureFacts(
            spec=spec, expnum=self.expnum, date_obs=now, darktime=0.0, flow_run_id=None
        )

    def serial(self) -> None:
        from tasks.processing.ccd_products import buffer_products
        from tasks.write import write_exposure_files

        facts = self.facts()
        products = buffer_products(self.buffer, self.plan, facts.spec, self.instrument, 1)
        write_exposure_files(products, facts, self.instrument, datetime.now(UTC))

    def on_dask(self, client: Client) -> Callable[[], None]:
        from tasks.processing.ccd_work import process_exposure_on_dask

        def run() -> None:
            facts = self.facts()
            asyncio.run(
                process_exposure_on_dask(
                    client, self.buffer, self.plan, facts, self.instrument, datetime.now(UTC), 1
                )
            )

        return run

    def timed(self, work: Callable[[], None], repeats: int) -> list[float]:
        """One warm-up, then ``repeats`` timed runs; files deleted between runs."""
        seconds = []
        for index in range(repeats + 1):
            start = time.perf_counter()
            work()
            if index:
                seconds.append(round(time.perf_counter() - start, 4))
            shutil.rmtree(self.instrument.storage.data_root)
        return seconds


def process_cluster(workers: int) -> LocalCluster:
    """Worker processes on 127.0.0.1, HTTP on loopback (as tasks/processing/dask_cluster.py)."""
    from distributed import LocalCluster

    from tasks.processing.dask_cluster import LOOPBACK_HTTP

    return LocalCluster(  # type: ignore[no-untyped-call]
        processes=True,
        n_workers=workers,
        threads_per_worker=1,
        host="127.0.0.1",
        dashboard_address=LOOPBACK_HTTP,
        scheduler_kwargs={"dashboard": False},
        worker_dashboard_address=LOOPBACK_HTTP,
    )


def run(repeats: int, taps: int) -> dict[str, Any]:
    from distributed import Client

    from schemas.instrument import DaskConfig
    from tasks.control.instrument import plan_instrument
    from tasks.processing.dask_cluster import open_client

    with TemporaryDirectory(prefix=".bench-postprocess-", dir=REPO) as tmp:
        acf = Path(tmp) / "bench.acf"
        acf.write_text(acf_text(taps), encoding="utf-8")
        instrument = bench_instrument(acf, Path(tmp) / "data")
        plan = plan_instrument(instrument)[0]
        buffer = raw_buffer(plan.buffer_shape)
        runner = Runner(plan, instrument, buffer)
        seconds: dict[str, list[float]] = {}
        startup: dict[str, float] = {}
        seconds["serial"] = runner.timed(runner.serial, repeats)

        start = time.perf_counter()
        with open_client(DaskConfig(threads=2)) as client:
            startup["dask threads"] = round(time.perf_counter() - start, 3)
            seconds["dask threads"] = runner.timed(runner.on_dask(client), repeats)

        start = time.perf_counter()
        with process_cluster(2) as cluster, Client(cluster) as client:  # type: ignore[no-untyped-call]
            startup["dask processes"] = round(time.perf_counter() - start, 3)
            seconds["dask processes"] = runner.timed(runner.on_dask(client), repeats)

    medians = {case: statistics.median(seconds[case]) for case in CASES}
    ccd_shape = plan.layout[0].shape
    return {
        "benchmark": "postprocess",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "repeats": repeats,
        "taps": taps,
        "ccds": CCDS,
        "ccd_shape": list(ccd_shape),
        "buffer_shape": list(buffer.shape),
        "buffer_mb": round(buffer.nbytes / 1e6, 1),
        "written_mb": round(CCDS * ccd_shape[0] * ccd_shape[1] * 4 / 1e6, 1),
        "seconds": seconds,
        "median_s": medians,
        "speedup_vs_serial": {c: round(medians["serial"] / medians[c], 2) for c in CASES},
        "cluster_start_s": startup,
    }


def print_table(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    shape = "x".join(map(str, report["ccd_shape"]))
    table = Table(
        title=(
            f"post-process + write, {report['ccds']} CCDs of {shape} "
            f"({report['buffer_mb']} MB raw, {report['written_mb']} MB written), "
            f"medians of {report['repeats']}"
        )
    )
    table.add_column("case")
    table.add_column("seconds", justify="right")
    table.add_column("speedup vs serial", justify="right")
    table.add_column("cluster start s", justify="right")
    for case in CASES:
        start = report["cluster_start_s"].get(case)
        table.add_row(
            case,
            f"{report['median_s'][case]:.3f}",
            f"{report['speedup_vs_serial'][case]:.2f}",
            "-" if start is None else f"{start:.2f}",
        )
    Console().print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--taps", type=int, default=16, choices=(8, 16), help="4 CCDs share them")
    args = parser.parse_args()
    configure_prefect()
    report = run(args.repeats, args.taps)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "postprocess.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print_table(report)
    print(f"JSON: {out}")


if __name__ == "__main__":
    main()
