"""Master frames end to end: a calibration set on the simulator builds master bias,
dark and flat on Dask; an instrument configured with them calibrates its exposures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from devices.archon.sensor import SensorModel
from flows.exposure import calibrations, take_exposure
from schemas.errors import ConfigError
from schemas.exposure import CalibrationSpec, ExposureSpec
from schemas.instrument import InstrumentConfig
from schemas.products import Product
from schemas.results import ExposureResult
from tasks.files.manifest import verify_manifest

from .fitscheck import assert_fitsverify_clean

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]

MODEL = SensorModel()


def _science(path: object) -> np.ndarray:
    with fits.open(path) as hdus:  # type: ignore[arg-type]
        return np.asarray(hdus[0].data[:, :512], dtype=np.float64)


def _block_scatter(image: np.ndarray) -> float:
    """Relative scatter of the means of 64 x 64 blocks."""
    blocks = image.reshape(image.shape[0] // 64, 64, image.shape[1] // 64, 64).mean(axis=(1, 3))
    return float(blocks.std() / blocks.mean())


def _with(instrument: InstrumentConfig, **storage: object) -> InstrumentConfig:
    data = instrument.model_dump()
    data["storage"].update(storage)
    return InstrumentConfig.model_validate(data)


def _file_of(result: ExposureResult, product: Product) -> Path:
    return next(record.path for record in result.files if record.product is product)


@pytest.mark.parametrize("source", [Product.RAW, Product.PROCESSED])
async def test_calibration_set_builds_masters_that_calibrate_science(
    sim_instrument: InstrumentConfig, source: Product
) -> None:
    # Raw only: masters are built from the raw frames, each put through the chain;
    # with processed images written, from those.
    sim_instrument = _with(sim_instrument, processed=source is Product.PROCESSED)
    assert sim_instrument.masters_source() is source
    spec = CalibrationSpec(
        name="evening",
        biases=3,
        darks=[{"exptime": 1.0, "count": 3}],
        flats=[{"exptime": 0.2, "count": 3}],
    )
    result = await calibrations(spec, sim_instrument)
    assert [(m.kind, m.filter) for m in result.masters] == [
        ("bias", "none"),
        ("dark", "none"),
        ("flat", "none"),
    ]
    numbers = [e.expnum for e in result.exposures]
    assert [m.inputs for m in result.masters] == [numbers[0:3], numbers[3:6], numbers[6:9]]
    bias, dark, flat = (m.file.path for m in result.masters)
    for path in (bias, dark, flat):
        assert_fitsverify_clean(path)
    assert verify_manifest(bias.parent) == []

    with fits.open(dark) as hdus:
        assert hdus[0].header["IMAGETYP"] == "master_dark"
        assert hdus[0].header["NCOMBINE"] == 3
        assert hdus[0].header["IMCMB001"] == _file_of(result.exposures[3], source).name
        assert hdus["r1"].header["ZEROCOR"] == bias.name
        assert hdus["r1"].header["BUNIT"] == "adu/s"
        per_second = float(np.median(hdus["r1"].data[:, :512]))
    # The simulator's dark current, in ADU per second (bias removed by the master bias).
    assert per_second == pytest.approx(MODEL.dark_current / MODEL.gain, rel=0.25)
    with fits.open(flat) as hdus:
        assert float(np.median(hdus["b1"].data)) == pytest.approx(1.0)
        assert hdus["b1"].header["DARKCOR"] == dark.name

    # The same instrument with the masters configured: objects come out flat-fielded.
    processed = _with(sim_instrument, processed=True)
    data = processed.model_dump()
    data["processing"] = {"masters": {"bias": bias, "dark": dark, "flats": {"none": flat}}}
    calibrated = InstrumentConfig.model_validate(data)
    science = ExposureSpec(image_type="object", exptime=0.2, object_name="flat-lamp")
    raw_result = (await take_exposure(science, processed))[0]
    cal_result = (await take_exposure(science, calibrated))[0]
    raw = _science(_file_of(raw_result, Product.PROCESSED))
    cal = _science(_file_of(cal_result, Product.PROCESSED))
    header = fits.getheader(_file_of(cal_result, Product.PROCESSED))
    assert (header["ZEROCOR"], header["DARKCOR"], header["FLATCOR"]) == (
        bias.name,
        dark.name,
        flat.name,
    )
    # The lamp's large-scale gradient is divided out. Means of 64 x 64 blocks average
    # the pixel noise away and keep the gradient: their scatter drops to almost nothing.
    assert _block_scatter(cal) < 0.3 * _block_scatter(raw)


async def test_a_master_of_another_geometry_is_refused_before_exposing(
    sim_instrument: InstrumentConfig,
) -> None:
    result = await calibrations(CalibrationSpec(name="bias-only", biases=1), sim_instrument)
    (bias,) = result.masters
    data = _with(sim_instrument, processed=True).model_dump()
    data["processing"] = {"masters": {"bias": bias.file.path}, "trim": True}
    trimmed = InstrumentConfig.model_validate(data)
    with pytest.raises(ConfigError, match=r"is \(1024, 544\) binned 1 1 for r1"):
        await take_exposure(ExposureSpec(image_type="dark", exptime=0.1), trimmed)
    # build_masters off: the set is taken, nothing combined.
    plain = await calibrations(
        CalibrationSpec(name="no-masters", biases=1, build_masters=False), sim_instrument
    )
    assert plain.masters == []
