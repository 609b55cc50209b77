"""More failures with real parts: a link cut in the middle of a frame transfer, and two
``ccdflow`` processes started at once against one instrument. Loopback only."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from prefect.settings import PREFECT_API_URL

from devices.archon.controller import ArchonController, ControllerTiming
from devices.archon.simulator import ArchonSimulator
from flows.exposure import take_exposure
from schemas.exposure import ExposureSpec
from schemas.instrument import InstrumentConfig, load_instrument
from tasks.control.instrument import plan_instrument
from tasks.durable.instrument_lock import lock_path
from tasks.files.verify import verify_fits_checksums
from tasks.processing.ccd_products import buffer_products

from .conftest import SIM_YAML
from .test_reliability import STARTUP_S, _ccdflow, _output

pytestmark = pytest.mark.slow

BIAS = ExposureSpec(image_type="bias")


@pytest.mark.usefixtures("prefect_harness")
async def test_connection_dropped_mid_fetch_the_frame_is_written_intact(
    archon_sim: ArchonSimulator, sim_instrument: InstrumentConfig
) -> None:
    # The next two FETCHes are cut after 3 blocks, the connection closed under them.
    archon_sim.drop_connection_during_fetch(3, times=2)
    [result] = await take_exposure(BIAS, sim_instrument)
    assert archon_sim.frames_completed == 1  # one readout: no exposure was taken again

    plan = plan_instrument(sim_instrument)[0]
    # Both cuts were spent on the run's fetch: a single-attempt fetch now gets it whole.
    probe = ArchonController(
        "127.0.0.1", archon_sim.port, plan.model.acf, timing=ControllerTiming(fetch_attempts=1)
    )
    headers = [fits.getheader(record.path) for record in result.files]
    [buffer] = {header["FRAMEBUF"] for header in headers}
    stored = archon_sim.buffer_data(buffer)
    assert stored is not None
    async with probe:
        assert np.array_equal(await probe.fetch(buffer), stored)

    # Each raw file holds exactly the controller's pixels of its CCD.
    expected = {
        product.ccd.name: product.raw[0]
        for product in buffer_products(stored, plan, BIAS, sim_instrument, buffer)
    }
    assert sorted(record.ccd for record in result.files) == sorted(expected)
    for record in result.files:
        verify_fits_checksums(record.path)
        with fits.open(record.path) as hdul:
            data = hdul[0].data
            header = hdul[0].header
        raw = expected[record.ccd]
        assert data.dtype == np.uint16
        assert np.array_equal(data, raw.data), record.path
        for amp in raw.amplifiers:  # the map the header gives
            assert header[f"DATASEC{amp.name}"] == amp.data.fits()
    print(
        f"fetch cut twice after 3 blocks; {len(result.files)} files equal the buffer "
        f"({stored.nbytes / 1e6:.1f} MB); fetch took {result.timings['fetch']:.3f} s"
    )


def _exposures(data: Path) -> dict[str, list[tuple[datetime, float, int]]]:
    """RUNID -> (DATE-OBS, EXPTIME, EXPNUM) of each exposure it wrote, in time order."""
    runs: dict[str, set[tuple[datetime, float, int]]] = defaultdict(set)
    for path in data.rglob("*.fits"):
        header = fits.getheader(path)
        when = datetime.fromisoformat(header["DATE-OBS"])
        runs[header["RUNID"]].add((when, float(header["EXPTIME"]), int(header["EXPNUM"])))
    return {run: sorted(found) for run, found in runs.items()}


@pytest.mark.usefixtures("prefect_harness")
async def test_two_runs_on_one_instrument_at_once_never_overlap(
    tmp_path: Path, archon_sim: ArchonSimulator
) -> None:
    """Two ``ccdflow expose`` processes started together, one Prefect API (the session's
    test API: the same concurrency limit), one data root (so one host lock)."""
    api = {"PREFECT_API_URL": str(PREFECT_API_URL.value())}
    data = tmp_path / "data"
    # Each run holds the instrument for about 9 s: long enough that the other, started
    # at the same moment, is up and has to wait, even when a loaded machine starts one
    # process seconds after the other.
    args = ("expose", "--type", "object", "--exptime", "4", "--count", "2")
    args += ("--port", str(archon_sim.port), "--data", str(data))
    folders = [tmp_path / "one", tmp_path / "two"]
    for folder in folders:
        folder.mkdir()
    procs = await asyncio.gather(*(_ccdflow(folder, *args, api=api) for folder in folders))
    try:
        codes = await asyncio.wait_for(
            asyncio.gather(*(proc.wait() for proc in procs)), STARTUP_S + 120
        )
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    outputs = [_output(folder) for folder in folders]
    assert codes == [0, 0], outputs

    runs = _exposures(data)
    assert len(runs) == 2, runs
    (first_run, first), (second_run, second) = sorted(runs.items(), key=lambda kv: kv[1][0])
    assert len(first) == len(second) == 2
    assert sorted(n for *_, n in first + second) == [1, 2, 3, 4]  # numbers never shared
    # By the headers: the second run's first integration began after the first run's
    # last one ended.
    last_end = max(when.timestamp() + exptime for when, exptime, _ in first)
    assert second[0][0].timestamp() >= last_end
    # By the shutter (monotonic, exact): 4 openings, the first run's two before the
    # second run's two.
    shutter = sorted(archon_sim.shutter_log)
    assert len(shutter) == 4
    gap = shutter[2][0] - shutter[1][1]
    assert gap > 0
    # The second process said whom it waited for.
    waited = [output for output in outputs if "is busy" in output]
    assert len(waited) == 1, outputs
    assert f"is busy: flow run {first_run}" in waited[0]
    assert second_run != first_run
    holder = lock_path(
        load_instrument(SIM_YAML).with_overrides(port=archon_sim.port, data_root=data)
    )
    assert holder.read_text() == ""  # both released the instrument
    spans = ", ".join(f"{close - opened:.2f} s" for opened, close in shutter)
    print(
        f"two runs at once: shutter open {spans}; the second run's first integration began "
        f"{gap:.2f} s after the first run's last one ended"
    )
