"""Quick-look PNGs: thumbnails where the pixels are, one mosaic, one zscale, one file
beside the FITS files that is never overwritten, in the manifest and in the summary."""

from __future__ import annotations

import hashlib
import io
import logging
import math
import pickle
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy.visualization import ZScaleInterval
from PIL import Image
from rich.console import Console

from flows.exposure import run_sequence
from flows.summary import print_sequence_summary
from schemas.exposure import ExposureSpec, SequenceSpec
from schemas.instrument import DaskConfig, InstrumentConfig, load_instrument
from schemas.products import Product
from schemas.results import ExposureResult, FileRecord, SequenceResult
from tasks.control.instrument import ControllerPlan, plan_instrument
from tasks.files.manifest import MANIFEST_NAME, verify_manifest
from tasks.files.quicklook_png import png_text, write_quicklook
from tasks.headers.header import ExposureFacts
from tasks.processing.ccd_products import buffer_products
from tasks.processing.ccd_work import process_exposure_on_dask
from tasks.processing.dask_cluster import open_client
from tasks.processing.quicklook import (
    BLANK_GREY,
    MosaicExtent,
    MosaicPlan,
    Thumbnail,
    assemble_mosaic,
    ccd_thumbnail,
    plan_mosaic,
    thumbnails_of,
    to_8bit,
    zscale_limits,
)
from tasks.processing.raw_frames import DetectorPlacement
from tasks.processing.sections import Box
from tasks.reporting.artifacts import exposure_rows, summary_markdown
from tasks.write import night_folder

from .conftest import SIM_YAML

WHEN = datetime(2026, 11, 21, 3, 4, 5, tzinfo=UTC)
BIAS = ExposureSpec(image_type="bias")
URL_BASE = "https://data.example.org/ccd/"
CCD_LEVELS = {"r1": 10.0, "b1": 200.0}
AMP_BIAS = {"A": 1000, "B": 1300}


def _instrument(data_root: Path, b1_origin: tuple[int, int] = (512, 0), **storage: Any) -> Any:
    data = load_instrument(SIM_YAML).model_dump()
    data["storage"].update(data_root=data_root, **storage)
    data["controllers"][0]["ccds"][1]["mosaic_origin"] = b1_origin
    return InstrumentConfig.model_validate(data)


def _buffer(plan: ControllerPlan, instrument: InstrumentConfig, pattern: bool) -> np.ndarray:
    """Each amplifier's overscan at its own bias level; its science pixels that level
    plus the CCD's level (plus a random pattern), so a misplaced block shows."""
    buffer = np.zeros(plan.buffer_shape, dtype=np.uint16)
    rng = np.random.default_rng(7)
    for product in buffer_products(buffer, plan, BIAS, instrument, 1):
        raw = product.raw[0]
        for amp in raw.amplifiers:
            bias, data = amp.bias, amp.data
            assert bias is not None
            raw.data[bias.r0 : bias.r1, bias.c0 : bias.c1] = AMP_BIAS[amp.name]
            signal = CCD_LEVELS[product.ccd.name] + AMP_BIAS[amp.name]
            noise = rng.integers(0, 50, data.shape) if pattern else 0
            raw.data[data.r0 : data.r1, data.c0 : data.c1] = signal + noise
    return buffer


def _placement(origin: tuple[int, int], width: int, height: int) -> DetectorPlacement:
    return DetectorPlacement(origin, {"A": Box(0, height, 0, width)})


# --- the reduction -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sizes", "binning", "longest"),
    [
        ([(4096, 4096)], (1, 1), 1024),
        ([(2048, 4096), (2048, 4096)], (1, 1), 1024),  # two CCDs side by side: 4096 x 4096
        ([(2048, 4100)], (1, 1), 1000),
        ([(512, 1024), (512, 1024)], (1, 1), 1024),  # the sim: fits as it is
        ([(4096, 4096)], (2, 3), 512),
        ([(300, 200)], (1, 1), 64),
    ],
)
def test_the_scale_is_the_smallest_that_fits_the_longest_side(
    sizes: list[tuple[int, int]], binning: tuple[int, int], longest: int
) -> None:
    placements = [_placement((i * w, 0), w, h) for i, (w, h) in enumerate(sizes)]
    plan = plan_mosaic(placements, binning, longest)
    assert plan.scale % binning[0] == 0
    assert plan.scale % binning[1] == 0
    assert max(plan.shape) <= longest
    step = math.lcm(*binning)
    if plan.scale > step:  # one step less would not fit
        side = plan.extent.longest_side
        assert math.ceil(side / (plan.scale - step)) > longest


