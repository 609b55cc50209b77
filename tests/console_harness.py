"""The operator's console as the end-to-end tests drive it: `ccdflow sim`, `ccdflow server`
and the Prefect REST API, all real processes on free 127.0.0.1 ports.

Kept apart from tests/test_console.py so the same code can start a console by hand
(``python -m tests.console_harness``) to explore the UI while writing selectors.
Nothing here imports Prefect: the tests talk to the server the way any client does,
over HTTP, and the flows run in the worker's processes.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import httpx
import yaml

REPO = Path(__file__).resolve().parents[1]
CCDFLOW = REPO / ".venv" / "bin" / "ccdflow"
PYTHON = REPO / ".venv" / "bin" / "python"
SIM_YAML = REPO / "deploy" / "instruments" / "sim.yaml"
SIM_ACF = REPO / "deploy" / "instruments" / "sim.acf"
CHROMIUM = Path("/usr/bin/chromium")

SIM_START_S = 60.0
SERVER_START_S = 240.0
SERVER_STOP_S = 20.0
CLEAN_STOP_S = 10.0
"""ConsoleStack.STOP_BUDGET_S: the stack must be gone this long after SIGTERM."""
READY_LINE = "ccdflow server ready"
LISTENING = re.compile(r"listening on 127\.0\.0\.1:(\d+)")
FINAL_STATES = frozenset({"COMPLETED", "FAILED", "CRASHED", "CANCELLED"})
OWNER_VARIABLE = "CCDFLOW_OWNER_PID"


class ConsoleHarnessError(RuntimeError):
    """A part of the console did not start or answer; the message holds its log."""


def postgres_missing() -> str | None:
    """Why the console cannot run here (no PostgreSQL), or None."""
    import glob

    if shutil.which("initdb") or glob.glob("/usr/lib/postgresql/*/bin/initdb"):
        return None
    return "PostgreSQL is not installed (no initdb on PATH or in /usr/lib/postgresql)"


def chromium_missing() -> str | None:
    """Why the browser tests cannot run here (no Debian chromium), or None."""
    return None if CHROMIUM.exists() else f"{CHROMIUM} is not installed (apt-get install chromium)"


def free_port() -> int:
    """A port of 127.0.0.1 nobody listens on right now (the kernel's choice)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_for_line(
    path: Path, process: subprocess.Popen[bytes], pattern: re.Pattern[str], timeout_s: float
) -> re.Match[str]:
    """The first match of ``pattern`` in the log at ``path``; ConsoleHarnessError with
    the log when the process exits first or ``timeout_s`` passes."""
    deadline = time.monotonic() + timeout_s
    while True:
        text = path.read_text(errors="replace") if path.exists() else ""
        if match := pattern.search(text):
            return match
        if process.poll() is not None:
            raise ConsoleHarnessError(
                f"{process.args!r} exited with {process.returncode} before {pattern.pattern!r}"
                f" ({path}):\n{text[-6000:]}"
            )
        if time.monotonic() > deadline:
            raise ConsoleHarnessError(
                f"{process.args!r} did not print {pattern.pattern!r} within {timeout_s:.0f} s"
                f" ({path}):\n{text[-6000:]}"
            )
        time.sleep(0.2)


