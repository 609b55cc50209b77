"""One exposure on two controllers behind one shutter, and what a failing one does."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from devices.archon.acf import load_acf
from devices.archon.simulator import MultiSimulator
from flows.exposure import take_exposure
from schemas.exposure import ExposureSpec
from schemas.instrument import InstrumentConfig, load_instrument
from schemas.products import Product
from tasks.files.verify import verify_fits_checksums

from .conftest import REPO, SIM_ACF
from .fitscheck import assert_fitsverify_clean

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]

DUAL_YAML = REPO / "deploy" / "instruments" / "sim-dual.yaml"


@pytest.fixture
async def sims() -> AsyncIterator[MultiSimulator]:
    acf = load_acf(SIM_ACF)
    async with MultiSimulator([acf, acf], shared_shutter=True, seed=7) as group:
        yield group


def _dual(sims: MultiSimulator, tmp_path: Path, **changes: object) -> InstrumentConfig:
    data = load_instrument(DUAL_YAML).model_dump()
    for controller, port in zip(data["controllers"], sims.ports, strict=True):
        controller["port"] = port
        controller["command_timeout_s"] = 1.0
    data["storage"]["data_root"] = tmp_path / "data"
    data.update(changes)
    return InstrumentConfig.model_validate(data)


async def test_all_controllers_expose_together_behind_one_shutter(
    sims: MultiSimulator, tmp_path: Path
) -> None:
    [result] = await take_exposure(
        ExposureSpec(image_type="flat", exptime=0.4), _dual(sims, tmp_path)
    )
    # The dual instrument writes raw frames and processed images.
    assert [(f.ccd, f.product.value) for f in result.files] == [
        *((ccd, "raw") for ccd in ("r1", "b1", "r2", "b2")),
        *((ccd, "processed") for ccd in ("r1", "b1", "r2", "b2")),
    ]
    assert result.missing == {}
    # One opening of the one shutter (sim1 drives it), and every CCD saw its light.
    assert len(sims[0].shutter_log) == 1
    assert sims[1].shutter_log == sims[0].shutter_log
    processed = [f for f in result.files if f.product is Product.PROCESSED]
    medians = [float(np.median(fits.getdata(f.path)[:, :512])) for f in processed]
    assert min(medians) > 0.8 * 4000 * 0.4 / 1.5
    assert max(medians) / min(medians) < 1.1
    for record in result.files:
        verify_fits_checksums(record.path)
    assert len({fits.getheader(f.path)["DATE-OBS"] for f in result.files}) == 1


async def test_write_partial_keeps_the_others_and_names_the_missing_controller(
    sims: MultiSimulator, tmp_path: Path
) -> None:
    sims[1].inject_command_failure("FETCH")
    instrument = _dual(sims, tmp_path, on_controller_failure="write_partial")
    [result] = await take_exposure(ExposureSpec(image_type="bias"), instrument)
    assert [f.ccd for f in result.files] == ["r1", "b1", "r1", "b1"]  # raw, processed
    assert list(result.missing) == ["sim2"]
    assert result.missing["sim2"].startswith("fetch: ArchonCommandError")
    header = fits.getheader(result.files[0].path)
    assert header["CTRLMISS"] == "sim2"
    assert "MISSING controller sim2: fetch" in str(header["COMMENT"])
    assert_fitsverify_clean(result.files[0].path)
    assert not any(sim.shutter_open for sim in sims)


async def test_the_fail_policy_fails_the_exposure(sims: MultiSimulator, tmp_path: Path) -> None:
    sims[1].inject_command_failure("FETCH")
    instrument = _dual(sims, tmp_path)
    with pytest.raises(Exception, match="FETCH"):
        await take_exposure(ExposureSpec(image_type="bias"), instrument)
    assert not any(sim.shutter_open for sim in sims)


def test_the_shutter_controller_must_exist() -> None:
    data = load_instrument(DUAL_YAML).model_dump()
    data["shutter_controller"] = "sim9"
    with pytest.raises(ValueError, match="shutter_controller 'sim9' is not one of sim1, sim2"):
        InstrumentConfig.model_validate(data)