def test_a_thumbnail_is_the_block_mean_of_the_science_pixels(tmp_path: Path) -> None:
    instrument = _instrument(tmp_path)
    plan = plan_instrument(instrument)[0]
    buffer = _buffer(plan, instrument, pattern=True)
    product = buffer_products(buffer, plan, BIAS, instrument, 1)[0]
    mosaic = plan_mosaic(plan.placements, (1, 1), 100)  # 1024 px tall: scale 11
    assert mosaic.scale == 11
    thumb = ccd_thumbnail(product, mosaic)
    assert thumb.pixels.dtype == np.float32
    assert thumb.pixels.shape == (math.ceil(1024 / 11), math.ceil(512 / 11))  # edges kept
    amp_a = product.raw[0].data[:11, :11].astype(np.float64) - AMP_BIAS["A"]
    assert thumb.pixels[0, 0] == pytest.approx(amp_a.mean(), rel=1e-6)
    assert thumb.pixels.nbytes < 20_000  # what crosses from a worker: small


def test_raw_and_processed_thumbnails_put_every_amplifier_in_the_same_place(
    tmp_path: Path,
) -> None:
    """Amplifier B reads from the top: the raw frame's thumbnail flips it as the
    processing chain does, and both drop the overscan."""
    raw_only = _instrument(tmp_path)
    processed = _instrument(tmp_path, processed=True)
    plan = plan_instrument(raw_only)[0]
    buffer = _buffer(plan, raw_only, pattern=True)
    mosaic = plan_mosaic(plan.placements, (1, 1), 256)
    from_raw = thumbnails_of(buffer_products(buffer, plan, BIAS, raw_only, 1), mosaic)
    from_image = thumbnails_of(buffer_products(buffer, plan, BIAS, processed, 1), mosaic)
    for raw, image in zip(from_raw, from_image, strict=True):
        assert raw.origin == image.origin
        np.testing.assert_allclose(raw.pixels, image.pixels, rtol=1e-5)
        assert abs(float(np.median(raw.pixels)) - CCD_LEVELS[raw.ccd] - 24.5) < 2


# --- the mosaic ----------------------------------------------------------------------


def test_ccds_land_where_their_mosaic_origin_says_with_y_up(tmp_path: Path) -> None:
    instrument = _instrument(tmp_path, b1_origin=(600, 1024))  # b1 above r1, to its right
    plan = plan_instrument(instrument)[0]
    buffer = _buffer(plan, instrument, pattern=False)
    mosaic = plan_mosaic(plan.placements, (1, 1), 256)
    assert (mosaic.extent, mosaic.scale) == (MosaicExtent(0, 0, 1112, 2048), 8)
    image = assemble_mosaic(
        thumbnails_of(buffer_products(buffer, plan, BIAS, instrument, 1), mosaic), mosaic
    )
    assert image.shape == (256, 139)
    r1, b1 = np.zeros(image.shape, bool), np.zeros(image.shape, bool)
    r1[0:128, 0:64] = True  # 1024 x 512 unbinned at (0, 0), row 0 at the bottom
    b1[128:256, 75:139] = True  # at (600, 1024): 600 / 8 = 75
    assert np.all(image[r1] == CCD_LEVELS["r1"])
    assert np.all(image[b1] == CCD_LEVELS["b1"])
    assert np.all(np.isnan(image[~(r1 | b1)])), "gaps are blank"

    grey = to_8bit(image, CCD_LEVELS["r1"], CCD_LEVELS["b1"])
    # Stored top row first: b1, the upper CCD, is at the top of the picture.
    assert np.all(grey[0:128, 75:139] == 255)
    assert np.all(grey[128:256, 0:64] == 1)
    assert np.all(grey[0:128, 0:75] == BLANK_GREY)
    assert np.all(grey[128:256, 64:139] == BLANK_GREY)


