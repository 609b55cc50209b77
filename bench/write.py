"""Write throughput of one 100 MB exposure: our FITS writer and HDF5 archive vs plain writes.

One exposure is 4 CCDs of 4096 x 3072 pixels (100.7 MB as uint16; float32 for the
compressed cases too, where quantization changes the cost). ``write_fits`` is timed per
engine, per layout (one file per CCD, or one multi-extension file) and with or without
RICE_1, against astropy's plain ``HDUList.writeto`` of the same HDUs (no checksum, no
fsync, no sha256, no link) measured in the same run: the ratio is what safety costs.
``SequenceArchive.append`` is timed over several appends against plain h5py writes (no
fletcher32, no SWMR, no sha256). Throughput is MB of raw pixels per second; medians of
``--repeats`` runs. Files go to a temporary folder inside the repository (the same
disk as the data, never /dev/shm) that is deleted afterwards.

    make bench            # or: uv run --frozen python -m bench.write --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parents[1]
CCDS = ("r1", "r2", "b1", "b2")
SHAPE = (4096, 3072)


@dataclass(frozen=True)
class Case:
    """One timed way of writing the exposure."""

    name: str
    dtype: str
    layout: str  # "per-CCD" or "MEF"
    compression: str
    engine: str  # "astropy plain" for the baselines
    baseline: str | None  # name of the case this one is compared with


def _exposure(dtype: str) -> dict[str, np.ndarray[Any, Any]]:
    """Bias-like frames: a level, a gentle gradient and 4.5 ADU of read noise."""
    rng = np.random.default_rng(42)
    ramp = np.linspace(0, 20, SHAPE[1], dtype=np.float32)
    frames = {}
    for name in CCDS:
        frame = rng.normal(1000, 4.5, SHAPE).astype(np.float32) + ramp
        frames[name] = frame.astype(np.uint16) if dtype == "u2" else frame - 1000
    return frames


def _cards(name: str) -> list[tuple[str, str | int | float | bool, str]]:
    return [
        ("CCDNAME", name, "CCD name"),
        ("GAIN", 1.52, "[e-/ADU] gain"),
        ("RDNOISE", 4.5, "[e-] read noise"),
        ("DATASEC", f"[1:{SHAPE[1]},1:{SHAPE[0]}]", "science pixels"),
        *((f"OVRSCN{amp}", 1000.123, "[adu] overscan level") for amp in "ABCD"),
    ]


PRIMARY: list[tuple[str, str | int | float | bool, str]] = [
    ("EXPNUM", 12345, "exposure number"),
    ("IMAGETYP", "bias", "image type"),
    ("EXPTIME", 0.0, "[s] exposure time"),
    ("DATE-OBS", "2026-11-21T03:04:05.123", "start of integration (UTC)"),
    ("INSTRUME", "ccdsim", "instrument"),
]


def _cases() -> list[Case]:
    cases = []
    for dtype, compressions in (("u2", ("none", "RICE_1")), ("f4", ("RICE_1",))):
        for compression in compressions:
            for layout in ("per-CCD", "MEF"):
                base = f"{dtype} {layout} {compression} astropy plain"
                cases.append(Case(base, dtype, layout, compression, "astropy plain", None))
                for engine in ("astropy", "fitsio"):
                    name = f"{dtype} {layout} {compression} write_fits {engine}"
                    cases.append(Case(name, dtype, layout, compression, engine, base))
    return cases


def _plain_writer(case: Case) -> Callable[[Path, dict[str, np.ndarray[Any, Any]]], None]:
    from astropy.io import fits

    def image(frame: np.ndarray[Any, Any], name: str) -> Any:
        header = fits.Header([fits.Card(*card) for card in _cards(name)])
        if case.compression == "RICE_1":
            return fits.CompImageHDU(
                frame, header=header, quantize_level=16.0, quantize_method=1, dither_seed=1
            )
        return fits.ImageHDU(frame, header=header)

    def write(folder: Path, frames: dict[str, np.ndarray[Any, Any]]) -> None:
        primary = fits.Header([fits.Card(*card) for card in PRIMARY])
        if case.layout == "MEF":
            hdus = [fits.PrimaryHDU(header=primary)]
            hdus += [image(frame, name) for name, frame in frames.items()]
            fits.HDUList(hdus).writeto(folder / "exposure.fits")
            return
        for name, frame in frames.items():
            if case.compression == "RICE_1":
                hdul = fits.HDUList([fits.PrimaryHDU(header=primary), image(frame, name)])
            else:
                header = primary + fits.Header([fits.Card(*card) for card in _cards(name)])
                hdul = fits.HDUList([fits.PrimaryHDU(frame, header=header)])
            hdul.writeto(folder / f"{name}.fits")

    return write


def _safe_writer(case: Case) -> Callable[[Path, dict[str, np.ndarray[Any, Any]]], None]:
    from tasks.files.fits_files import Compression, FitsEngine, ImagePart, write_fits

    engine, compression = FitsEngine(case.engine), Compression(case.compression)

    def write(folder: Path, frames: dict[str, np.ndarray[Any, Any]]) -> None:
        parts = {
            name: ImagePart(frame, _cards(name), extname=name) for name, frame in frames.items()
        }
        if case.layout == "MEF":
            write_fits(
                folder / "exposure.fits",
                list(parts.values()),
                primary_cards=PRIMARY,
                engine=engine,
                compression=compression,
            )
            return
        for name, part in parts.items():
            write_fits(
                folder / f"{name}.fits",
                [ImagePart(part.data, part.cards)],
                primary_cards=PRIMARY,
                engine=engine,
                compression=compression,
            )

    return write


def _time_case(case: Case, frames: dict[str, Any], repeats: int, root: Path) -> dict[str, Any]:
    write = _plain_writer(case) if case.baseline is None else _safe_writer(case)
    seconds, sizes = [], []
    for repeat in range(repeats):
        folder = root / f"{case.name.replace(' ', '_')}-{repeat}"
        folder.mkdir()
        start = time.perf_counter()
        write(folder, frames)
        seconds.append(time.perf_counter() - start)
        files = list(folder.iterdir())
        sizes.append(sum(path.stat().st_size for path in files))
        for path in files:
            path.unlink()
        folder.rmdir()
    return {"seconds": seconds, "file_bytes": statistics.median(sizes)}


def _time_hdf5(frames: dict[str, Any], appends: int, repeats: int, root: Path) -> dict[str, Any]:
    import h5py

    from tasks.files.hdf5_archive import SequenceArchive

    safe, plain = [], []
    for repeat in range(repeats):
        path = root / f"archive-{repeat}.h5"
        archive = SequenceArchive.create(
            path,
            {name: SHAPE for name in frames},
            dtype=np.dtype("u2"),
            provenance={"bench": "write"},
            columns=[("object", "str"), ("exptime", "float")],
        )
        with archive:
            for n in range(appends):
                start = time.perf_counter()
                archive.append(n, frames, {"object": "bias", "exptime": 0.0})
                safe.append(time.perf_counter() - start)
        path.unlink()
        with h5py.File(path, "x") as h5:
            cubes = {
                name: h5.create_dataset(
                    name, shape=(0, *SHAPE), maxshape=(None, *SHAPE), chunks=(1, *SHAPE), dtype="u2"
                )
                for name in frames
            }
            for n in range(appends):
                start = time.perf_counter()
                for name, frame in frames.items():
                    cubes[name].resize(n + 1, axis=0)
                    cubes[name][n] = frame
                h5.flush()
                plain.append(time.perf_counter() - start)
        path.unlink()
    return {"append_seconds": safe, "plain_seconds": plain}


def run(repeats: int, appends: int) -> dict[str, Any]:
    exposures = {dtype: _exposure(dtype) for dtype in ("u2", "f4")}
    raw_mb = {
        dtype: sum(f.nbytes for f in frames.values()) / 1e6 for dtype, frames in exposures.items()
    }
    results: dict[str, Any] = {}
    with TemporaryDirectory(prefix=".bench-write-", dir=REPO) as tmp:
        root = Path(tmp)
        for case in _cases():
            timed = _time_case(case, exposures[case.dtype], repeats, root)
            median = statistics.median(timed["seconds"])
            results[case.name] = {
                "dtype": case.dtype,
                "layout": case.layout,
                "compression": case.compression,
                "engine": case.engine,
                "baseline": case.baseline,
                "median_s": round(median, 4),
                "seconds": [round(s, 4) for s in timed["seconds"]],
                "raw_mb_per_s": round(raw_mb[case.dtype] / median, 1),
                "file_mb": round(timed["file_bytes"] / 1e6, 2),
                "compression_ratio": round(raw_mb[case.dtype] * 1e6 / timed["file_bytes"], 2),
            }
        for entry in results.values():
            if entry["baseline"]:
                entry["time_over_baseline"] = round(
                    entry["median_s"] / results[entry["baseline"]]["median_s"], 2
                )
        hdf5 = _time_hdf5(exposures["u2"], appends, repeats, root)
    append_s = statistics.median(hdf5["append_seconds"])
    plain_s = statistics.median(hdf5["plain_seconds"])
    return {
        "benchmark": "write",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "exposure": {"ccds": len(CCDS), "shape": SHAPE, "raw_mb": raw_mb},
        "repeats": repeats,
        "fits": results,
        "hdf5": {
            "appends_per_repeat": appends,
            "append_median_s": round(append_s, 4),
            "append_mb_per_s": round(raw_mb["u2"] / append_s, 1),
            "plain_h5py_median_s": round(plain_s, 4),
            "plain_h5py_mb_per_s": round(raw_mb["u2"] / plain_s, 1),
            "time_over_plain": round(append_s / plain_s, 2),
        },
    }


def print_table(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    raw = report["exposure"]["raw_mb"]
    table = Table(
        title=f"one exposure: 4 x 4096x3072 ({raw['u2']:.1f} MB uint16, {raw['f4']:.1f} MB "
        f"float32), medians of {report['repeats']}"
    )
    for column in ("dtype", "layout", "compression", "writer"):
        table.add_column(column)
    for column in ("median s", "raw MB/s", "file MB", "ratio", "time / plain"):
        table.add_column(column, justify="right")
    for entry in report["fits"].values():
        writer = "astropy plain writeto" if entry["baseline"] is None else entry["engine"]
        table.add_row(
            entry["dtype"],
            entry["layout"],
            entry["compression"],
            writer,
            f"{entry['median_s']:.3f}",
            f"{entry['raw_mb_per_s']:.0f}",
            f"{entry['file_mb']:.1f}",
            f"{entry['compression_ratio']:.2f}",
            f"{entry.get('time_over_baseline', 1.0):.2f}",
        )
    hdf5 = report["hdf5"]
    table.add_row(
        "u2", "HDF5 cube", "none", "h5py plain", f"{hdf5['plain_h5py_median_s']:.3f}",
        f"{hdf5['plain_h5py_mb_per_s']:.0f}", "", "", "1.00",
    )  # fmt: skip
    table.add_row(
        "u2", "HDF5 cube", "none", "SequenceArchive.append", f"{hdf5['append_median_s']:.3f}",
        f"{hdf5['append_mb_per_s']:.0f}", "", "", f"{hdf5['time_over_plain']:.2f}",
    )  # fmt: skip
    # Piped output would be cut to 80 columns, which this table does not fit.
    Console(width=None if sys.stdout.isatty() else 120).print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--appends", type=int, default=10, help="HDF5 appends per repeat")
    args = parser.parse_args()
    if args.repeats < 3:
        parser.error("--repeats must be at least 3 (medians)")
    report = run(args.repeats, args.appends)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "write.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print_table(report)
    print(f"JSON: {out}")


if __name__ == "__main__":
    main()
