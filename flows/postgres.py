"""The instrument host's PostgreSQL: a private cluster under ``state/``, 127.0.0.1 only.

The Prefect server keeps the observatory's run history, schedules and concurrency
slots in it. SQLite (the embedded API) is fine for one command at a time, but a
server, a worker and their runs write together, which is what PostgreSQL is for.

The cluster belongs to ccdflow, not to the system's PostgreSQL service: it is created
on first start (``initdb``, a random password kept in a file only its owner can read,
password authentication), listens on 127.0.0.1 only with no Unix socket, and runs as a
child process that :class:`PostgresCluster` stops. PostgreSQL refuses to run as root;
as root, the cluster runs as the ``postgres`` user of Debian's package (its folder is
given to that user).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import glob
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

SUPERUSER = "ccdflow"
DATABASE = "prefect"
SYSTEM_USER_FOR_ROOT = "postgres"
READY_TIMEOUT_S = 60.0
STOP_GRACE_S = 3.0


class PostgresError(RuntimeError):
    """The cluster could not be created, started or reached; the message says why."""


def find_binaries() -> Path:
    """The folder holding initdb and postgres: on PATH, else Debian's newest version."""
    on_path = shutil.which("initdb")
    if on_path and (Path(on_path).resolve().parent / "postgres").exists():
        return Path(on_path).resolve().parent
    versions = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parent.parent.name.split(".")[0]),
    )
    if not versions:
        raise PostgresError(
            "PostgreSQL is not installed (no initdb on PATH or in /usr/lib/postgresql): "
            "on Debian, `apt-get install postgresql` as root"
        )
    return Path(versions[-1]).parent


@dataclass(frozen=True)
class ClusterPaths:
    """Where one cluster lives: ``root/data`` (PostgreSQL's) and the password file."""

    root: Path

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def password_file(self) -> Path:
        return self.root / "password"

    @property
    def log(self) -> Path:
        return self.root / "postgres.log"


def _run_as() -> str | None:
    """The system user the cluster runs as: ``postgres`` when we are root, else us."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SYSTEM_USER_FOR_ROOT)
    except KeyError as exc:
        raise PostgresError(
            "PostgreSQL cannot run as root and there is no 'postgres' user to run it as "
            "(install Debian's postgresql package, or run as another user)"
        ) from exc
    return SYSTEM_USER_FOR_ROOT


def _give_to(path: Path, user: str | None) -> None:
    if user is None:
        return
    entry = pwd.getpwnam(user)
    os.chown(path, entry.pw_uid, entry.pw_gid)


class PostgresCluster:
    """One private cluster: :meth:`start` creates it the first time, :meth:`stop` ends it."""

    def __init__(self, root: Path, port: int) -> None:
        self.paths = ClusterPaths(root.resolve())
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @functools.cached_property
    def user(self) -> str | None:
        """Checked when first needed, so a console that refuses to start for another
        reason says that reason, not that PostgreSQL is missing."""
        return _run_as()

    @functools.cached_property
    def binaries(self) -> Path:
        return find_binaries()

    @property
    def password(self) -> str:
        return self.paths.password_file.read_text(encoding="utf-8").strip()

    @property
    def url(self) -> str:
        """The SQLAlchemy URL Prefect's server connects with (asyncpg driver)."""
        return f"postgresql+asyncpg://{SUPERUSER}:{self.password}@127.0.0.1:{self.port}/{DATABASE}"

    def _spawn(self, args: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        return subprocess.Popen(args, user=self.user, group=self._group(), **kwargs)

    def _group(self) -> int | None:
        return pwd.getpwnam(self.user).pw_gid if self.user else None

    def initialise(self) -> bool:
        """Create the cluster unless it exists; True when it was created now."""
        if (self.paths.data / "PG_VERSION").exists():
            return False
        self.paths.root.mkdir(parents=True, exist_ok=True)
        if not self.paths.password_file.exists():
            fd = os.open(self.paths.password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(secrets.token_urlsafe(24) + "\n")
        self.paths.data.mkdir(mode=0o700, exist_ok=True)
        _give_to(self.paths.data, self.user)
        # initdb reads the password from a file; give it a copy it may read, then remove.
        with tempfile.NamedTemporaryFile("w", delete=False, dir=self.paths.root) as pwfile:
            pwfile.write(self.password + "\n")
        _give_to(Path(pwfile.name), self.user)
        try:
            done = self._spawn(
                [
                    str(self.binaries / "initdb"),
                    "--pgdata",
                    str(self.paths.data),
                    "--username",
                    SUPERUSER,
                    "--pwfile",
                    pwfile.name,
                    "--auth",
                    "scram-sha-256",
                    "--encoding",
                    "UTF8",
                    "--no-instructions",
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
            output, _ = done.communicate(timeout=120)
        finally:
            os.unlink(pwfile.name)
        if done.returncode != 0:
            text = output.decode(errors="replace")
            hint = ""
            if "Permission denied" in text and self.user:
                hint = (
                    f" (the '{self.user}' user must be able to reach {self.paths.data}: "
                    "every folder above it needs o+x)"
                )
            raise PostgresError(f"initdb failed{hint}:\n{text}")
        return True

    def start(self) -> None:
        """Create the cluster if needed, start PostgreSQL, wait until it answers, and
        create the Prefect database the first time."""
        self.initialise()
        self._log = self.paths.log.open("ab")
        self.process = self._spawn(
            [
                str(self.binaries / "postgres"),
                "-D",
                str(self.paths.data),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                f"port={self.port}",
                "-c",
                "unix_socket_directories=",
                "-c",
                "max_connections=100",
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        asyncio.run(self._wait_and_create_database())

    async def _wait_and_create_database(self) -> None:
        import asyncpg  # type: ignore[import-untyped]

        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            if self.process is not None and self.process.poll() is not None:
                raise PostgresError(
                    f"PostgreSQL exited with {self.process.returncode} at start:\n"
                    f"{self._log_tail()}"
                )
            try:
                connection = await asyncpg.connect(
                    host="127.0.0.1",
                    port=self.port,
                    user=SUPERUSER,
                    password=self.password,
                    database="postgres",
                    timeout=2,
                )
                break
            except (TimeoutError, OSError, asyncpg.CannotConnectNowError) as exc:
                if time.monotonic() > deadline:
                    raise PostgresError(
                        f"PostgreSQL did not answer on 127.0.0.1:{self.port} within "
                        f"{READY_TIMEOUT_S:.0f} s: {exc}\n{self._log_tail()}"
                    ) from exc
                await asyncio.sleep(0.2)
        try:
            exists = await connection.fetchval(
                "SELECT 1 FROM pg_database WHERE datname = $1", DATABASE
            )
            if not exists:
                await connection.execute(f'CREATE DATABASE "{DATABASE}"')
        finally:
            await connection.close()

    def _log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.paths.log.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """Fast shutdown (SIGINT: sessions rolled back, data safe); SIGQUIT after
        ``grace_s`` (immediate shutdown, recovered by WAL replay at the next start)."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGINT)
            try:
                process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGQUIT)
                try:
                    process.wait(timeout=grace_s)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
