"""Sans-IO core of the ASCOM Alpaca device API: calls to requests, answers to values.

Nothing here sends a byte (no httpx import), so every rule is tested with literal
status codes, headers and bodies: the transport in ``client.py`` only carries an
:class:`AlpacaRequest` to the server and hands the answer to :func:`parse_reply`.

Rules (shared/design/alpaca.md):

* the path is ``/api/v1/{device_type}/{device_number}/{member}``, lower case;
* GET reads with a query string, PUT acts with a form-encoded body; parameter keys
  are PascalCase exactly (``Duration``, ``BinX``): a mis-cased key is refused here,
  before a server answers it with HTTP 400/422;
* every call carries ClientID (a non-zero uint32, one per client) and
  ClientTransactionID (1, 2, 3 ... per client);
* an answer is checked in this order: HTTP status, content type, JSON, transaction
  echo, ErrorNumber (to the typed error), then Value.

The echo is checked before ErrorNumber because an answer to someone else's call says
nothing about ours, not even its error. An echo of 0 is taken as "not echoed": the
spec allows a server to omit it, and alpaca-simulators answers every refused PUT
with ClientTransactionID 0.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from devices.alpaca.errors import AlpacaHttpError, AlpacaProtocolError, error_for_number

API_PREFIX = "/api/v1"
MANAGEMENT_PREFIX = "/management"

DEVICE_TYPES = frozenset(
    {
        "camera",
        "covercalibrator",
        "dome",
        "filterwheel",
        "focuser",
        "observingconditions",
        "rotator",
        "safetymonitor",
        "switch",
        "telescope",
    }
)
"""The ASCOM device types an Alpaca path may name."""

UINT32_MAX = 0xFFFFFFFF

JSON_TYPE = "application/json"
IMAGEBYTES_TYPE = "application/imagebytes"

_PASCAL_KEY = re.compile(r"^[A-Z][A-Za-z0-9]*$")
_MEMBER = re.compile(r"^[a-z][a-z0-9]*$")

Method = Literal["GET", "PUT"]
ParamValue = bool | int | float | str


@dataclass(frozen=True, slots=True)
class DeviceAddress:
    """Which device on which server: what every error names."""

    host: str
    port: int
    device_type: str
    number: int

    def __post_init__(self) -> None:
        if self.device_type not in DEVICE_TYPES:
            raise ValueError(
                f"unknown Alpaca device type {self.device_type!r}; "
                f"expected one of {sorted(DEVICE_TYPES)} (lower case)"
            )
        if not 0 <= self.number <= UINT32_MAX:
            raise ValueError(f"device number {self.number} is not a uint32")

    def path(self, member: str) -> str:
        """``/api/v1/camera/0/startexposure`` for ``member`` (lower case)."""
        check_member(member)
        return f"{API_PREFIX}/{self.device_type}/{self.number}/{member}"

    def __str__(self) -> str:
        return f"{self.device_type} {self.number} at {_host_port(self.host, self.port)}"


def server_label(host: str, port: int) -> str:
    """How errors name a server (not a device), e.g. for the management API."""
    return f"Alpaca server at {_host_port(host, port)}"


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def check_member(member: str) -> str:
    """Refuse a member name the server would not route: members are lower case."""
    if not _MEMBER.match(member):
        raise ValueError(f"Alpaca member names are lower case letters and digits: {member!r}")
    return member


def encode_value(value: ParamValue) -> str:
    """One parameter value as the form/query text Alpaca servers parse.

    Booleans are ``True``/``False`` (servers must parse them case-insensitively; .NET
    drivers parse exactly these), floats use Python's shortest round-trip ``repr`` so
    no precision is lost.
    """
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"cannot send a non-finite number to an Alpaca device: {value}")
        return repr(value)
    if isinstance(value, str):
        return value
    raise TypeError(f"unsupported Alpaca parameter type {type(value).__name__}")


@dataclass(frozen=True, slots=True)
class AlpacaRequest:
    """One HTTP request, ready for any transport.

    ``params`` go in the query string of a GET, ``form`` in the form body of a PUT.
    ``label`` and ``member`` name the device and the call in errors.
    """

    method: Method
    path: str
    params: dict[str, str]
    form: dict[str, str]
    headers: dict[str, str]
    client_transaction_id: int
    label: str
    member: str

    @property
    def idempotent(self) -> bool:
        """Only GETs may be retried: a PUT (StartExposure, a slew) may have acted."""
        return self.method == "GET"


@dataclass(slots=True)
class RequestBuilder:
    """Numbers the calls of one client and builds their requests.

    ``client_id`` is random unless given, so two processes talking to one server are
    told apart in its logs; transaction ids run 1, 2, 3 ... and wrap to 1 after the
    uint32 maximum.
    """

    client_id: int = field(default_factory=lambda: secrets.randbelow(UINT32_MAX) + 1)
    _last_transaction: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.client_id <= UINT32_MAX:
            raise ValueError(f"ClientID must be a non-zero uint32, not {self.client_id}")

    @property
    def last_transaction_id(self) -> int:
        """The ClientTransactionID of the request built last (0 before the first)."""
        return self._last_transaction

    def next_transaction_id(self) -> int:
        self._last_transaction = self._last_transaction % UINT32_MAX + 1
        return self._last_transaction

    def get(
        self,
        device: DeviceAddress,
        member: str,
        params: Mapping[str, ParamValue] | None = None,
        *,
        accept: str = JSON_TYPE,
    ) -> AlpacaRequest:
        """A read of ``member``; ``accept`` asks for ImageBytes on image arrays."""
        return self._build("GET", device.path(member), str(device), member, params, accept)

    def put(
        self, device: DeviceAddress, member: str, params: Mapping[str, ParamValue] | None = None
    ) -> AlpacaRequest:
        """An action or a write of ``member`` with PascalCase ``params``."""
        return self._build("PUT", device.path(member), str(device), member, params, JSON_TYPE)

    def management(self, host: str, port: int, path: str) -> AlpacaRequest:
        """A GET of the management API (``apiversions``, ``v1/description`` ...)."""
        if not re.match(r"^[a-z0-9/]+$", path) or path.startswith("/"):
            raise ValueError(f"invalid management path {path!r}")
        full = f"{MANAGEMENT_PREFIX}/{path}"
        return self._build("GET", full, server_label(host, port), path, None, JSON_TYPE)

    def _build(
        self,
        method: Method,
        path: str,
        label: str,
        member: str,
        params: Mapping[str, ParamValue] | None,
        accept: str,
    ) -> AlpacaRequest:
        encoded: dict[str, str] = {}
        for key, value in (params or {}).items():
            if not _PASCAL_KEY.match(key) or key in ("ClientID", "ClientTransactionID"):
                raise ValueError(
                    f"Alpaca parameter keys are PascalCase (e.g. 'BinX'), and the client "
                    f"sets ClientID and ClientTransactionID itself: {key!r}"
                )
            encoded[key] = encode_value(value)
        transaction = self.next_transaction_id()
        encoded["ClientID"] = str(self.client_id)
        encoded["ClientTransactionID"] = str(transaction)
        query, form = (encoded, {}) if method == "GET" else ({}, encoded)
        return AlpacaRequest(
            method=method,
            path=path,
            params=query,
            form=form,
            headers={"Accept": accept},
            client_transaction_id=transaction,
            label=label,
            member=member,
        )


@dataclass(frozen=True, slots=True)
class AlpacaReply:
    """A checked, successful JSON answer (ErrorNumber 0)."""

    value: object
    """``Value``; None when the answer has none (most PUTs)."""
    has_value: bool
    client_transaction_id: int
    server_transaction_id: int
    body: Mapping[str, object]


_MISSING = object()


def media_type(content_type: str | None) -> str:
    """``application/json; charset=utf-8`` -> ``application/json``."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def check_status(request: AlpacaRequest, status: int, body: bytes) -> None:
    """Step 1: any HTTP status but 200 is an :class:`AlpacaHttpError` with its text."""
    if status != 200:
        text = body.decode("utf-8", errors="replace")
        raise AlpacaHttpError(status, text, device=request.label, member=request.member)


