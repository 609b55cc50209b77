"""A protocol-faithful STA Archon simulator: real asyncio TCP servers on 127.0.0.1.

Why a simulator and not mocks: the client must be exercised over a real socket, with
pipelined requests, binary FETCH streams, slow or missing replies and dropped
connections, and the flows must see exposures take real time.  Everything on the
wire follows ``shared/design/archon-protocol.md``; the frame-buffer layout follows
:mod:`devices.archon.acf`.

One job per module:

* :mod:`.server` - TCP framing, per-connection command loop, fault hooks;
* :mod:`.commands` - the command table and its handlers;
* :mod:`.fetch` - FETCH block framing and bandwidth pacing;
* :mod:`.core` - the timing-core state machine (expose, read out, flush);
* :mod:`.readout` - readout/flush timing and row progress;
* :mod:`.buffers` - frame buffers, FRAME bookkeeping, LOCK;
* :mod:`.config_memory`, :mod:`.params` - configuration memory, timing parameters;
* :mod:`.housekeeping` - STATUS, SYSTEM, the controller log;
* :mod:`.shutter`, :mod:`.clock` - shutter and exposure clocks, the 100 MHz TIMER;
* :mod:`.faults` - switchable faults;
* :mod:`.state` - one controller's parts wired together;
* :mod:`.archon` - :class:`ArchonSimulator`, the public face;
* :mod:`.multi` - running one or several controllers.
"""

from __future__ import annotations

from devices.archon.simulator.archon import ArchonSimulator
from devices.archon.simulator.buffers import BUFFER_BASES
from devices.archon.simulator.core import CoreState
from devices.archon.simulator.multi import MultiSimulator, run_simulator, run_simulators

__all__ = [
    "BUFFER_BASES",
    "ArchonSimulator",
    "CoreState",
    "MultiSimulator",
    "run_simulator",
    "run_simulators",
]
