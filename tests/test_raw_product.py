"""The raw product: the buffer as read, mapped by its header; the processed product is
the chain applied to it; the storage config says which are written, checked at load."""

from __future__ import annotations

import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from devices.base import ExposureTimes
from schemas.errors import ConfigError
from schemas.exposure import ExposureSpec
from schemas.instrument import InstrumentConfig, NoRawProductWarning, load_instrument
from tasks.control.geometry import plan_readout
from tasks.control.instrument import ControllerPlan, plan_instrument
from tasks.files.verify import verify_fits_checksums
from tasks.headers.header import ExposureFacts
from tasks.headers.time_cards import summarize, time_cards
from tasks.processing.ccd_products import buffer_products, process_raw
from tasks.processing.raw_frames import AmplifierMap, raw_stats
from tasks.processing.sections import Box
from tasks.write import write_exposure_files

from .conftest import SIM_YAML
from .fitscheck import assert_fitsverify_clean

WHEN = datetime(2026, 11, 21, 3, 4, 5, 250000, tzinfo=UTC)
FLAT = ExposureSpec(image_type="flat", exptime=2.0)


def _instrument(tmp_path: Path, processing: dict[str, object] | None = None, **storage: object):
    data = load_instrument(SIM_YAML).model_dump()
    data["storage"].update(data_root=tmp_path, **storage)
    if processing:
        data["processing"].update(processing)
    return InstrumentConfig.model_validate(data)


def _buffer(plan: ControllerPlan, seed: int = 11) -> np.ndarray:
    """Every pixel different, so a misplaced or flipped block cannot pass."""
    rng = np.random.default_rng(seed)
    return rng.integers(900, 60000, plan.buffer_shape, dtype=np.uint16)


def _facts(spec: ExposureSpec, times: tuple[ExposureTimes, ...] = ()) -> ExposureFacts:
    return ExposureFacts(
        spec=spec, expnum=42, date_obs=WHEN, darktime=2.1, flow_run_id=None, times=times
    )


def _write(instrument: InstrumentConfig, spec: ExposureSpec, plan: ControllerPlan, buffer):
    products = buffer_products(buffer, plan, spec, instrument, 2)
    records, _ = write_exposure_files(products, _facts(spec), instrument, WHEN)
    return records


@pytest.mark.parametrize("engine", ["astropy", "fitsio"])
@pytest.mark.parametrize("compression", ["none", "RICE_1"])
def test_the_raw_file_is_the_buffer_as_read_with_every_amplifier_mapped(
    tmp_path: Path, engine: str, compression: str
) -> None:
    instrument = _instrument(tmp_path, engine=engine, compression=compression)
    plan = plan_instrument(instrument)[0]
    buffer = _buffer(plan)
    records = _write(instrument, FLAT, plan, buffer)
    assert [(r.ccd, r.product.value) for r in records] == [("r1", "raw"), ("b1", "raw")]
    for record, region in zip(records, plan.layout, strict=True):
        verify_fits_checksums(record.path)
        assert_fitsverify_clean(record.path)
        with fits.open(record.path) as hdul:
            hdu = hdul[-1]  # the primary HDU, or the compressed extension
            assert hdul[0].header["PRODUCT"] == "raw"
            # Lossless, integer, the controller's sample width, overscan included.
            assert hdu.data.dtype == np.uint16
            expected = buffer[region.buffer_rows, region.buffer_cols]
            np.testing.assert_array_equal(hdu.data, expected)
            header = hdu.header
        # Split mode: amplifier A reads the bottom half from the bottom, B the top half
        # from the top, so B's DETSEC runs backwards in y.
        assert header["NAMPS"] == 2
        assert header["RAWSECA"] == "[1:544,1:512]"
        assert header["DATASECA"] == "[1:512,1:512]"
        assert header["BIASSECA"] == "[513:544,1:512]"
        assert header["RAWSECB"] == "[1:544,513:1024]"
        assert header["DATASECB"] == "[1:512,513:1024]"
        x0 = 512 if record.ccd == "b1" else 0
        assert header["DETSECA"] == f"[{x0 + 1}:{x0 + 512},1:512]"
        assert header["DETSECB"] == f"[{x0 + 1}:{x0 + 512},1024:513]"
        assert header["BUNIT"] == "adu"


def test_rice_compression_of_raw_counts_is_lossless_and_small(tmp_path: Path) -> None:
    instrument = _instrument(tmp_path, compression="RICE_1")
    plan = plan_instrument(instrument)[0]
    rng = np.random.default_rng(5)
    bias = rng.normal(1000, 4, plan.buffer_shape).round().astype(np.uint16)
    records = _write(instrument, FLAT, plan, bias)
    with fits.open(records[0].path) as hdul:
        np.testing.assert_array_equal(hdul[1].data, bias[:, :544])
    with fits.open(records[0].path, disable_image_compression=True) as stored:
        assert stored[1].header["ZCMPTYPE"] == "RICE_1"
        assert "ZQUANTIZ" not in stored[1].header  # integers are never quantized
    assert records[0].nbytes < bias[:, :544].nbytes / 3


