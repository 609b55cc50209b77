"""What an Archon camera can do, read from its ACF before any connection.

The timing script decides: a shutter opens only if the script has an ``OpenShutter``
parameter the adapter can set, and the readout slows only if it has ``WaitCount``. An
Archon keeps its last three frames in its buffers, which a recovery can read after a
crash, and which let one frame be fetched (its buffer locked) while the next integrates.
"""

from __future__ import annotations

from devices.archon.acf import AcfConfig
from devices.base import CameraCapabilities

FRAME_BUFFERS = 3


def _defines(acf: AcfConfig, parameter: str) -> bool:
    return any(key.lower() == parameter.lower() for key in acf.parameters)


def archon_capabilities(acf: AcfConfig) -> CameraCapabilities:
    why_not: dict[str, str] = {}
    opens_shutter = _defines(acf, "OpenShutter")
    if not opens_shutter:
        why_not["opens_shutter"] = "its timing script has no OpenShutter parameter"
    readout_delay = _defines(acf, "WaitCount")
    if not readout_delay:
        why_not["readout_delay"] = "its timing script has no WaitCount parameter"
    return CameraCapabilities(
        opens_shutter=opens_shutter,
        readout_delay=readout_delay,
        buffered_frames=FRAME_BUFFERS,
        fetch_overlaps_next=True,
        why_not=why_not,
    )
