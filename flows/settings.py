"""Process-wide settings that must be in place before Prefect is imported.

Prefect reads its settings when it is first imported, so the CLI calls
:func:`configure_prefect` first thing. Defaults keep everything inside the project:
the embedded API's SQLite database (the run history) lives under ``state/prefect``,
and analytics are off (this software runs on observatory networks). Values already
set in the environment win, so PREFECT_API_URL can point at a real server.
"""

from __future__ import annotations

import os
from pathlib import Path

STATE_DIR = Path("state")


def configure_prefect(state_dir: Path = STATE_DIR) -> Path:
    """Set Prefect's environment defaults; return the PREFECT_HOME in use."""
    home = Path(os.environ.setdefault("PREFECT_HOME", str((state_dir / "prefect").resolve())))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    home.mkdir(parents=True, exist_ok=True)
    return home