def test_a_window_and_binning_map_onto_the_detector(tmp_path: Path) -> None:
    spec = ExposureSpec.model_validate(
        {
            "image_type": "flat",
            "exptime": 1.0,
            "binning": {"x": 2, "y": 2},
            "window": {"first_line": 100, "lines": 200, "first_pixel": 64, "pixels": 128},
        }
    )
    instrument = _instrument(tmp_path)
    full = plan_instrument(instrument)[0]
    plan = plan_readout(spec, full)
    records = _write(instrument, spec, plan, _buffer(plan))
    header = fits.getheader(records[1].path)  # b1, at x = 512 in the mosaic
    assert header["CCDSUM"] == "2 2"
    assert header["DATASECA"] == "[1:64,1:100]"  # 128 / 2 pixels, 200 / 2 lines
    assert header["BIASSECA"] == "[65:80,1:100]"  # 32 / 2 overscan pixels
    assert header["DETSECA"] == "[577:704,101:300]"
    # B reads from the top: its first line read is detector line 1024 - 100.
    assert header["DETSECB"] == "[577:704,924:725]"


def test_the_processed_image_is_the_chain_applied_to_the_raw_file_read_back(
    tmp_path: Path,
) -> None:
    instrument = _instrument(
        tmp_path,
        processing={"overscan": "median_row", "trim": True, "electrons": True},
        processed=True,
    )
    plan = plan_instrument(instrument)[0]
    records = _write(instrument, FLAT, plan, _buffer(plan))
    raw = {r.ccd: r for r in records if r.product.value == "raw"}
    processed = [r for r in records if r.product.value == "processed"]
    assert [r.path.name for r in processed] == [
        "ccdsim-r1-00000042-proc.fits",
        "ccdsim-b1-00000042-proc.fits",
    ]
    for record, ccd in zip(processed, plan.config.ccds, strict=True):
        assert_fitsverify_clean(record.path)
        with fits.open(record.path) as hdul:
            written = hdul[0].data
            assert hdul[0].header["RAWFILE"] == raw[ccd.name].path.name
            assert hdul[0].header["RAWSHA"] == raw[ccd.name].sha256
            assert hdul[0].header["BUNIT"] == "electron"
        with fits.open(raw[ccd.name].path) as hdul:
            pixels, header = hdul[0].data, hdul[0].header
        # Only the raw file and its header: no ACF, no instrument geometry.
        again = process_raw(pixels, header, ccd, FLAT, instrument.processing)
        assert written.dtype.kind == "f"
        assert written.dtype.itemsize == 4
        assert written.shape == (1024, 512)  # trimmed
        np.testing.assert_array_equal(written, again.data)


def test_times_say_what_measured_them_and_flag_a_short_integration() -> None:
    start = WHEN
    good = ExposureTimes(start, start + timedelta(seconds=2.0004), "controller timer", 1e-4, 2.0)
    short = ExposureTimes(start, start + timedelta(seconds=1.9), "controller timer", 1e-4, 2.0)
    summary = summarize([good], 0.02)
    assert not summary.flagged
    cards = {k: v for k, v, _ in time_cards(summary, 0.02)}
    assert cards["DATE-OBS"] == "2026-11-21T03:04:05.250"
    assert cards["DATE-END"] == "2026-11-21T03:04:07.250"
    assert cards["DATE-AVG"] == "2026-11-21T03:04:06.250"
    assert cards["TIMESRC"] == "controller timer"
    assert cards["TIMSYER"] == 1e-4
    assert cards["EXPTIME"] == 2.0
    assert cards["EXPMEAS"] == pytest.approx(2.0004)
    assert cards["EXPFLAG"] is False
    flagged = summarize([short], 0.02)
    assert flagged.flagged
    texts = [v for k, v, _ in time_cards(flagged, 0.02) if k == "COMMENT"]
    assert texts == ["EXPMEAS - EXPTIME = -0.1000 s exceeds 0.02 s"]


def test_measured_times_reach_the_header(tmp_path: Path) -> None:
    instrument = _instrument(tmp_path)
    plan = plan_instrument(instrument)[0]
    times = (ExposureTimes(WHEN, WHEN + timedelta(seconds=1.95), "controller timer", 2e-4, 2.0),)
    products = buffer_products(_buffer(plan), plan, FLAT, instrument, 2)
    records, _ = write_exposure_files(products, _facts(FLAT, times), instrument, WHEN)
    header = fits.getheader(records[0].path)
    assert header["EXPFLAG"] is True
    assert header["EXPMEAS"] == 1.95
    assert header["TIMESRC"] == "controller timer"
    assert header["MJD-END"] > header["MJD-OBS"]
    assert_fitsverify_clean(records[0].path)


# --- the storage config --------------------------------------------------------------


def _config(tmp_path: Path, **changes: dict[str, object]) -> InstrumentConfig:
    data = load_instrument(SIM_YAML).model_dump()
    data["storage"]["data_root"] = tmp_path
    for section, values in changes.items():
        if isinstance(data.get(section), dict):
            data[section].update(values)
        else:
            data[section] = values
    return InstrumentConfig.model_validate(data)


