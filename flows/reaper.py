"""Stops what a ccdflow command started when the command dies, even by kill -9.

Without a server (no PREFECT_API_URL) every command starts an embedded Prefect API in
a child process (uvicorn, about 200 MB), and the demo starts simulator processes.
Their owner stops them on a normal exit, but a command killed with SIGKILL (an
operator, the OOM killer, a crashed worker) cannot, and they ran on, orphaned.

So each command first tags its environment with ``CCDFLOW_OWNER_PID=<its pid>``
(every process it starts afterwards inherits the tag) and starts this watcher, which
the kernel signals when its parent dies (``PR_SET_PDEATHSIG``). It then stops every
process carrying its owner's tag: SIGTERM, and SIGKILL for those still running after
a grace period. It ignores the signals a terminal or a process group gets (Ctrl-C, a
worker's SIGTERM to the group), so it acts only once its owner is gone, and it never
outlives its owner by more than the grace period. Linux only; elsewhere nothing is
started.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import signal
import subprocess
import sys
import time

OWNER_VARIABLE = "CCDFLOW_OWNER_PID"
LOG_VARIABLE = "CCDFLOW_REAPER_LOG"
PR_SET_PDEATHSIG = 1
READY_TIMEOUT_S = 10.0
"""Longest wait for the watcher to be ready (a loaded machine starts Python slowly)."""
GRACE_S = 5.0
"""Seconds an orphan gets to stop on SIGTERM (uvicorn closes its database) before SIGKILL."""


def owned_processes(owner: int) -> list[int]:
    """Processes whose environment carries ``owner``'s tag (its children and theirs).

    /proc/PID/environ is the environment a process was started with, so the owner
    itself (which set the tag after it started) is never among them.
    """
    marker = f"{OWNER_VARIABLE}={owner}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as handle:
                if marker in handle.read().split(b"\0"):
                    found.append(int(entry))
        except OSError:  # gone, or not ours to read
            continue
    return found


SWEEPS = 3
"""Scans after the SIGKILL: a tagged process started during the grace period (a
child its dying parent started) is found and killed by the next scan."""


def stop_owned(owner: int, grace_s: float = GRACE_S) -> list[int]:
    """SIGTERM every process tagged with ``owner``, SIGKILL what is left after
    ``grace_s`` (and anything tagged that started meanwhile); return the pids that
    were signalled."""
    pids = owned_processes(owner)
    _note(f"owner {owner} gone; SIGTERM to {pids}")
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(_alive(pid) for pid in pids):
        time.sleep(0.1)
    signalled = list(pids)
    for _ in range(SWEEPS):
        left = [pid for pid in owned_processes(owner) if _alive(pid)]
        if not left:
            break
        _note(f"SIGKILL to {left}, still running after {grace_s:g} s")
        for pid in left:
            _signal(pid, signal.SIGKILL)
        signalled += [pid for pid in left if pid not in signalled]
        time.sleep(0.1)
    return signalled


def _signal(pid: int, signum: int) -> None:
    """Signal one process; one that is gone or not ours never stops the others'."""
    try:
        os.kill(pid, signum)
    except OSError as exc:
        _note(f"signal {signum} to {pid}: {exc}")


def _note(line: str) -> None:
    """One line to the file CCDFLOW_REAPER_LOG names (tests read it when a process
    outlives its owner); nothing without it."""
    path = os.environ.get(LOG_VARIABLE)
    if path:
        with contextlib.suppress(OSError), open(path, "a", encoding="utf-8") as log:
            log.write(f"{time.time():.3f} reaper {os.getpid()}: {line}\n")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie is gone
    except OSError:
        return False


_watcher: subprocess.Popen[bytes] | None = None
"""This process's watcher, kept referenced for the life of the process."""


def start_reaper() -> None:
    """Tag this process's future children and start their watcher (once per process)."""
    global _watcher
    owner = str(os.getpid())
    if os.environ.get(OWNER_VARIABLE) == owner or not sys.platform.startswith("linux"):
        return
    os.environ[OWNER_VARIABLE] = owner
    _watcher = subprocess.Popen(
        [sys.executable, "-m", "flows.reaper", owner],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        close_fds=True,
    )
    # Wait until it ignores the group's signals and listens for our death (about
    # 0.1 s): a Ctrl-C in that window would otherwise stop the watcher, not us.
    assert _watcher.stdout is not None
    ready, _, _ = select.select([_watcher.stdout], [], [], READY_TIMEOUT_S)
    if ready:
        _watcher.stdout.readline()
    _watcher.stdout.close()


def _watch(owner: int) -> None:
    for quiet in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(quiet, signal.SIG_IGN)
    # The kernel sends the parent-death signal each time this process is handed to a
    # new parent: with a multithreaded owner (Prefect's are) once per exiting thread,
    # in quick succession. A handler would be interrupted by the second while it
    # cleans up (CI saw the watcher die silently, the owner's API left running), so
    # the signal stays blocked and is only waited for; extra ones merge, unread.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGUSR1, 0, 0, 0)
    with contextlib.suppress(OSError):  # the owner stopped waiting: fine
        sys.stdout.write("ready\n")
        sys.stdout.close()
    # The signal also comes when only the thread that started us ends, and the owner
    # may have died before prctl: the parent's pid is what says the owner is gone.
    while os.getppid() == owner:
        signal.sigtimedwait({signal.SIGUSR1}, 1.0)
    _note("parent gone")
    try:
        stop_owned(owner)
    except BaseException as exc:  # noted, so a process left behind can be explained
        _note(f"stopping failed: {type(exc).__name__}: {exc}")
        raise
    _note("done")


if __name__ == "__main__":
    _watch(int(sys.argv[1]))
