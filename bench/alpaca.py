"""Alpaca camera: our adapter against alpyca (the official client), same simulator, same run.

One ``alpaca-simulators`` process (tests/alpaca_sim.py: 127.0.0.1, offline catalogue)
serves a camera with a 4096 x 4096 sensor (``cameraxsize``/``cameraysize`` and
``numx``/``numy`` in its config). Measured, each as the median of ``--repeats``,
alternating the two clients:

* **download 4096^2**: one exposure is taken, then its ImageBytes (32 MB, UInt16) are
  downloaded again and again (the simulator keeps the frame): ours to a (y, x) numpy
  array; alpyca's ``ImageArray`` (list of ``array.array`` columns), the same turned
  into numpy, and ``ImageArrayRaw`` (a flat ``array.array``). Every array is checked
  against the first one. A blocking socket that only reads the answer's bytes gives
  the floor any client has on this server (its own serialisation comes first);
* **decode only**: the same received bytes decoded by ours and by alpyca's
  ImageBytes code (its ``_build_imagedata_array`` + nested-list step, private
  methods called directly), so the client's own cost is seen without the server's;
* **property GET**: ``ccdtemperature``, ``camerastate``, ``imageready``, one at a
  time, ``--gets`` each;
* **exposure overhead**: from the end of integration (StartExposure answered +
  duration) until the image is a numpy array in memory, at 1024^2 (a NumX/NumY
  subframe of the 4096^2 sensor: the simulator renders a NumX x NumY frame) and at
  4096^2; both clients poll ImageReady every 10 ms. The simulator caches identical
  frames, so after one untimed warm-up per size its star-field synthesis is out of
  the figure (reported apart as ``synthesis_s``); what remains is the simulator's
  timer and readout slop, the polling, the transfer and the decode.

A table on stdout and JSON in bench/results/alpaca.json.

    uv run --frozen python -m bench.alpaca --repeats 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt

from devices.alpaca.camera import AlpacaCamera
from devices.alpaca.client import AlpacaClient
from devices.alpaca.imagebytes import decode_imagebytes
from tests.alpaca_sim import RunningSimulator, running_simulator

RESULTS = Path(__file__).resolve().parent / "results"
SENSOR = 4096
DURATION = 0.5
POLL = 0.01
PROPERTIES = {
    "ccdtemperature": "CCDTemperature",
    "camerastate": "CameraState",
    "imageready": "ImageReady",
}


def _median(values: list[float]) -> float:
    return round(statistics.median(values), 6)


def _alpyca_camera(sim: RunningSimulator) -> Any:
    from alpaca.camera import Camera  # type: ignore[import-untyped]

    return Camera(f"{sim.host}:{sim.port}", 0)


def _alpyca_numpy(theirs: Any) -> npt.NDArray[Any]:
    """alpyca's ImageArray as the (y, x) numpy array a pipeline needs."""
    return np.array(theirs.ImageArray).T


def _alpyca_raw_numpy(theirs: Any) -> npt.NDArray[Any]:
    raw = theirs.ImageArrayRaw
    info = theirs.ImageArrayInfo
    return np.frombuffer(raw, dtype=raw.typecode).reshape(info.Dimension1, info.Dimension2).T


def _timed(call: Callable[[], Any]) -> tuple[float, Any]:
    began = time.perf_counter()
    result = call()
    return time.perf_counter() - began, result


async def _atimed(call: Awaitable[Any]) -> tuple[float, Any]:
    began = time.perf_counter()
    result = await call
    return time.perf_counter() - began, result