def _terminate(process: subprocess.Popen[bytes], timeout_s: float) -> None:
    """SIGTERM to the process only, SIGKILL to its group if it does not exit in time."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=timeout_s)
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


@dataclass
class Simulator:
    """`ccdflow sim` in its own session, on a port it chose (``--port 0``)."""

    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @classmethod
    def start(cls, folder: Path) -> Simulator:
        log = folder / "sim.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [str(CCDFLOW), "sim", "--port", "0", "--acf", str(SIM_ACF)],
                cwd=REPO,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            match = _wait_for_line(log, process, LISTENING, SIM_START_S)
        except BaseException:
            _terminate(process, 5)
            raise
        return cls(process, int(match.group(1)), log)

    def stop(self) -> None:
        _terminate(self.process, 10)


def write_instruments(folder: Path, sim_port: int, data_root: Path) -> Path:
    """The instruments folder of the console: the project's sim instrument, pointed at
    our simulator (absolute ACF, since the file moves) and our data root."""
    config: dict[str, Any] = yaml.safe_load(SIM_YAML.read_text(encoding="utf-8"))
    controller = config["controllers"][0]
    controller["port"] = sim_port
    controller["acf"] = str(SIM_ACF)
    config["storage"]["data_root"] = str(data_root)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "sim.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


@dataclass
class Console:
    """A running `ccdflow server` and the simulator its instrument points at."""

    root: Path
    api_url: str
    ui_url: str
    data: Path
    instruments: Path
    env: dict[str, str]
    process: subprocess.Popen[bytes]
    log: Path
    sim: Simulator
    _log_handle: IO[bytes] | None = field(default=None, repr=False)

    @property
    def state(self) -> Path:
        return self.root / "state"

    @property
    def api_file(self) -> Path:
        return self.state / "server" / "api.json"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def server_logs(self, lines: int = 60) -> str:
        """The tail of every log of the stack (server, worker, PostgreSQL), for messages."""
        parts = [f"== ccdflow server ==\n{self.log_text()[-4000:]}"]
        for path in sorted((self.state / "server" / "logs").glob("*.log")):
            text = path.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"== {path.name} ==\n" + "\n".join(text))
        return "\n".join(parts)

    def stop(self, timeout_s: float = SERVER_STOP_S) -> None:
        """SIGTERM to `ccdflow server` (not its group: it stops its own children, in
        order), SIGKILL to its group after ``timeout_s``; then the simulator. Idempotent."""
        _terminate(self.process, timeout_s)
        if self._log_handle is not None:
            self._log_handle.close()
            self._log_handle = None
        self.sim.stop()


def start_console(root: Path) -> Console:
    """Simulator, instruments folder, then `ccdflow server` from the project root
    (the worker runs flows from the folder `prefect deploy` ran in); waits for its
    ready line. On failure everything started here is stopped again."""
    sim = Simulator.start(root)
    try:
        data = root / "data"
        instruments = root / "instruments"
        write_instruments(instruments, sim.port, data)
        api_port, db_port = free_port(), free_port()
        while db_port == api_port:
            db_port = free_port()
        # As an operator starts it: no PREFECT_API_URL (the console sets its own).
        env = {key: value for key, value in os.environ.items() if key != "PREFECT_API_URL"}
        env |= {
            "CCDFLOW_INSTRUMENTS": str(instruments),
            "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "2",
            "PREFECT_LOGGING_LEVEL": "WARNING",
        }
        log = root / "server.log"
        handle = log.open("wb")
        process = subprocess.Popen(
            [
                str(CCDFLOW),
                "server",
                "--state",
                str(root / "state"),
                "--port",
                str(api_port),
                "--db-port",
                str(db_port),
            ],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    except BaseException:
        sim.stop()
        raise
    api_url = f"http://127.0.0.1:{api_port}/api"
    console = Console(
        root=root,
        api_url=api_url,
        ui_url=f"http://127.0.0.1:{api_port}",
        data=data,
        instruments=instruments,
        env=env | {"PREFECT_API_URL": api_url},
        process=process,
        log=log,
        sim=sim,
        _log_handle=handle,
    )
    try:
        _wait_for_line(log, process, re.compile(re.escape(READY_LINE)), SERVER_START_S)
    except BaseException as exc:
        logs = console.server_logs()
        console.stop()
        raise ConsoleHarnessError(f"{exc}\n{logs}") from exc
    return console


def make_root() -> Path:
    """A throw-away root PostgreSQL (the `postgres` user, when we are root) can traverse:
    pytest's tmp_path sits under a 0700 folder, so it is not used for the state."""
    root = Path(tempfile.mkdtemp(prefix="ccdflow-console-", dir="/tmp"))
    root.chmod(0o755)
    return root


# -- after the stop ---------------------------------------------------------------------


def owned_processes(owner: int) -> list[int]:
    """Live processes started (directly or not) by ``owner``: their environment carries
    ``CCDFLOW_OWNER_PID=<owner>`` (flows/reaper.py tags every child so)."""
    marker = f"{OWNER_VARIABLE}={owner}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as handle:
                tagged = marker in handle.read().split(b"\0")
            with open(f"/proc/{entry}/stat", encoding="ascii") as handle:
                zombie = handle.read().rsplit(")", 1)[1].split()[0] == "Z"
        except OSError:
            continue
        if tagged and not zombie:
            found.append(int(entry))
    return found