def test_a_missing_ccd_is_a_blank_and_a_stray_thumbnail_is_refused() -> None:
    plan = MosaicPlan(MosaicExtent(0, 0, 200, 100), 10, (1, 1))
    only = Thumbnail("r1", (0, 0), np.ones((10, 10), np.float32))
    image = assemble_mosaic([only], plan)
    assert image.shape == (10, 20)
    assert np.all(image[:, :10] == 1)
    assert np.all(np.isnan(image[:, 10:]))
    with pytest.raises(ValueError, match="outside the mosaic"):
        assemble_mosaic([Thumbnail("x", (200, 0), only.pixels)], plan)


# --- the stretch ---------------------------------------------------------------------


def test_zscale_is_one_range_over_the_finite_pixels_of_every_ccd() -> None:
    rng = np.random.default_rng(1)
    image = rng.normal(1000, 10, (100, 200)).astype(np.float32)
    image[:, 100:] += 40  # the second CCD is brighter
    image[50, 50] = 1e6  # a cosmic ray must not set the range
    image[:10] = np.nan  # a gap
    low, high = zscale_limits(image)
    assert (low, high) == ZScaleInterval().get_limits(image[np.isfinite(image)])
    assert 950 < low < 1000 < 1040 < high < 1100, "both CCDs within one range"
    with pytest.raises(ValueError, match="no finite pixel"):
        zscale_limits(np.full((4, 4), np.nan, np.float32))


def test_eight_bit_levels_clip_to_the_range_and_keep_zero_for_gaps() -> None:
    image = np.array([[np.nan, 0.0, 10.0, 20.0, 30.0]], np.float32)
    assert to_8bit(image, 10.0, 20.0).tolist() == [[BLANK_GREY, 1, 1, 255, 255]]
    assert to_8bit(np.array([[5.0], [6.0]], np.float32), 0.0, 10.0).tolist() == [[153], [128]]
    flat = to_8bit(np.full((2, 2), 3.0, np.float32), 3.0, 3.0)
    assert np.all(flat == 128), "a constant image is mid-grey, not a division by zero"


# --- the file ------------------------------------------------------------------------


SimMosaic = tuple[InstrumentConfig, MosaicPlan, list[Thumbnail]]


@pytest.fixture
def sim_mosaic(tmp_path: Path) -> SimMosaic:
    instrument = _instrument(tmp_path / "data", quicklook=True, url_base=URL_BASE)
    plan = plan_instrument(instrument)[0]
    buffer = _buffer(plan, instrument, pattern=True)
    mosaic = plan_mosaic(plan.placements, (1, 1), 300)
    return (
        instrument,
        mosaic,
        thumbnails_of(buffer_products(buffer, plan, BIAS, instrument, 1), mosaic),
    )


def test_the_png_decodes_and_says_what_it_shows(
    sim_mosaic: SimMosaic,
) -> None:
    instrument, mosaic, thumbnails = sim_mosaic
    made = write_quicklook(thumbnails, mosaic, instrument, 42, "bias", WHEN)
    path = made.record.path
    assert path == night_folder(instrument, WHEN) / "ccdsim-00000042.png"
    assert made.url == f"{URL_BASE}20261120/ccdsim-00000042.png"
    assert (made.record.product, made.record.ccd) == (Product.QUICKLOOK, "all")
    with Image.open(path) as image:
        assert (image.format, image.mode) == ("PNG", "L")
        assert image.size == (mosaic.shape[1], mosaic.shape[0]) == (256, 256)  # <= 300
        grey = np.asarray(image)
    assert grey.min() >= 1, "the sim's CCDs abut: no blank pixel"
    text = png_text(path)
    assert {k: text[k] for k in ("INSTRUME", "EXPNUM", "IMAGETYP", "PRODUCT")} == {
        "INSTRUME": "ccdsim",
        "EXPNUM": "42",
        "IMAGETYP": "bias",
        "PRODUCT": "quicklook",
    }
    low, high = zscale_limits(assemble_mosaic(thumbnails, mosaic))
    assert (float(text["ZLOW"]), float(text["ZHIGH"])) == pytest.approx((low, high), rel=1e-5)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert made.record.sha256 == digest
    assert made.record.nbytes == path.stat().st_size
    manifest = (path.parent / MANIFEST_NAME).read_text()
    assert f"{digest}  {path.name}\n" in manifest
    assert not list(path.parent.glob(".*.tmp")), "temporary file left behind"


