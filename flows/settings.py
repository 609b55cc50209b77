"""Process-wide settings that must be in place before Prefect is imported.

Prefect reads its settings when it is first imported, so the CLI calls
:func:`configure_prefect` first thing. Defaults keep everything inside the project:
the embedded API's SQLite database (the run history) lives under ``state/prefect``,
and analytics are off (this software runs on observatory networks). Values already
set in the environment win, so PREFECT_API_URL can point at a real server.
"""

from __future__ import annotations

import asyncio
import base64
import fcntl
import os
from pathlib import Path

from flows.console_stack import running_api
from flows.reaper import start_reaper

STATE_DIR = Path("state")
DATABASE = "prefect.db"
"""The embedded API's SQLite file in PREFECT_HOME (Prefect's default location)."""


API_CHECK_TIMEOUT_S = 5.0
"""How long a server named by PREFECT_API_URL may take to answer its health check."""


class PrefectApiUnreachableError(RuntimeError):
    """PREFECT_API_URL names a server that does not answer."""


def check_api(url: str, timeout: float = API_CHECK_TIMEOUT_S) -> None:
    """Ask the server's /health once; PrefectApiUnreachableError naming PREFECT_API_URL
    when it does not answer in ``timeout`` seconds (a run would otherwise fail later,
    after seconds of retries, with a traceback)."""
    import httpx

    base = url.rstrip("/")
    try:
        response = httpx.get(f"{base}/health", timeout=timeout)
        response.raise_for_status()
    except httpx.HTTPError as exc:
        raise PrefectApiUnreachableError(
            f"cannot reach the Prefect API at {url} (PREFECT_API_URL): "
            f"{type(exc).__name__}: {exc or 'no answer'}. Start the server, or unset "
            "PREFECT_API_URL to use the embedded API"
        ) from exc
    # /health answers without credentials; ask something that needs them.
    headers = {}
    if auth := os.environ.get("PREFECT_API_AUTH_STRING"):
        headers["Authorization"] = "Basic " + base64.b64encode(auth.encode()).decode()
    try:
        version = httpx.get(f"{base}/admin/version", headers=headers, timeout=timeout)
    except httpx.HTTPError as exc:
        raise PrefectApiUnreachableError(
            f"the Prefect API at {url} (PREFECT_API_URL) stopped answering: {exc}"
        ) from exc
    if version.status_code == 401:
        raise PrefectApiUnreachableError(
            f"the Prefect API at {url} (PREFECT_API_URL) refused our credentials: set "
            "PREFECT_API_AUTH_STRING to the server's PREFECT_SERVER_API_AUTH_STRING"
        )


def configure_prefect(state_dir: Path = STATE_DIR) -> Path:
    """Set Prefect's environment defaults; return the PREFECT_HOME in use.

    Also starts the command's reaper (flows/reaper.py): whatever the command starts
    from here on (its embedded Prefect API, simulators) is stopped when the command
    dies, even by kill -9. Without PREFECT_API_URL, a ``ccdflow server`` running from
    ``state_dir`` is used. A server named by PREFECT_API_URL must answer, and accept
    PREFECT_API_AUTH_STRING when it asks for one (PrefectApiUnreachableError otherwise).
    """
    start_reaper()
    if not os.environ.get("PREFECT_API_URL") and (url := running_api(state_dir)):
        # `ccdflow server` runs from this folder: use it, start no API of our own.
        os.environ["PREFECT_API_URL"] = url
    if url := os.environ.get("PREFECT_API_URL"):
        check_api(url)
    home = Path(os.environ.setdefault("PREFECT_HOME", str((state_dir / "prefect").resolve())))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    home.mkdir(parents=True, exist_ok=True)
    _create_database_once(home)
    return home


def _create_database_once(home: Path) -> None:
    """Create the embedded API's database under a lock, the first time only.

    Two ``ccdflow`` commands started together on a new PREFECT_HOME would both create
    the SQLite database, and one fails (a migration race, or ``UNIQUE constraint
    failed: block_type.slug``). So the first command starts the embedded API here,
    holding a lock, and the others wait for it; later commands find the database and
    skip this. With a server (PREFECT_API_URL) or another database, there is nothing
    to create.
    """
    if os.environ.get("PREFECT_API_URL") or os.environ.get("PREFECT_API_DATABASE_CONNECTION_URL"):
        return
    if (home / DATABASE).exists():
        return
    with open(home / ".create-database.lock", "a", encoding="utf-8") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        if not (home / DATABASE).exists():
            asyncio.run(_start_embedded_api())


async def _start_embedded_api() -> None:
    """Start the embedded API (it creates and migrates the database) and ask it once.

    The API stays up for the rest of the process, so the command's flows use it.
    """
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        await client.api_healthcheck()
