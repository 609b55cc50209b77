"""The third-party ``alpaca-simulators`` server on a free 127.0.0.1 port, for tests and
bench/alpaca.py: flows/alpaca_simulator.py writes its offline catalogue and config and
runs it; this module only picks the port (again, if another process took it first)."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from flows.alpaca_simulator import RunningSimulator, running, write_catalogue, write_config

__all__ = ["RunningSimulator", "running_simulator"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def running_simulator(
    folder: Path,
    *,
    camera: Mapping[str, Any] | None = None,
    start_timeout: float = 60.0,
    attempts: int = 3,
) -> Iterator[RunningSimulator]:
    """Start ``alpaca-simulators`` on 127.0.0.1 in ``folder``; stop it on exit.

    A port taken between our probe and the server's bind makes the server exit at
    once; then another free port is tried.
    """
    folder.mkdir(parents=True, exist_ok=True)
    catalogue = write_catalogue(folder / "gaia-synthetic.db")
    config = write_config(folder, catalogue, camera=camera)
    for attempt in range(attempts):
        with contextlib.ExitStack() as stack:
            try:
                sim = stack.enter_context(
                    running(folder, config, free_port(), start_timeout=start_timeout)
                )
            except RuntimeError:
                if attempt == attempts - 1:
                    raise
                continue
            yield sim
            return
