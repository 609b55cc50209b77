"""Master calibration frames from a calibration set, built on Dask after the set is taken.

Masters are built in reduction order, each using the ones before: the bias first,
then the dark (bias subtracted), then one flat per filter (bias and dark subtracted).
A set without biases builds its dark and flats without a bias; one without darks,
its flats without a dark (the headers say which corrections were applied).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from schemas.exposure import ExposureSpec, StackMethod
from schemas.instrument import InstrumentConfig
from schemas.products import Product
from schemas.results import ExposureResult, FileRecord, MasterRecord
from tasks.processing.dask_cluster import open_client
from tasks.processing.master_build import MasterGroup, build_master, master_groups

if TYPE_CHECKING:
    from distributed import Client

MIN_FRAMES = 3
"""Fewer frames than this make a master that is noisier than it should be: warn."""


@task(name="build-master", cache_policy=NO_CACHE, persist_result=False)
async def build_master_task(
    client: Client,
    instrument: InstrumentConfig,
    group: MasterGroup,
    method: StackMethod,
    when: datetime,
    bias: Path | None,
    dark: Path | None,
) -> MasterRecord:
    """One master file: every CCD combined on a worker, written here."""
    built = await build_master(
        client,
        instrument,
        group.kind,
        group.filter,
        method,
        group.inputs,
        when,
        bias=bias,
        dark=dark,
    )
    return MasterRecord(
        kind=built.kind,
        filter=built.filter,
        file=FileRecord(
            path=built.file.path,
            ccd="all",
            sha256=built.file.sha256,
            nbytes=built.file.nbytes,
            product=Product.PROCESSED,
        ),
        inputs=list(built.expnums),
        seconds=round(built.seconds, 3),
    )


async def build_masters(
    specs: Sequence[ExposureSpec],
    exposures: Sequence[ExposureResult],
    instrument: InstrumentConfig,
    method: StackMethod,
) -> list[MasterRecord]:
    """Every master the set's exposures make, in reduction order."""
    logger = get_run_logger()
    groups = master_groups(specs, exposures, instrument.ccd_names, instrument.masters_source())
    if not groups:
        return []
    when = datetime.now(UTC)
    if not instrument.storage.data_root.is_absolute():
        # Workers may run in another folder: give them absolute paths.
        instrument = instrument.with_overrides(data_root=instrument.storage.data_root.absolute())
    records: list[MasterRecord] = []
    bias: Path | None = None
    dark: Path | None = None
    stack = contextlib.ExitStack()
    client = await asyncio.to_thread(stack.enter_context, open_client(instrument.dask))
    try:
        for group in groups:
            frames = len(next(iter(group.inputs.values())))
            if frames < MIN_FRAMES:
                logger.warning(
                    "master %s (%s) from only %d frame(s); %d or more are advised",
                    group.kind,
                    group.filter,
                    frames,
                    MIN_FRAMES,
                )
            record = await build_master_task(client, instrument, group, method, when, bias, dark)
            logger.info(
                "master %s (%s) from %d exposures: %s",
                record.kind,
                record.filter,
                len(record.inputs),
                record.file.path,
            )
            if record.kind == "bias":
                bias = record.file.path
            elif record.kind == "dark":
                dark = record.file.path
            records.append(record)
    finally:
        # Closed in a thread: the synchronous client runs its own loop there.
        await asyncio.to_thread(stack.close)
    return records
