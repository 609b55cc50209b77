"""A warm Prefect engine: flow-run processes forked from an interpreter that has
already imported Prefect and ccdflow's flows.

A process worker starts every flow run as a new ``python -m prefect.engine``: an
interpreter, then about 2 s of importing Prefect and 2-3 s more of our flows and
their libraries (numpy, astropy, h5py, Dask) before the first exposure can start.
``ccdflow server`` instead starts this server once; it imports all of that, then
waits on a Unix socket that only its owner can use. The worker's command for a run is
the small launcher in flows/warm_start.py, which hands the run to this server: it
forks, and the child, already warm, becomes the run's process (the launcher's
environment, working folder, arguments and standard streams), running Prefect's own
engine entry point exactly as ``python -m prefect.engine`` would.

The server stays single-threaded (nothing here starts a thread, and the imports
start none; checked at start), so forking it is safe. It reports each child's exit
status to its launcher, and stops a child whose launcher went away (SIGTERM).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import runpy
import selectors
import signal
import socket
import struct
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

PRELOAD = (
    "prefect",
    "prefect.engine",
    "prefect.flow_engine",
    "flows.exposure",
    "flows.safety",
    "flows.plan_night",
    "distributed",
    "astropy.io.fits",
    "h5py",
    "tasks.observing.sun_events",
)
"""What every flow run would import anyway: imported once, here."""

MAX_REQUEST = 4 * 1024 * 1024
STREAMS = 3


def send_message(connection: socket.socket, payload: dict[str, object]) -> None:
    """One length-prefixed JSON message (both ends use these two functions)."""
    data = json.dumps(payload).encode()
    connection.sendall(struct.pack("!I", len(data)) + data)


def receive_exactly(connection: socket.socket, size: int) -> bytes:
    chunks = b""
    while len(chunks) < size:
        chunk = connection.recv(size - len(chunks))
        if not chunk:
            raise ConnectionError("the other end closed the connection")
        chunks += chunk
    return chunks


def receive_message(connection: socket.socket) -> dict[str, object]:
    (size,) = struct.unpack("!I", receive_exactly(connection, 4))
    if size > MAX_REQUEST:
        raise ValueError(f"message of {size} bytes is too large")
    loaded = json.loads(receive_exactly(connection, size))
    if not isinstance(loaded, dict):
        raise ValueError("a message is a JSON object")
    return loaded


@dataclass
class _Run:
    connection: socket.socket
    pid: int


def _run_engine(request: dict[str, object], streams: list[int]) -> None:
    """In the forked child: become the run's process, then run Prefect's engine."""
    for target, fd in enumerate(streams):
        os.dup2(fd, target)
        os.close(fd)
    env = request["env"]
    argv = request["argv"]
    cwd = request["cwd"]
    assert isinstance(env, dict)
    assert isinstance(argv, list)
    assert isinstance(cwd, str)
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update({str(k): str(v) for k, v in env.items()})
    # Prefect read its settings from the server's environment at import; the run's
    # environment (its flow-run id, the worker's control channel) wins.
    from prefect.context import refresh_global_settings_context

    refresh_global_settings_context()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    sys.argv = ["prefect.engine", *(str(a) for a in argv)]
    code = 0
    try:
        runpy.run_module("prefect.engine", run_name="__main__", alter_sys=True)
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
    os._exit(code)


class WarmEngineServer:
    """Accept launchers on ``path``; fork a warm child per run."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.selector = selectors.DefaultSelector()
        self.runs: dict[int, _Run] = {}
        self.wake_read, self.wake_write = os.pipe()
        os.set_blocking(self.wake_write, False)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        old_mask = os.umask(0o177)  # the socket: owner only
        try:
            self.listener.bind(str(path))
        finally:
            os.umask(old_mask)
        self.listener.listen(16)
        self.stopping = False

    def _on_child(self, _signum: int, _frame: object) -> None:
        with contextlib.suppress(BlockingIOError):
            os.write(self.wake_write, b"c")

    def _on_stop(self, _signum: int, _frame: object) -> None:
        self.stopping = True
        with contextlib.suppress(BlockingIOError):
            os.write(self.wake_write, b"s")

    def serve(self) -> None:
        signal.signal(signal.SIGCHLD, self._on_child)
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        self.selector.register(self.listener, selectors.EVENT_READ, "accept")
        self.selector.register(self.wake_read, selectors.EVENT_READ, "wake")
        print(f"warm engine ready on {self.path}", flush=True)
        while not self.stopping:
            for key, _ in self.selector.select():
                if key.data == "accept":
                    self._accept()
                elif key.data == "wake":
                    os.read(self.wake_read, 512)
                    self._reap()
                else:
                    self._launcher_gone(key.data)
        self._stop_children()

    def _accept(self) -> None:
        connection, _ = self.listener.accept()
        try:
            message, fds, _flags, _address = socket.recv_fds(connection, 4, STREAMS)
            if len(fds) != STREAMS:
                raise ValueError(f"expected {STREAMS} streams, got {len(fds)}")
            (size,) = struct.unpack("!I", message)
            if size > MAX_REQUEST:
                raise ValueError(f"request of {size} bytes is too large")
            request = json.loads(receive_exactly(connection, size))
        except (OSError, ValueError, struct.error) as exc:
            print(f"warm engine: bad request: {exc}", file=sys.stderr, flush=True)
            connection.close()
            return
        pid = os.fork()
        if pid == 0:  # the child: never returns
            self.listener.close()
            connection.close()
            for run in self.runs.values():  # other runs' launchers must see us go
                run.connection.close()
            self.selector.close()
            os.close(self.wake_read)
            os.close(self.wake_write)
            _run_engine(request, list(fds))
        for fd in fds:
            os.close(fd)
        self.runs[pid] = _Run(connection, pid)
        send_message(connection, {"pid": pid})
        self.selector.register(connection, selectors.EVENT_READ, pid)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            run = self.runs.pop(pid, None)
            if run is None:
                continue
            code = os.waitstatus_to_exitcode(status)
            with contextlib.suppress(OSError):
                send_message(run.connection, {"exit": code})
            self.selector.unregister(run.connection)
            run.connection.close()

    def _launcher_gone(self, pid: int) -> None:
        """The launcher closed its end (killed): stop its run as a worker would."""
        run = self.runs.get(pid)
        if run is None:
            return
        with contextlib.suppress(OSError):
            if run.connection.recv(1, socket.MSG_PEEK):
                return
        self.selector.unregister(run.connection)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)

    def _stop_children(self) -> None:
        for pid in list(self.runs):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def main(path: Path) -> None:
    for name in PRELOAD:
        importlib.import_module(name)
    if threading.active_count() != 1:
        # Forking a process with other threads can deadlock its children.
        names = [t.name for t in threading.enumerate()]
        raise SystemExit(f"warm engine: imports started threads {names}; not forking")
    WarmEngineServer(path).serve()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
