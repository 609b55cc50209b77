"""Running simulators: one (``ccdflow sim``) or several controllers in one process.

An instrument with several controllers is several independent Archons, each with its
own port, configuration, timing core and buffers; serving them from one process and
one event loop keeps a multi-controller test cheap.  Each controller announces itself
with one flushed line, the line ``flows.demo`` and operators wait for.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Iterator, Sequence
from typing import Any

from devices.archon.acf import AcfConfig, load_acf
from devices.archon.simulator.archon import ArchonSimulator
from devices.archon.simulator.shutter import ShutterBlade

__all__ = ["MultiSimulator", "announce", "run_simulator", "run_simulators"]

log = logging.getLogger(__name__)


def announce(sim: ArchonSimulator, acf_path: str | os.PathLike[str]) -> None:
    """Print (flushed) and log the line that says a controller is ready."""
    message = f"Archon simulator listening on {sim.host}:{sim.port} (ACF {acf_path})"
    log.info(message)
    print(message, flush=True)


class MultiSimulator:
    """Several independent simulated controllers, started and stopped together.

    Controller ``i`` gets ``seed + i`` so their pixels differ like different detectors;
    every other keyword goes to each :class:`ArchonSimulator` unchanged. With
    ``shared_shutter`` all CCDs sit behind one physical shutter, as in an instrument
    whose controllers share one: whichever controller opens it lights them all.
    """

    def __init__(
        self,
        acfs: Sequence[AcfConfig],
        *,
        host: str = "127.0.0.1",
        ports: Sequence[int] | None = None,
        seed: int = 0,
        shared_shutter: bool = False,
        **kwargs: Any,
    ) -> None:
        if not acfs:
            raise ValueError("MultiSimulator needs at least one ACF")
        chosen = list(ports) if ports is not None else [0] * len(acfs)
        if len(chosen) != len(acfs):
            raise ValueError(f"{len(acfs)} ACFs but {len(chosen)} ports")
        taken = [p for p in chosen if p]
        if len(set(taken)) != len(taken):
            raise ValueError(f"ports must differ, got {chosen}")
        blade = ShutterBlade() if shared_shutter else None
        self.simulators = tuple(
            ArchonSimulator(acf, host=host, port=port, seed=seed + i, shutter_blade=blade, **kwargs)
            for i, (acf, port) in enumerate(zip(acfs, chosen, strict=True))
        )

    def __len__(self) -> int:
        return len(self.simulators)

    def __getitem__(self, index: int) -> ArchonSimulator:
        return self.simulators[index]

    def __iter__(self) -> Iterator[ArchonSimulator]:
        return iter(self.simulators)

    @property
    def ports(self) -> list[int]:
        return [sim.port for sim in self.simulators]

    async def start(self) -> None:
        """Start every controller; if one cannot (port taken), stop those started."""
        started: list[ArchonSimulator] = []
        try:
            for sim in self.simulators:
                await sim.start()
                started.append(sim)
        except BaseException:
            for sim in reversed(started):
                with contextlib.suppress(Exception):
                    await sim.stop()
            raise

    async def stop(self) -> None:
        await asyncio.gather(*(sim.stop() for sim in self.simulators))

    async def __aenter__(self) -> MultiSimulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


async def run_simulators(
    acf_paths: Sequence[str | os.PathLike[str]],
    host: str = "127.0.0.1",
    ports: Sequence[int] | None = None,
    **kwargs: Any,
) -> None:
    """Serve one controller per ACF until cancelled; ``ports`` None: free ports.

    Every controller prints its own "listening" line, in the order of ``acf_paths``.
    """
    acfs = [load_acf(path) for path in acf_paths]
    async with MultiSimulator(acfs, host=host, ports=ports, **kwargs) as group:
        for sim, path in zip(group, acf_paths, strict=True):
            announce(sim, path)
        await asyncio.Event().wait()


async def run_simulator(
    acf_path: str | os.PathLike[str],
    host: str = "127.0.0.1",
    port: int = 4242,
    **kwargs: Any,
) -> None:
    """Serve ``acf_path`` until cancelled (the ``ccdflow sim`` command)."""
    acf = load_acf(acf_path)
    async with ArchonSimulator(acf, host=host, port=port, **kwargs) as sim:
        announce(sim, acf_path)
        await asyncio.Event().wait()
