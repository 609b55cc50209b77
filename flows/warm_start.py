"""The flow-run command of ``ccdflow server``'s worker: hand the run to the warm engine.

Started by Prefect's process worker in place of ``python -m prefect.engine`` (the work
pool's default command, set by flows/console_stack.py). It imports nothing heavy: it
passes its arguments, environment, working folder and standard streams to the warm
engine (flows/warm_engine.py) over the Unix socket named by CCDFLOW_WARM_ENGINE, which
forks a process that already has Prefect and the flows imported. It then stands in
for that process: signals it receives (the worker's SIGTERM on cancellation) go to the
run, and it exits with the run's exit code. Without a warm engine (not configured,
not running) it becomes ``python -m prefect.engine`` itself: slower, never wrong.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import struct
import sys

from flows.warm_engine import STREAMS, receive_message

SOCKET_VARIABLE = "CCDFLOW_WARM_ENGINE"


def _cold_start() -> None:
    os.execv(sys.executable, [sys.executable, "-m", "prefect.engine", *sys.argv[1:]])


def main() -> None:
    path = os.environ.get(SOCKET_VARIABLE)
    if not path:
        _cold_start()
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        connection.connect(str(path))
        request = json.dumps(
            {"argv": sys.argv[1:], "env": dict(os.environ), "cwd": os.getcwd()}
        ).encode()
        socket.send_fds(connection, [struct.pack("!I", len(request))], list(range(STREAMS)))
        connection.sendall(request)
        started = receive_message(connection)
    except (OSError, ValueError) as exc:
        print(f"warm engine unavailable ({exc}); starting the engine cold", file=sys.stderr)
        connection.close()
        _cold_start()
    pid = int(started["pid"])  # type: ignore[call-overload]

    def forward(signum: int, _frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, forward)
    try:
        finished = receive_message(connection)
        code = int(finished["exit"])  # type: ignore[call-overload]
    except (OSError, ValueError) as exc:
        print(f"lost the warm engine while the run went on: {exc}", file=sys.stderr)
        code = 1
    sys.exit(code if code >= 0 else 128 - code)


if __name__ == "__main__":
    main()
