"""Stage 1: clear the CCDs before an integration."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from devices.base import CCDController


@task(name="flush", cache_policy=NO_CACHE, persist_result=False, timeout_seconds=120)
async def flush(controller: CCDController, count: int) -> None:
    """Flush ``count`` times. Safe to retry: flushing twice harms nothing."""
    await controller.flush(count)
