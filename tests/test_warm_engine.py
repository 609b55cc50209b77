"""The warm engine and its launcher, as the worker uses them (real processes, a real
Unix socket). A run through the whole console is in tests/test_console.py."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import REPO

LAUNCHER = [sys.executable, "-m", "flows.warm_start"]


def _launch(env_socket: str | None, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CCDFLOW_WARM_ENGINE"}
    if env_socket is not None:
        env["CCDFLOW_WARM_ENGINE"] = env_socket
    return subprocess.run(
        [*LAUNCHER, *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def warm_engine() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="ccdflow-warm-"))
    path = folder / "warm.sock"
    server = subprocess.Popen(
        [sys.executable, "-m", "flows.warm_engine", str(path)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert server.stdout is not None
        line = server.stdout.readline()  # after the imports: about 5 s
        assert "warm engine ready" in line, line
        yield path
    finally:
        server.terminate()
        server.wait(timeout=10)
        assert not path.exists()  # the server removes its socket on SIGTERM
        folder.rmdir()


def test_the_socket_is_its_owners_only(warm_engine: Path) -> None:
    assert (warm_engine.stat().st_mode & 0o777) == 0o600


def test_a_run_handed_to_the_warm_engine_runs_prefects_engine_with_our_streams(
    warm_engine: Path,
) -> None:
    began = time.perf_counter()
    done = _launch(str(warm_engine), "not-a-flow-run-id")
    elapsed = time.perf_counter() - began
    # Prefect's engine entry point ran in the forked child, wrote to the launcher's
    # stderr and its exit code came back through the launcher.
    assert done.returncode == 1, done.stderr
    assert "Invalid flow run id" in done.stderr
    assert "cold" not in done.stderr
    print(f"warm launch to engine exit: {elapsed:.2f} s")


def test_without_a_warm_engine_the_launcher_starts_the_engine_cold(tmp_path: Path) -> None:
    done = _launch(str(tmp_path / "no-such.sock"), "not-a-flow-run-id")
    assert done.returncode == 1
    assert "starting the engine cold" in done.stderr
    assert "Invalid flow run id" in done.stderr
    unset = _launch(None, "not-a-flow-run-id")
    assert unset.returncode == 1
    assert "Invalid flow run id" in unset.stderr
