"""The simulated observatory of ``ccdflow sim --observatory``: the Alpaca simulators
set up for deploy/instruments/sim-observatory.yaml, offline.

Its telescope stands at that instrument's site, pointing at the first example
target; its star catalogue covers the simulator's default pointing and the targets
of the example observations in deploy/examples (elsewhere a light frame shows an
empty sky). Files go to ``state/observatory-sim/``; the process is stopped with the
command, even by kill -9 (flows/reaper.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import yaml

from flows.alpaca_simulator import (
    DEFAULT_POINTING,
    RunningSimulator,
    running,
    write_catalogue,
    write_config,
)
from flows.reaper import start_reaper
from flows.settings import STATE_DIR
from schemas.instrument import load_instrument

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
INSTRUMENT = DEPLOY / "instruments" / "sim-observatory.yaml"
EXAMPLES = DEPLOY / "examples"


def example_fields(folder: Path = EXAMPLES) -> list[tuple[float, float]]:
    """(RA, Dec) degrees of every example observation's target."""
    fields = []
    for path in sorted(folder.glob("*.yaml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        target = data.get("target") if isinstance(data, dict) else None
        if isinstance(target, dict) and {"ra_deg", "dec_deg"} <= set(target):
            fields.append((float(target["ra_deg"]), float(target["dec_deg"])))
    return fields


@contextlib.contextmanager
def alpaca_simulators(port: int, state_dir: Path = STATE_DIR) -> Iterator[RunningSimulator]:
    """The Alpaca simulators on 127.0.0.1:``port`` until the block ends."""
    start_reaper()  # a kill -9 of this command stops the simulator process too
    folder = (state_dir / "observatory-sim").resolve()
    folder.mkdir(parents=True, exist_ok=True)
    site = load_instrument(INSTRUMENT).site
    fields = example_fields()
    catalogue = write_catalogue(folder / "gaia-synthetic.db", [DEFAULT_POINTING, *fields])
    config = write_config(
        folder,
        catalogue,
        # Near the first example's target: a newcomer's first slew is short.
        pointing=fields[0] if fields else DEFAULT_POINTING,
        site=(site.latitude_deg, site.longitude_deg, site.elevation_m) if site else None,
    )
    with running(folder, config, port) as sim:
        yield sim