def parse_reply(
    request: AlpacaRequest,
    status: int,
    content_type: str | None,
    body: bytes,
    *,
    expect_value: bool | None = None,
) -> AlpacaReply:
    """Check one JSON answer in order and return it, or raise the precise error.

    ``expect_value`` defaults to True for GETs (a read without ``Value`` is broken)
    and False for PUTs (which may or may not return one).
    """
    check_status(request, status, body)
    if media_type(content_type) != JSON_TYPE:
        raise _protocol(request, f"content type {content_type!r}, expected {JSON_TYPE}", body)
    document = decode_json_object(request, body)
    client_tid = _optional_uint(request, document, "ClientTransactionID", body)
    server_tid = _optional_uint(request, document, "ServerTransactionID", body)
    check_transaction_echo(request, client_tid, body)
    number = document.get("ErrorNumber", _MISSING)
    if number is _MISSING:
        raise _protocol(request, "answer without ErrorNumber", body)
    if not isinstance(number, int) or isinstance(number, bool):
        raise _protocol(request, f"ErrorNumber is not an integer: {number!r}", body)
    message = document.get("ErrorMessage", "")
    if not isinstance(message, str):
        raise _protocol(request, f"ErrorMessage is not a string: {message!r}", body)
    if number != 0:
        raise error_for_number(number, message, device=request.label, member=request.member)
    if expect_value is None:
        expect_value = request.method == "GET"
    value = document.get("Value", _MISSING)
    if value is _MISSING and expect_value:
        raise _protocol(request, "successful answer without Value", body)
    return AlpacaReply(
        value=None if value is _MISSING else value,
        has_value=value is not _MISSING,
        client_transaction_id=client_tid,
        server_transaction_id=server_tid,
        body=document,
    )


