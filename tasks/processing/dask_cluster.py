"""A Dask client for per-CCD work: an in-process threaded cluster, or a scheduler.

On one host threads win (numpy releases the GIL, nothing is pickled or copied; see
shared/design/prefect.md), so with no scheduler configured the cluster lives inside
this process and talks over ``inproc://``. A configured scheduler address scales out
to other machines; then the client only connects and never shuts the scheduler down,
because it is shared and outlives any one sequence.

Dask nodes always start an HTTP server (health and metrics routes) even when the
dashboard is off: with ``dashboard_address=None`` the scheduler listens on
``0.0.0.0:8787`` and the worker on ``0.0.0.0:<random>``. Both are therefore pinned to
an ephemeral port on 127.0.0.1 here, so opening a client never listens beyond
loopback and never collides with another cluster's 8787.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

from schemas.instrument import DaskConfig

if TYPE_CHECKING:
    from distributed import Client, LocalCluster

# distributed is imported where a client is made: it takes about a second to import,
# and a flow run's first exposure should not wait for it.

# distributed ships type hints, but Client(), LocalCluster() and Client.close() are
# unannotated: the calls below carry targeted no-untyped-call ignores.

CONNECT_TIMEOUT_S = 5.0
"""Seconds to reach a configured scheduler before giving up with its address."""

LOOPBACK_HTTP = "127.0.0.1:0"
"""Where Dask's always-on HTTP servers listen: loopback, a free port."""


class SchedulerUnreachableError(ConnectionError):
    """The configured Dask scheduler did not answer in time."""


def local_cluster(threads: int) -> LocalCluster:
    """One in-process worker with ``threads`` threads; HTTP on loopback only."""
    from distributed import LocalCluster

    return LocalCluster(  # type: ignore[no-untyped-call]
        processes=False,
        n_workers=1,
        threads_per_worker=threads,
        dashboard_address=LOOPBACK_HTTP,
        # LocalCluster turns a dashboard address into "dashboard on"; we want only
        # the (unavoidable) health server, so switch the scheduler's dashboard off.
        scheduler_kwargs={"dashboard": False},
        worker_dashboard_address=LOOPBACK_HTTP,
    )


def connect(address: str, timeout: float = CONNECT_TIMEOUT_S) -> Client:
    """A client of the scheduler at ``address``; SchedulerUnreachableError names it."""
    from distributed import Client

    try:
        return Client(address, timeout=timeout)  # type: ignore[no-untyped-call]
    except (OSError, TimeoutError) as exc:
        raise SchedulerUnreachableError(
            f"cannot reach the Dask scheduler at {address} within {timeout:g} s "
            f"(dask.scheduler in the instrument config): {exc}"
        ) from exc


def _quiet_distributed() -> None:
    """distributed logs every worker start and stop at INFO through whatever handler
    the process has (Prefect's console, in a flow); only its warnings matter here."""
    for name in ("distributed", "distributed.scheduler", "distributed.worker", "distributed.core"):
        logging.getLogger(name).setLevel(logging.WARNING)


@contextlib.contextmanager
def open_client(config: DaskConfig, *, timeout: float = CONNECT_TIMEOUT_S) -> Iterator[Client]:
    """A client for ``config``, closed on exit (with its cluster when we started one).

    Opening takes about a second (or up to the connect timeout): open it once per
    sequence, not per exposure, and from a thread when an event loop must stay free.
    """
    from distributed import Client

    _quiet_distributed()
    if config.scheduler is not None:
        client = connect(config.scheduler, timeout)
        try:
            yield client
        finally:
            client.close()  # type: ignore[no-untyped-call]
        return
    # Not ``with Client(...)``: its __enter__ makes it the context's default client
    # through a context variable, which cannot be reset from another thread's context
    # (the flow opens and closes it from worker threads).
    with local_cluster(config.threads) as cluster:
        client = Client(cluster, set_as_default=False)  # type: ignore[no-untyped-call]
        try:
            yield client
        finally:
            client.close()  # type: ignore[no-untyped-call]
