"""Stage 2: integrate, with the shutter open only for light frames.

Never retried: a second integration would be a different exposure, so a failure here
fails the exposure. The controller aborts (shutter closed) if the task is cancelled.
"""

from __future__ import annotations

from datetime import UTC, datetime

from prefect import task
from prefect.cache_policies import NO_CACHE

from devices.base import CCDController


@task(name="expose", cache_policy=NO_CACHE, persist_result=False, retries=0)
async def expose(controller: CCDController, exptime: float, open_shutter: bool) -> datetime:
    """Integrate for ``exptime`` seconds; return the UTC start time (DATE-OBS)."""
    date_obs = datetime.now(UTC)
    await controller.expose(exptime, open_shutter=open_shutter)
    return date_obs
