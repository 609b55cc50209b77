"""Typed errors of the Archon adapter, so callers can react to each cause precisely."""

from __future__ import annotations

from devices.base import DeviceConnectionError, DeviceError, DeviceStateError, DeviceTimeoutError


class ArchonError(DeviceError):
    """Base class of every Archon adapter error."""


class ArchonProtocolError(ArchonError):
    """The controller sent bytes that break the wire protocol; ``raw`` keeps them."""

    def __init__(self, message: str, raw: bytes = b"") -> None:
        super().__init__(f"{message}: {raw[:80]!r}" if raw else message)
        self.raw = raw


class ArchonCommandError(ArchonError):
    """The controller answered ``?xx``: it rejected the command."""

    def __init__(self, command: str) -> None:
        super().__init__(f"Archon rejected command {command!r}")
        self.command = command


class ArchonTimeoutError(ArchonError, DeviceTimeoutError):
    """A command got no complete reply in time."""

    def __init__(self, command: str, timeout: float, detail: str = "") -> None:
        extra = f" ({detail})" if detail else ""
        super().__init__(f"Archon command {command!r} timed out after {timeout:g} s{extra}")
        self.command = command
        self.timeout = timeout


class ArchonConnectionError(ArchonError, DeviceConnectionError):
    """The TCP connection could not be opened or was closed under a command."""


class ArchonBusyError(ArchonError, DeviceStateError):
    """No free command id, or the controller is busy with another exposure/readout."""


class ArchonPowerError(ArchonError, DeviceStateError):
    """The controller's power is off or not good."""
