"""Typed errors of the ASCOM Alpaca adapter, so callers can react to each cause precisely.

Every error inherits twice, like the Archon ones: from :class:`AlpacaError` (catch by
vendor) and from a kind in :mod:`devices.base` (catch by kind, whatever the vendor).
Every error names the device (``camera 0 at 127.0.0.1:11111``) and the call
(``startexposure``), because an operator reading a failed flow run must know which
box to walk to and what it was asked.

The tree::

    AlpacaError (DeviceError)                   .device .member .number .message
    +-- AlpacaDeviceError (DeviceRefusedError)  the device answered ErrorNumber != 0
    |   +-- AlpacaNotImplementedError           0x400 (also DeviceUnsupportedError)
    |   +-- AlpacaInvalidValueError             0x401
    |   +-- AlpacaValueNotSetError              0x402
    |   +-- AlpacaNotConnectedError             0x407 (also DeviceStateError)
    |   +-- AlpacaInvalidWhileParkedError       0x408 (also DeviceStateError)
    |   +-- AlpacaInvalidWhileSlavedError       0x409 (also DeviceStateError)
    |   +-- AlpacaInvalidOperationError         0x40B (also DeviceStateError)
    |   +-- AlpacaActionNotImplementedError     0x40C (also DeviceUnsupportedError)
    |   +-- AlpacaOperationCancelledError       0x40E
    |   +-- AlpacaDriverError                   0x500-0xFFF, driver specific
    +-- AlpacaHttpError                         HTTP status other than 200; .status .body
    |   +-- AlpacaUnsupportedError              a path every server should have is missing
    |                                           (also DeviceUnsupportedError)
    +-- AlpacaProtocolError (DeviceProtocolError)  wrong content type, bad JSON, missing
    |                                           keys, transaction-id mismatch, truncated
    |                                           ImageBytes; .raw keeps the first bytes
    +-- AlpacaTimeoutError (DeviceTimeoutError) no complete answer in time; .timeout
    +-- AlpacaConnectionError (DeviceConnectionError)  refused, reset or dropped
    +-- AlpacaCameraFailedError (DeviceStateError)  CameraState says Error

Unassigned error numbers (0x403-0x406, 0x40A, 0x40D, 0x40F-0x4FF) raise the plain
:class:`AlpacaDeviceError` with the number kept.

The kinds in parentheses are devices/base.py's, so a caller catches by vendor
(``AlpacaError``) or by kind (``DeviceRefusedError``, ``DeviceProtocolError``,
``DeviceUnsupportedError``, ``DeviceTimeoutError``, ...), as with Archon.
"""

from __future__ import annotations

from typing import Any, ClassVar

from devices.base import (
    DeviceConnectionError,
    DeviceError,
    DeviceProtocolError,
    DeviceRefusedError,
    DeviceStateError,
    DeviceTimeoutError,
    DeviceUnsupportedError,
)

# --- the Alpaca tree ----------------------------------------------------------------------


class AlpacaError(DeviceError):
    """Base class of every Alpaca adapter error.

    ``device`` names the device and server (``camera 0 at 127.0.0.1:11111``),
    ``member`` the call (``startexposure``), ``number`` the ASCOM error number when
    the device gave one (else 0), and ``message`` the device's text or ours.
    """

    def __init__(
        self, message: str, *, device: str = "", member: str = "", number: int = 0
    ) -> None:
        where = ": ".join(part for part in (device, member) if part)
        super().__init__(f"{where}: {message}" if where else message)
        self.message = message
        self.device = device
        self.member = member
        self.number = number

    def __reduce__(self) -> tuple[Any, ...]:
        # Errors cross process boundaries (Prefect task results); the default pickling
        # rebuilds from ``args`` alone, which these keyword-rich constructors cannot take.
        return (_rebuild, (type(self), self.args, self.__dict__.copy()))


