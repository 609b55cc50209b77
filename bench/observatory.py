"""Overhead between two targets: our overlapped moves against a sequential baseline.

One ``alpaca-simulators`` process (tests/alpaca_sim.py: 127.0.0.1, offline). The
same drivers the ``observe`` flow uses (devices.registry.device_set: telescope, dome,
filter wheel, focuser) move the observatory from target A to target B and back,
``--repeats`` times each way, alternating the two ways of doing it:

* **overlapped** (what flows/observe.py does): the slew, the dome's turn to the
  target's azimuth and the filter change with its focus move, all at once;
* **sequential** (the baseline, as many scripts do it): slew, then dome, then filter,
  then focus.

Each figure is from the first command until every device has stopped (the next
exposure could start), as medians. A table on stdout and JSON in
bench/results/observatory.json.

    uv run --frozen python -m bench.observatory --repeats 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from devices.observatory import DeviceSet
from devices.registry import device_set
from schemas.devices import DeviceConfig, DeviceType
from tests.alpaca_sim import running_simulator

RESULTS = Path(__file__).resolve().parent / "results"
TIMEOUT_S = 300.0
TARGETS = (
    {"name": "A", "ra_deg": 37.95, "dec_deg": 60.0, "dome_az": 10.0, "filter": "Red"},
    {"name": "B", "ra_deg": 80.0, "dec_deg": 20.0, "dome_az": 120.0, "filter": "Blue"},
)


async def _focus_for(devices: DeviceSet, name: str, base: int) -> None:
    assert devices.filters is not None
    assert devices.focuser is not None
    offset = await devices.filters.select(name, timeout_s=TIMEOUT_S)
    await devices.focuser.move_to(base + offset, timeout_s=TIMEOUT_S)


async def overlapped(devices: DeviceSet, target: dict[str, Any], base: int) -> None:
    assert devices.mount is not None
    assert devices.enclosure is not None
    await asyncio.gather(
        devices.mount.point(target["ra_deg"], target["dec_deg"], timeout_s=TIMEOUT_S),
        devices.enclosure.follow(target["dome_az"], timeout_s=TIMEOUT_S),
        _focus_for(devices, target["filter"], base),
    )


async def sequential(devices: DeviceSet, target: dict[str, Any], base: int) -> None:
    assert devices.mount is not None
    assert devices.enclosure is not None
    assert devices.filters is not None
    assert devices.focuser is not None
    await devices.mount.point(target["ra_deg"], target["dec_deg"], timeout_s=TIMEOUT_S)
    await devices.enclosure.follow(target["dome_az"], timeout_s=TIMEOUT_S)
    offset = await devices.filters.select(target["filter"], timeout_s=TIMEOUT_S)
    await devices.focuser.move_to(base + offset, timeout_s=TIMEOUT_S)


Move = Callable[[DeviceSet, dict[str, Any], int], Awaitable[None]]


async def run(repeats: int) -> dict[str, Any]:
    with (
        tempfile.TemporaryDirectory(prefix="ccdflow-bench-observatory-") as folder,
        running_simulator(Path(folder)) as sim,
    ):
        entries = [
            DeviceConfig(name=kind.value[:16], type=kind, port=sim.port)
            for kind in (
                DeviceType.TELESCOPE,
                DeviceType.DOME,
                DeviceType.FILTERWHEEL,
                DeviceType.FOCUSER,
            )
        ]
        devices = device_set(entries)
        for source in devices.sources:
            await source.connect()
        try:
            assert devices.focuser is not None
            base = await devices.focuser.position()
            await overlapped(devices, TARGETS[0], base)  # start at A, untimed
            seconds: dict[str, list[float]] = {"overlapped": [], "sequential": []}
            ways: list[tuple[str, Move]] = [
                ("overlapped", overlapped),
                ("sequential", sequential),
            ]
            for _ in range(repeats):
                for label, move in ways:
                    for target in (TARGETS[1], TARGETS[0]):  # A -> B, then back
                        start = time.perf_counter()
                        await move(devices, target, base)
                        seconds[label].append(time.perf_counter() - start)
        finally:
            for source in devices.sources:
                await source.close()
    medians = {label: round(statistics.median(values), 3) for label, values in seconds.items()}
    return {
        "benchmark": "observatory",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "server": "alpaca-simulators on 127.0.0.1 (its own process)",
        "targets": [t["name"] for t in TARGETS],
        "repeats": repeats,
        "target_change_median_s": medians,
        "sequential_over_overlapped": round(medians["sequential"] / medians["overlapped"], 2),
        "samples_s": {label: [round(v, 3) for v in values] for label, values in seconds.items()},
    }


def print_table(report: dict[str, Any]) -> None:
    medians = report["target_change_median_s"]
    print("target A <-> B, until every device stopped (median of", 2 * report["repeats"], "moves)")
    for label in ("overlapped", "sequential"):
        print(f"  {label:<11} {medians[label]:8.3f} s")
    print(f"  sequential / overlapped: {report['sequential_over_overlapped']}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if args.repeats < 3:
        parser.error("--repeats must be at least 3 (medians)")
    report = asyncio.run(run(args.repeats))
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "observatory.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print_table(report)
    print(f"JSON: {out}")


if __name__ == "__main__":
    main()
