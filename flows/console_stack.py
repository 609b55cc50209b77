"""The operator's console on one machine: PostgreSQL, Prefect server, deployments, worker.

This is the production shape of ccdflow on an instrument host, started by one
command (``ccdflow server``) and stopped by one signal (Ctrl-C or SIGTERM), in order
and within :data:`STOP_BUDGET_S`: the worker first (its runs get SIGTERM, so a flow
resets its controllers and closes the shutter), then the warm engine, the server, and
the database.

The worker starts each flow run from the warm engine (flows/warm_engine.py), an
interpreter that imported Prefect and the flows once, so a run triggered from the UI
starts integrating in about 2.5 s instead of 9 (bench/console.py).

Every child runs in its own session, so a terminal's Ctrl-C reaches only this process
and the stop order holds; the command's reaper (flows/reaper.py) stops them all if
this process is killed outright. While the stack runs, ``state/server/api.json``
names its API, and every ``ccdflow`` command uses it instead of starting an embedded
API of its own (flows/settings.py).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from flows.postgres import PostgresCluster
from flows.warm_start import SOCKET_VARIABLE as WARM_ENGINE_VARIABLE

STATE_SUBDIR = "server"
API_FILE = "api.json"
WORK_POOL = "ccdflow"
DEPLOY_FILE = Path("deploy/prefect.yaml")
SERVER_READY_TIMEOUT_S = 180.0
STOP_BUDGET_S = 10.0
WORKER_GRACE_S = 3.0
SERVER_GRACE_S = 3.0
LEASE_STORAGE = "prefect.server.concurrency.lease_storage.filesystem"
"""Concurrency leases (the instrument's slot) on disk under PREFECT_HOME: a run holding
the instrument while the server restarts can still release it."""
WORKER_QUERY_SECONDS = 1
"""How often the worker asks for runs to start (Prefect's default is 10 s): a run
triggered from the UI starts within about this long."""


def warm_job_template() -> dict[str, Any]:
    """Prefect's process job template, with runs started by the warm engine's
    launcher (flows/warm_start.py) unless a deployment gives its own command."""
    from prefect.workers.process import ProcessWorker

    template = ProcessWorker.get_default_base_job_template()
    template["variables"]["properties"]["command"]["default"] = (
        f"{sys.executable} -m flows.warm_start"
    )
    return template


class ConsoleError(RuntimeError):
    """A part of the console could not start; the message names it and its log."""


@dataclass(frozen=True)
class ConsoleSettings:
    """Where the console lives and listens."""

    state: Path = Path("state")
    host: str = "127.0.0.1"
    port: int = 4200
    db_port: int = 5433
    deploy: bool = True
    worker: bool = True
    extra_env: Mapping[str, str] = field(default_factory=dict)

    @property
    def root(self) -> Path:
        return (self.state / STATE_SUBDIR).resolve()

    @property
    def api_url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{host}:{self.port}/api"

    @property
    def ui_url(self) -> str:
        return self.api_url.removesuffix("/api")


def api_file(state: Path = Path("state")) -> Path:
    return state / STATE_SUBDIR / API_FILE


def running_api(state: Path = Path("state")) -> str | None:
    """The API of a console running from ``state``, or None (no file, or its owner
    is gone: a stack killed outright leaves the file behind)."""
    try:
        record = json.loads(api_file(state).read_text(encoding="utf-8"))
        pid, url = int(record["pid"]), str(record["api_url"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # alive, another user's
    return url


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


class _Child:
    """One child process in its own session, its output in a log file."""

    def __init__(self, name: str, args: list[str], env: Mapping[str, str], log: Path) -> None:
        self.name = name
        self.log_path = log
        self._log: IO[bytes] = log.open("ab")
        self.process = subprocess.Popen(
            args,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def tail(self, lines: int = 25) -> str:
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def stop(self, grace_s: float) -> None:
        """SIGTERM to its whole group (it and what it started), SIGKILL after ``grace_s``."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=grace_s)
        # The group may outlive its leader (a run's process): end it too.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=1.0)
        self._log.close()


class ConsoleStack:
    """Start with :meth:`start`, stop with :meth:`stop` (idempotent)."""

    def __init__(
        self, settings: ConsoleSettings, say: Callable[[str], None] = lambda _: None
    ) -> None:
        self.settings = settings
        self.say = say
        self.root = settings.root
        self.logs = self.root / "logs"
        self.database = PostgresCluster(self.root / "postgres", settings.db_port)
        self.server: _Child | None = None
        self.worker: _Child | None = None
        self.warm_engine: _Child | None = None
        self._lock: IO[str] | None = None
        self._short_socket: Path | None = None
        self.timings: dict[str, float] = {}

    # -- start -----------------------------------------------------------------------

    @property
    def warm_socket(self) -> Path:
        """The warm engine's socket: in our state folder unless that path is too long
        for a Unix socket (about 100 bytes), then in a private temporary folder."""
        path = self.root / "warm-engine.sock"
        if len(str(path)) < 100:
            return path
        if self._short_socket is None:
            self._short_socket = Path(tempfile.mkdtemp(prefix="ccdflow-")) / "warm.sock"
        return self._short_socket

    def _hold_state(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = (self.root / ".console.lock").open("a", encoding="utf-8")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise ConsoleError(
                f"a ccdflow server already runs from {self.root} (see {self.root / API_FILE})"
            ) from exc

    def _check_ports(self) -> None:
        for what, host, port in (
            ("Prefect server", self.settings.host, self.settings.port),
            ("PostgreSQL", "127.0.0.1", self.settings.db_port),
        ):
            if not _port_free(host, port):
                raise ConsoleError(
                    f"{what}: port {port} on {host} is in use; choose another "
                    f"({'--port' if what.startswith('Prefect') else '--db-port'})"
                )

    def env(self) -> dict[str, str]:
        """The environment of every child: our API, our database, our home."""
        env = {
            **os.environ,
            **self.settings.extra_env,
            "PREFECT_HOME": str(self.root / "prefect"),
            "PREFECT_API_URL": self.settings.api_url,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_SERVER_DATABASE_CONNECTION_URL": self.database.url,
            # Concurrency slots (the instrument's) are leases; on disk they survive a
            # restart of the server instead of vanishing with its memory.
            "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": LEASE_STORAGE,
            # The UI copies itself at start; keep that copy in our state folder.
            "PREFECT_SERVER_UI_STATIC_DIRECTORY": str(self.root / "ui"),
            "PREFECT_WORKER_QUERY_SECONDS": str(WORKER_QUERY_SECONDS),
            WARM_ENGINE_VARIABLE: str(self.warm_socket),
        }
        auth = env.get("PREFECT_SERVER_API_AUTH_STRING")
        if auth:
            env.setdefault("PREFECT_API_AUTH_STRING", auth)
        return env

    def start(self) -> None:
        """Database, server, work pool and deployments, worker; then the API file."""
        self._hold_state()
        self._check_ports()
        self.logs.mkdir(parents=True, exist_ok=True)
        began = time.monotonic()
        self.say(f"PostgreSQL on 127.0.0.1:{self.settings.db_port} ({self.database.paths.root})")
        created = self.database.initialise()
        self.database.start()
        self.timings["database_s"] = time.monotonic() - began
        if created:
            self.say("  created a new cluster (password in its folder, readable by you only)")
        env = self.env()
        self.say(f"Prefect server on {self.settings.host}:{self.settings.port}")
        self.server = _Child(
            "server",
            [
                sys.executable,
                "-m",
                "prefect",
                "server",
                "start",
                "--host",
                self.settings.host,
                "--port",
                str(self.settings.port),
            ],
            env,
            self.logs / "server.log",
        )
        if self.settings.worker:
            # Imports Prefect and the flows once (about 4 s) while the server starts.
            self.warm_engine = _Child(
                "warm engine",
                [sys.executable, "-m", "flows.warm_engine", str(self.warm_socket)],
                env,
                self.logs / "warm-engine.log",
            )
        self._wait_for_server()
        self.timings["server_s"] = time.monotonic() - began
        template = self.root / "process-job-template.json"
        template.write_text(json.dumps(warm_job_template(), indent=2), encoding="utf-8")
        self._prefect(
            env,
            "work-pool",
            "create",
            WORK_POOL,
            "--type",
            "process",
            "--base-job-template",
            str(template),
            "--overwrite",
        )
        if self.settings.worker:
            self.say(f"process worker on pool '{WORK_POOL}'")
            self.worker = _Child(
                "worker",
                [
                    sys.executable,
                    "-m",
                    "prefect",
                    "worker",
                    "start",
                    "--pool",
                    WORK_POOL,
                    "--type",
                    "process",
                ],
                env,
                self.logs / "worker.log",
            )
        if self.settings.deploy:
            self.say(f"deploying {DEPLOY_FILE}")
            self._prefect(env, "--no-prompt", "deploy", "--all", "--prefect-file", str(DEPLOY_FILE))
        self.timings["ready_s"] = time.monotonic() - began
        self._write_api_file()

    def _wait_for_server(self) -> None:
        import httpx

        assert self.server is not None
        deadline = time.monotonic() + SERVER_READY_TIMEOUT_S
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.settings.api_url}/health", timeout=2).status_code == 200:
                    return
            if self.server.process.poll() is not None:
                raise ConsoleError(
                    f"the Prefect server exited at start ({self.server.log_path}):\n"
                    f"{self.server.tail()}"
                )
            if time.monotonic() > deadline:
                raise ConsoleError(
                    f"the Prefect server did not answer within {SERVER_READY_TIMEOUT_S:.0f} s "
                    f"({self.server.log_path}):\n{self.server.tail()}"
                )
            time.sleep(0.3)

    def _prefect(self, env: Mapping[str, str], *args: str) -> None:
        done = subprocess.run(
            [sys.executable, "-m", "prefect", *args],
            env=dict(env),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if done.returncode != 0:
            raise ConsoleError(
                f"`prefect {' '.join(args)}` exited {done.returncode}:\n"
                f"{done.stdout[-3000:]}{done.stderr[-3000:]}"
            )

    def _write_api_file(self) -> None:
        record = {
            "api_url": self.settings.api_url,
            "ui_url": self.settings.ui_url,
            "pid": os.getpid(),
            "auth": bool(os.environ.get("PREFECT_SERVER_API_AUTH_STRING")),
        }
        path = self.root / API_FILE
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        temporary.replace(path)

    # -- while running -----------------------------------------------------------------

    def exited(self) -> str | None:
        """The name and log of a part that stopped by itself, or None."""
        for child in (self.worker, self.warm_engine, self.server):
            if child is not None and child.process.poll() is not None:
                return (
                    f"the {child.name} exited with {child.process.returncode} "
                    f"({child.log_path}):\n{child.tail()}"
                )
        process = self.database.process
        if process is not None and process.poll() is not None:
            return f"PostgreSQL exited with {process.returncode} ({self.database.paths.log})"
        return None

    # -- stop ------------------------------------------------------------------------

    def stop(self) -> None:
        """Worker, server, database, in that order; the API file goes first, so no
        command picks a server that is going away."""
        with contextlib.suppress(FileNotFoundError):
            (self.root / API_FILE).unlink()
        worker, self.worker = self.worker, None
        if worker is not None:
            worker.stop(WORKER_GRACE_S)
        warm, self.warm_engine = self.warm_engine, None
        if warm is not None:
            warm.stop(WORKER_GRACE_S)
        server, self.server = self.server, None
        if server is not None:
            server.stop(SERVER_GRACE_S)
        self.database.stop()
        if self._lock is not None:
            self._lock.close()
            self._lock = None
