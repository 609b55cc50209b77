"""What the spec asks for is what the files show: binning, windows, stacking, readout
delay, telemetry cards, multi-extension files, the HDF5 archive, calibration sets."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import h5py
import numpy as np
import pytest
from astropy.io import fits

from devices.archon.sensor import SensorModel
from devices.archon.simulator import ArchonSimulator
from flows.exposure import calibrations, run_sequence, take_exposure
from schemas.errors import ConfigError
from schemas.exposure import CalibrationSpec, ExposureSpec, SequenceSpec
from schemas.instrument import InstrumentConfig
from schemas.products import Product
from schemas.results import ExposureResult
from tasks.files.hdf5_archive import verify_archive
from tasks.files.manifest import verify_manifest
from tasks.files.verify import verify_fits_checksums

from .fitscheck import assert_fitsverify_clean

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]

MODEL = SensorModel()


def _with(instrument: InstrumentConfig, **sections: dict[str, object]) -> InstrumentConfig:
    data = instrument.model_dump()
    for key, values in sections.items():
        data[key].update(values)
    return InstrumentConfig.model_validate(data)


def _processed(result: ExposureResult) -> Path:
    return next(f.path for f in result.files if f.product is Product.PROCESSED)


def _raw(result: ExposureResult) -> Path:
    return next(f.path for f in result.files if f.product is Product.RAW)


async def test_binning_sums_charge_and_windows_cut_the_frame(
    sim_instrument: InstrumentConfig,
) -> None:
    sim_instrument = _with(sim_instrument, storage={"processed": True})
    full, binned, window = (
        await take_exposure(
            ExposureSpec(image_type="flat", exptime=0.3),
            sim_instrument,
        )
        + await take_exposure(
            ExposureSpec(image_type="flat", exptime=0.3, binning={"x": 2, "y": 2}), sim_instrument
        )
        + await take_exposure(
            ExposureSpec(
                image_type="flat",
                exptime=0.3,
                window={"first_line": 100, "lines": 200, "first_pixel": 50, "pixels": 300},
            ),
            sim_instrument,
        )
    )
    assert fits.getdata(_raw(binned)).shape == (512, 272)
    assert fits.getheader(_raw(window))["DATASECA"] == "[1:300,1:200]"
    with fits.open(_processed(full)) as f, fits.open(_processed(binned)) as b:
        assert f[0].data.shape == (1024, 544)
        assert b[0].data.shape == (512, 272)
        assert b[0].header["CCDSUM"] == "2 2"
        assert b[0].header["DATASEC"] == "[1:256,1:512]"
        ratio = np.median(b[0].data[:, :256]) / np.median(f[0].data[:, :512])
        assert 3.5 < ratio < 4.5, "2x2 binning sums the charge of four pixels"
    with fits.open(_processed(window)) as w:
        assert w[0].data.shape == (400, 332)
        assert w[0].header["DATASEC"] == "[1:300,1:400]"
        assert "DETSEC" not in w[0].header
        assert_fitsverify_clean(_processed(window))
    assert_fitsverify_clean(_raw(window))


async def test_stacking_combines_frames_and_lowers_the_noise(
    sim_instrument: InstrumentConfig,
) -> None:
    sim_instrument = _with(sim_instrument, storage={"processed": True})
    single, stacked = await take_exposure(
        ExposureSpec(image_type="bias"), sim_instrument
    ) + await take_exposure(
        ExposureSpec(image_type="bias", stacking={"frames": 5, "method": "mean"}), sim_instrument
    )
    # The raw file keeps every frame read, one extension each.
    with fits.open(_raw(stacked)) as raw:
        assert [hdu.name for hdu in raw[1:]] == [f"r1.{n}" for n in range(1, 6)]
        assert [hdu.header["FRAMENUM"] for hdu in raw[1:]] == [1, 2, 3, 4, 5]
        assert all(hdu.data.dtype == np.uint16 for hdu in raw[1:])
    assert_fitsverify_clean(_raw(stacked))
    with fits.open(_processed(single)) as one, fits.open(_processed(stacked)) as many:
        assert many[0].header["NCOMBINE"] == 5
        assert many[0].header["COMBMETH"] == "mean"
        noise_ratio = many[0].data[:, :512].std() / one[0].data[:, :512].std()
        assert noise_ratio < 0.6, "the mean of 5 frames has sqrt(5) less read noise"


async def test_readout_delay_slows_the_readout(sim_instrument: InstrumentConfig) -> None:
    fast, slow = await take_exposure(
        ExposureSpec(image_type="bias"), sim_instrument
    ) + await take_exposure(ExposureSpec(image_type="bias", readout_delay=400_000), sim_instrument)
    # 400000 x 10 ns after each of 512 lines: about 2 s more.
    assert slow.timings["readout"] - fast.timings["readout"] > 1.0


async def test_headers_carry_telemetry_sampled_during_the_exposure(
    sim_instrument: InstrumentConfig,
) -> None:
    [result] = await take_exposure(
        ExposureSpec(image_type="dark", exptime=0.5, object_name="dark field"), sim_instrument
    )
    header = fits.getheader(result.files[0].path)
    assert header["CCDTEMP"] == pytest.approx(-110.0, abs=5)
    assert 20 < header["BACKTEMP"] < 50
    assert 20 < header["BACKTMPE"] < 50
    assert header["ARCHONV"]
    assert header["OBJECT"] == "dark field"
    assert verify_manifest(result.files[0].path.parent) == []


async def test_multi_extension_files_and_the_hdf5_archive(
    sim_instrument: InstrumentConfig,
) -> None:
    instrument = _with(
        sim_instrument,
        storage={
            "layout": "mef",
            "file_template": "{instrument}-{expnum:08d}.fits",
            "compression": "RICE_1",
        },
        archive={"hdf5": True},
    )
    result = await run_sequence(
        SequenceSpec(
            name="archived",
            exposures=[
                ExposureSpec(image_type="bias"),
                ExposureSpec(image_type="dark", exptime=0.2),
            ],
            repeats=2,
        ),
        instrument,
    )
    assert len(result.exposures) == 4
    archives = {e.archive for e in result.exposures}
    assert len(archives) == 1
    [archive] = archives
    assert archive is not None
    assert verify_archive(archive) == 4
    with h5py.File(archive, "r") as h5:  # raw cubes: the counts as read
        assert h5["ccds/r1"].dtype == np.uint16
        assert h5.attrs["product"] == "raw"
        assert list(h5["frames"]["time_source"]) == [b"controller timer"] * 4
    for exposure in result.exposures:
        [record] = exposure.files
        verify_fits_checksums(record.path)
        with fits.open(record.path) as hdul:
            assert [hdu.name for hdu in hdul[1:]] == ["r1", "b1"]
    assert_fitsverify_clean(result.exposures[0].files[0].path)
    if shutil.which("h5dump"):
        dump = subprocess.run(["h5dump", "-H", str(archive)], capture_output=True, check=False)
        assert dump.returncode == 0, dump.stderr


async def test_a_run_mixing_geometries_cannot_share_an_archive(
    sim_instrument: InstrumentConfig, archon_sim: ArchonSimulator
) -> None:
    instrument = _with(sim_instrument, archive={"hdf5": True})
    sequence = SequenceSpec(
        exposures=[
            ExposureSpec(image_type="bias"),
            ExposureSpec(image_type="bias", binning={"x": 2}),
        ]
    )
    with pytest.raises(ConfigError, match=r"archive\.hdf5"):
        await run_sequence(sequence, instrument)
    assert archon_sim.connections == 0


async def test_specs_the_instrument_cannot_take_are_refused_before_connecting(
    sim_instrument: InstrumentConfig, archon_sim: ArchonSimulator
) -> None:
    sequence = SequenceSpec(
        exposures=[
            ExposureSpec(image_type="bias"),
            ExposureSpec(image_type="flat", exptime=1, filter="r"),
            ExposureSpec(image_type="dark", window={"lines": 600, "pixels": 10}),
            ExposureSpec(image_type="dark", binning={"x": 3}),
        ]
    )
    with pytest.raises(ConfigError) as info:
        await run_sequence(sequence, sim_instrument)
    message = str(info.value)
    assert "exposures.1.filter: 'r' is not a filter of ccdsim" in message
    assert "exposures.2.window: lines 0..600 exceed the 512 lines" in message
    assert "exposures.3.binning: 512 pixels do not divide by 3" in message
    assert archon_sim.connections == 0


async def test_calibration_sets_run_in_order(sim_instrument: InstrumentConfig) -> None:
    result = await calibrations(
        CalibrationSpec(
            biases=2, darks=[{"exptime": 0.2, "count": 1}], flats=[{"exptime": 0.1, "count": 1}]
        ),
        sim_instrument,
    )
    assert [e.image_type.value for e in result.exposures] == ["bias", "bias", "dark", "flat"]
    flat = fits.getdata(result.exposures[-1].files[0].path)
    assert np.median(flat[:, :512]) > 0.8 * MODEL.illumination * 0.1 / MODEL.gain


async def test_a_night_plan_runs_its_steps_in_order(sim_instrument: InstrumentConfig) -> None:
    import yaml

    from flows.exposure import observe_night
    from schemas.exposure import NightPlan

    from .conftest import REPO

    plan = NightPlan.model_validate(
        yaml.safe_load((REPO / "deploy" / "examples" / "night.yaml").read_text())
    )
    results = await observe_night(plan, sim_instrument)
    assert [r.name for r in results] == ["evening-calibrations", "field-1"]
    assert [e.image_type.value for e in results[0].exposures] == ["bias"] * 3 + ["dark"] * 2
    assert [e.image_type.value for e in results[1].exposures] == ["flat", "object", "object"]
    numbers = [e.expnum for r in results for e in r.exposures]
    assert numbers == list(range(1, 9))


def test_a_night_plan_refuses_a_step_that_is_neither_kind() -> None:
    from pydantic import ValidationError

    from schemas.exposure import NightPlan

    with pytest.raises(ValidationError, match=r"steps\.0"):
        NightPlan.model_validate({"steps": [{"name": "x", "colour": "red"}]})
    with pytest.raises(ValidationError, match="unique"):
        NightPlan.model_validate(
            {"steps": [{"name": "a", "biases": 1}, {"name": "a", "biases": 2}]}
        )
