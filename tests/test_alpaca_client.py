"""The httpx transport, devices, management and discovery against faults the simulator
cannot produce: a fake Alpaca server at the httpx seam (``httpx.MockTransport``),
a closed 127.0.0.1 port, and tiny UDP responders on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast
from urllib.parse import parse_qsl

import httpx
import numpy as np
import pytest

from devices.alpaca import management
from devices.alpaca.camera import AlpacaCamera, CameraState, optional
from devices.alpaca.client import AlpacaClient, Device
from devices.alpaca.discovery import DISCOVERY_MESSAGE, discover, unicast_address
from devices.alpaca.errors import (
    AlpacaCameraFailedError,
    AlpacaConnectionError,
    AlpacaDeviceError,
    AlpacaHttpError,
    AlpacaNotImplementedError,
    AlpacaProtocolError,
    AlpacaTimeoutError,
    AlpacaUnsupportedError,
    AlpacaValueNotSetError,
)
from devices.alpaca.imagebytes import encode_imagebytes
from devices.base import DeviceConnectionError, DeviceTimeoutError

Handler = Callable[[httpx.Request], Awaitable[httpx.Response] | httpx.Response]
DEVICE = "camera 0 at 127.0.0.1:11111"


def _params(request: httpx.Request) -> dict[str, str]:
    """Query parameters of a GET, form fields of a PUT."""
    if request.method == "PUT":
        return dict(parse_qsl(request.content.decode()))
    return dict(request.url.params)


def _answer(
    request: httpx.Request, value: Any = None, *, error: int = 0, message: str = ""
) -> httpx.Response:
    body: dict[str, Any] = {
        "ClientTransactionID": int(_params(request).get("ClientTransactionID", 0)),
        "ServerTransactionID": 1,
        "ErrorNumber": error,
        "ErrorMessage": message,
    }
    if value is not None:
        body["Value"] = value
    return httpx.Response(200, json=body)


class FakeServer:
    """An Alpaca server in a dict: members answer their value; ``faults`` override.

    Every request is recorded, so tests count what reached the server.
    """

    def __init__(self, values: dict[str, Any] | None = None) -> None:
        self.values: dict[str, Any] = dict(values or {})
        self.faults: dict[str, Handler] = {}
        self.puts: dict[str, dict[str, str]] = {}
        self.requests: list[httpx.Request] = []

    def member(self, request: httpx.Request) -> str:
        return request.url.path.rsplit("/", 1)[-1]

    def calls(self, member: str, method: str | None = None) -> int:
        return sum(
            1
            for r in self.requests
            if self.member(r) == member and (method is None or r.method == method)
        )

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        member = self.member(request)
        fault = self.faults.get(member)
        if fault is not None:
            result = fault(request)
            return await result if not isinstance(result, httpx.Response) else result
        if request.method == "PUT":
            self.puts[member] = _params(request)
            if member == "connected":  # the one write this fake remembers
                self.values["connected"] = self.puts[member]["Connected"] == "True"
            return _answer(request)
        if member not in self.values:
            return _answer(request, error=0x400, message=f"{member} not implemented")
        value = self.values[member]
        return _answer(request, value() if callable(value) else value)

    def client(self, **kwargs: Any) -> AlpacaClient:
        return AlpacaClient("127.0.0.1", 11111, transport=httpx.MockTransport(self), **kwargs)


async def _hang(request: httpx.Request) -> httpx.Response:
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


def _raise(exc: Exception) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    return handler


# --- requests on the wire ---------------------------------------------------------------------


async def test_requests_carry_the_path_ids_and_form_the_spec_asks_for() -> None:
    server = FakeServer({"ccdtemperature": -20.0})
    async with server.client(client_id=4242) as client:
        assert await client.get("camera", 0, "ccdtemperature") == -20.0
        await client.put("camera", 0, "startexposure", Duration=1.5, Light=True)
        assert await client.get("camera", 0, "ccdtemperature") == -20.0
    get, put, again = server.requests
    assert (get.method, get.url.path) == ("GET", "/api/v1/camera/0/ccdtemperature")
    assert dict(get.url.params) == {"ClientID": "4242", "ClientTransactionID": "1"}
    assert (put.method, put.url.path) == ("PUT", "/api/v1/camera/0/startexposure")
    assert put.headers["content-type"] == "application/x-www-form-urlencoded"
    assert _params(put) == {
        "Duration": "1.5",
        "Light": "True",
        "ClientID": "4242",
        "ClientTransactionID": "2",
    }
    assert put.url.params == httpx.QueryParams()
    assert again.url.params["ClientTransactionID"] == "3"


# --- HTTP and protocol faults ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "text"),
    [(400, "Invalid parameters: Duration"), (500, "Driver crashed: USB gone")],
)
async def test_http_errors_keep_status_and_text(status: int, text: str) -> None:
    server = FakeServer()
    server.faults["startexposure"] = lambda request: httpx.Response(status, text=text)
    async with server.client() as client:
        with pytest.raises(AlpacaHttpError) as info:
            await client.put("camera", 0, "startexposure", Duration=1.0, Light=True)
    assert (info.value.status, info.value.body) == (status, text)
    assert (info.value.device, info.value.member) == (DEVICE, "startexposure")
    assert server.calls("startexposure") == 1


async def test_a_wrong_content_type_is_a_protocol_error() -> None:
    server = FakeServer()
    server.faults["name"] = lambda request: httpx.Response(
        200, text="<html>captive portal</html>", headers={"content-type": "text/html"}
    )
    async with server.client() as client:
        with pytest.raises(AlpacaProtocolError, match="content type 'text/html'") as info:
            await client.get("camera", 0, "name")
    assert info.value.raw.startswith(b"<html>")
    assert info.value.member == "name"


async def test_a_crossed_answer_is_a_protocol_error() -> None:
    server = FakeServer()
    server.faults["name"] = lambda request: httpx.Response(
        200,
        json={"ClientTransactionID": 999, "ErrorNumber": 0, "ErrorMessage": "", "Value": "x"},
    )
    async with server.client() as client:
        with pytest.raises(AlpacaProtocolError, match="echoes ClientTransactionID 999"):
            await client.get("camera", 0, "name")


async def test_device_errors_come_typed_with_device_and_member() -> None:
    server = FakeServer()
    server.faults["binx"] = lambda request: _answer(request, error=0x402, message="Invalid bin")
    async with server.client() as client:
        with pytest.raises(AlpacaValueNotSetError) as info:
            await client.put("camera", 0, "binx", BinX=99)
    assert info.value.number == 0x402
    assert str(info.value).startswith(f"{DEVICE}: binx: ASCOM error 0x402")


# --- images -------------------------------------------------------------------------------------


async def test_an_image_comes_as_imagebytes_and_is_decoded_y_x() -> None:
    pixels = np.arange(12, dtype=np.uint16).reshape(3, 4)
    server = FakeServer()

    def imagebytes(request: httpx.Request) -> httpx.Response:
        assert request.headers["accept"].startswith("application/imagebytes")
        tid = int(request.url.params["ClientTransactionID"])
        body = encode_imagebytes(pixels, client_transaction_id=tid)
        return httpx.Response(200, content=body, headers={"content-type": "application/imagebytes"})

    server.faults["imagearray"] = imagebytes
    async with server.client() as client:
        image = await client.image("camera", 0)
    np.testing.assert_array_equal(image.pixels, pixels)


async def test_an_image_falls_back_to_json_when_the_server_answers_json() -> None:
    server = FakeServer()
    server.faults["imagearray"] = lambda request: httpx.Response(
        200,
        json={
            "Type": 2,
            "Rank": 2,
            "Value": [[1, 2, 3], [4, 5, 6]],  # [x][y]: 2 columns of 3
            "ClientTransactionID": int(request.url.params["ClientTransactionID"]),
            "ErrorNumber": 0,
            "ErrorMessage": "",
        },
    )
    async with server.client() as client:
        image = await client.image("camera", 0)
    np.testing.assert_array_equal(image.pixels, [[1, 4], [2, 5], [3, 6]])


async def test_an_image_refused_in_json_is_the_typed_error() -> None:
    server = FakeServer()
    server.faults["imagearray"] = lambda request: _answer(
        request, error=0x40D, message="No image data available"
    )
    async with server.client() as client:
        with pytest.raises(AlpacaDeviceError, match="No image data available") as info:
            await client.image("camera", 0)
    assert info.value.number == 0x40D


async def test_a_truncated_image_is_a_protocol_error() -> None:
    full = encode_imagebytes(np.zeros((100, 80), dtype=np.uint16))
    server = FakeServer()
    server.faults["imagearray"] = lambda request: httpx.Response(
        200, content=full[:-7], headers={"content-type": "application/imagebytes"}
    )
    async with server.client() as client:
        with pytest.raises(AlpacaProtocolError, match="truncated: 15993 data bytes") as info:
            await client.image("camera", 0)
    assert (info.value.device, info.value.member) == (DEVICE, "imagearray")


# --- timeouts, dropped connections, retries ------------------------------------------------------


async def test_a_hanging_put_times_out_once_naming_device_and_member() -> None:
    server = FakeServer()
    server.faults["startexposure"] = _hang
    async with server.client(timeout=0.3) as client:
        began = time.monotonic()
        with pytest.raises(AlpacaTimeoutError) as info:
            await client.put("camera", 0, "startexposure", Duration=1.0, Light=True)
        elapsed = time.monotonic() - began
    assert 0.3 <= elapsed < 0.3 + 0.25
    assert server.calls("startexposure") == 1
    assert (info.value.device, info.value.member) == (DEVICE, "startexposure")
    assert isinstance(info.value, DeviceTimeoutError)
    assert "no answer within 0.3 s" in str(info.value)


async def test_a_hanging_get_is_retried_and_says_how_long_it_waited() -> None:
    server = FakeServer()
    server.faults["camerastate"] = _hang
    async with server.client(timeout=0.2, retries=2) as client:
        began = time.monotonic()
        with pytest.raises(AlpacaTimeoutError) as info:
            await client.get("camera", 0, "camerastate")
        elapsed = time.monotonic() - began
    assert server.calls("camerastate") == 3
    assert info.value.attempts == 3
    assert 0.6 <= elapsed < 0.6 + 0.15 + 0.3  # three attempts, 0.05 + 0.1 s of backoff
    assert info.value.total == pytest.approx(elapsed, abs=0.05)
    assert "over 3 attempts" in str(info.value)


async def test_a_per_call_timeout_overrides_the_client_default() -> None:
    server = FakeServer()
    server.faults["startexposure"] = _hang
    async with server.client(timeout=30) as client:
        began = time.monotonic()
        with pytest.raises(AlpacaTimeoutError):
            await client.put("camera", 0, "startexposure", timeout=0.1, Duration=1.0, Light=True)
    assert time.monotonic() - began < 0.5


@pytest.mark.parametrize(
    "exc",
    [
        httpx.RemoteProtocolError("Server disconnected without sending a response."),
        httpx.ReadError("Connection reset by peer"),
        httpx.ConnectError("All connection attempts failed"),
    ],
)
async def test_a_dropped_get_is_retried_and_then_reported(exc: Exception) -> None:
    server = FakeServer()
    server.faults["ccdtemperature"] = _raise(exc)
    async with server.client(retries=2) as client:
        with pytest.raises(AlpacaConnectionError) as info:
            await client.get("camera", 0, "ccdtemperature")
    assert server.calls("ccdtemperature") == 3
    assert info.value.attempts == 3
    assert type(exc).__name__ in str(info.value)
    assert (info.value.device, info.value.member) == (DEVICE, "ccdtemperature")
    assert isinstance(info.value, DeviceConnectionError)


async def test_a_get_that_drops_once_succeeds_on_the_retry() -> None:
    server = FakeServer({"ccdtemperature": -19.5})
    dropped = False

    def once(request: httpx.Request) -> httpx.Response:
        nonlocal dropped
        if not dropped:
            dropped = True
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.")
        return _answer(request, -19.5)

    server.faults["ccdtemperature"] = once
    async with server.client() as client:
        assert await client.get("camera", 0, "ccdtemperature") == -19.5
    assert server.calls("ccdtemperature") == 2
    ids = [r.url.params["ClientTransactionID"] for r in server.requests]
    assert ids == ["1", "1"]  # one call, sent twice: the retry is the same transaction


@pytest.mark.parametrize(
    "exc",
    [
        httpx.RemoteProtocolError("Server disconnected without sending a response."),
        httpx.ReadError("Connection reset by peer"),
    ],
)
async def test_a_dropped_put_is_never_retried(exc: Exception) -> None:
    server = FakeServer()
    server.faults["startexposure"] = _raise(exc)
    async with server.client(retries=5) as client:
        with pytest.raises(AlpacaConnectionError) as info:
            await client.put("camera", 0, "startexposure", Duration=1.0, Light=True)
    assert server.calls("startexposure") == 1
    assert info.value.attempts == 1
    assert isinstance(info.value.__cause__, type(exc))  # the backend's error stays attached


async def test_a_closed_port_is_a_connection_error_naming_the_device() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, never listening: connections are refused
        async with AlpacaClient("127.0.0.1", port, timeout=2, retries=1) as client:
            with pytest.raises(AlpacaConnectionError) as info:
                await client.get("camera", 0, "name")
    assert info.value.device == f"camera 0 at 127.0.0.1:{port}"
    assert info.value.attempts == 2


async def test_a_closed_client_refuses_calls_with_a_connection_error() -> None:
    server = FakeServer({"name": "cam"})
    client = server.client()
    await client.aclose()
    with pytest.raises(AlpacaConnectionError, match="closed"):
        await client.get("camera", 0, "name")


# --- connecting -----------------------------------------------------------------------------------


async def test_platform7_devices_connect_and_are_polled_until_connected() -> None:
    connecting = iter([True, True, False])
    server = FakeServer(
        {"interfaceversion": 4, "connecting": lambda: next(connecting), "connected": True}
    )
    async with server.client() as client:
        await AlpacaCamera(client).connect(poll=0.01)
    assert server.calls("connect", "PUT") == 1
    assert server.calls("connecting") == 3
    assert server.calls("connected", "PUT") == 0


async def test_older_interfaces_use_put_connected() -> None:
    server = FakeServer({"interfaceversion": 3, "connected": True})
    async with server.client() as client:
        await AlpacaCamera(client).connect()
    assert server.calls("connect") == 0
    assert server.puts["connected"]["Connected"] == "True"


async def test_platform7_is_per_device_type() -> None:
    # IDomeV3 has connect; ICameraV3 does not.
    server = FakeServer({"interfaceversion": 3, "connecting": False, "connected": True})
    async with server.client() as client:
        await Device(client, 0, "dome").connect()
        await AlpacaCamera(client).connect()
    assert server.calls("connect", "PUT") == 1
    assert server.calls("connected", "PUT") == 1


@pytest.mark.parametrize(
    "refusal",
    [
        lambda request: httpx.Response(400, text="Device or method not found"),
        lambda request: _answer(request, error=0x400, message="connect not implemented"),
    ],
)
async def test_a_refused_connect_falls_back_to_put_connected(refusal: Handler) -> None:
    server = FakeServer({"interfaceversion": 4, "connected": True})
    server.faults["connect"] = refusal
    async with server.client() as client:
        await AlpacaCamera(client).connect()
    assert server.calls("connect", "PUT") == 1
    assert server.calls("connected", "PUT") == 1


async def test_a_device_stuck_connecting_times_out() -> None:
    server = FakeServer({"interfaceversion": 4, "connecting": True, "connected": False})
    async with server.client() as client:
        began = time.monotonic()
        with pytest.raises(AlpacaTimeoutError) as info:
            await AlpacaCamera(client).connect(timeout=0.2, poll=0.02)
    assert time.monotonic() - began < 0.5
    assert info.value.member == "connecting"
    assert info.value.device == DEVICE


async def test_a_device_that_stays_disconnected_is_a_connection_error() -> None:
    server = FakeServer({"interfaceversion": 3, "connected": False})
    server.faults["connected"] = lambda request: (
        _answer(request) if request.method == "PUT" else _answer(request, False)
    )
    async with server.client() as client:
        with pytest.raises(AlpacaConnectionError, match="Connected=False"):
            await AlpacaCamera(client).connect()


async def test_devicestate_becomes_a_dict() -> None:
    server = FakeServer(
        {
            "devicestate": [
                {"Name": "CCDTemperature", "Value": -10.0},
                {"Name": "ImageReady", "Value": True},
            ]
        }
    )
    async with server.client() as client:
        assert await AlpacaCamera(client).device_state() == {
            "CCDTemperature": -10.0,
            "ImageReady": True,
        }


# --- the camera view with a fake camera -------------------------------------------------------

CAMERA_VALUES: dict[str, Any] = {
    "cameraxsize": 640,
    "cameraysize": 480,
    "pixelsizex": 5.4,
    "pixelsizey": 5.4,
    "maxbinx": 4,
    "maxbiny": 2,
    "canasymmetricbin": False,
    "canabortexposure": True,
    "canstopexposure": False,
    "hasshutter": False,
    "cansetccdtemperature": False,
    "cangetcoolerpower": False,
    "canfastreadout": False,
    "canpulseguide": False,
    "exposuremin": 0.001,
    "exposuremax": 900.0,
    "exposureresolution": 0.0,
    "maxadu": 4095,
    "gainmin": 0,
    "gainmax": 400,
    "readoutmodes": ["Default"],
    "camerastate": 0,
    "ccdtemperature": 21.5,
    "gain": 120,
    "readoutmode": 0,
    "binx": 1,
    "biny": 1,
    "startx": 0,
    "starty": 0,
    "numx": 640,
    "numy": 480,
    "cooleron": False,
}


async def test_capabilities_are_read_once_and_absent_features_are_none() -> None:
    server = FakeServer(CAMERA_VALUES)
    async with server.client() as client:
        camera = AlpacaCamera(client)
        caps = await camera.capabilities()
        again = await camera.capabilities()
    assert again is caps
    assert server.calls("maxbinx") == 1
    assert (caps.sensor_x, caps.sensor_y, caps.max_bin_x, caps.max_bin_y) == (640, 480, 4, 2)
    assert caps.gains is None
    assert caps.gain_range == (0, 400)
    assert caps.offsets is None
    assert caps.offset_range is None
    assert caps.sensor_name is None
    assert caps.electrons_per_adu is None
    assert caps.allows_binning(2, 2)
    assert not caps.allows_binning(2, 1)  # no asymmetric binning
    assert not caps.allows_binning(4, 4)  # MaxBinY is 2
    assert caps.allows_exposure(0.5)
    assert not caps.allows_exposure(1000)


async def test_telemetry_leaves_out_what_the_camera_lacks() -> None:
    server = FakeServer(CAMERA_VALUES)
    async with server.client() as client:
        telemetry = await AlpacaCamera(client).telemetry()
    assert telemetry["ccd_temperature_c"] == 21.5
    assert telemetry["gain"] == 120
    assert "gain_name" not in telemetry
    assert telemetry["readout_mode_name"] == "Default"
    assert telemetry["camera_state"] == "IDLE"
    for absent in ("cooler_power_pct", "ccd_setpoint_c", "offset", "heat_sink_temperature_c"):
        assert absent not in telemetry
    assert server.calls("coolerpower") == 0  # CanGetCoolerPower is false: not even asked


async def test_a_real_error_in_telemetry_is_not_swallowed() -> None:
    server = FakeServer(CAMERA_VALUES)
    server.faults["ccdtemperature"] = lambda request: _answer(request, error=0x500, message="bus")
    async with server.client() as client:
        with pytest.raises(AlpacaDeviceError, match="bus"):
            await AlpacaCamera(client).telemetry()


async def test_optional_is_none_only_for_absent_members() -> None:
    server = FakeServer()
    server.faults["offsets"] = lambda request: httpx.Response(404, json={"detail": "Not Found"})
    server.faults["gains"] = lambda request: httpx.Response(500, text="boom")
    async with server.client() as client:
        camera = AlpacaCamera(client)
        assert await optional(camera.offsets()) is None
        assert await optional(camera.sensor_name()) is None  # 0x400 from the fake
        with pytest.raises(AlpacaHttpError, match="boom"):
            await optional(camera.gains())


async def test_waiting_for_an_image_stops_on_camera_error() -> None:
    server = FakeServer({**CAMERA_VALUES, "imageready": False, "camerastate": 5})
    async with server.client() as client:
        with pytest.raises(AlpacaCameraFailedError, match="CameraState Error") as info:
            await AlpacaCamera(client).wait_image_ready(timeout=5)
    assert info.value.member == "camerastate"


async def test_waiting_for_an_image_times_out() -> None:
    server = FakeServer({**CAMERA_VALUES, "imageready": False, "camerastate": 2})
    async with server.client() as client:
        camera = AlpacaCamera(client)
        assert await camera.camera_state() == CameraState.EXPOSING
        began = time.monotonic()
        with pytest.raises(AlpacaTimeoutError, match="did not become ready"):
            await camera.wait_image_ready(timeout=0.15, poll=0.01)
    assert time.monotonic() - began < 0.5


async def test_negative_exposures_are_refused_before_sending() -> None:
    server = FakeServer(CAMERA_VALUES)
    async with server.client() as client:
        with pytest.raises(ValueError, match=">= 0"):
            await AlpacaCamera(client).start_exposure(-1.0)
    assert server.requests == []


# --- management (bodies from the Alpaca management API reference) --------------------------------


async def test_management_reads_versions_description_and_devices() -> None:
    def route(request: httpx.Request) -> httpx.Response:
        values: dict[str, Any] = {
            "/management/apiversions": [1],
            "/management/v1/description": {
                "ServerName": "Observatory Box",
                "Manufacturer": "ACME",
                "ManufacturerVersion": "2.1",
                "Location": "Dome A",
            },
            "/management/v1/configureddevices": [
                {
                    "DeviceName": "Main camera",
                    "DeviceType": "Camera",
                    "DeviceNumber": 0,
                    "UniqueID": "2e1b3d4c",
                },
                {
                    "DeviceName": "Wheel",
                    "DeviceType": "FilterWheel",
                    "DeviceNumber": 1,
                    "UniqueID": "x",
                },
            ],
        }
        assert "ClientTransactionID" in request.url.params
        return _answer(request, values[request.url.path])

    async with AlpacaClient("127.0.0.1", 11111, transport=httpx.MockTransport(route)) as client:
        assert await management.api_versions(client) == [1]
        described = await management.description(client)
        devices = await management.configured_devices(client)
    assert described.server_name == "Observatory Box"
    assert described.location == "Dome A"
    assert [(d.device_type, d.number, d.name) for d in devices] == [
        ("camera", 0, "Main camera"),
        ("filterwheel", 1, "Wheel"),
    ]


@pytest.mark.parametrize("status", [400, 404])
async def test_a_server_without_management_is_unsupported(status: int) -> None:
    # alpaca-simulators 1.3.2 answers 404 {"detail":"Not Found"}; the doc recorded 400.
    transport = httpx.MockTransport(
        lambda request: httpx.Response(status, json={"detail": "Not Found"})
    )
    async with AlpacaClient("127.0.0.1", 11111, transport=transport) as client:
        with pytest.raises(AlpacaUnsupportedError, match="no management API") as info:
            await management.configured_devices(client)
    assert info.value.device == "Alpaca server at 127.0.0.1:11111"
    assert info.value.member == "v1/configureddevices"


async def test_a_broken_management_answer_is_a_protocol_error() -> None:
    transport = httpx.MockTransport(lambda request: _answer(request, [{"DeviceName": "x"}]))
    async with AlpacaClient("127.0.0.1", 11111, transport=transport) as client:
        with pytest.raises(AlpacaProtocolError, match="lacks a field"):
            await management.configured_devices(client)


# --- discovery: unicast to 127.0.0.1 only ---------------------------------------------------------


class _Responder(asyncio.DatagramProtocol):
    def __init__(self, reply: bytes | None) -> None:
        self.reply = reply
        self.received: list[bytes] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.received.append(data)
        if self.reply is not None and self.transport is not None:
            self.transport.sendto(self.reply, addr)


@pytest.fixture
async def responder() -> AsyncIterator[Callable[[bytes | None], Awaitable[tuple[int, _Responder]]]]:
    transports: list[asyncio.DatagramTransport] = []

    async def start(reply: bytes | None) -> tuple[int, _Responder]:
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.create_datagram_endpoint(
            lambda: _Responder(reply), local_addr=("127.0.0.1", 0)
        )
        transports.append(transport)
        return int(transport.get_extra_info("sockname")[1]), protocol

    yield start
    for transport in transports:
        transport.close()


async def test_discovery_asks_one_host_and_reads_its_port(
    responder: Callable[[bytes | None], Awaitable[tuple[int, _Responder]]],
) -> None:
    port, server = await responder(json.dumps({"AlpacaPort": 11111}).encode())
    found = await discover("127.0.0.1", port, timeout=2)
    assert (found.host, found.alpaca_port) == ("127.0.0.1", 11111)
    assert server.received == [DISCOVERY_MESSAGE]


async def test_discovery_without_an_answer_times_out(
    responder: Callable[[bytes | None], Awaitable[tuple[int, _Responder]]],
) -> None:
    port, server = await responder(None)
    with pytest.raises(AlpacaTimeoutError) as info:
        await discover("127.0.0.1", port, timeout=0.2)
    assert info.value.device == f"Alpaca discovery at 127.0.0.1:{port}"
    assert server.received == [DISCOVERY_MESSAGE]


async def test_discovery_to_a_closed_port_is_refused_at_once() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    began = time.monotonic()
    with pytest.raises(AlpacaConnectionError, match="refused"):
        await discover("127.0.0.1", port, timeout=2)
    assert time.monotonic() - began < 1  # ICMP port unreachable, not the timeout


@pytest.mark.parametrize(
    "reply", [b"hello", b'{"Port": 1}', b'{"AlpacaPort": "11111"}', b'{"AlpacaPort": 0}']
)
async def test_a_bad_discovery_answer_is_a_protocol_error(
    responder: Callable[[bytes | None], Awaitable[tuple[int, _Responder]]], reply: bytes
) -> None:
    port, _ = await responder(reply)
    with pytest.raises(AlpacaProtocolError, match="AlpacaPort"):
        await discover("127.0.0.1", port, timeout=2)


@pytest.mark.parametrize(
    ("host", "match"),
    [
        ("255.255.255.255", "broadcast"),
        ("192.168.1.255", "broadcast"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("localhost", "literal IP address"),
        ("camera.local", "literal IP address"),
        ("127.0.0.1/8", "literal IP address"),
    ],
)
async def test_discovery_refuses_anything_but_one_unicast_address(host: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        await discover(host, timeout=0.1)


def test_unicast_addresses_pass() -> None:
    assert str(unicast_address("127.0.0.1")) == "127.0.0.1"
    assert str(unicast_address("::1")) == "::1"
    assert str(unicast_address("10.0.0.254")) == "10.0.0.254"


async def test_errors_from_the_device_are_not_mistaken_for_absence() -> None:
    server = FakeServer()
    async with server.client() as client:
        with pytest.raises(AlpacaNotImplementedError):
            await AlpacaCamera(client).sensor_name()
