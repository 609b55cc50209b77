"""Twilight flats: how many frames land within the target level, against the usual way.

The Archon simulator (in this process, its shutter lit by flows/simulated_sky.py's
twilight sky) at a site placed where the Sun is setting through ``sun_highest`` now,
the Sun run ``--speed`` times faster (tasks/observing/twilight.SkyClock, shared by the
sky and the planner) so an evening twilight passes in a minute or two. The
``twilight-flats`` flow's work (flows/twilight.take_twilight_flats) runs twice, each
on a fresh twilight:

* **predicted** (what the flow does): each time from the last frame's rate, moved to
  the next frame's Sun altitude with the sky's slope (measured from the frames);
* **scaled** (the baseline many scripts use): the last time times target / level.

Figures: the fraction of all frames (probes included) within the target +- tolerance,
the good flats per filter, and the median |level / target - 1| of the frames after
each filter's first. A table on stdout and JSON in bench/results/twilight.json.

    uv run --frozen python -m bench.twilight --speed 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import tempfile
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from astropy.io import fits
from prefect import flow

from devices.archon.acf import load_acf
from devices.archon.simulator import ArchonSimulator
from devices.archon.simulator.shutter import ShutterBlade
from flows.settings import configure_prefect
from flows.simulated_sky import TwilightSky, twilight_site
from flows.twilight import take_twilight_flats
from schemas.instrument import InstrumentConfig, load_instrument
from schemas.products import Product
from schemas.results import SequenceResult
from schemas.site import Site
from schemas.twilight import TwilightFlatSpec
from tasks.observing.twilight import SkyClock

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
SIM = ROOT / "deploy" / "instruments" / "sim.yaml"
SIM_ACF = ROOT / "deploy" / "instruments" / "sim.acf"
APO = Site(name="APO", latitude_deg=32.78, longitude_deg=-105.82, elevation_m=2788, timezone="UTC")
FILTERS = ["U", "B", "V"]
"""In evening order (the simulator's sky is the same in each: no throughputs)."""
SPEC: dict[str, Any] = {
    "name": "bench-twilight",
    "twilight": "evening",
    "filters": [{"filter": f, "count": 6} for f in FILTERS],
    "target_adu": 20000,
    "tolerance": 0.1,
    "min_exptime": 0.3,
    "max_exptime": 8.0,
    "sun_highest": -2.0,
    "sun_lowest": -8.0,
    "build_masters": False,
}


def _instrument(port: int, data: Path, site: Site) -> InstrumentConfig:
    config = load_instrument(SIM).with_overrides(port=port, data_root=data)
    dump = config.model_dump()
    dump["filters"] = FILTERS
    dump["site"] = site.model_dump()
    dump["concurrency_name"] = f"bench-twilight-{uuid.uuid4().hex[:8]}"
    return InstrumentConfig.model_validate(dump)


def _levels(result: SequenceResult) -> list[tuple[int, str, float, bool]]:
    """(expnum, filter, level, kept) of every frame the run took, in order."""
    frames = []
    for exposure, kept in [(e, True) for e in result.exposures] + [
        (e, False) for e in result.rejected
    ]:
        raw = next(f.path for f in exposure.files if f.product is Product.RAW)
        header = fits.getheader(raw)
        frames.append((exposure.expnum, str(header["FILTER"]), float(header["FLATLEVL"]), kept))
    return sorted(frames)


async def _one(follow_sun: bool, speed: float, data: Path) -> dict[str, Any]:
    spec = TwilightFlatSpec.model_validate(SPEC)
    now = datetime.now(UTC)
    site = twilight_site(APO, spec.sun_highest - 0.05, setting=True, when=now)
    clock = SkyClock.from_now(now, speed)
    blade = ShutterBlade(light=TwilightSky(site, clock))
    async with ArchonSimulator(load_acf(SIM_ACF), port=0, seed=3, shutter_blade=blade) as sim:
        instrument = _instrument(sim.port, data, site)

        @flow(name="bench-twilight")
        async def run() -> SequenceResult:
            return await take_twilight_flats(spec, instrument, clock, follow_sun=follow_sun)

        result = await run()
    frames = _levels(result)
    target, tolerance = spec.target_adu, spec.tolerance
    within = [abs(level / target - 1) <= tolerance for _, _, level, _ in frames]
    firsts: set[str] = set()
    later = []
    for _, name, level, _ in frames:
        if name in firsts:
            later.append(abs(level / target - 1))
        firsts.add(name)
    good = {name: sum(1 for _, n, _, kept in frames if kept and n == name) for name in FILTERS}
    return {
        "frames": len(frames),
        "within_target": sum(within),
        "fraction_within_target": round(sum(within) / len(frames), 3) if frames else 0.0,
        "good_flats_per_filter": good,
        "median_abs_error_after_probe": round(statistics.median(later), 4) if later else None,
        "skipped": result.skipped,
        "levels_adu": [round(level) for _, _, level, _ in frames],
    }


async def run(speed: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-twilight-") as tmp:
        predicted = await _one(True, speed, Path(tmp) / "predicted")
        scaled = await _one(False, speed, Path(tmp) / "scaled")
    return {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "cpus": _cpus()},
        "speed": speed,
        "spec": SPEC,
        "predicted": predicted,
        "scaled": scaled,
    }


def _cpus() -> int:
    return os.cpu_count() or 0


def print_table(report: dict[str, Any]) -> None:
    spec = report["spec"]
    print(
        f"twilight flats, evening {spec['sun_highest']}..{spec['sun_lowest']} deg, the Sun "
        f"x{report['speed']:g}; target {spec['target_adu']} ADU +- {spec['tolerance']:.0%}"
    )
    print(f"  {'':<10} {'frames':>6} {'within':>6} {'fraction':>8} {'median err':>10}  good flats")
    for label in ("predicted", "scaled"):
        row = report[label]
        error = row["median_abs_error_after_probe"]
        print(
            f"  {label:<10} {row['frames']:>6} {row['within_target']:>6} "
            f"{row['fraction_within_target']:>8.2f} "
            f"{'-' if error is None else f'{error:.1%}':>10}  {row['good_flats_per_filter']}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--speed", type=float, default=20.0, help="how much faster the Sun runs")
    args = parser.parse_args()
    if not 1.0 <= args.speed <= 60.0:
        parser.error("--speed must be within 1..60")
    configure_prefect()
    report = asyncio.run(run(args.speed))
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "twilight.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print_table(report)
    print(f"JSON: {out}")


if __name__ == "__main__":
    main()
