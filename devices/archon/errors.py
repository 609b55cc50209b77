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
    """A command got no complete reply in time.

    ``timeout`` is what one attempt was allowed; a command that was retried (FETCH)
    also says how many ``attempts`` it made and how long they took in ``total``, so
    the message never claims a 1 s wait when the caller waited 3 s.
    """

    def __init__(
        self,
        command: str,
        timeout: float,
        detail: str = "",
        *,
        attempts: int = 1,
        total: float | None = None,
    ) -> None:
        total = timeout if total is None else total
        extra = f" ({detail})" if detail else ""
        waited = f"{timeout:g} s"
        if attempts > 1:
            waited += f" per attempt, {total:.1f} s in all over {attempts} attempts"
        super().__init__(f"Archon command {command!r} timed out after {waited}{extra}")
        self.command = command
        self.timeout = timeout
        self.detail = detail
        self.attempts = attempts
        self.total = total

    def __reduce__(self) -> tuple[object, ...]:
        # The default rebuilds from the message alone, which this __init__ cannot
        # take; errors cross process boundaries (task results), so keep them whole.
        return (
            _rebuild_timeout,
            (self.command, self.timeout, self.detail, self.attempts, self.total),
        )


def _rebuild_timeout(
    command: str, timeout: float, detail: str, attempts: int, total: float
) -> ArchonTimeoutError:
    return ArchonTimeoutError(command, timeout, detail, attempts=attempts, total=total)


class ArchonConnectionError(ArchonError, DeviceConnectionError):
    """The TCP connection could not be opened or was closed under a command."""


class ArchonBusyError(ArchonError, DeviceStateError):
    """No free command id, or the controller is busy with another exposure/readout."""


class ArchonPowerError(ArchonError, DeviceStateError):
    """The controller's power is off or not good."""
