"""The asyncio transport of the Alpaca adapter: one ``httpx.AsyncClient`` per server.

The rules live in :mod:`devices.alpaca.protocol` and :mod:`devices.alpaca.imagebytes`;
this module only carries requests over HTTP and turns what httpx raises into the
adapter's errors at the boundary, so nothing above it ever sees an httpx exception.

* Every call has a timeout, enforced twice: httpx's per-operation timeouts and an
  asyncio deadline around the whole attempt (a server that trickles bytes, or a
  transport that never answers, still ends in :class:`AlpacaTimeoutError`).
* Only GETs are retried (connection failures and timeouts, ``retries`` times with a
  short backoff): a GET reads, but a PUT may have acted (StartExposure, a slew) even
  when its answer was lost, and doing it twice is worse than an error.
* Devices are views (:class:`Device`) of one client: a camera, a filter wheel and a
  focuser on one server share its connection pool and its transaction numbering.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from types import TracebackType
from typing import ClassVar
from urllib.parse import urlencode

import httpx

from devices.alpaca.errors import (
    AlpacaActionNotImplementedError,
    AlpacaConnectionError,
    AlpacaError,
    AlpacaHttpError,
    AlpacaNotImplementedError,
    AlpacaProtocolError,
    AlpacaTimeoutError,
)
from devices.alpaca.imagebytes import DecodedImage, decode_imagebytes, decode_json_imagearray
from devices.alpaca.protocol import (
    IMAGEBYTES_TYPE,
    JSON_TYPE,
    AlpacaReply,
    AlpacaRequest,
    DeviceAddress,
    ParamValue,
    RequestBuilder,
    as_bool,
    as_float,
    as_int,
    as_str,
    as_str_list,
    check_status,
    media_type,
    parse_reply,
)

DEFAULT_TIMEOUT = 5.0
"""Seconds one property read or action may take (the simulator answers in ~1.4 ms)."""

DEFAULT_IMAGE_TIMEOUT = 60.0
"""Seconds one image download may take: 32 MB (4096^2 int16) at ~10 MB/s, and margin."""

DEFAULT_RETRIES = 2
RETRY_BACKOFF = 0.05
"""Seconds before the first retry of a GET; doubled for each further one."""

LIMITS = httpx.Limits(max_connections=4, max_keepalive_connections=2, keepalive_expiry=4.0)
"""One device server, often a small embedded box: a few connections at most. Idle
connections are dropped after 4 s, before servers commonly drop them (uvicorn: 5 s):
a request sent on a connection the server is closing fails with a reset, which a GET
survives by retrying but a PUT must not."""


class AlpacaClient:
    """One Alpaca server (``host:port``): its HTTP connection pool and call numbering.

    Use as ``async with AlpacaClient(host, port) as client:`` or call :meth:`aclose`.
    ``transport`` replaces the network (``httpx.MockTransport`` in tests).
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        image_timeout: float = DEFAULT_IMAGE_TIMEOUT,
        retries: int = DEFAULT_RETRIES,
        client_id: int | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if timeout <= 0 or image_timeout <= 0:
            raise ValueError("timeouts must be positive")
        if retries < 0:
            raise ValueError("retries must be >= 0")
        self.host = host
        self.port = port
        self.timeout = timeout
        self.image_timeout = image_timeout
        self.retries = retries
        self._timeout_cache: dict[float, httpx.Timeout] = {}
        self._builder = RequestBuilder() if client_id is None else RequestBuilder(client_id)
        netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.base_url = f"http://{netloc}"
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=httpx.Timeout(timeout),
            limits=LIMITS,
            transport=transport,
            follow_redirects=False,
            trust_env=False,  # an HTTP proxy from the environment must not reroute devices
        )

    @property
    def client_id(self) -> int:
        """The ClientID this client sends with every call."""
        return self._builder.client_id

    def address(self, device_type: str, number: int) -> DeviceAddress:
        """The :class:`DeviceAddress` of one device on this server."""
        return DeviceAddress(self.host, self.port, device_type, number)

    async def aclose(self) -> None:
        """Close the connection pool; calls made afterwards fail."""
        await self._http.aclose()

    async def __aenter__(self) -> AlpacaClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # --- calls ------------------------------------------------------------------------

    async def get(
        self,
        device_type: str,
        number: int,
        member: str,
        *,
        timeout: float | None = None,
        **params: ParamValue,
    ) -> object:
        """Read ``member`` of a device and return its ``Value``."""
        request = self._builder.get(self.address(device_type, number), member, params)
        return (await self.call(request, timeout=timeout)).value

    async def put(
        self,
        device_type: str,
        number: int,
        member: str,
        *,
        timeout: float | None = None,
        **params: ParamValue,
    ) -> object:
        """Act on / write ``member`` with PascalCase ``params``; the ``Value`` or None."""
        request = self._builder.put(self.address(device_type, number), member, params)
        return (await self.call(request, timeout=timeout)).value

    def build_get(
        self, address: DeviceAddress, member: str, params: Mapping[str, ParamValue] | None = None
    ) -> AlpacaRequest:
        """The next GET of ``member``, numbered; send it with :meth:`call`."""
        return self._builder.get(address, member, params)

    def build_put(
        self, address: DeviceAddress, member: str, params: Mapping[str, ParamValue] | None = None
    ) -> AlpacaRequest:
        """The next PUT of ``member``, numbered; send it with :meth:`call`."""
        return self._builder.put(address, member, params)

    async def call(self, request: AlpacaRequest, *, timeout: float | None = None) -> AlpacaReply:
        """Send a built request, check its JSON answer, return the reply."""
        wait = self.timeout if timeout is None else timeout
        status, content_type, body = await self._exchange(request, wait)
        return parse_reply(request, status, content_type, body)

    async def image(
        self,
        device_type: str,
        number: int,
        member: str = "imagearray",
        *,
        timeout: float | None = None,
    ) -> DecodedImage:
        """Download an image array: ImageBytes if the server has it, else its JSON."""
        request = self._builder.get(
            self.address(device_type, number), member, accept=f"{IMAGEBYTES_TYPE}, {JSON_TYPE}"
        )
        wait = self.image_timeout if timeout is None else timeout
        status, content_type, body = await self._exchange(request, wait)
        check_status(request, status, body)
        if media_type(content_type) == IMAGEBYTES_TYPE:
            return decode_imagebytes(
                body,
                device=request.label,
                member=request.member,
                client_transaction_id=request.client_transaction_id,
            )
        reply = parse_reply(request, status, content_type, body)  # JSON, or the type's error
        return decode_json_imagearray(reply.body, device=request.label, member=request.member)

    async def management(self, path: str, *, timeout: float | None = None) -> object:
        """GET ``/management/{path}`` and return its ``Value``."""
        request = self._builder.management(self.host, self.port, path)
        return (await self.call(request, timeout=timeout)).value

    # --- the boundary -------------------------------------------------------------------

    async def _exchange(
        self, request: AlpacaRequest, timeout: float
    ) -> tuple[int, str | None, bytes]:
        attempts = 1 + (self.retries if request.idempotent else 0)
        began = time.monotonic()
        for attempt in range(1, attempts + 1):
            try:
                return await self._attempt(request, timeout)
            except (AlpacaTimeoutError, AlpacaConnectionError) as error:
                if attempt == attempts == 1:
                    raise
                if attempt == attempts:
                    raise self._retried(error, request, timeout, attempt, began) from error
            await asyncio.sleep(RETRY_BACKOFF * 2 ** (attempt - 1))
        raise AssertionError("unreachable")

    @staticmethod
    def _retried(
        error: AlpacaTimeoutError | AlpacaConnectionError,
        request: AlpacaRequest,
        timeout: float,
        attempts: int,
        began: float,
    ) -> AlpacaError:
        """The last attempt's error, saying how many attempts and how long in all."""
        if isinstance(error, AlpacaTimeoutError):
            return AlpacaTimeoutError(
                timeout,
                device=request.label,
                member=request.member,
                attempts=attempts,
                total=time.monotonic() - began,
            )
        return AlpacaConnectionError(
            error.message, device=request.label, member=request.member, attempts=attempts
        )

    def _url(self, request: AlpacaRequest) -> httpx.URL:
        # One absolute URL, parsed once: given a relative path and params, httpx parses
        # the path, the merge with the base URL and the params merge apart, a cost
        # that showed in the profile of a property GET.
        query = f"?{urlencode(request.params)}" if request.params else ""
        return httpx.URL(f"{self.base_url}{request.path}{query}")

    def _timeouts(self, seconds: float) -> httpx.Timeout:
        timeouts = self._timeout_cache.get(seconds)
        if timeouts is None:
            timeouts = self._timeout_cache[seconds] = httpx.Timeout(seconds)
        return timeouts

    async def _attempt(
        self, request: AlpacaRequest, timeout: float
    ) -> tuple[int, str | None, bytes]:
        device, member = request.label, request.member
        try:
            async with asyncio.timeout(timeout):
                response = await self._http.request(
                    request.method,
                    self._url(request),
                    data=request.form or None,
                    headers=request.headers,
                    timeout=self._timeouts(timeout),
                )
        except (TimeoutError, httpx.TimeoutException) as exc:
            raise AlpacaTimeoutError(timeout, device=device, member=member) from exc
        except httpx.DecodingError as exc:
            raise AlpacaProtocolError(
                f"undecodable answer body ({exc})", device=device, member=member
            ) from exc
        except (httpx.TransportError, OSError) as exc:
            # ConnectError, ReadError, WriteError, RemoteProtocolError (a dropped
            # connection), ... : whatever the cause, the device is out of reach.
            reason = str(exc) or type(exc).__name__
            raise AlpacaConnectionError(
                f"{type(exc).__name__}: {reason}", device=device, member=member
            ) from exc
        except RuntimeError as exc:
            if self._http.is_closed:
                raise AlpacaConnectionError(
                    "the client is closed", device=device, member=member
                ) from exc
            raise
        return response.status_code, response.headers.get("content-type"), response.content


