"""The operator's console, timed: stack start, trigger to first integration, history.

Runs the production shape on this machine (flows/console_stack.py: PostgreSQL, the
Prefect server, the deployments and a process worker) with the Archon simulator, on
free 127.0.0.1 ports in a temporary folder, and measures:

* **stack start**: ``ConsoleStack.start()`` until the API file is written (database
  ready, server healthy, pool and deployments created, worker started); the first
  start also creates the PostgreSQL cluster, so it is reported apart;
* **trigger to first integration**: a take-exposure run of a 1 s dark created through
  the REST API (what the UI's Run button does) until the integration starts (the
  file's DATE-OBS, the controller's shutter-timestamp of the start), split into
  where the time goes: until the worker has the run (Pending), until the flow is
  running in its process (Running; interpreter and imports), until the exposure
  starts (config, instrument lock, connect, flush);
* **trigger to Completed**, and ``ccdflow history`` against the running server.

Medians of ``--repeats`` (at least 5). Table on stdout, JSON in bench/results/.

    .venv/bin/python -m bench.console --repeats 5
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import yaml

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parents[1]
SPEC = {"image_type": "dark", "exptime": 1}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _instruments(root: Path, sim_port: int) -> Path:
    folder = root / "instruments"
    folder.mkdir()
    data = yaml.safe_load((REPO / "deploy" / "instruments" / "sim.yaml").read_text())
    data["controllers"][0]["port"] = sim_port
    data["controllers"][0]["acf"] = str(REPO / "deploy" / "instruments" / "sim.acf")
    data["storage"]["data_root"] = str(root / "data")
    (folder / "sim.yaml").write_text(yaml.safe_dump(data))
    return folder


def _state_times(api: str, run_id: str) -> dict[str, float]:
    states = httpx.get(f"{api}/flow_run_states/", params={"flow_run_id": run_id}, timeout=10)
    states.raise_for_status()
    times: dict[str, float] = {}
    for state in states.json():
        stamp = datetime.fromisoformat(state["timestamp"]).timestamp()
        times.setdefault(state["type"], stamp)
    return times


def _newest_fits(data: Path, after: float) -> Path:
    files = [p for p in data.rglob("*.fits") if p.stat().st_mtime >= after]
    if not files:
        raise RuntimeError(f"no FITS file written under {data}")
    return max(files, key=lambda p: p.stat().st_mtime)


def _date_obs(path: Path) -> float:
    from astropy.io import fits

    with fits.open(path) as hdus:
        header = hdus[0].header
        value = str(header.get("DATE-OBS") or hdus[1].header["DATE-OBS"])
    return datetime.fromisoformat(value).replace(tzinfo=UTC).timestamp()


def trigger_once(api: str, deployment_id: str, data: Path) -> dict[str, float]:
    """One run through the REST API; seconds from the request to each milestone."""
    began = time.time()
    created = httpx.post(
        f"{api}/deployments/{deployment_id}/create_flow_run",
        json={"parameters": {"spec": SPEC}},
        timeout=30,
    )
    created.raise_for_status()
    run_id = created.json()["id"]
    deadline = time.monotonic() + 120
    while True:
        run = httpx.get(f"{api}/flow_runs/{run_id}", timeout=10).json()
        if run["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"run {run_id} did not finish in 120 s: {run['state']}")
        time.sleep(0.1)
    if run["state"]["type"] != "COMPLETED":
        raise RuntimeError(f"run {run_id} ended {run['state']['type']}: {run['state']}")
    states = _state_times(api, run_id)
    integration = _date_obs(_newest_fits(data, began))
    return {
        "to_pending_s": states["PENDING"] - began,
        "to_running_s": states["RUNNING"] - began,
        "to_first_integration_s": integration - began,
        "to_completed_s": states["COMPLETED"] - began,
    }


def history_once(root: Path) -> float:
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    began = time.perf_counter()
    done = subprocess.run(
        [str(REPO / ".venv" / "bin" / "ccdflow"), "history"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    elapsed = time.perf_counter() - began
    if done.returncode != 0:
        raise RuntimeError(f"ccdflow history failed: {done.stdout}{done.stderr}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--starts", type=int, default=5, help="stack starts to time")
    args = parser.parse_args()
    os.chdir(REPO)  # the worker runs flows from where the deployments were made
    from flows.console_stack import ConsoleSettings, ConsoleStack
    from flows.reaper import start_reaper

    start_reaper()  # a killed bench leaves nothing behind
    root = Path(tempfile.mkdtemp(prefix="ccdflow-bench-console-"))
    root.chmod(0o755)  # PostgreSQL runs as 'postgres' when we are root
    sim_port = _free_port()
    os.environ["CCDFLOW_INSTRUMENTS"] = str(_instruments(root, sim_port))
    sim = subprocess.Popen(
        [str(REPO / ".venv" / "bin" / "ccdflow"), "sim", "--port", str(sim_port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    settings = ConsoleSettings(state=root / "state", port=_free_port(), db_port=_free_port())
    starts: list[float] = []
    first_start = 0.0
    triggers: list[dict[str, float]] = []
    histories: list[float] = []
    try:
        for attempt in range(max(1, args.starts)):
            stack = ConsoleStack(settings)
            began = time.perf_counter()
            stack.start()
            elapsed = time.perf_counter() - began
            if attempt == 0:
                first_start = elapsed
            else:
                starts.append(elapsed)
            last = attempt == max(1, args.starts) - 1
            if not last:
                stack.stop()
        api = settings.api_url
        deployment = httpx.get(
            f"{api}/deployments/name/take-exposure/take-exposure", timeout=10
        ).json()
        trigger_once(api, deployment["id"], root / "data")  # warm: page cache, leases
        for _ in range(args.repeats):
            triggers.append(trigger_once(api, deployment["id"], root / "data"))
        for _ in range(args.repeats):
            histories.append(history_once(root))
        stack.stop()
    finally:
        with contextlib.suppress(Exception):
            stack.stop()
        sim.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            sim.wait(10)
        shutil.rmtree(root, ignore_errors=True)

    def median(key: str) -> float:
        return round(statistics.median(t[key] for t in triggers), 2)

    result: dict[str, Any] = {
        "bench": "console",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "repeats": args.repeats,
        "stack_first_start_s": round(first_start, 2),
        "stack_start_median_s": round(statistics.median(starts), 2) if starts else None,
        "trigger_to_worker_pending_median_s": median("to_pending_s"),
        "trigger_to_flow_running_median_s": median("to_running_s"),
        "trigger_to_first_integration_median_s": median("to_first_integration_s"),
        "trigger_to_completed_median_s": median("to_completed_s"),
        "history_median_s": round(statistics.median(histories), 2),
        "runs": triggers,
        "flow": "take-exposure, dark 1 s, sim instrument (2 CCDs)",
    }
    rows = [
        ("stack first start (creates the cluster)", result["stack_first_start_s"]),
        ("stack start (median)", result["stack_start_median_s"]),
        ("trigger -> worker has it (Pending)", result["trigger_to_worker_pending_median_s"]),
        ("trigger -> flow running (process up)", result["trigger_to_flow_running_median_s"]),
        ("trigger -> first integration starts", result["trigger_to_first_integration_median_s"]),
        ("trigger -> Completed (1 s dark)", result["trigger_to_completed_median_s"]),
        ("ccdflow history (server running)", result["history_median_s"]),
    ]
    width = max(len(name) for name, _ in rows)
    print(f"{'console, medians of ' + str(args.repeats):<{width}}  seconds")
    for name, value in rows:
        print(f"{name:<{width}}  {value if value is not None else '-':>7}")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "console.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