def _rebuild(cls: type[AlpacaError], args: tuple[Any, ...], state: dict[str, Any]) -> AlpacaError:
    error = cls.__new__(cls)
    Exception.__init__(error, *args)
    error.__dict__.update(state)
    return error


class AlpacaDeviceError(AlpacaError, DeviceRefusedError):
    """The device answered with a non-zero ErrorNumber: it refused or failed the call."""

    NUMBER: ClassVar[int] = 0
    """The ASCOM error number this class stands for (0: any, set per instance)."""
    NAME: ClassVar[str] = "unassigned error"

    def __init__(self, number: int, message: str, *, device: str = "", member: str = "") -> None:
        text = f"ASCOM error 0x{number:03X} ({self.NAME}): {message or '(no message)'}"
        super().__init__(text, device=device, member=member, number=number)
        self.message = message


class AlpacaNotImplementedError(AlpacaDeviceError, DeviceUnsupportedError):
    """0x400: the device does not implement this property or method."""

    NUMBER, NAME = 0x400, "NotImplemented"


class AlpacaInvalidValueError(AlpacaDeviceError):
    """0x401: a parameter value is out of range or otherwise invalid."""

    NUMBER, NAME = 0x401, "InvalidValue"


class AlpacaValueNotSetError(AlpacaDeviceError):
    """0x402: the value has not been set yet, or (some servers) a set was refused."""

    NUMBER, NAME = 0x402, "ValueNotSet"


class AlpacaNotConnectedError(AlpacaDeviceError, DeviceStateError):
    """0x407: the device must be connected first."""

    NUMBER, NAME = 0x407, "NotConnected"


class AlpacaInvalidWhileParkedError(AlpacaDeviceError, DeviceStateError):
    """0x408: not allowed while the device is parked."""

    NUMBER, NAME = 0x408, "InvalidWhileParked"


class AlpacaInvalidWhileSlavedError(AlpacaDeviceError, DeviceStateError):
    """0x409: not allowed while the dome is slaved to the telescope."""

    NUMBER, NAME = 0x409, "InvalidWhileSlaved"


class AlpacaInvalidOperationError(AlpacaDeviceError, DeviceStateError):
    """0x40B: not allowed in the device's present state."""

    NUMBER, NAME = 0x40B, "InvalidOperation"


class AlpacaActionNotImplementedError(AlpacaDeviceError, DeviceUnsupportedError):
    """0x40C: the action is not implemented.

    The alpaca-simulators camera also answers StartExposure with 0x40C while it is
    busy (shared/design/alpaca.md); the number is kept as sent.
    """

    NUMBER, NAME = 0x40C, "ActionNotImplemented"


class AlpacaOperationCancelledError(AlpacaDeviceError):
    """0x40E: an asynchronous operation was cancelled."""

    NUMBER, NAME = 0x40E, "OperationCancelled"


class AlpacaDriverError(AlpacaDeviceError):
    """0x500-0xFFF: a driver-specific error; the number is the driver's."""

    NAME = "DriverError"


DRIVER_ERROR_RANGE = range(0x500, 0x1000)

_BY_NUMBER: dict[int, type[AlpacaDeviceError]] = {
    cls.NUMBER: cls
    for cls in (
        AlpacaNotImplementedError,
        AlpacaInvalidValueError,
        AlpacaValueNotSetError,
        AlpacaNotConnectedError,
        AlpacaInvalidWhileParkedError,
        AlpacaInvalidWhileSlavedError,
        AlpacaInvalidOperationError,
        AlpacaActionNotImplementedError,
        AlpacaOperationCancelledError,
    )
}


def error_for_number(
    number: int, message: str, *, device: str = "", member: str = ""
) -> AlpacaDeviceError:
    """The typed error for an ASCOM ErrorNumber (non-zero), keeping number and text."""
    if number == 0:
        raise ValueError("ErrorNumber 0 means success, not an error")
    cls = _BY_NUMBER.get(number)
    if cls is None:
        cls = AlpacaDriverError if number in DRIVER_ERROR_RANGE else AlpacaDeviceError
    return cls(number, message, device=device, member=member)