def test_an_existing_file_is_never_overwritten(
    sim_mosaic: SimMosaic,
) -> None:
    instrument, mosaic, thumbnails = sim_mosaic
    folder = night_folder(instrument, WHEN)
    folder.mkdir(parents=True)
    foreign = folder / "ccdsim-00000007.png"
    foreign.write_bytes(b"someone else's picture")
    with pytest.raises(FileExistsError, match=r"refusing to overwrite .*ccdsim-00000007\.png"):
        write_quicklook(thumbnails, mosaic, instrument, 7, "bias", WHEN)
    assert foreign.read_bytes() == b"someone else's picture"

    # Another exposure's quick-look at that name (a reused number) is refused too ...
    first = write_quicklook(thumbnails, mosaic, instrument, 8, "bias", WHEN)
    other = folder / "ccdsim-00000009.png"
    other.write_bytes(first.record.path.read_bytes())
    with pytest.raises(FileExistsError, match="not the quick-look of exposure 9"):
        write_quicklook(thumbnails, mosaic, instrument, 9, "bias", WHEN)
    # ... while this exposure's own, from an earlier attempt, is kept as it is.
    again = write_quicklook(thumbnails[:1], mosaic, instrument, 8, "bias", WHEN)
    assert again.record == first.record
    assert verify_manifest(folder) == []


# --- where the pixels are: Dask workers ----------------------------------------------


async def test_dask_workers_send_back_the_same_thumbnails_as_the_serial_path(
    tmp_path: Path,
) -> None:
    instrument = _instrument(tmp_path / "data", quicklook=True)
    plan = plan_instrument(instrument)[0]
    buffer = _buffer(plan, instrument, pattern=True)
    mosaic = plan_mosaic(plan.placements, (1, 1), 128)
    facts = ExposureFacts(spec=BIAS, expnum=3, date_obs=WHEN, darktime=0.0, flow_run_id=None)
    with open_client(DaskConfig(threads=2)) as client:
        outcomes = await process_exposure_on_dask(
            client, buffer, plan, facts, instrument, WHEN, 1, mosaic
        )
    serial = thumbnails_of(buffer_products(buffer, plan, BIAS, instrument, 1), mosaic)
    # A worker in another process sends its outcome pickled: small, and whole.
    sent = pickle.loads(pickle.dumps(outcomes))
    assert len(pickle.dumps(outcomes)) < 100_000  # the buffer is 2.2 MB
    for outcome, expected in zip(sent, serial, strict=True):
        assert outcome.thumbnail_problem is None
        assert (outcome.thumbnail.ccd, outcome.thumbnail.origin) == (expected.ccd, expected.origin)
        np.testing.assert_array_equal(outcome.thumbnail.pixels, expected.pixels)


# --- end to end ----------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
async def test_a_sequence_writes_links_and_lists_a_png_per_exposure(
    sim_instrument: InstrumentConfig, caplog: pytest.LogCaptureFixture
) -> None:
    data = sim_instrument.model_dump()
    data["storage"].update(quicklook=True, quicklook_size=256, url_base=URL_BASE)
    instrument = InstrumentConfig.model_validate(data)
    # Exposure 1's name is taken by someone else's file: its FITS files are written
    # all the same, without a quick-look, and the run goes on.
    folder = night_folder(instrument, datetime.now(UTC))
    folder.mkdir(parents=True)
    (folder / "ccdsim-00000001.png").write_bytes(b"not ours")
    sequence = SequenceSpec(
        name="quicklook",
        exposures=[
            ExposureSpec(image_type="bias"),
            ExposureSpec(image_type="dark", exptime=0.1),  # on the (threaded) Dask workers
            ExposureSpec(image_type="bias", stacking={"frames": 2}),  # here, in the flow
        ],
    )
    with caplog.at_level(logging.ERROR):
        result = await run_sequence(sequence, instrument)

    first, dark, stacked = result.exposures
    assert "process_write" in dark.timings
    assert "post_process" in stacked.timings
    assert [f.product for f in first.files] == [Product.RAW, Product.RAW]
    assert first.quicklook_url is None
    assert "exposure 1: no quick-look PNG (FileExistsError: refusing to overwrite" in caplog.text
    assert (folder / "ccdsim-00000001.png").read_bytes() == b"not ours"

    manifest = (folder / MANIFEST_NAME).read_text()
    for exposure in (dark, stacked):
        png = exposure.files[-1]
        assert png.product is Product.QUICKLOOK
        assert png.path == folder / f"ccdsim-{exposure.expnum:08d}.png"
        assert {f.path.parent for f in exposure.files} == {folder}, "beside the FITS files"
        digest = hashlib.sha256(png.path.read_bytes()).hexdigest()
        assert png.sha256 == digest
        assert f"{digest}  {png.path.name}\n" in manifest
        assert "quicklook" in exposure.timings
        with Image.open(png.path) as image:
            assert (image.mode, image.size) == ("L", (256, 256))
        assert png_text(png.path)["EXPNUM"] == str(exposure.expnum)
        url = f"{URL_BASE}{folder.name}/{png.path.name}"
        assert exposure.quicklook_url == url
        assert f"[{png.path.name}]({url})" in summary_markdown(result)
    assert verify_manifest(folder) == []
    rows = exposure_rows(result)
    assert [row["quicklook"] for row in rows] == [None, dark.quicklook_url, stacked.quicklook_url]
    assert [row["n_files"] for row in rows] == [2, 2, 2], "FITS files, as the history reads"


