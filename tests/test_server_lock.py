"""The lock works with a real Prefect server, as an operator uses it.

Guards the constraints in pyproject.toml (shared/design/prefect.md): with fastapi
0.151-0.154 every `prefect deploy` exits 1 and the `prefect ... ls` commands answer
422; with sqlalchemy 2.1 the server's scheduler never creates a run. Each of those
fails a test here. The server runs on SQLite in a throw-away home, on a free port of
127.0.0.1, and is stopped (with anything it started) at the end.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .conftest import REPO

pytestmark = pytest.mark.slow

STARTUP_S = 120.0
AUTH = "operator:test-only-secret"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _prefect(
    env: dict[str, str], *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "prefect", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _server_env(home: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": f"http://127.0.0.1:{_free_port()}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_UI_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "WARNING",
        **extra,
    }


@contextlib.contextmanager
def _running_server(env: dict[str, str]) -> Iterator[None]:
    """`prefect server start` on the port of env's PREFECT_API_URL, until the block ends."""
    home = Path(env["PREFECT_HOME"])
    port = env["PREFECT_API_URL"].rsplit(":", 1)[1].split("/")[0]
    log_path = home / "server.log"
    log = log_path.open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", port],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own group: stopped with everything it started
    )
    try:
        deadline = time.monotonic() + STARTUP_S
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{env['PREFECT_API_URL']}/health", timeout=2).status_code == 200:
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"prefect server did not start: {log_path.read_text()}")
            time.sleep(0.5)
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()
        log_path.unlink(missing_ok=True)


def _post_as_prefect_does(url: str, body: dict[str, object]) -> httpx.Response:
    """POST, retrying the server's 503 as Prefect's own client does: a server that has
    just started answers 503 ("Service Unavailable", a retryable database error such
    as SQLite's "database is locked") while its services write their first rows."""
    for _ in range(10):
        response = httpx.post(url, json=body, timeout=10)
        if response.status_code != 503:
            response.raise_for_status()
            return response
        time.sleep(0.5)
    response.raise_for_status()
    return response


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A `prefect server start` of our lock; yields the environment that points at it."""
    env = _server_env(
        tmp_path_factory.mktemp("prefect-server"),
        # Schedule at once rather than once a minute, so the test waits seconds.
        PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS="2",
        # With API authentication on, as an observatory exposes it: every command
        # below authenticates with the client's setting.
        PREFECT_SERVER_API_AUTH_STRING=AUTH,
        PREFECT_API_AUTH_STRING=AUTH,
    )
    with _running_server(env):
        yield env


@pytest.fixture(scope="module")
def deployed(server: dict[str, str]) -> dict[str, str]:
    created = _prefect(server, "work-pool", "create", "ccdflow", "--type", "process")
    assert created.returncode == 0, created.stdout + created.stderr
    deploy = _prefect(
        server, "--no-prompt", "deploy", "--all", "--prefect-file", "deploy/prefect.yaml"
    )
    # fastapi 0.151-0.154: "successfully created", then a 422 and exit 1.
    assert deploy.returncode == 0, deploy.stdout + deploy.stderr
    return server


@pytest.mark.parametrize(
    "command",
    [
        ("deployment", "ls"),
        ("work-pool", "ls"),
        ("flow", "ls"),
        ("flow-run", "ls"),
        ("automation", "ls"),
    ],
)
def test_every_prefect_ls_works_against_the_server(
    deployed: dict[str, str], command: tuple[str, ...]
) -> None:
    listed = _prefect(deployed, *command)
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert "Unprocessable" not in listed.stdout + listed.stderr


def test_every_deployment_is_on_the_server(deployed: dict[str, str]) -> None:
    listed = _prefect(deployed, "deployment", "ls")
    for name in (
        "take-exposure",
        "run-sequence",
        "calibrations",
        "observe-night",
        "observe",
        "twilight-flats",
        "guide",
        "make-safe",
        "plan-night",
    ):
        assert f"{name}/{name}" in listed.stdout, listed.stdout


def test_the_scheduler_creates_runs_for_a_schedule(deployed: dict[str, str]) -> None:
    added = _prefect(
        deployed, "deployment", "schedule", "create", "make-safe/make-safe", "--interval", "3600"
    )
    assert added.returncode == 0, added.stdout + added.stderr
    api = deployed["PREFECT_API_URL"]
    deadline = time.monotonic() + 60
    runs: list[object] = []
    while time.monotonic() < deadline:
        response = httpx.post(
            f"{api}/flow_runs/filter",
            json={"flow_runs": {"state": {"type": {"any_": ["SCHEDULED"]}}}, "limit": 10},
            auth=tuple(AUTH.split(":", 1)),  # type: ignore[arg-type]
            timeout=10,
        )
        response.raise_for_status()
        runs = response.json()
        if runs:
            break
        time.sleep(1)
    # sqlalchemy 2.1: the scheduler fails every loop ("Can't evaluate bulk DML
    # statement") and this list stays empty.
    assert runs, "the scheduler created no run within 60 s"


def test_the_api_check_names_the_auth_setting_when_credentials_are_wrong(
    server: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.settings import PrefectApiUnreachableError, check_api

    api = server["PREFECT_API_URL"]
    monkeypatch.setenv("PREFECT_API_AUTH_STRING", AUTH)
    check_api(api)  # the right credentials pass
    monkeypatch.setenv("PREFECT_API_AUTH_STRING", "operator:wrong")
    with pytest.raises(PrefectApiUnreachableError, match="PREFECT_API_AUTH_STRING"):
        check_api(api)
    monkeypatch.delenv("PREFECT_API_AUTH_STRING")
    with pytest.raises(PrefectApiUnreachableError, match="refused our credentials"):
        check_api(api)
    anonymous = httpx.post(f"{api}/flow_runs/filter", json={}, timeout=10)
    assert anonymous.status_code == 401


def test_an_instrument_slot_held_across_a_server_restart_can_be_released(
    tmp_path: Path,
) -> None:
    """`ccdflow server`'s lease storage keeps concurrency leases on disk: a run that
    holds the instrument while the server restarts can still release it. In memory
    (Prefect's default) the lease is gone and the slot stays taken for good."""
    from flows.console_stack import LEASE_STORAGE

    env = _server_env(tmp_path, PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE=LEASE_STORAGE)
    api = f"{env['PREFECT_API_URL']}/v2/concurrency_limits"
    with _running_server(env):
        _post_as_prefect_does(f"{api}/", {"name": "instrument-x", "limit": 1})
        held = _post_as_prefect_does(
            f"{api}/increment-with-lease",
            {"names": ["instrument-x"], "slots": 1, "lease_duration": 600},
        )
        lease_id = held.json()["lease_id"]
    with _running_server(env):
        assert httpx.get(f"{api}/instrument-x", timeout=10).json()["active_slots"] == 1
        released = _post_as_prefect_does(f"{api}/decrement-with-lease", {"lease_id": lease_id})
        assert released.status_code == 204
        assert httpx.get(f"{api}/instrument-x", timeout=10).json()["active_slots"] == 0
