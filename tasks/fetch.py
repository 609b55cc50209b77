"""Stage 4: transfer a frame buffer from the controller into memory.

Retried: the buffer is still in the controller, so fetching it again returns the same
frame. Pixels are never cached or persisted by Prefect (see prefect.md: hashing or
persisting a 100 MB array costs seconds).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from prefect import task
from prefect.cache_policies import NO_CACHE

from devices.base import CCDController


@task(
    name="fetch",
    cache_policy=NO_CACHE,
    persist_result=False,
    retries=2,
    retry_delay_seconds=1,
)
async def fetch(
    controller: CCDController, buffer: int
) -> npt.NDArray[np.uint16] | npt.NDArray[np.uint32]:
    """Return the whole frame buffer as a (height, width) array."""
    return await controller.fetch(buffer)
