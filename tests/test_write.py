"""Writing an exposure: complete headers, valid checksums, fitsverify-clean, every
layout, engine and compression; never overwrite; a manifest per night."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from schemas.exposure import ExposureSpec
from schemas.instrument import InstrumentConfig, load_instrument
from tasks.control.instrument import plan_instrument
from tasks.files.manifest import verify_manifest
from tasks.files.verify import ChecksumError, verify_fits_checksums
from tasks.headers.header import ExposureFacts
from tasks.processing.ccd_products import buffer_products
from tasks.write import CcdProduct, exposure_paths, write_exposure_files

from .conftest import SIM_YAML
from .fitscheck import assert_fitsverify_clean

WHEN = datetime(2026, 11, 21, 3, 4, 5, 123000, tzinfo=UTC)
STATUS = {"sim1": {"MOD2/TEMPA": -110.0, "MOD2/TEMPB": -106.5, "BACKPLANE_TEMP": 31.5}}


def _instrument(tmp_path: Path, **storage: object) -> InstrumentConfig:
    base = load_instrument(SIM_YAML)
    data = base.model_dump()
    data["storage"].update(data_root=tmp_path, **storage)
    return InstrumentConfig.model_validate(data)


def _products(instrument: InstrumentConfig) -> list[CcdProduct]:
    plan = plan_instrument(instrument)[0]
    rng = np.random.default_rng(0)
    buffer = rng.normal(1000, 4, plan.buffer_shape).astype(np.uint16)
    return buffer_products(buffer, plan, DARK, instrument, 2)


def _facts(spec: ExposureSpec, *, status_end: bool = True) -> ExposureFacts:
    return ExposureFacts(
        spec=spec,
        expnum=7,
        date_obs=WHEN,
        darktime=2.6,
        flow_run_id="00000000-0000-0000-0000-000000000001",
        status_start=STATUS,
        status_end=STATUS if status_end else {},
        missing={} if status_end else {"sim1": "no answer within 1 s"},
        system={"sim1": {"BACKPLANE_VERSION": "1.0.1200"}},
    )


DARK = ExposureSpec(image_type="dark", exptime=2.5, header={"PROPOSER": "team"})


def test_per_ccd_files_have_the_headers_and_valid_checksums(tmp_path: Path) -> None:
    instrument = _instrument(tmp_path, processed=True)
    records, warnings = write_exposure_files(_products(instrument), _facts(DARK), instrument, WHEN)
    assert warnings == []
    assert [r.path.name for r in records] == [
        "ccdsim-r1-00000007.fits",
        "ccdsim-b1-00000007.fits",
        "ccdsim-r1-00000007-proc.fits",
        "ccdsim-b1-00000007-proc.fits",
    ]
    assert [r.product.value for r in records] == ["raw", "raw", "processed", "processed"]
    assert records[0].path.parent.name == "20261120"  # before noon UTC: the night before
    for record in records:
        verify_fits_checksums(record.path)
        assert_fitsverify_clean(record.path)
    header = fits.getheader(records[3].path)
    assert header["PRODUCT"] == "processed"
    assert header["RAWFILE"] == records[1].path.name
    assert header["RAWSHA"] == records[1].sha256
    raw_header = fits.getheader(records[1].path)
    assert raw_header["PRODUCT"] == "raw"
    assert raw_header["BITPIX"] == 16
    assert raw_header["BZERO"] == 32768
    for key in (
        "DATE-OBS",
        "TIMESYS",
        "MJD-OBS",
        "EXPTIME",
        "DARKTIME",
        "IMAGETYP",
        "OBSERVAT",
        "TELESCOP",
        "INSTRUME",
        "DETECTOR",
        "CCDNAME",
        "EXPNUM",
        "GAIN",
        "RDNOISE",
        "CCDSUM",
        "DATASEC",
        "BIASSEC",
        "TRIMSEC",
        "DETSEC",
        "CCDTEMP",
        "FILTER",
        "OBJECT",
        "RUNID",
        "SPECHASH",
        "SWVERS",
        "CHECKSUM",
        "DATASUM",
    ):
        assert key in header, key
    assert header["DATE-OBS"] == "2026-11-21T03:04:05.123"
    assert header["CCDNAME"] == "b1"
    assert header["CCDTEMP"] == -106.5
    assert header["DETSEC"] == "[513:1024,1:1024]"
    assert header["SPECHASH"] == DARK.spec_hash()
    assert header["PROPOSER"] == "team"
    assert header["BACKTEMP"] == 31.5
    assert header["BACKTMPE"] == 31.5
    assert header["ARCHONV"] == "1.0.1200"
    assert abs(header["OVRSCNA"] - 1000) < 1
    assert verify_manifest(records[0].path.parent) == []


def test_missing_telemetry_leaves_cards_empty_with_a_warning(tmp_path: Path) -> None:
    instrument = _instrument(tmp_path)
    records, warnings = write_exposure_files(
        _products(instrument), _facts(DARK, status_end=False), instrument, WHEN
    )
    assert warnings == ["BACKTMPE: controller.status.BACKPLANE_TEMP missing (no answer within 1 s)"]
    header = fits.getheader(records[0].path)
    assert header["BACKTEMP"] == 31.5
    assert "BACKTMPE" not in header
    assert "MISSING BACKTMPE: no answer within 1 s" in str(header["COMMENT"])
    assert_fitsverify_clean(records[0].path)


@pytest.mark.parametrize("engine", ["astropy", "fitsio"])
@pytest.mark.parametrize("compression", ["none", "RICE_1"])
def test_one_multi_extension_file_per_exposure(
    tmp_path: Path, engine: str, compression: str
) -> None:
    instrument = _instrument(
        tmp_path,
        layout="mef",
        file_template="{instrument}-{expnum:08d}.fits",
        engine=engine,
        compression=compression,
    )
    records, _ = write_exposure_files(_products(instrument), _facts(DARK), instrument, WHEN)
    assert [r.path.name for r in records] == ["ccdsim-00000007.fits"]
    with fits.open(records[0].path) as hdul:
        assert hdul[0].header["EXPNUM"] == 7
        assert hdul[0].header["PRODUCT"] == "raw"
        names = [hdu.name for hdu in hdul[1:]]
        assert names == ["r1", "b1"]
        assert hdul["B1"].header["CCDNAME"] == "b1"
        assert hdul["B1"].data.dtype.kind == "u"
    verify_fits_checksums(records[0].path)
    assert_fitsverify_clean(records[0].path)


def test_an_existing_file_is_never_overwritten(tmp_path: Path) -> None:
    instrument = _instrument(tmp_path)
    path = exposure_paths(instrument, DARK, 7, WHEN)[0]
    path.parent.mkdir(parents=True)
    path.write_bytes(b"precious")
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        write_exposure_files(_products(instrument), _facts(DARK), instrument, WHEN)
    assert path.read_bytes() == b"precious"
    assert not list(path.parent.glob(".*.tmp")), "no temporary file may be left behind"


def test_a_retried_write_keeps_the_files_it_completed(tmp_path: Path) -> None:
    instrument = _instrument(tmp_path)
    first, _ = write_exposure_files(_products(instrument), _facts(DARK), instrument, WHEN)
    again, _ = write_exposure_files(_products(instrument), _facts(DARK), instrument, WHEN)
    assert [r.sha256 for r in again] == [r.sha256 for r in first]


def test_corrupted_file_fails_checksum_and_manifest(tmp_path: Path) -> None:
    instrument = _instrument(tmp_path)
    records, _ = write_exposure_files(_products(instrument), _facts(DARK), instrument, WHEN)
    path = records[0].path
    raw = bytearray(path.read_bytes())
    raw[-100] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(ChecksumError):
        verify_fits_checksums(path)
    assert verify_manifest(path.parent)
    completed = subprocess.run(
        ["sha256sum", "-c", "SHA256SUMS"],
        cwd=path.parent,
        capture_output=True,
        text=True,
        check=False,
    )
    assert completed.returncode != 0
