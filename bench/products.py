"""Writing one exposure's products: raw frames, processed images, or both.

One exposure is 4 CCDs of 4096 x 3072 (the size bench/write.py uses), read by a
made-up controller in split frame mode (8 taps, 2 per CCD; 3040 pixels + 32 overscan
per line, 2048 lines per tap), from a bias-like buffer (1000 ADU, 4.5 ADU of noise,
a gentle gradient). Each case runs the path a Dask worker runs for its CCDs, here in
one thread: build the products from the buffer (tasks/processing/ccd_products.py) and write them
(tasks/write.py: headers, CHECKSUM, fsync, link, manifest):

* ``processed only``: what every exposure wrote before raw frames existed (float32,
  overscan-corrected; ``storage.raw: false, processed: true``), the baseline;
* ``raw`` (the default now), ``raw + processed``, ``raw RICE_1``, ``raw + processed
  RICE_1`` (the processed float images are quantized, the raw integers lossless).

Reported per case: median seconds per exposure, MB written, and both as ratios to the
baseline measured in the same run. Files go to a temporary folder inside the
repository (the data's disk), deleted after each repeat.

    make bench            # or: uv run --frozen python -m bench.products --repeats 5
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from bench.postprocess import acf_text

if TYPE_CHECKING:
    from schemas.instrument import InstrumentConfig

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parents[1]
TAPS, LINES, PIXELS, OVERSCAN = 8, 2048, 3040, 32

CASES: dict[str, dict[str, object]] = {
    "processed only (before)": {"raw": False, "processed": True},
    "raw (default)": {"raw": True, "processed": False},
    "raw + processed": {"raw": True, "processed": True},
    "raw RICE_1": {"raw": True, "processed": False, "compression": "RICE_1"},
    "raw + processed RICE_1": {"raw": True, "processed": True, "compression": "RICE_1"},
}
BASELINE = "processed only (before)"


def _acf(folder: Path) -> Path:
    text = acf_text(TAPS, LINES, PIXELS, OVERSCAN)
    path = folder / "bench-products.acf"
    path.write_text(text, encoding="utf-8")
    return path


def _instrument(acf: Path, data_root: Path, storage: dict[str, object]) -> InstrumentConfig:
    from schemas.instrument import InstrumentConfig

    ccds = [{"name": f"c{i}", "gain": 1.5, "read_noise": 5.0} for i in range(4)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "raw: false" warns, on purpose
        return InstrumentConfig.model_validate(
            {
                "name": "bench",
                "controllers": [{"name": "ctl", "acf": acf, "ccds": ccds}],
                "storage": {"data_root": data_root, **storage},
            }
        )


def _buffer(shape: tuple[int, int]) -> npt.NDArray[np.uint16]:
    rng = np.random.default_rng(42)
    ramp = np.linspace(0, 20, shape[1], dtype=np.float32)
    return (rng.normal(1000, 4.5, shape).astype(np.float32) + ramp).astype(np.uint16)


def _one(instrument: InstrumentConfig, buffer: npt.NDArray[np.uint16], expnum: int) -> int:
    """Build and write one exposure; return the bytes written."""
    from schemas.exposure import ExposureSpec
    from tasks.control.instrument import plan_instrument
    from tasks.headers.header import ExposureFacts
    from tasks.processing.ccd_products import buffer_products
    from tasks.write import write_exposure_files

    plan = plan_instrument(instrument)[0]
    spec = ExposureSpec(image_type="bias")
    now = datetime.now(UTC)
    facts = ExposureFacts(spec=spec, expnum=expnum, date_obs=now, darktime=0.0, flow_run_id=None)
    products = buffer_products(buffer, plan, spec, instrument, 1)
    records, _ = write_exposure_files(products, facts, instrument, now)
    return sum(record.nbytes for record in records)


def run(repeats: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with TemporaryDirectory(prefix=".bench-products-", dir=REPO) as tmp:
        root = Path(tmp)
        acf = _acf(root)
        shape = (2 * LINES, (PIXELS + OVERSCAN) * TAPS // 2)
        buffer = _buffer(shape)
        for name, storage in CASES.items():
            seconds, sizes = [], []
            for repeat in range(repeats + 1):  # the first is an untimed warm-up
                data_root = root / f"data-{len(results)}-{repeat}"
                instrument = _instrument(acf, data_root, storage)
                start = time.perf_counter()
                nbytes = _one(instrument, buffer, repeat + 1)
                elapsed = time.perf_counter() - start
                if repeat:
                    seconds.append(elapsed)
                    sizes.append(nbytes)
                for path in sorted(data_root.rglob("*"), reverse=True):
                    path.unlink() if path.is_file() else path.rmdir()
                data_root.rmdir()
            results[name] = {
                "storage": storage,
                "median_s": round(statistics.median(seconds), 4),
                "seconds": [round(s, 4) for s in seconds],
                "mb_written": round(statistics.median(sizes) / 1e6, 2),
            }
    base = results[BASELINE]
    for entry in results.values():
        entry["time_over_processed_only"] = round(entry["median_s"] / base["median_s"], 2)
        entry["bytes_over_processed_only"] = round(entry["mb_written"] / base["mb_written"], 3)
    return {
        "benchmark": "products",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "exposure": {
            "ccds": 4,
            "ccd_shape": [2 * LINES, PIXELS + OVERSCAN],
            "buffer_mb": round(buffer.nbytes / 1e6, 1),
        },
        "repeats": repeats,
        "cases": results,
    }


def print_table(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    exposure = report["exposure"]
    table = Table(
        title=f"one exposure: 4 CCDs of {exposure['ccd_shape'][0]}x{exposure['ccd_shape'][1]} "
        f"({exposure['buffer_mb']} MB uint16), build + write, medians of {report['repeats']}"
    )
    table.add_column("products")
    for column in ("median s", "MB written", "time / before", "bytes / before"):
        table.add_column(column, justify="right")
    for name, entry in report["cases"].items():
        table.add_row(
            name,
            f"{entry['median_s']:.3f}",
            f"{entry['mb_written']:.1f}",
            f"{entry['time_over_processed_only']:.2f}",
            f"{entry['bytes_over_processed_only']:.3f}",
        )
    Console(width=120).print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if args.repeats < 3:
        parser.error("--repeats must be at least 3 (medians)")
    report = run(args.repeats)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "products.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print_table(report)
    print(f"JSON: {out}")


if __name__ == "__main__":
    main()
