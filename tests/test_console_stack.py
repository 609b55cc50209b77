"""The console command's checks that need no server: refusals before anything starts,
and how a command finds a running console (tests/test_console.py runs the real one)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flows.cli import app
from flows.console_stack import (
    ConsoleError,
    ConsoleSettings,
    ConsoleStack,
    api_file,
    running_api,
)


def _write_api_file(state: Path, pid: int, url: str = "http://127.0.0.1:4999/api") -> None:
    path = api_file(state)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"api_url": url, "pid": pid}))


def test_a_running_console_is_found_by_its_api_file(tmp_path: Path) -> None:
    _write_api_file(tmp_path, os.getpid())
    assert running_api(tmp_path) == "http://127.0.0.1:4999/api"


def test_the_api_file_of_a_console_that_died_is_ignored(tmp_path: Path) -> None:
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    _write_api_file(tmp_path, int(gone.stdout))
    assert running_api(tmp_path) is None
    api_file(tmp_path).write_text("not json")
    assert running_api(tmp_path) is None
    assert running_api(tmp_path / "nowhere") is None


def test_a_busy_port_is_refused_naming_the_option(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        stack = ConsoleStack(ConsoleSettings(state=tmp_path, port=port, db_port=port + 1))
        with pytest.raises(ConsoleError, match=rf"port {port} .*--port"):
            stack.start()
        stack.stop()
    assert stack.database.process is None  # nothing was started


def test_a_second_console_on_the_same_state_is_refused(tmp_path: Path) -> None:
    first = ConsoleStack(ConsoleSettings(state=tmp_path))
    first._hold_state()
    try:
        with pytest.raises(ConsoleError, match="already runs"):
            ConsoleStack(ConsoleSettings(state=tmp_path))._hold_state()
    finally:
        first.stop()


def test_binding_beyond_loopback_needs_an_api_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PREFECT_SERVER_API_AUTH_STRING", raising=False)
    result = CliRunner().invoke(app, ["server", "--host", "0.0.0.0", "--state", str(tmp_path)])
    assert result.exit_code == 2
    assert "PREFECT_SERVER_API_AUTH_STRING" in result.output
    assert not (tmp_path / "server").exists()  # refused before anything started


def test_children_get_the_console_api_and_its_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PREFECT_SERVER_API_AUTH_STRING", "op:secret")
    monkeypatch.delenv("PREFECT_API_AUTH_STRING", raising=False)
    stack = ConsoleStack(ConsoleSettings(state=tmp_path, port=4321))
    stack.database.paths.root.mkdir(parents=True)
    stack.database.paths.password_file.write_text("pw\n")
    env = stack.env()
    assert env["PREFECT_API_URL"] == "http://127.0.0.1:4321/api"
    assert env["PREFECT_API_AUTH_STRING"] == "op:secret"
    assert env["PREFECT_SERVER_DATABASE_CONNECTION_URL"].startswith(
        "postgresql+asyncpg://ccdflow:pw@127.0.0.1:"
    )
    assert env["PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE"].endswith("lease_storage.filesystem")
