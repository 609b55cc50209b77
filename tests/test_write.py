"""Writing FITS: complete headers, valid checksums, fitsverify-clean, never overwrite."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from schemas.instrument import InstrumentConfig, load_instrument
from tasks.instrument import plan_instrument
from tasks.post_process import process_buffer
from tasks.verify import ChecksumError, verify_fits_checksums
from tasks.write import ExposureFacts, exposure_path, write_ccd

from .conftest import SIM_YAML
from .fitscheck import assert_fitsverify_clean


@pytest.fixture
def instrument(tmp_path: Path) -> InstrumentConfig:
    return load_instrument(SIM_YAML).with_overrides(data_root=tmp_path)


def _facts(expnum: int = 7) -> ExposureFacts:
    return ExposureFacts(
        expnum=expnum,
        image_type="dark",
        exptime=2.5,
        darktime=2.6,
        date_obs=datetime(2026, 11, 21, 3, 4, 5, 123000, tzinfo=UTC),
        object_name=None,
        controller="sim1",
        buffer=2,
        flow_run_id="00000000-0000-0000-0000-000000000001",
    )


def _write_first_ccd(instrument: InstrumentConfig, path: Path) -> None:
    plan = plan_instrument(instrument)[0]
    rng = np.random.default_rng(0)
    buffer = rng.normal(1000, 4, plan.acf.buffer_shape).astype(np.uint16)
    image = process_buffer(buffer, plan)[0]
    write_ccd(image, plan.config.ccds[0], _facts(), instrument, path)


def test_written_file_has_the_headers_and_valid_checksums(instrument: InstrumentConfig) -> None:
    path = exposure_path(instrument, "20261120", "r1", 7)
    _write_first_ccd(instrument, path)
    assert path.name == "ccdsim-r1-00000007.fits"
    verify_fits_checksums(path)
    header = fits.getheader(path)
    for key in (
        "DATE-OBS",
        "MJD-OBS",
        "EXPTIME",
        "DARKTIME",
        "IMAGETYP",
        "CCDNAME",
        "GAIN",
        "RDNOISE",
        "DATASEC",
        "BIASSEC",
        "EXPNUM",
        "INSTRUME",
        "CHECKSUM",
        "DATASUM",
    ):
        assert key in header, key
    assert header["DATE-OBS"] == "2026-11-21T03:04:05.123"
    assert header["EXPTIME"] == 2.5
    assert header["IMAGETYP"] == "dark"
    assert header["CCDNAME"] == "r1"
    assert header["GAIN"] == 1.5
    assert header["DATASEC"] == "[1:512,1:1024]"
    assert abs(header["OVRSCNA"] - 1000) < 1
    assert_fitsverify_clean(path)


def test_an_existing_file_is_never_overwritten(instrument: InstrumentConfig) -> None:
    path = exposure_path(instrument, "20261120", "r1", 7)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"precious")
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        _write_first_ccd(instrument, path)
    assert path.read_bytes() == b"precious"
    assert not list(path.parent.glob(".*.tmp")), "no temporary file may be left behind"


def test_corrupted_file_fails_checksum_verification(instrument: InstrumentConfig) -> None:
    path = exposure_path(instrument, "20261120", "r1", 7)
    _write_first_ccd(instrument, path)
    raw = bytearray(path.read_bytes())
    raw[-100] ^= 0xFF  # flip bits in the last data block
    path.write_bytes(bytes(raw))
    with pytest.raises(ChecksumError):
        verify_fits_checksums(path)
