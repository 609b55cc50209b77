"""From one CCD's pixels as read to the products its files hold: raw and/or processed.

The raw product is a view of the buffer plus its amplifier map (tasks/processing/raw_frames.py);
the processed product is the chain of tasks/post_process.py applied to the very same
pixels. Both the Dask workers (tasks/processing/ccd_work.py) and the in-process path
(flows/frame.py) build them here, so the two paths write identical files.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass

from prefect import task
from prefect.cache_policies import NO_CACHE

from schemas.exposure import ExposureSpec
from schemas.instrument import CcdConfig, InstrumentConfig, StorageConfig
from schemas.processing import ProcessingConfig
from tasks.control.instrument import ControllerPlan
from tasks.post_process import CcdImage, ProcessingInputs, RawPixels, ReadoutNumbers, process_ccd
from tasks.processing.raw_frames import (
    RawCcd,
    map_amplifiers,
    raw_ccd,
    region_from_header,
    region_in_slice,
)
from tasks.processing.sections import Box
from tasks.write import CcdProduct


@dataclass(frozen=True, slots=True)
class CcdSource:
    """Everything needed to turn one CCD's slice of a buffer into its products."""

    index: int
    """The CCD's place in its controller's layout (and config)."""
    ccd: CcdConfig
    plan: ControllerPlan
    """The controller's plan for this exposure's window and binning."""


def ccd_slice(buffer: RawPixels, source: CcdSource) -> RawPixels:
    """The CCD's columns of the whole buffer (a view: nothing is copied)."""
    region = source.plan.layout[source.index]
    return buffer[region.buffer_rows, region.buffer_cols]


def raw_product(pixels: RawPixels, source: CcdSource, spec: ExposureSpec) -> RawCcd:
    """The raw product of ``pixels``, the CCD's slice of the buffer (:func:`ccd_slice`)."""
    plan = source.plan
    whole = plan.layout[source.index]
    region = region_in_slice(whole)
    if pixels.shape != region.shape:
        raise ValueError(
            f"{source.ccd.name}: raw pixels of shape {pixels.shape}, expected {region.shape}"
        )
    amplifiers = map_amplifiers(
        region,
        pixels=plan.pixels,
        overscan=plan.overscan_pixels,
        lines=plan.lines,
        binning=(spec.binning.x, spec.binning.y),
        window=spec.window,
        placement=plan.placements[source.index],
    )
    rows, cols = whole.buffer_rows, whole.buffer_cols
    in_buffer = Box(int(rows.start), int(rows.stop), int(cols.start), int(cols.stop))
    return raw_ccd(pixels, source.ccd.name, amplifiers, source.ccd.saturation_adu, in_buffer)


def processed_product(
    pixels: RawPixels, source: CcdSource, spec: ExposureSpec, processing: ProcessingConfig
) -> CcdImage:
    """The chain applied to ``pixels``, the CCD's slice of the buffer."""
    numbers = ReadoutNumbers.of(source.plan)
    return process_ccd(
        pixels,
        region_in_slice(source.plan.layout[source.index]),
        source.ccd.name,
        pixels=numbers.pixels,
        overscan=numbers.overscan,
        lines=numbers.lines,
        inputs=ProcessingInputs(source.ccd, spec, processing),
    )


def process_raw(
    pixels: RawPixels,
    header: Mapping[str, object],
    ccd: CcdConfig,
    spec: ExposureSpec,
    processing: ProcessingConfig,
) -> CcdImage:
    """The chain applied to a raw image read back from its file: the geometry comes
    from the raw header alone (tasks/processing/raw_frames.py), no ACF or instrument layout."""
    geometry = region_from_header(header, (int(pixels.shape[0]), int(pixels.shape[1])))
    return process_ccd(
        pixels,
        geometry.region,
        ccd.name,
        pixels=geometry.pixels,
        overscan=geometry.overscan,
        lines=geometry.lines,
        inputs=ProcessingInputs(ccd, spec, processing),
    )


def products_of(
    pixels: RawPixels,
    source: CcdSource,
    spec: ExposureSpec,
    storage: StorageConfig,
    processing: ProcessingConfig,
) -> tuple[RawCcd, CcdImage | None]:
    """The raw product (always built: cheap, and it gives the quick-look numbers when
    nothing is processed) and the processed image when storage writes one."""
    raw = raw_product(pixels, source, spec)
    image = processed_product(pixels, source, spec, processing) if storage.processed else None
    return raw, image


def buffer_products(
    buffer: RawPixels,
    plan: ControllerPlan,
    spec: ExposureSpec,
    instrument: InstrumentConfig,
    buffer_number: int,
) -> list[CcdProduct]:
    """Every CCD's products of one controller's buffer, in this thread: the in-process
    path (through :func:`build_products`), benchmarks and tests. The Dask path builds
    each CCD on its own worker instead (tasks/processing/ccd_work.py)."""
    if buffer.shape != plan.buffer_shape:
        raise ValueError(
            f"{plan.config.name}: buffer shape {buffer.shape} does not match the ACF's "
            f"{plan.buffer_shape}"
        )
    products = []
    for index, ccd in enumerate(plan.config.ccds):
        source = CcdSource(index, ccd, plan)
        raw, image = products_of(
            ccd_slice(buffer, source), source, spec, instrument.storage, instrument.processing
        )
        products.append(CcdProduct(ccd, plan.config.name, buffer_number, raw=(raw,), image=image))
    return products


@task(name="post-process", cache_policy=NO_CACHE, persist_result=False)
async def build_products(
    buffer: RawPixels,
    plan: ControllerPlan,
    spec: ExposureSpec,
    instrument: InstrumentConfig,
    buffer_number: int,
) -> list[CcdProduct]:
    """:func:`buffer_products` in a worker thread, so the event loop stays free."""
    return await asyncio.to_thread(buffer_products, buffer, plan, spec, instrument, buffer_number)