class AlpacaHttpError(AlpacaError):
    """The server answered with an HTTP status other than 200.

    Per the spec 400 means a bad path or parameter and 500 a device failure, each with
    a text body; alpaca-simulators also answers 422 (JSON) for a bad value or a
    mis-cased key. ``status`` and the whole ``body`` (decoded) are kept.
    """

    def __init__(self, status: int, body: str, *, device: str = "", member: str = "") -> None:
        shown = body.strip().replace("\n", " ")
        if len(shown) > 300:
            shown = shown[:300] + "..."
        super().__init__(f"HTTP {status}: {shown or '(empty body)'}", device=device, member=member)
        self.status = status
        self.body = body


class AlpacaUnsupportedError(AlpacaHttpError, DeviceUnsupportedError):
    """An endpoint every server should offer is missing (HTTP 400/404 on it).

    alpaca-simulators, for one, has no management API at all.
    """


class AlpacaProtocolError(AlpacaError, DeviceProtocolError):
    """The reply breaks the Alpaca protocol; ``raw`` keeps its first bytes."""

    def __init__(
        self, message: str, *, raw: bytes = b"", device: str = "", member: str = ""
    ) -> None:
        shown = f"{message}: {raw[:80]!r}" if raw else message
        super().__init__(shown, device=device, member=member)
        self.raw = raw[:256]


class AlpacaTimeoutError(AlpacaError, DeviceTimeoutError):
    """No complete answer in time.

    ``timeout`` is what one attempt was allowed; a retried GET also says how many
    ``attempts`` it made and how long they took in ``total``.
    """

    def __init__(
        self,
        timeout: float,
        *,
        device: str = "",
        member: str = "",
        attempts: int = 1,
        total: float | None = None,
        detail: str = "",
    ) -> None:
        total = timeout if total is None else total
        waited = f"no answer within {timeout:g} s"
        if attempts > 1:
            waited += f" per attempt, {total:.2f} s in all over {attempts} attempts"
        if detail:
            waited += f" ({detail})"
        super().__init__(waited, device=device, member=member)
        self.timeout = timeout
        self.attempts = attempts
        self.total = total


class AlpacaConnectionError(AlpacaError, DeviceConnectionError):
    """The connection could not be made, or was refused, reset or dropped under a call."""

    def __init__(
        self, message: str, *, device: str = "", member: str = "", attempts: int = 1
    ) -> None:
        if attempts > 1:
            message += f" (after {attempts} attempts)"
        super().__init__(message, device=device, member=member)
        self.attempts = attempts


class AlpacaCameraFailedError(AlpacaError, DeviceStateError):
    """The camera reports CameraState 5 (Error): the exposure will never be ready.

    No ErrorNumber comes with it (the device answered the poll successfully), so
    ``number`` is 0; the camera's own log says why.
    """


__all__ = [
    "DRIVER_ERROR_RANGE",
    "AlpacaActionNotImplementedError",
    "AlpacaCameraFailedError",
    "AlpacaConnectionError",
    "AlpacaDeviceError",
    "AlpacaDriverError",
    "AlpacaError",
    "AlpacaHttpError",
    "AlpacaInvalidOperationError",
    "AlpacaInvalidValueError",
    "AlpacaInvalidWhileParkedError",
    "AlpacaInvalidWhileSlavedError",
    "AlpacaNotConnectedError",
    "AlpacaNotImplementedError",
    "AlpacaOperationCancelledError",
    "AlpacaProtocolError",
    "AlpacaTimeoutError",
    "AlpacaUnsupportedError",
    "AlpacaValueNotSetError",
    "DeviceProtocolError",
    "DeviceRefusedError",
    "DeviceUnsupportedError",
    "error_for_number",
]