def test_raw_is_written_by_default_and_turning_it_off_is_warned_about(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert [p.value for p in _config(tmp_path).storage.products] == ["raw"]
    with pytest.warns(NoRawProductWarning, match="ADU as read are lost"):
        config = _config(tmp_path, storage={"raw": False, "processed": True})
    assert [p.value for p in config.storage.products] == ["processed"]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"storage": {"raw": False}}, "both off"),
        (
            {
                "storage": {
                    "processed": True,
                    "processed_template": "{instrument}-{ccd}-{expnum:08d}.fits",
                }
            },
            "would have one name",
        ),
        ({"archive": {"hdf5": True, "product": "processed"}}, "archive.product"),
        ({"processing": {"masters_from": "processed"}}, "processing.masters_from"),
        (
            {
                "receivers": [
                    {"name": "qa", "url": "http://127.0.0.1:9/", "products": ["processed"]}
                ]
            },
            "receivers.0.products",
        ),
    ],
)
def test_products_that_cannot_be_written_are_refused(
    tmp_path: Path, changes: dict[str, dict[str, object]], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        _config(tmp_path, **changes)


def test_a_chain_that_does_not_fit_the_readout_is_refused_naming_the_field(
    tmp_path: Path,
) -> None:
    acf = SIM_YAML.parent / "sim.acf"
    text = acf.read_text().replace("OverscanPixels=32", "OverscanPixels=0")
    text = text.replace("PIXELCOUNT=544", "PIXELCOUNT=512")
    (tmp_path / "no-overscan.acf").write_text(text)
    data = load_instrument(SIM_YAML).model_dump()
    data["controllers"][0]["acf"] = tmp_path / "no-overscan.acf"
    data["storage"].update(data_root=tmp_path, processed=True)
    with pytest.raises(ConfigError, match=r"processing\.overscan: 'median_row' needs overscan"):
        plan_instrument(InstrumentConfig.model_validate(data))
    data["processing"]["overscan"] = "none"
    assert plan_instrument(InstrumentConfig.model_validate(data))
    # Raw only: the chain does not run, so it is not checked.
    data["processing"]["overscan"] = "median_row"
    data["storage"]["processed"] = False
    data["processing"]["masters_from"] = None
    data["storage"]["raw"] = True
    assert plan_instrument(InstrumentConfig.model_validate(data)) is not None


def test_a_multi_extension_processed_file_names_its_raw_file(tmp_path: Path) -> None:
    instrument = _instrument(
        tmp_path,
        layout="mef",
        file_template="{instrument}-{expnum:08d}.fits",
        processed_template="{instrument}-{expnum:08d}-proc.fits",
        processed=True,
        compression="RICE_1",
    )
    plan = plan_instrument(instrument)[0]
    raw, processed = _write(instrument, FLAT, plan, _buffer(plan))
    assert (raw.ccd, processed.ccd) == ("all", "all")
    with fits.open(processed.path) as hdul:
        assert hdul[0].header["PRODUCT"] == "processed"
        assert hdul[0].header["RAWFILE"] == raw.path.name
        assert hdul[0].header["RAWSHA"] == raw.sha256
        assert [hdu.name for hdu in hdul[1:]] == ["r1", "b1"]
    for record in (raw, processed):
        verify_fits_checksums(record.path)
        assert_fitsverify_clean(record.path)


@pytest.mark.parametrize("shape", [(33, 17), (64, 40)])  # an odd and an even count
def test_raw_statistics_of_16_bit_frames_match_numpy(shape: tuple[int, int]) -> None:
    """The histogram path (16-bit samples) gives numpy's numbers: mean, median (the
    middle pair averaged), std and the count at or above saturation."""
    rng = np.random.default_rng(7)
    data = rng.integers(900, 70_000, size=(shape[0], 2 * shape[1])).clip(0, 65535)
    data = data.astype(np.uint16)
    left, right = (Box(0, shape[0], 0, shape[1]), Box(0, shape[0] - 3, shape[1], 2 * shape[1]))
    amps = tuple(
        AmplifierMap(n, box, box, None, (0, 1), (0, 1)) for n, box in (("A", left), ("B", right))
    )
    stats = raw_stats(data, amps, 60_000)
    blocks = [data[b.r0 : b.r1, b.c0 : b.c1].ravel() for b in (left, right)]
    flat = np.concatenate(blocks)
    assert stats["mean"] == pytest.approx(flat.mean(), rel=1e-12)
    assert stats["median"] == np.median(flat)
    assert stats["std"] == pytest.approx(flat.std(), rel=1e-9)
    assert stats["saturated"] == np.count_nonzero(flat >= 60_000)
    # 32-bit samples take numpy's path: the same numbers.
    wide = raw_stats(data.astype(np.uint32), amps, 60_000)
    assert wide["median"] == stats["median"]
    assert wide["saturated"] == stats["saturated"]
    assert wide["std"] == pytest.approx(stats["std"], rel=1e-9)