def postgres_processes(root: Path) -> list[str]:
    """Live `postgres` processes of our cluster: the postmaster names ``root`` on its
    command line; its backends do not (they rewrite it to ``postgres: ...``) but run in
    its data folder, so their working directory is under ``root``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                command = handle.read().replace(b"\0", b" ").decode(errors="replace").strip()
            folder = os.readlink(f"/proc/{entry}/cwd")
        except OSError:
            continue
        if not command.startswith(("postgres", "/usr/lib/postgresql")):
            continue
        if str(root) in command or Path(folder).is_relative_to(root):
            found.append(f"{entry}: {command} (in {folder})")
    return found


def describe(pids: Iterable[int]) -> str:
    lines = []
    for pid in pids:
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            argv = "(gone)"
        lines.append(f"{pid}: {argv}")
    return "\n".join(lines)


# -- the API ------------------------------------------------------------------------------


class Api:
    """The few REST calls the tests make, on one HTTP client."""

    def __init__(self, api_url: str) -> None:
        self.client = httpx.Client(base_url=api_url, timeout=30)

    def close(self) -> None:
        self.client.close()

    def get(self, path: str) -> Any:
        response = self.client.get(path)
        response.raise_for_status()
        return response.json()

    def post(self, path: str, body: Mapping[str, Any] | list[Any] | None = None) -> Any:
        response = self.client.post(path, json=body)
        response.raise_for_status()
        return response.json() if response.content else None

    def deployment(self, name: str) -> dict[str, Any]:
        """A deployment by ``flow/deployment`` name."""
        flow, deployment = name.split("/")
        result: dict[str, Any] = self.get(f"/deployments/name/{flow}/{deployment}")
        return result

    def create_run(self, deployment_id: str, parameters: Mapping[str, Any]) -> httpx.Response:
        """POST create_flow_run; the raw response, so a refusal can be inspected."""
        return self.client.post(
            f"/deployments/{deployment_id}/create_flow_run", json={"parameters": parameters}
        )

    def run(self, run_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.get(f"/flow_runs/{run_id}")
        return result

    def runs_of(self, deployment_id: str) -> list[dict[str, Any]]:
        """Every flow run of a deployment, newest first."""
        body = {
            "deployments": {"id": {"any_": [deployment_id]}},
            "sort": "EXPECTED_START_TIME_DESC",
            "limit": 200,
        }
        result: list[dict[str, Any]] = self.post("/flow_runs/filter", body)
        return result

    def count_runs(self, deployment_id: str) -> int:
        count: int = self.post(
            "/flow_runs/count", {"deployments": {"id": {"any_": [deployment_id]}}}
        )
        return count

    def artifacts_of(self, run_id: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.post(
            "/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [run_id]}}}
        )
        return result

    def wait_for_state(
        self,
        run_id: str,
        states: Iterable[str],
        timeout_s: float,
        *,
        seen: dict[str, float] | None = None,
    ) -> dict[str, Any]:
        """Poll the run until its state type is one of ``states`` (or final); the run.

        ``seen`` collects the monotonic time each state type was first observed, so a
        caller can time trigger -> Running -> Completed."""
        wanted = set(states)
        deadline = time.monotonic() + timeout_s
        while True:
            run = self.run(run_id)
            kind = (run.get("state") or {}).get("type") or "NONE"
            if seen is not None:
                seen.setdefault(kind, time.monotonic())
            if kind in wanted or kind in FINAL_STATES:
                return run
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"flow run {run_id} is {kind}, not {sorted(wanted)}, after {timeout_s:.0f} s"
                )
            time.sleep(0.25)


def fits_files(folder: Path) -> dict[Path, float]:
    """Every FITS file under ``folder`` with its modification time."""
    if not folder.exists():
        return {}
    return {path: path.stat().st_mtime for path in folder.rglob("*.fits")}


def new_fits(folder: Path, before: Mapping[Path, float]) -> list[Path]:
    """FITS files under ``folder`` that were not in ``before`` (or changed), oldest first."""
    now = fits_files(folder)
    fresh = [path for path, mtime in now.items() if before.get(path) != mtime]
    return sorted(fresh, key=lambda path: now[path])


def primary_header(path: Path) -> dict[str, Any]:
    from astropy.io import fits

    with fits.open(path) as hdus:
        return dict(hdus[0].header)


def iso_in(seconds: float) -> str:
    return datetime.fromtimestamp(time.time() + seconds, UTC).isoformat()


def main() -> None:
    """Start a console by hand (for exploring the UI), print where it is, run until ^C."""
    root = make_root()
    console = start_console(root)
    print(json.dumps({"ui": console.ui_url, "api": console.api_url, "root": str(root)}))
    try:
        while console.process.poll() is None:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        console.stop()


if __name__ == "__main__":
    main()