class Device:
    """A view of one device on an :class:`AlpacaClient`: its address and common members.

    Subclasses set ``device_type`` (``camera`` ...) and add typed members; this class
    holds what every ASCOM device has (identity, connection, ``devicestate``).
    """

    device_type: ClassVar[str] = ""

    PLATFORM7_INTERFACE: ClassVar[Mapping[str, int]] = {
        "camera": 4,
        "covercalibrator": 2,
        "dome": 3,
        "filterwheel": 3,
        "focuser": 4,
        "observingconditions": 2,
        "rotator": 4,
        "safetymonitor": 3,
        "switch": 3,
        "telescope": 4,
    }
    """The first interface version of each type with Platform 7's ``connect`` /
    ``connecting`` / ``devicestate`` (ICameraV4, IFocuserV4, IDomeV3 ...): a camera of
    interface 3 predates them, a dome of interface 3 does not."""

    def __init__(self, client: AlpacaClient, number: int = 0, device_type: str = "") -> None:
        kind = device_type or self.device_type
        if not kind:
            raise ValueError("a Device needs a device type")
        if self.device_type and device_type and device_type != self.device_type:
            raise ValueError(f"{type(self).__name__} is a {self.device_type}, not {device_type}")
        self.client = client
        self.address = client.address(kind, number)
        self._interface_version: int | None = None

    @property
    def number(self) -> int:
        return self.address.number

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.address}>"

    # --- plain calls with the device filled in ----------------------------------------

    async def get(
        self, member: str, *, timeout: float | None = None, **params: ParamValue
    ) -> object:
        return await self.client.get(
            self.address.device_type, self.address.number, member, timeout=timeout, **params
        )

    async def put(
        self, member: str, *, timeout: float | None = None, **params: ParamValue
    ) -> object:
        return await self.client.put(
            self.address.device_type, self.address.number, member, timeout=timeout, **params
        )

    async def _typed(self, member: str, **params: ParamValue) -> tuple[AlpacaRequest, object]:
        request = self.client.build_get(self.address, member, params)
        reply = await self.client.call(request)
        return request, reply.value

    async def get_bool(self, member: str, **params: ParamValue) -> bool:
        return as_bool(*await self._typed(member, **params))

    async def get_int(self, member: str, **params: ParamValue) -> int:
        return as_int(*await self._typed(member, **params))

    async def get_float(self, member: str, **params: ParamValue) -> float:
        return as_float(*await self._typed(member, **params))

    async def get_str(self, member: str, **params: ParamValue) -> str:
        return as_str(*await self._typed(member, **params))

    async def get_str_list(self, member: str, **params: ParamValue) -> list[str]:
        return as_str_list(*await self._typed(member, **params))

    # --- identity ---------------------------------------------------------------------

    async def name(self) -> str:
        return await self.get_str("name")

    async def description(self) -> str:
        return await self.get_str("description")

    async def driver_info(self) -> str:
        return await self.get_str("driverinfo")

    async def driver_version(self) -> str:
        return await self.get_str("driverversion")

    async def supported_actions(self) -> list[str]:
        return await self.get_str_list("supportedactions")

    async def interface_version(self) -> int:
        """InterfaceVersion, read once: it does not change while the server runs."""
        if self._interface_version is None:
            self._interface_version = await self.get_int("interfaceversion")
        return self._interface_version

    # --- connection ---------------------------------------------------------------------

    async def connected(self) -> bool:
        return await self.get_bool("connected")

    async def connecting(self) -> bool:
        """Platform 7: True while an asynchronous connect or disconnect is under way."""
        return await self.get_bool("connecting")

    def has_platform7(self, interface_version: int) -> bool:
        """Whether this interface version has ``connect`` / ``connecting``."""
        first = self.PLATFORM7_INTERFACE.get(self.address.device_type)
        return first is not None and interface_version >= first

    async def connect(self, *, timeout: float = 30.0, poll: float = 0.1) -> None:
        """Connect the device and return when it says it is connected.

        Platform 7 devices get ``PUT connect`` and are polled on ``connecting`` until
        it turns false (at most ``timeout`` seconds); older ones, and servers that
        answer ``connect`` with NotImplemented or HTTP 400/404, get ``PUT connected``.
        """
        version = await self._interface_version_or_one()
        if self.has_platform7(version):
            try:
                await self.put("connect")
            except (AlpacaNotImplementedError, AlpacaActionNotImplementedError):
                pass
            except AlpacaHttpError as error:
                if error.status not in (400, 404):
                    raise
            else:
                await self._wait_not_connecting(timeout, poll, "connect")
                await self._require_connected(True)
                return
        await self.put("connected", Connected=True)
        await self._require_connected(True)

    async def disconnect(self, *, timeout: float = 30.0, poll: float = 0.1) -> None:
        """The reverse of :meth:`connect`, by the same path."""
        version = await self._interface_version_or_one()
        if self.has_platform7(version):
            try:
                await self.put("disconnect")
            except (AlpacaNotImplementedError, AlpacaActionNotImplementedError):
                pass
            except AlpacaHttpError as error:
                if error.status not in (400, 404):
                    raise
            else:
                await self._wait_not_connecting(timeout, poll, "disconnect")
                return
        await self.put("connected", Connected=False)

    async def device_state(self) -> dict[str, object]:
        """Platform 7 ``devicestate``: the operational properties in one call, by name."""
        request, value = await self._typed("devicestate")
        if not isinstance(value, list):
            raise AlpacaProtocolError(
                f"devicestate Value is not a list: {value!r}"[:200],
                device=request.label,
                member=request.member,
            )
        state: dict[str, object] = {}
        for item in value:
            if not isinstance(item, dict) or not isinstance(item.get("Name"), str):
                raise AlpacaProtocolError(
                    f"devicestate item is not {{Name, Value}}: {item!r}"[:200],
                    device=request.label,
                    member=request.member,
                )
            state[item["Name"]] = item.get("Value")
        return state

    async def _interface_version_or_one(self) -> int:
        try:
            return await self.interface_version()
        except AlpacaNotImplementedError:
            return 1

    async def _wait_not_connecting(self, timeout: float, poll: float, action: str) -> None:
        deadline = time.monotonic() + timeout
        while await self.connecting():
            if time.monotonic() >= deadline:
                raise AlpacaTimeoutError(
                    timeout,
                    device=str(self.address),
                    member="connecting",
                    detail=f"still connecting after {action}",
                )
            await asyncio.sleep(poll)

    async def _require_connected(self, wanted: bool) -> None:
        if await self.connected() != wanted:
            raise AlpacaConnectionError(
                f"the device reports Connected={not wanted} after the connect call",
                device=str(self.address),
                member="connected",
            )