def _raw_socket_read(sim: RunningSimulator) -> int:
    """The floor for any client: one blocking socket, the request, every byte read."""
    request = (
        "GET /api/v1/camera/0/imagearray HTTP/1.1\r\n"
        f"Host: {sim.host}:{sim.port}\r\nAccept: application/imagebytes\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    received = 0
    with socket.create_connection((sim.host, sim.port), timeout=60) as connection:
        connection.sendall(request)
        while chunk := connection.recv(1 << 20):
            received += len(chunk)
    return received


def _same(reference: npt.NDArray[Any], array: npt.NDArray[Any], who: str) -> None:
    if array.shape != reference.shape or not np.array_equal(array, reference):
        raise RuntimeError(f"{who} returned a different image {array.shape}")


async def bench_download(
    sim: RunningSimulator, ours: AlpacaCamera, theirs: Any, repeats: int
) -> dict[str, Any]:
    await ours.set_subframe(0, 0, SENSOR, SENSOR)
    await ours.start_exposure(0.1, light=False)
    await ours.wait_image_ready(timeout=300)
    reference = np.array(await ours.download())
    times: dict[str, list[float]] = {
        "ours": [],
        "alpyca ImageArray": [],
        "alpyca ImageArray -> numpy": [],
        "alpyca ImageArrayRaw": [],
        "alpyca ImageArrayRaw -> numpy": [],
        "floor: raw socket, bytes only": [],
    }
    for _ in range(repeats):
        seconds, array = await _atimed(ours.download())
        times["ours"].append(seconds)
        _same(reference, array, "ours")
        seconds, _ = _timed(lambda: theirs.ImageArray)
        times["alpyca ImageArray"].append(seconds)
        seconds, array = _timed(lambda: _alpyca_numpy(theirs))
        times["alpyca ImageArray -> numpy"].append(seconds)
        _same(reference, array, "alpyca ImageArray")
        seconds, _ = _timed(lambda: theirs.ImageArrayRaw)
        times["alpyca ImageArrayRaw"].append(seconds)
        seconds, array = _timed(lambda: _alpyca_raw_numpy(theirs))
        times["alpyca ImageArrayRaw -> numpy"].append(seconds)
        _same(reference, array, "alpyca ImageArrayRaw")
        seconds, received = _timed(lambda: _raw_socket_read(sim))
        times["floor: raw socket, bytes only"].append(seconds)
        if received < reference.nbytes:
            raise RuntimeError(f"raw socket read only {received} bytes")
    medians = {name: _median(values) for name, values in times.items()}
    return {
        "shape": list(reference.shape),
        "dtype": str(reference.dtype),
        "mb": round(reference.nbytes / 1e6, 1),
        "median_s": medians,
        "speedup_over": {
            name: round(medians[name] / medians["ours"], 2) for name in medians if name != "ours"
        },
    }


class _FakeResponse:
    """Just what alpyca's ImageBytes decoder reads from a ``requests`` response."""

    def __init__(self, body: bytes) -> None:
        self.content = body
        self.text = body


def bench_decode(sim: RunningSimulator, theirs: Any, repeats: int) -> dict[str, Any]:
    body = httpx.get(
        f"{sim.base_url}/api/v1/camera/0/imagearray",
        headers={"Accept": "application/imagebytes"},
        timeout=60,
        trust_env=False,
    ).content
    ours_s, theirs_s = [], []
    reference = decode_imagebytes(body).pixels
    for _ in range(repeats):
        seconds, image = _timed(lambda: decode_imagebytes(body))
        ours_s.append(seconds)
        _same(reference, image.pixels, "ours")

        def alpyca_decode() -> Any:
            flat = theirs._build_imagedata_array(_FakeResponse(body))
            return theirs._build_imagedata_nested_list_array(flat)

        seconds, nested = _timed(alpyca_decode)
        theirs_s.append(seconds)
        if len(nested) != reference.shape[1]:
            raise RuntimeError("alpyca decoded a different shape")
    ours_median, theirs_median = _median(ours_s), _median(theirs_s)
    return {
        "bytes": len(body),
        "median_s": {"ours": ours_median, "alpyca": theirs_median},
        "alpyca_over_ours": round(theirs_median / ours_median, 1),
    }


async def bench_gets(ours: AlpacaCamera, theirs: Any, gets: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for member, attribute in PROPERTIES.items():
        ours_s, theirs_s = [], []
        await ours.get(member)  # warm both connections
        getattr(theirs, attribute)
        for _ in range(gets):
            seconds, _ = await _atimed(ours.get(member))
            ours_s.append(seconds)
            seconds, _ = _timed(lambda: getattr(theirs, attribute))  # noqa: B023
            theirs_s.append(seconds)
        results[member] = {
            "median_ms": {"ours": _median(ours_s) * 1e3, "alpyca": _median(theirs_s) * 1e3},
        }
        results[member]["alpyca_over_ours"] = round(
            results[member]["median_ms"]["alpyca"] / results[member]["median_ms"]["ours"], 2
        )
    return results


async def _ours_exposure(ours: AlpacaCamera) -> dict[str, float]:
    await ours.start_exposure(DURATION, light=False)
    end_of_integration = time.perf_counter() + DURATION
    await ours.wait_image_ready(timeout=300, poll=POLL)
    ready = time.perf_counter()
    array = await ours.download()
    in_memory = time.perf_counter()
    if array.size == 0:
        raise RuntimeError("empty image")
    return {
        "overhead_s": in_memory - end_of_integration,
        "ready_s": ready - end_of_integration,
        "download_s": in_memory - ready,
    }


def _alpyca_exposure(theirs: Any) -> dict[str, float]:
    theirs.StartExposure(DURATION, False)
    end_of_integration = time.perf_counter() + DURATION
    while not theirs.ImageReady:
        time.sleep(POLL)
    ready = time.perf_counter()
    array = _alpyca_numpy(theirs)
    in_memory = time.perf_counter()
    if array.size == 0:
        raise RuntimeError("empty image")
    return {
        "overhead_s": in_memory - end_of_integration,
        "ready_s": ready - end_of_integration,
        "download_s": in_memory - ready,
    }


async def bench_overhead(
    ours: AlpacaCamera, theirs: Any, size: int, repeats: int
) -> dict[str, Any]:
    await ours.set_subframe(0, 0, size, size)
    began = time.perf_counter()
    await ours.start_exposure(DURATION, light=False)
    await ours.wait_image_ready(timeout=300, poll=POLL)
    synthesis = time.perf_counter() - began - DURATION
    await ours.download()
    runs: dict[str, list[dict[str, float]]] = {"ours": [], "alpyca": []}
    for _ in range(repeats):
        runs["ours"].append(await _ours_exposure(ours))
        runs["alpyca"].append(_alpyca_exposure(theirs))
    summary: dict[str, Any] = {"shape": [size, size], "synthesis_s": round(synthesis, 3)}
    for who, items in runs.items():
        summary[who] = {key: _median([item[key] for item in items]) for key in items[0]}
    summary["alpyca_over_ours"] = round(
        summary["alpyca"]["overhead_s"] / summary["ours"]["overhead_s"], 2
    )
    return summary


async def run(repeats: int, gets: int) -> dict[str, Any]:
    sensor = {"cameraxsize": SENSOR, "cameraysize": SENSOR, "numx": SENSOR, "numy": SENSOR}
    with (
        tempfile.TemporaryDirectory(prefix="ccdflow-bench-alpaca-") as folder,
        running_simulator(Path(folder), camera=sensor) as sim,
    ):
        theirs = _alpyca_camera(sim)
        async with AlpacaClient(sim.host, sim.port, image_timeout=300) as client:
            ours = AlpacaCamera(client)
            await ours.connect()
            theirs.Connected = True
            download = await bench_download(sim, ours, theirs, repeats)
            decode = bench_decode(sim, theirs, repeats)
            gets_report = await bench_gets(ours, theirs, gets)
            overhead = {
                str(size): await bench_overhead(ours, theirs, size, repeats)
                for size in (1024, SENSOR)
            }
    return {
        "benchmark": "alpaca",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "server": "alpaca-simulators on 127.0.0.1 (its own process)",
        "peer": "alpyca (official ASCOM client), same simulator, same run, alternating",
        "repeats": repeats,
        "gets": gets,
        "download_4096": download,
        "decode_only": decode,
        "property_get": gets_report,
        "exposure_overhead": overhead,
        "exposure_s": DURATION,
        "poll_s": POLL,
    }


def print_table(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=120)
    download = report["download_4096"]
    table = Table(
        title=f"download + decode of {download['shape'][0]}x{download['shape'][1]} "
        f"{download['dtype']} ({download['mb']} MB ImageBytes), medians of {report['repeats']}"
    )
    table.add_column("client")
    table.add_column("median s", justify="right")
    table.add_column("its time / ours", justify="right")
    for name, seconds in download["median_s"].items():
        ratio = download["speedup_over"].get(name)
        table.add_row(name, f"{seconds:.3f}", "1.00" if ratio is None else f"{ratio:.2f}")
    decode = report["decode_only"]
    table.add_row(
        "decode only: ours / alpyca",
        f"{decode['median_s']['ours'] * 1e3:.3f} ms / {decode['median_s']['alpyca'] * 1e3:.1f} ms",
        f"{decode['alpyca_over_ours']:.0f}",
    )
    console.print(table)
    gets = Table(title=f"one property GET, medians of {report['gets']}")
    for column in ("member", "ours ms", "alpyca ms", "alpyca / ours"):
        gets.add_column(column, justify="left" if column == "member" else "right")
    for member, entry in report["property_get"].items():
        gets.add_row(
            member,
            f"{entry['median_ms']['ours']:.2f}",
            f"{entry['median_ms']['alpyca']:.2f}",
            f"{entry['alpyca_over_ours']:.2f}",
        )
    console.print(gets)
    overhead = Table(
        title=f"exposure overhead: end of a {report['exposure_s']} s integration to numpy in "
        f"memory, medians of {report['repeats']} (polling every {report['poll_s'] * 1e3:.0f} ms)"
    )
    for column in ("frame", "client", "overhead s", "until ready s", "download s"):
        overhead.add_column(column, justify="left" if column in ("frame", "client") else "right")
    for size, entry in report["exposure_overhead"].items():
        for who in ("ours", "alpyca"):
            overhead.add_row(
                f"{size}^2 (synthesis {entry['synthesis_s']:.2f} s)" if who == "ours" else "",
                who,
                f"{entry[who]['overhead_s']:.3f}",
                f"{entry[who]['ready_s']:.3f}",
                f"{entry[who]['download_s']:.3f}",
            )
    console.print(overhead)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--gets", type=int, default=200)
    args = parser.parse_args()
    if args.repeats < 3:
        parser.error("--repeats must be at least 3 (medians)")
    report = asyncio.run(run(args.repeats, args.gets))
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "alpaca.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print_table(report)
    print(f"JSON: {out}")


if __name__ == "__main__":
    main()
