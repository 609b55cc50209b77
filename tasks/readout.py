"""Stage 3: clock the CCDs into one of the controller's frame buffers."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from devices.base import CCDController


@task(name="readout", cache_policy=NO_CACHE, persist_result=False, retries=0)
async def readout(controller: CCDController, delay: int = 0) -> int:
    """Read out and return the number of the buffer that holds the frame.

    Not retried: a second readout would read an empty CCD. The controller's own
    readout timeout bounds the wait. ``delay`` slows each pixel (WaitCount units).
    """
    return await controller.readout(delay=delay)