def _result_with_a_png(tmp_path: Path) -> SequenceResult:
    raw = FileRecord(path=tmp_path / "ccdsim-r1-00000001.fits", ccd="r1", sha256="1" * 64, nbytes=9)
    png = FileRecord(
        path=tmp_path / "ccdsim-00000001.png",
        ccd="all",
        sha256="0" * 64,
        nbytes=10,
        product=Product.QUICKLOOK,
    )
    exposure = ExposureResult(
        expnum=1, image_type="bias", exptime=0.0, date_obs=WHEN, files=[raw, png], timings={}
    )
    return SequenceResult(name="s", flow_run_id=None, exposures=[exposure], elapsed_s=1.0)


def test_without_a_url_base_the_summary_links_nothing(tmp_path: Path) -> None:
    """A path on the instrument's disk would be a dead link in a browser."""
    result = _result_with_a_png(tmp_path)
    exposure = result.exposures[0]
    text = summary_markdown(result)
    assert "Quick-look images" not in text
    assert "](" not in text
    assert "quicklook" not in exposure_rows(result)[0]
    linked = exposure.model_copy(update={"quicklook_url": f"{URL_BASE}x/ccdsim-00000001.png"})
    text = summary_markdown(result.model_copy(update={"exposures": [linked]}))
    assert f"- 1 (bias): [ccdsim-00000001.png]({URL_BASE}x/ccdsim-00000001.png)" in text


def test_the_console_summary_counts_fits_files_and_names_the_png(tmp_path: Path) -> None:
    out = io.StringIO()
    print_sequence_summary(_result_with_a_png(tmp_path), Console(file=out, width=200))
    text = out.getvalue()
    assert "1 FITS files in" in text
    assert "raw frame as read per CCD (r1), e.g. ccdsim-r1-00000001.fits" in text
    assert "quick-look PNG of the mosaic, e.g. ccdsim-00000001.png" in text


# --- where a quick-look may and may not be asked for ----------------------------------


def _sim_with(**changes: dict[str, Any]) -> dict[str, Any]:
    data = load_instrument(SIM_YAML).model_dump()
    for section, values in changes.items():
        if isinstance(data.get(section), dict):
            data[section].update(values)
        else:
            data[section] = values
    return data


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"archive": {"hdf5": True, "product": "quicklook"}}, "archive.product"),
        ({"processing": {"masters_from": "quicklook"}}, "processing.masters_from"),
    ],
)
def test_a_quick_look_is_never_an_input(changes: dict[str, Any], field: str) -> None:
    data = _sim_with(storage={"quicklook": True}, **changes)
    with pytest.raises(ValueError, match=rf"{re.escape(field)}: a quick-look PNG is for eyes"):
        InstrumentConfig.model_validate(data)


def test_a_receiver_may_ask_for_the_quick_look_alone_when_it_is_written() -> None:
    receiver = {"name": "screen", "url": "http://127.0.0.1:9/", "products": ["quicklook"]}
    config = InstrumentConfig.model_validate(
        _sim_with(storage={"quicklook": True}, receivers=[receiver])
    )
    assert config.receivers[0].products == [Product.QUICKLOOK]
    with pytest.raises(ValueError, match=r"receivers\.0\.products: screen wants quicklook"):
        InstrumentConfig.model_validate(_sim_with(receivers=[receiver]))