def decode_json_object(request: AlpacaRequest, body: bytes) -> dict[str, object]:
    """The body as a JSON object, or a protocol error that shows its first bytes."""
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _protocol(request, f"answer is not JSON ({exc})", body) from exc
    if not isinstance(document, dict):
        raise _protocol(request, f"answer is JSON {type(document).__name__}, not an object", body)
    return document


def check_transaction_echo(request: AlpacaRequest, echoed: int, raw: bytes = b"") -> None:
    """An echoed ClientTransactionID other than ours (or 0) means a crossed answer."""
    if echoed and echoed != request.client_transaction_id:
        raise _protocol(
            request,
            f"answer echoes ClientTransactionID {echoed}, "
            f"but this call was {request.client_transaction_id}",
            raw,
        )


def _optional_uint(
    request: AlpacaRequest, document: Mapping[str, object], key: str, body: bytes
) -> int:
    value = document.get(key, 0)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= UINT32_MAX:
        raise _protocol(request, f"{key} is not a uint32: {value!r}", body)
    return value


def _protocol(request: AlpacaRequest, message: str, raw: bytes) -> AlpacaProtocolError:
    return AlpacaProtocolError(message, raw=raw, device=request.label, member=request.member)


# --- typed values -------------------------------------------------------------------------
# JSON gives Python objects; a device that answers "1" for a bool or 1.5 for an int is
# broken, and saying so here is better than a TypeError three calls later.


def as_bool(request: AlpacaRequest, value: object) -> bool:
    if not isinstance(value, bool):
        raise _value_error(request, "a boolean", value)
    return value


def as_int(request: AlpacaRequest, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _value_error(request, "an integer", value)
    if isinstance(value, float):
        if not value.is_integer():
            raise _value_error(request, "an integer", value)
        return int(value)
    return value


def as_float(request: AlpacaRequest, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _value_error(request, "a number", value)
    return float(value)


def as_str(request: AlpacaRequest, value: object) -> str:
    if not isinstance(value, str):
        raise _value_error(request, "a string", value)
    return value


def as_str_list(request: AlpacaRequest, value: object) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise _value_error(request, "a list of strings", value)
    return list(value)


def as_datetime(request: AlpacaRequest, value: object) -> datetime:
    """An Alpaca date-time (FITS-style ISO 8601, UTC, maybe with an offset) as aware UTC."""
    text = as_str(request, value)
    try:
        stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise _value_error(request, "an ISO 8601 date-time", value) from exc
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return stamp.astimezone(UTC)


def _value_error(request: AlpacaRequest, expected: str, value: object) -> AlpacaProtocolError:
    return AlpacaProtocolError(
        f"Value should be {expected}, got {value!r}"[:300],
        device=request.label,
        member=request.member,
    )
