"""Per-CCD work on Dask: the same files as the serial path, metadata back, loopback only.

The fast tests use one in-process threaded cluster for the module; the slow one starts
a real scheduler and worker as separate processes on 127.0.0.1, the worker in another
folder, so the worker imports, writes and reports without sharing anything in memory.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pickle
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest
from astropy.io import fits

from devices.archon.acf import tap_regions
from schemas.exposure import ExposureSpec
from schemas.instrument import ArchiveConfig, DaskConfig, InstrumentConfig, load_instrument
from tasks.control.instrument import ControllerPlan, plan_instrument
from tasks.files.manifest import verify_manifest
from tasks.headers.header import ExposureFacts
from tasks.post_process import process_ccd
from tasks.processing.ccd_products import buffer_products
from tasks.processing.ccd_work import (
    CcdOutcome,
    process_exposure_on_dask,
    region_in_slice,
    supports_layout,
)
from tasks.processing.dask_cluster import SchedulerUnreachableError, open_client
from tasks.write import write_exposure_files

from .conftest import REPO, SIM_YAML

WHEN = datetime(2026, 11, 21, 3, 4, 5, tzinfo=UTC)
DARK = ExposureSpec(image_type="dark", exptime=2.5)


def _instrument(data_root: Path, **storage: object) -> InstrumentConfig:
    data = load_instrument(SIM_YAML).model_dump()
    data["storage"].update(data_root=data_root, **storage)
    return InstrumentConfig.model_validate(data)


def _plan() -> ControllerPlan:
    return plan_instrument(load_instrument(SIM_YAML))[0]


def _buffer(plan: ControllerPlan, seed: int = 3) -> np.ndarray:
    """Read noise on a different bias level per tap, so a misplaced tap shows."""
    rng = np.random.default_rng(seed)
    buffer = np.empty(plan.buffer_shape, dtype=np.uint16)
    for level, (rows, cols) in enumerate(tap_regions(plan.model.acf)):
        shape = (rows.stop - rows.start, cols.stop - cols.start)
        buffer[rows, cols] = rng.normal(1000 + 100 * level, 4, shape).astype(np.uint16)
    return buffer


def _content(path: Path) -> list[tuple[str, object, bytes]]:
    """Each HDU's cards and pixel bytes: what a reader gets from the file. Left out:
    CHECKSUM and the checksum cards' dated comments, and RAWSHA (the raw file's
    sha256, which those dates change; checked on its own)."""
    found = []
    with fits.open(path, disable_image_compression=True) as hdul:
        for hdu in hdul:
            cards = [
                (card.keyword, card.value, card.comment)
                for card in hdu.header.cards
                if card.keyword not in ("CHECKSUM", "DATASUM", "RAWSHA")
            ]
            found.append(("cards", cards, hdu.header.get("DATASUM", "").encode()))
            data = hdu.data
            found.append(("data", None, b"" if data is None else np.asarray(data).tobytes()))
    return found


def _facts(spec: ExposureSpec = DARK) -> ExposureFacts:
    return ExposureFacts(spec=spec, expnum=11, date_obs=WHEN, darktime=2.6, flow_run_id=None)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _arrays_in(value: Any) -> list[str]:
    """Names of numpy arrays anywhere inside ``value`` (dataclasses, dicts, tuples)."""
    if isinstance(value, np.ndarray):
        return [repr(value.shape)]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return [a for f in dataclasses.fields(value) for a in _arrays_in(getattr(value, f.name))]
    if isinstance(value, dict):
        return [a for v in value.values() for a in _arrays_in(v)]
    if isinstance(value, tuple | list):
        return [a for v in value for a in _arrays_in(v)]
    return []


def _fits_under(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.fits"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _listening(pids: list[int]) -> set[tuple[str, int]]:
    found = set()
    for pid in pids:
        for conn in psutil.Process(pid).net_connections(kind="inet"):
            if conn.status == psutil.CONN_LISTEN:
                found.add((conn.laddr.ip, conn.laddr.port))
    return found


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    with open_client(DaskConfig(threads=2)) as threaded:
        yield threaded


# --- the region of a CCD's slice -----------------------------------------------------


def test_region_in_slice_moves_amplifiers_by_the_slice_origin() -> None:
    plan = _plan()
    region = plan.layout[1]  # the second CCD: its columns start past the first's
    assert region.buffer_cols.start == 544
    shifted = region_in_slice(region)
    assert (shifted.buffer_rows, shifted.buffer_cols) == (slice(0, 1024), slice(0, 544))
    assert [(a.buffer_rows, a.buffer_cols) for a in shifted.amplifiers] == [
        (slice(0, 512), slice(0, 544)),
        (slice(512, 1024), slice(0, 544)),
    ]
    # Where each amplifier goes in the CCD image, and how it flips, is unchanged.
    for before, after in zip(region.amplifiers, shifted.amplifiers, strict=True):
        assert (after.ccd_rows, after.ccd_cols) == (before.ccd_rows, before.ccd_cols)
        assert (after.flip_rows, after.flip_cols) == (before.flip_rows, before.flip_cols)


def test_processing_a_slice_equals_processing_the_whole_buffer() -> None:
    plan = _plan()
    buffer = _buffer(plan)
    for region, ccd in zip(plan.layout, plan.config.ccds, strict=True):
        kwargs = {"pixels": plan.pixels, "overscan": plan.overscan_pixels, "lines": plan.lines}
        whole = process_ccd(buffer, region, ccd.name, **kwargs)
        part = buffer[region.buffer_rows, region.buffer_cols]
        alone = process_ccd(part, region_in_slice(region), ccd.name, **kwargs)
        np.testing.assert_array_equal(alone.data, whole.data)
        assert alone.amplifiers == whole.amplifiers
        assert alone.stats == whole.stats


def test_region_in_slice_refuses_an_amplifier_outside_the_slice() -> None:
    region = _plan().layout[0]
    amp = dataclasses.replace(region.amplifiers[1], buffer_cols=slice(500, 1000))
    bad = dataclasses.replace(region, amplifiers=(region.amplifiers[0], amp))
    with pytest.raises(ValueError, match=r"amplifier B columns 500:1000 are outside"):
        region_in_slice(bad)


# --- the in-process threaded cluster -------------------------------------------------


def test_local_cluster_listens_on_loopback_only() -> None:
    before = _listening([os.getpid()])
    with open_client(DaskConfig(threads=1)) as threaded:
        assert threaded.scheduler.address.startswith("inproc://")
        new = _listening([os.getpid()]) - before
    # Dask's health/metrics HTTP servers cannot be switched off; they must not face
    # the network (Dask's own default is 0.0.0.0:8787).
    assert new, "expected the scheduler's and worker's HTTP servers"
    assert {ip for ip, _ in new} == {"127.0.0.1"}


async def test_dask_writes_the_same_files_as_the_serial_path(tmp_path: Path, client: Any) -> None:
    plan = _plan()
    buffer = _buffer(plan)
    facts = _facts()
    serial = _instrument(tmp_path / "serial", processed=True)
    products = buffer_products(buffer, plan, DARK, serial, 2)
    expected, _ = write_exposure_files(products, facts, serial, WHEN)

    on_dask = _instrument(tmp_path / "dask", processed=True)
    outcomes = await process_exposure_on_dask(client, buffer, plan, facts, on_dask, WHEN, 2)

    assert [[f.ccd for f in o.files] for o in outcomes] == [["r1", "r1"], ["b1", "b1"]]
    by_name = {record.path.name: record for record in expected}
    for outcome, product in zip(outcomes, products, strict=True):
        raw, processed = outcome.files
        assert (raw.product.value, processed.product.value) == ("raw", "processed")
        for written in outcome.files:
            record = by_name[written.path.name]
            assert written.path.parent == tmp_path / "dask" / record.path.parent.name
            assert written.sha256 == _sha256(written.path)
            # The same cards and pixels; only the time astropy writes in the checksum
            # cards' comments may differ (a second apart), and CHECKSUM with it.
            assert _content(written.path) == _content(record.path)
        assert by_name[processed.path.name].sha256 != ""
        assert fits.getheader(processed.path)["RAWSHA"] == raw.sha256
        assert product.image is not None
        np.testing.assert_array_equal(fits.getdata(processed.path), product.image.data)
        np.testing.assert_array_equal(fits.getdata(raw.path), product.raw[0].data)
        assert outcome.stats == product.image.stats
        assert outcome.overscan_levels == {
            a.name: a.overscan_level for a in product.image.amplifiers
        }
        assert outcome.seconds > 0
    assert verify_manifest(outcomes[0].files[0].path.parent) == []


async def test_outcomes_carry_metadata_not_pixels(tmp_path: Path, client: Any) -> None:
    plan = _plan()
    outcomes = await process_exposure_on_dask(
        client, _buffer(plan), plan, _facts(), _instrument(tmp_path), WHEN, 1
    )
    assert all(isinstance(o, CcdOutcome) for o in outcomes)
    assert _arrays_in(outcomes) == []
    assert len(pickle.dumps(outcomes)) < 4096  # the buffer is 2.2 MB


async def test_a_relative_data_root_is_where_the_client_runs(
    tmp_path: Path, client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    plan = _plan()
    outcomes = await process_exposure_on_dask(
        client, _buffer(plan), plan, _facts(), _instrument(Path("data")), WHEN, 1
    )
    # Absolute, so a worker started in another folder writes to the same place.
    assert all(o.files[0].path.is_absolute() for o in outcomes)
    assert all(o.files[0].path.is_relative_to(tmp_path / "data") for o in outcomes)


@pytest.mark.parametrize(
    ("storage", "spec", "message"),
    [
        ({"layout": "mef", "file_template": "{instrument}-{expnum:08d}.fits"}, DARK, "mef layout"),
        ({}, ExposureSpec(image_type="dark", exptime=1, stacking={"frames": 3}), "stacks 3"),
        ({"archive": {"hdf5": True}}, DARK, "HDF5 archive"),
    ],
    ids=["mef", "stacked", "hdf5"],
)
async def test_what_workers_cannot_write_is_refused_before_any_work(
    tmp_path: Path, client: Any, storage: dict[str, Any], spec: ExposureSpec, message: str
) -> None:
    plan = _plan()
    archive = storage.pop("archive", None)
    instrument = _instrument(tmp_path, **storage)
    if archive is not None:
        instrument = instrument.model_copy(update={"archive": ArchiveConfig(**archive)})
    assert supports_layout(instrument) is ("layout" not in storage)
    with pytest.raises(ValueError, match=message):
        await process_exposure_on_dask(
            client, _buffer(plan), plan, _facts(spec), instrument, WHEN, 1
        )
    assert _fits_under(tmp_path) == []


async def test_a_failing_ccd_raises_in_the_caller(tmp_path: Path, client: Any) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the data root should be")
    plan = _plan()
    with pytest.raises(OSError, match="not-a-folder"):
        await process_exposure_on_dask(
            client, _buffer(plan), plan, _facts(), _instrument(blocker / "data"), WHEN, 1
        )


def test_an_unreachable_scheduler_is_named(tmp_path: Path) -> None:
    address = f"tcp://127.0.0.1:{_free_port()}"
    start = time.monotonic()
    with (
        pytest.raises(SchedulerUnreachableError, match=address.replace(".", r"\.")),
        open_client(DaskConfig(scheduler=address), timeout=1.0),
    ):
        pass
    assert time.monotonic() - start < 10


# --- a real scheduler and worker -----------------------------------------------------


def _start(args: list[str], cwd: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", *args], cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT
        )


@pytest.mark.slow
async def test_a_separate_scheduler_and_worker_write_the_files(tmp_path: Path) -> None:
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    elsewhere = tmp_path / "worker-cwd"
    elsewhere.mkdir()
    # --no-dashboard alone still serves /health on 0.0.0.0: pin it to loopback too.
    common = ["--host", "127.0.0.1", "--no-dashboard", "--dashboard-address", "127.0.0.1:0"]
    scheduler = ["distributed.cli.dask_scheduler", "--port", str(port), *common]
    scratch = ["--local-directory", str(tmp_path / "scratch")]
    worker = ["distributed.cli.dask_worker", address, "--nthreads", "1", *scratch, *common]
    processes = [_start(scheduler, elsewhere, tmp_path / "scheduler.log")]
    try:
        # A worker that starts first keeps trying to reach its scheduler.
        processes.append(_start(worker, elsewhere, tmp_path / "worker.log"))
        plan = _plan()
        buffer = _buffer(plan)
        instrument = _instrument(tmp_path / "data")
        with open_client(DaskConfig(scheduler=address), timeout=30) as remote:
            remote.wait_for_workers(1, timeout=60)
            outcomes = await process_exposure_on_dask(
                remote, buffer, plan, _facts(), instrument, WHEN, 3
            )
            pids = [p.pid for p in processes]
            pids += [c.pid for p in processes for c in psutil.Process(p.pid).children(True)]
            assert {ip for ip, _ in _listening(pids)} == {"127.0.0.1"}
        for outcome, region in zip(outcomes, plan.layout, strict=True):
            (raw,) = outcome.files
            assert raw.path.is_relative_to(tmp_path / "data")
            expected = buffer[region.buffer_rows, region.buffer_cols]
            np.testing.assert_array_equal(fits.getdata(raw.path), expected)
            assert fits.getheader(raw.path)["FRAMEBUF"] == 3
        assert _fits_under(elsewhere) == []
    finally:
        for process in reversed(processes):
            process.terminate()
        for process in reversed(processes):
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
