"""The observatory's moves: target to target (overlapped vs sequential), and bad weather.

One ``alpaca-simulators`` process (tests/alpaca_sim.py: 127.0.0.1, offline). The
same drivers the ``observe`` flow uses (devices.registry.device_set: telescope, dome,
filter wheel, focuser) move the observatory from target A to target B and back,
``--repeats`` times each way, alternating the two ways of doing it:

* **overlapped** (what flows/observe.py does): the slew, the dome's turn to the
  target's azimuth and the filter change with its focus move, all at once;
* **sequential** (the baseline, as many scripts do it): slew, then dome, then filter,
  then focus.

Each figure is from the first command until every device has stopped (the next
exposure could start), as medians.

**Bad weather**: the sky watch of a run (tasks/control/sky_watch.py, polling every
0.2 s) over a 30 s light exposure on the simulator's camera; the safety monitor is
set unsafe (``PUT safetymonitor/0/issafe``) and timed: until the camera is idle
(shutter closed), and until the telescope is parked and the dome closed.

A table on stdout and JSON in bench/results/observatory.json.

    uv run --frozen python -m bench.observatory --repeats 5
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from devices.observatory import DeviceSet
from devices.registry import device_set
from schemas.devices import DeviceConfig, DeviceType
from schemas.instrument import InstrumentConfig, load_instrument
from tasks.control.devices import open_devices
from tasks.control.instrument import open_instrument, plan_instrument
from tasks.control.sky_watch import SkyWatch
from tests.alpaca_sim import RunningSimulator, running_simulator

SIM_ALPACA = Path(__file__).resolve().parents[1] / "deploy" / "instruments" / "sim-alpaca.yaml"
LOGGER = logging.getLogger("bench.observatory")

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


async def _poll(check: Callable[[], Awaitable[bool]], timeout: float) -> float:
    """Seconds until ``check()`` is true (polled every 10 ms)."""
    start = time.perf_counter()
    while not await check():
        if time.perf_counter() - start > timeout:
            raise TimeoutError(f"not within {timeout} s")
        await asyncio.sleep(0.01)
    return time.perf_counter() - start


async def weather(sim: RunningSimulator, repeats: int) -> dict[str, list[float]]:
    """Unsafe -> camera idle, and unsafe -> parked and closed (module docstring)."""
    config = load_instrument(SIM_ALPACA).with_overrides(port=sim.port).model_dump()
    config["devices"].append({"name": "safety", "type": "safetymonitor", "port": sim.port})
    config["safety"] = {"monitors": ["safety"], "poll_s": 0.2, "max_age_s": 2, "resume_after_s": 0}
    instrument = InstrumentConfig.model_validate(config)
    assert instrument.safety is not None
    [plan] = plan_instrument(instrument)
    found: dict[str, list[float]] = {"shutter_closed_s": [], "parked_and_closed_s": []}
    form = {"ClientID": "1", "ClientTransactionID": "1"}
    async with httpx.AsyncClient(base_url=f"{sim.base_url}/api/v1", trust_env=False) as http:

        async def value(path: str) -> object:
            return (await http.get(path, params=form)).json()["Value"]

        for _ in range(repeats):
            await asyncio.to_thread(sim.reload)
            async with open_instrument([plan]) as [session], open_devices(instrument) as devices:
                watch = SkyWatch(
                    instrument.safety, devices.readers, devices.drivers, "bench", LOGGER
                )
                await watch.poll_once()
                await watch.ready_for_light(lambda: None)
                mount = devices.drivers.mount
                assert mount is not None
                await mount.point(90.0, 30.0, timeout_s=TIMEOUT_S)
                runner = asyncio.ensure_future(watch.run())
                light = asyncio.ensure_future(
                    watch.light(session.controller.expose(30.0, open_shutter=True))
                )
                await _poll(lambda: _equals(value("camera/0/camerastate"), 2), 60)
                await http.put("safetymonitor/0/issafe", data={**form, "IsSafe": "false"})
                start = time.perf_counter()
                await _poll(lambda: _equals(value("camera/0/camerastate"), 0), 30)
                found["shutter_closed_s"].append(time.perf_counter() - start)
                await _poll(lambda: _parked_and_closed(value), TIMEOUT_S)
                found["parked_and_closed_s"].append(time.perf_counter() - start)
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await light
                runner.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await runner
                await http.put("safetymonitor/0/issafe", data={**form, "IsSafe": "true"})
    return found


async def _equals(reading: Awaitable[object], wanted: object) -> bool:
    return await reading == wanted


async def _parked_and_closed(value: Callable[[str], Awaitable[object]]) -> bool:
    return await value("telescope/0/atpark") is True and await value("dome/0/shutterstatus") == 1


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
        unsafe = await weather(sim, repeats)
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
        "unsafe_median_s": {k: round(statistics.median(v), 3) for k, v in unsafe.items()},
        "unsafe_samples_s": {k: [round(x, 3) for x in v] for k, v in unsafe.items()},
    }


def print_table(report: dict[str, Any]) -> None:
    medians = report["target_change_median_s"]
    print("target A <-> B, until every device stopped (median of", 2 * report["repeats"], "moves)")
    for label in ("overlapped", "sequential"):
        print(f"  {label:<11} {medians[label]:8.3f} s")
    print(f"  sequential / overlapped: {report['sequential_over_overlapped']}x")
    unsafe = report["unsafe_median_s"]
    print(f"unsafe (median of {report['repeats']}, watch polling every 0.2 s)")
    print(f"  -> shutter closed (camera idle)  {unsafe['shutter_closed_s']:8.3f} s")
    print(f"  -> parked and dome closed        {unsafe['parked_and_closed_s']:8.3f} s")


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
