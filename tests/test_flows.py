"""Flows end to end: simulator on 127.0.0.1, real Prefect (test harness), FITS on disk."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from devices.archon.sensor import SensorModel
from devices.archon.simulator import ArchonSimulator
from flows.exposure import run_sequence, take_exposure
from schemas.errors import ConfigError
from schemas.exposure import ExposureSpec, SequenceSpec
from schemas.instrument import InstrumentConfig
from tasks.files.verify import verify_fits_checksums

from .fitscheck import assert_fitsverify_clean

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]

MODEL = SensorModel()
SEQUENCE = SequenceSpec(
    name="physics",
    exposures=[
        ExposureSpec(image_type="bias"),
        ExposureSpec(image_type="dark", exptime=0.5),
        ExposureSpec(image_type="dark", exptime=4.0),
        ExposureSpec(image_type="flat", exptime=0.5),
    ],
)


def _data(path: Path) -> tuple[np.ndarray, fits.Header]:
    with fits.open(path) as hdul:
        header = hdul[0].header
        x0, x1 = 1, 512  # DATASEC [1:512,1:1024], checked below
        assert header["DATASEC"] == f"[{x0}:{x1},1:1024]"
        return np.asarray(hdul[0].data[:, :512], dtype=np.float64), header


async def test_a_sequence_writes_physically_right_frames(
    sim_instrument: InstrumentConfig, archon_sim: ArchonSimulator
) -> None:
    data = sim_instrument.model_dump()
    data["storage"]["processed"] = True
    instrument = InstrumentConfig.model_validate(data)
    clock_offset = time.time() - time.monotonic()  # UTC seconds = monotonic + offset
    result = await run_sequence(SEQUENCE, instrument)
    assert [e.expnum for e in result.exposures] == [1, 2, 3, 4]
    assert result.flow_run_id
    paths = {
        (e.image_type.value, e.exptime): [f.path for f in e.files if f.product.value == "processed"]
        for e in result.exposures
    }
    for exposure in result.exposures:
        assert [(f.ccd, f.product.value) for f in exposure.files] == [
            ("r1", "raw"),
            ("b1", "raw"),
            ("r1", "processed"),
            ("b1", "processed"),
        ]
        assert exposure.time_source == "controller timer"
        assert exposure.exptime_flagged is False
        # Per-CCD files: processed and written on the (default, threaded) Dask cluster.
        # From the third exposure on, the pipeline waited for the one two before it
        # to finish ("held", before the flush) before integrating.
        held = ["held"] if exposure.expnum >= 3 else []
        assert list(exposure.timings) == [
            *held,
            "flush",
            "expose",
            "readout",
            "savepoint",
            "fetch",
            "process_write",
        ]
        for record in exposure.files:
            assert record.path.is_file()
            verify_fits_checksums(record.path)

    # Bias: overscan-subtracted data sit at 0 within the read noise; the subtracted
    # level is the simulator's bias level of each amplifier.
    bias, header = _data(paths[("bias", 0.0)][0])
    assert abs(np.median(bias)) < 0.5
    assert abs(bias.std() - MODEL.read_noise) < 0.6
    assert abs(header["OVRSCNA"] - MODEL.bias_level(0)) < 1.0
    assert abs(header["OVRSCNB"] - MODEL.bias_level(2)) < 1.0
    assert header["EXPTIME"] == 0.0
    assert header["IMAGETYP"] == "bias"

    # Darks: no light; the dark signal grows with the dark time as the model says.
    short, short_header = _data(paths[("dark", 0.5)][0])
    long, long_header = _data(paths[("dark", 4.0)][0])
    rate = MODEL.dark_current / MODEL.gain  # ADU per second
    grown = np.median(long) - np.median(short)
    expected = (long_header["DARKTIME"] - short_header["DARKTIME"]) * rate
    assert grown > 3.0
    assert abs(grown - expected) < 0.25 * expected + 0.5
    assert np.median(long) < 20.0, "a dark frame must carry no light"

    # Flat: flux only while the shutter was open.
    flat, _ = _data(paths[("flat", 0.5)][0])
    assert np.median(flat) > 0.8 * MODEL.illumination * 0.5 / MODEL.gain
    assert len(archon_sim.shutter_log) == 1
    assert not archon_sim.shutter_open

    # DATE-OBS and DATE-END are the shutter's opening and closing, within the stated
    # uncertainty (plus 2 ms: the simulator's clock is read a few microseconds from
    # its blade, and the host's UTC-monotonic offset above is one sample).
    (opened, closed) = archon_sim.shutter_log[0]
    flat_result = next(e for e in result.exposures if e.image_type.value == "flat")
    assert flat_result.time_uncertainty_s is not None
    allowed = flat_result.time_uncertainty_s + 0.002
    assert abs(flat_result.date_obs.timestamp() - (opened + clock_offset)) < allowed
    assert flat_result.date_end is not None
    assert abs(flat_result.date_end.timestamp() - (closed + clock_offset)) < allowed
    assert flat_result.exptime_measured == pytest.approx(closed - opened, abs=0.001)

    header = fits.getheader(paths[("flat", 0.5)][1])
    for key in (
        *("DATE-OBS", "DATE-END", "DATE-AVG", "MJD-OBS", "MJD-END", "MJD-AVG", "TIMESYS"),
        *("TIMESRC", "TIMSYER", "EXPMEAS", "EXPFLAG", "EXPNUM", "CCDNAME", "GAIN", "BIASSEC"),
        *("RUNID", "RAWFILE", "RAWSHA"),
    ):
        assert key in header, key
    assert header["CCDNAME"] == "b1"
    assert header["RUNID"] == result.flow_run_id
    assert_fitsverify_clean(paths[("flat", 0.5)][1])


async def test_a_bias_raw_frame_is_the_controller_buffer_pixel_for_pixel(
    sim_instrument: InstrumentConfig, archon_sim: ArchonSimulator
) -> None:
    (result,) = await take_exposure(ExposureSpec(image_type="bias"), sim_instrument)
    files = {record.ccd: record.path for record in result.files}
    assert sorted(files) == ["b1", "r1"]
    headers = {ccd: fits.getheader(path) for ccd, path in files.items()}
    (number,) = {header["FRAMEBUF"] for header in headers.values()}
    stored = archon_sim.buffer_data(number)
    assert stored is not None
    for ccd, path in files.items():
        # The documented mapping: BUFSEC says which columns of the buffer the file holds.
        x1, x2 = (int(v) for v in headers[ccd]["BUFSEC"].strip("[]").split(",")[0].split(":"))
        with fits.open(path) as hdul:
            assert hdul[0].header["PRODUCT"] == "raw"
            data = hdul[0].data
        assert data.dtype == np.uint16
        np.testing.assert_array_equal(data, stored[:, x1 - 1 : x2])


async def test_take_exposure_numbers_continue_and_never_overwrite(
    sim_instrument: InstrumentConfig,
) -> None:
    first = await take_exposure(ExposureSpec(image_type="bias", count=2), sim_instrument)
    # A file that claims the next number already exists: that number is skipped.
    night = first[0].files[0].path.parent
    squatter = night / f"{sim_instrument.name}-r1-{3:08d}.fits"
    squatter.write_bytes(b"not ours")
    second = await take_exposure(ExposureSpec(image_type="bias"), sim_instrument)
    assert [e.expnum for e in first] == [1, 2]
    assert second[0].expnum == 4
    assert squatter.read_bytes() == b"not ours"


async def test_a_bad_spec_is_refused_before_the_controller_is_touched(
    sim_instrument: InstrumentConfig, archon_sim: ArchonSimulator
) -> None:
    bad = {"name": "bad", "exposures": [{"image_type": "dark", "exptime": -3}]}
    with pytest.raises(Exception, match="exptime"):
        await run_sequence(bad, sim_instrument)  # type: ignore[arg-type]
    assert archon_sim.connections == 0


async def test_a_config_that_does_not_match_the_acf_is_refused_before_connecting(
    sim_instrument: InstrumentConfig, archon_sim: ArchonSimulator
) -> None:
    data = sim_instrument.model_dump()
    data["controllers"][0]["ccds"].append({"name": "z9", "gain": 1.0, "read_noise": 3.0})
    three_ccds = InstrumentConfig.model_validate(data)
    with pytest.raises(ConfigError, match=r"controllers\.0\.acf"):
        await run_sequence(SEQUENCE, three_ccds)
    assert archon_sim.connections == 0


@pytest.fixture
async def mute_server() -> AsyncIterator[int]:
    """A TCP server that accepts connections and never answers: a hung controller."""

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.read(4096):
            pass
        writer.close()

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


async def test_a_controller_that_never_answers_gives_a_timeout_error(
    sim_instrument: InstrumentConfig, mute_server: int
) -> None:
    data = sim_instrument.model_dump()
    data["controllers"][0].update(port=mute_server, command_timeout_s=0.5)
    hung = InstrumentConfig.model_validate(data)
    with pytest.raises(TimeoutError, match=r"timed out after 0\.5 s"):
        await asyncio.wait_for(run_sequence(SEQUENCE, hung), 30)


@pytest.mark.parametrize("pipelined", [True, False])
async def test_pipelining_finishes_an_exposure_while_the_next_integrates(
    sim_instrument: InstrumentConfig, pipelined: bool
) -> None:
    """Pipelined, N's files are completed after N+1's integration began; not, before.

    Compression and the HDF5 archive make finishing take far longer than the 0 s
    flush between exposures, so the order is not a matter of luck.
    """
    data = sim_instrument.model_dump()
    data["controllers"][0]["flush_time_s"] = 0.0
    data["storage"]["compression"] = "RICE_1"
    data["archive"]["hdf5"] = True
    instrument = InstrumentConfig.model_validate(data)
    sequence = SequenceSpec(
        name="pipe", exposures=[ExposureSpec(image_type="dark", exptime=0.3)], repeats=3
    )
    result = await run_sequence(sequence, instrument, pipelined=pipelined)
    pairs = list(zip(result.exposures, result.exposures[1:], strict=False))
    for previous, following in pairs:
        assert previous.finished_at is not None
        overlapped = previous.finished_at > following.date_obs
        assert overlapped is pipelined
    assert [e.expnum for e in result.exposures] == [1, 2, 3]
