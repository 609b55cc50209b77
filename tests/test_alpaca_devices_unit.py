"""The device views' own logic, without a server: name lookup, range and capability
refusals (nothing sent), enum decoding, waits that poll through motion, time out or
stop on a fault, and sensors a weather station lacks.

The fake server is tests/test_alpaca_client.py's ``FakeServer`` (an Alpaca server in a
dict, at the httpx seam, recording every request), so "refused before sending" is
checked by counting what reached it.
"""

from __future__ import annotations

import math
import pickle
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest

from devices.alpaca.checks import (
    AlpacaCapabilityError,
    AlpacaDeviceFaultError,
    AlpacaValueError,
    check_range,
)
from devices.alpaca.covercalibrator import (
    AlpacaCoverCalibrator,
    CalibratorState,
    CoverState,
)
from devices.alpaca.dome import AlpacaDome, ShutterState
from devices.alpaca.errors import (
    AlpacaDriverError,
    AlpacaNotConnectedError,
    AlpacaProtocolError,
    AlpacaTimeoutError,
)
from devices.alpaca.filterwheel import AlpacaFilterWheel, filter_position
from devices.alpaca.focuser import AlpacaFocuser
from devices.alpaca.observingconditions import AlpacaObservingConditions, Sensor, sensor_named
from devices.alpaca.rotator import AlpacaRotator
from devices.alpaca.safetymonitor import AlpacaSafetyMonitor
from devices.alpaca.switch import AlpacaSwitch, SwitchInfo, check_switch_value
from devices.alpaca.telescope import (
    AlpacaTelescope,
    DriveRate,
    PierSide,
    check_equatorial,
    check_horizontal,
)
from devices.alpaca.waits import wait_for
from devices.base import DeviceStateError, DeviceTimeoutError, DeviceUnsupportedError
from tests.test_alpaca_client import FakeServer

WHERE = "filterwheel 0 at 127.0.0.1:11111"


def _reply(
    request: httpx.Request, value: Any = None, *, error: int = 0, message: str = ""
) -> httpx.Response:
    """An Alpaca answer echoing the request's transaction."""
    params = (
        dict(parse_qsl(request.content.decode()))
        if request.method == "PUT"
        else dict(request.url.params)
    )
    body: dict[str, Any] = {
        "ClientTransactionID": int(params.get("ClientTransactionID", 0)),
        "ServerTransactionID": 1,
        "ErrorNumber": error,
        "ErrorMessage": message,
    }
    if value is not None:
        body["Value"] = value
    return httpx.Response(200, json=body)


def _refuse(number: int, message: str) -> Callable[[httpx.Request], httpx.Response]:
    return lambda request: _reply(request, error=number, message=message)


def _sequence(*values: Any) -> Callable[[], Any]:
    """A property that answers these values in turn, then the last one for ever."""
    remaining = list(values)

    def next_value() -> Any:
        return remaining.pop(0) if len(remaining) > 1 else remaining[0]

    return next_value


def _puts(server: FakeServer) -> list[str]:
    return [server.member(r) for r in server.requests if r.method == "PUT"]


# --- checks and waits ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "high_open", "ok"),
    [
        (0.0, True, True),
        (359.99, True, True),
        (360.0, True, False),
        (360.0, False, True),
        (-0.001, True, False),
        (math.nan, False, False),
        (math.inf, False, False),
    ],
)
def test_check_range_is_inclusive_below_and_open_above_when_asked(
    value: float, high_open: bool, ok: bool
) -> None:
    def check() -> float:
        return check_range(value, 0, 360, "Azimuth", device=WHERE, member="m", high_open=high_open)

    if ok:
        assert check() == value
    else:
        with pytest.raises(AlpacaValueError) as info:
            check()
        assert info.value.field == "Azimuth"
        assert isinstance(info.value, ValueError)


def test_refusals_pickle_with_their_fields() -> None:
    error = AlpacaValueError("Position", 7, "the device takes 0..4", device=WHERE, member="x")
    again = pickle.loads(pickle.dumps(error))
    assert (again.field, again.value, again.allowed, again.device) == (
        "Position",
        7,
        "the device takes 0..4",
        WHERE,
    )
    assert str(again) == str(error)
    assert isinstance(AlpacaCapabilityError("CanPark"), DeviceUnsupportedError)
    assert isinstance(AlpacaDeviceFaultError("jammed"), DeviceStateError)


async def test_a_wait_refuses_a_nonsense_timeout() -> None:
    async def read() -> bool:
        return True

    with pytest.raises(ValueError, match="positive"):
        await wait_for(read, bool, timeout=0, device="d", member="m", waiting_for="x")


# --- filter wheel -------------------------------------------------------------------------------

WHEEL = {"names": ["Red", "red", "Green", " Blue "], "focusoffsets": [0, 5, -20, 40], "position": 0}


@pytest.mark.parametrize(
    ("wanted", "slot"), [("Red", 0), ("red", 1), ("Green", 2), ("green", 2), ("blue", 3)]
)
def test_a_filter_is_found_exactly_or_by_a_unique_loose_match(wanted: str, slot: int) -> None:
    assert filter_position(WHEEL["names"], wanted) == slot


@pytest.mark.parametrize(("wanted", "why"), [("RED", "ambiguous"), ("Ha", "not in the wheel")])
def test_an_unknown_or_ambiguous_filter_is_refused_listing_the_names(wanted: str, why: str) -> None:
    with pytest.raises(AlpacaValueError, match=why) as info:
        filter_position(WHEEL["names"], wanted, device=WHERE)
    assert info.value.allowed.endswith("'Red', 'red', 'Green', ' Blue '")
    assert info.value.device == WHERE


async def test_an_unknown_filter_sends_nothing() -> None:
    server = FakeServer(WHEEL)
    async with server.client() as client:
        wheel = AlpacaFilterWheel(client)
        with pytest.raises(AlpacaValueError, match="Halpha"):
            await wheel.move_to_name("Halpha")
        with pytest.raises(AlpacaValueError, match=r"0\.\.3 \(4 filters\)"):
            await wheel.move_to(4)
    assert _puts(server) == []


async def test_the_wheel_is_polled_through_minus_one_until_it_stops() -> None:
    server = FakeServer({**WHEEL, "position": _sequence(-1, -1, 2)})
    async with server.client() as client:
        wheel = AlpacaFilterWheel(client)
        assert await wheel.move_to_name("Green") == 2
        assert await wheel.wait_until_stopped(timeout=5, poll=0.01) == 2
    assert server.puts["position"]["Position"] == "2"
    assert server.calls("position", "GET") == 3


async def test_a_wheel_that_never_stops_times_out_saying_what_it_waited_for() -> None:
    server = FakeServer({**WHEEL, "position": -1})
    async with server.client() as client:
        with pytest.raises(AlpacaTimeoutError) as info:
            await AlpacaFilterWheel(client).wait_until_stopped(timeout=0.1, poll=0.02)
    error = info.value
    assert isinstance(error, DeviceTimeoutError)
    assert (error.device, error.member) == (WHERE, "position")
    assert "the wheel to stop" in str(error)
    assert "position was last -1" in str(error)


async def test_a_wheel_that_stops_at_the_wrong_slot_is_a_fault() -> None:
    server = FakeServer({**WHEEL, "position": 1})
    async with server.client() as client:
        with pytest.raises(AlpacaDeviceFaultError, match=r"sent to slot 2 .* stopped at slot 1"):
            await AlpacaFilterWheel(client).select("Green", timeout=1)


async def test_offsets_that_do_not_match_the_names_are_a_protocol_error() -> None:
    server = FakeServer({**WHEEL, "focusoffsets": [0, 0]})
    async with server.client() as client:
        with pytest.raises(AlpacaProtocolError, match="4 Names but 2 FocusOffsets"):
            await AlpacaFilterWheel(client).slots()


async def test_filter_telemetry_has_no_name_while_moving() -> None:
    server = FakeServer({**WHEEL, "position": _sequence(-1, 3)})
    async with server.client() as client:
        wheel = AlpacaFilterWheel(client)
        assert await wheel.telemetry() == {"filter_position": -1}
        assert await wheel.telemetry() == {
            "filter_position": 3,
            "filter_name": " Blue ",
            "filter_focus_offset": 40,
        }


# --- focuser ------------------------------------------------------------------------------------

FOCUSER = {
    "absolute": True,
    "maxstep": 50000,
    "maxincrement": 5000,
    "tempcompavailable": False,
    "position": 20000,
    "ismoving": False,
}


async def test_an_absolute_focuser_refuses_positions_beyond_its_travel() -> None:
    server = FakeServer(FOCUSER)
    async with server.client() as client:
        focuser = AlpacaFocuser(client)
        for bad in (-1, 50001):
            with pytest.raises(AlpacaValueError, match=r"0\.\.50000") as info:
                await focuser.move(bad)
            assert info.value.field == "Position"
        with pytest.raises(AlpacaValueError, match="MaxIncrement"):
            await focuser.move_by(5001)
        assert _puts(server) == []
        await focuser.move(50000)
        await focuser.move_by(-5000)  # from the reported 20000
    assert [r.content.decode().split("&")[0] for r in server.requests if r.method == "PUT"] == [
        "Position=50000",
        "Position=15000",
    ]


async def test_a_relative_focuser_moves_by_steps_only() -> None:
    server = FakeServer({**FOCUSER, "absolute": False})
    del server.values["position"]
    async with server.client() as client:
        focuser = AlpacaFocuser(client)
        with pytest.raises(AlpacaCapabilityError, match="Absolute = False"):
            await focuser.move(100)
        await focuser.move_by(-300)
        telemetry = await focuser.telemetry()
    assert server.puts["move"]["Position"] == "-300"
    assert server.calls("move", "PUT") == 1
    assert telemetry == {"focus_moving": False}  # no position, temperature, compensation


async def test_temperature_compensation_is_refused_where_unavailable() -> None:
    server = FakeServer(FOCUSER)
    async with server.client() as client:
        focuser = AlpacaFocuser(client)
        with pytest.raises(AlpacaCapabilityError, match="TempCompAvailable"):
            await focuser.set_temp_comp(True)
        await focuser.set_temp_comp(False)  # switching it off is always allowed
    assert _puts(server) == ["tempcomp"]


async def test_a_focuser_that_keeps_moving_times_out() -> None:
    server = FakeServer({**FOCUSER, "ismoving": True})
    async with server.client() as client:
        began = time.monotonic()
        with pytest.raises(AlpacaTimeoutError, match="the focuser to stop") as info:
            await AlpacaFocuser(client).wait_until_stopped(timeout=0.1, poll=0.02)
    assert time.monotonic() - began < 0.5
    assert info.value.member == "ismoving"


# --- telescope ----------------------------------------------------------------------------------

CAN = [
    "canslew",
    "canslewasync",
    "canslewaltaz",
    "canslewaltazasync",
    "cansync",
    "cansyncaltaz",
    "canpark",
    "canunpark",
    "cansetpark",
    "canfindhome",
    "cansettracking",
    "canpulseguide",
    "cansetguiderates",
    "cansetrightascensionrate",
    "cansetdeclinationrate",
    "cansetpierside",
]
MOUNT: dict[str, Any] = {
    **dict.fromkeys(CAN, True),
    "alignmentmode": 2,
    "equatorialsystem": 2,
    "trackingrates": [0, 1],
    "rightascension": 5.5,
    "declination": -20.0,
    "altitude": 40.0,
    "azimuth": 200.0,
    "tracking": True,
    "trackingrate": 0,
    "sideofpier": 1,
    "siderealtime": 3.25,
    "slewing": False,
    "atpark": False,
}


@pytest.mark.parametrize(
    ("ra", "dec", "field"),
    [
        (24.0, 0.0, "RightAscension"),
        (-0.01, 0.0, "RightAscension"),
        (12.0, 90.01, "Declination"),
        (12.0, -90.5, "Declination"),
        (math.nan, 0.0, "RightAscension"),
        (0.0, math.inf, "Declination"),
    ],
)
def test_equatorial_targets_off_the_sphere_are_refused(ra: float, dec: float, field: str) -> None:
    with pytest.raises(AlpacaValueError) as info:
        check_equatorial(ra, dec, device="telescope 0", member="slewtocoordinatesasync")
    assert info.value.field == field


@pytest.mark.parametrize(
    ("az", "alt", "field"),
    [
        (360.0, 45.0, "Azimuth"),
        (-1.0, 45.0, "Azimuth"),
        (10.0, -0.5, "Altitude"),
        (10.0, 90.5, "Altitude"),
    ],
)
def test_horizontal_targets_below_the_horizon_are_refused(
    az: float, alt: float, field: str
) -> None:
    with pytest.raises(AlpacaValueError) as info:
        check_horizontal(az, alt, device="telescope 0", member="slewtoaltazasync")
    assert info.value.field == field


def test_edges_of_the_sky_are_accepted() -> None:
    check_equatorial(0.0, -90.0, device="t", member="m")
    check_equatorial(23.9999, 90.0, device="t", member="m")
    check_horizontal(359.9, 0.0, device="t", member="m")
    check_horizontal(0.0, 90.0, device="t", member="m")


async def test_slews_the_mount_cannot_make_send_nothing() -> None:
    server = FakeServer({**MOUNT, "canslewasync": False, "canpark": False})
    async with server.client() as client:
        mount = AlpacaTelescope(client)
        with pytest.raises(AlpacaValueError, match="Declination=95"):
            await mount.slew_to_coordinates(1.0, 95.0)
        with pytest.raises(AlpacaCapabilityError, match="CanSlewAsync = False") as info:
            await mount.slew_to_coordinates(1.0, 45.0)
        assert info.value.member == "slewtocoordinatesasync"
        with pytest.raises(AlpacaCapabilityError, match="CanPark"):
            await mount.park()
        with pytest.raises(AlpacaValueError, match="the mount offers SIDEREAL, LUNAR"):
            await mount.set_tracking_rate(DriveRate.KING)
        await mount.slew_to_altaz(180.0, 30.0)
    assert _puts(server) == ["slewtoaltazasync"]
    assert server.puts["slewtoaltazasync"]["Azimuth"] == "180.0"


async def test_mount_enums_are_decoded_and_unknown_codes_kept() -> None:
    server = FakeServer({**MOUNT, "sideofpier": _sequence(-1, 0, 7), "trackingrates": [0, 9]})
    async with server.client() as client:
        mount = AlpacaTelescope(client)
        assert await mount.side_of_pier() is PierSide.UNKNOWN
        assert await mount.side_of_pier() is PierSide.EAST
        assert await mount.side_of_pier() == 7
        caps = await mount.capabilities()
    assert caps.tracking_rates == (DriveRate.SIDEREAL, 9)
    assert caps.alignment_mode is not None
    assert caps.alignment_mode.name == "GERMAN_POLAR"  # type: ignore[union-attr]


async def test_mount_telemetry_names_its_states() -> None:
    server = FakeServer(MOUNT)
    async with server.client() as client:
        telemetry = await AlpacaTelescope(client).telemetry()
    assert telemetry == {
        "ra_hours": 5.5,
        "dec_deg": -20.0,
        "alt_deg": 40.0,
        "az_deg": 200.0,
        "tracking": True,
        "tracking_rate": "SIDEREAL",
        "pier_side": "WEST",
        "sidereal_time_hours": 3.25,
        "slewing": False,
        "at_park": False,
    }


async def test_parking_is_awaited_on_at_park() -> None:
    server = FakeServer({**MOUNT, "atpark": _sequence(False, False, True)})
    async with server.client() as client:
        mount = AlpacaTelescope(client)
        await mount.park()
        await mount.wait_parked(timeout=5, poll=0.01)
    assert server.calls("park", "PUT") == 1
    assert server.calls("atpark", "GET") == 3


# --- dome ---------------------------------------------------------------------------------------

DOME_CAN = [
    "canfindhome",
    "canpark",
    "cansetaltitude",
    "cansetazimuth",
    "cansetpark",
    "cansetshutter",
    "canslave",
    "cansyncazimuth",
]
DOME: dict[str, Any] = {**dict.fromkeys(DOME_CAN, True), "shutterstatus": 1, "slewing": False}


async def test_the_shutter_is_polled_until_open() -> None:
    server = FakeServer({**DOME, "shutterstatus": _sequence(1, 2, 2, 0)})
    async with server.client() as client:
        dome = AlpacaDome(client)
        await dome.open_shutter()
        await dome.wait_shutter(ShutterState.OPEN, timeout=5, poll=0.01)
    assert server.calls("shutterstatus") == 4


async def test_a_shutter_in_error_ends_the_wait_at_once() -> None:
    server = FakeServer({**DOME, "shutterstatus": _sequence(3, 4)})
    async with server.client() as client:
        began = time.monotonic()
        with pytest.raises(AlpacaDeviceFaultError, match="shutter reports Error") as info:
            await AlpacaDome(client).wait_shutter(ShutterState.CLOSED, timeout=30, poll=0.01)
    assert time.monotonic() - began < 1
    assert info.value.member == "shutterstatus"


async def test_a_stuck_shutter_times_out_showing_its_last_state() -> None:
    server = FakeServer({**DOME, "shutterstatus": 3})
    async with server.client() as client:
        with pytest.raises(AlpacaTimeoutError, match="shutterstatus was last CLOSING"):
            await AlpacaDome(client).wait_shutter(ShutterState.CLOSED, timeout=0.1, poll=0.02)


async def test_dome_moves_it_cannot_make_send_nothing() -> None:
    server = FakeServer({**DOME, "cansetshutter": False, "canslave": False, "shutterstatus": 9})
    async with server.client() as client:
        dome = AlpacaDome(client)
        with pytest.raises(AlpacaValueError, match=r"\[0, 360\) deg"):
            await dome.slew_to_azimuth(360.0)
        with pytest.raises(AlpacaCapabilityError, match="CanSetShutter"):
            await dome.open_shutter()
        with pytest.raises(AlpacaCapabilityError, match="CanSlave"):
            await dome.set_slaved(True)
        assert await dome.shutter_status() == 9  # an unknown state is kept, not guessed
        await dome.set_slaved(False)
    assert _puts(server) == ["slaved"]


# --- rotator ------------------------------------------------------------------------------------


async def test_rotator_angles_off_the_circle_send_nothing() -> None:
    server = FakeServer({"canreverse": False, "stepsize": 0.5, "ismoving": False})
    async with server.client() as client:
        rotator = AlpacaRotator(client)
        with pytest.raises(AlpacaValueError, match=r"Position=360\.0"):
            await rotator.move_absolute(360.0)
        with pytest.raises(AlpacaValueError):
            await rotator.move_mechanical(-0.1)
        with pytest.raises(AlpacaValueError, match="finite"):
            await rotator.move(math.nan)
        with pytest.raises(AlpacaCapabilityError, match="CanReverse"):
            await rotator.set_reverse(True)
        await rotator.move(-30.0)  # relative moves may be negative
    assert _puts(server) == ["move"]
    assert server.puts["move"]["Position"] == "-30.0"


# --- safety monitor -----------------------------------------------------------------------------


@pytest.mark.parametrize("answer", ["true", 1, None])
async def test_a_monitor_that_does_not_answer_a_boolean_is_never_safe(answer: Any) -> None:
    server = FakeServer()
    server.faults["issafe"] = lambda request: _reply(request, answer)
    async with server.client() as client:
        with pytest.raises(AlpacaProtocolError):
            await AlpacaSafetyMonitor(client).is_safe()


async def test_a_monitor_error_propagates() -> None:
    server = FakeServer()
    server.faults["issafe"] = _refuse(0x407, "not connected")
    async with server.client() as client:
        with pytest.raises(AlpacaNotConnectedError):
            await AlpacaSafetyMonitor(client).telemetry()


# --- observing conditions -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["StarFWHM", "starfwhm", "star_fwhm", "STAR_FWHM", Sensor.STAR_FWHM]
)
def test_sensors_are_named_in_any_usual_spelling(name: str) -> None:
    assert sensor_named(name) is Sensor.STAR_FWHM


def test_an_unknown_sensor_is_refused_listing_the_sensors() -> None:
    with pytest.raises(AlpacaValueError, match="CloudCover, DewPoint") as info:
        sensor_named("seeing")
    assert info.value.field == "SensorName"


async def test_absent_sensors_are_left_out_and_not_asked_again() -> None:
    server = FakeServer({"temperature": 11.5, "humidity": 80.0, "averageperiod": 0.0})
    async with server.client() as client:
        weather = AlpacaObservingConditions(client)
        first = await weather.readings()
        second = await weather.readings()
        assert await weather.wind_speed() is None
        telemetry = await weather.telemetry()
    assert first == second == {Sensor.TEMPERATURE: 11.5, Sensor.HUMIDITY: 80.0}
    assert weather.absent == frozenset(Sensor) - {Sensor.TEMPERATURE, Sensor.HUMIDITY}
    assert server.calls("windspeed") == 1  # asked once, found absent, then remembered
    assert server.calls("temperature") == 3
    assert telemetry == {"temperature_c": 11.5, "humidity_pct": 80.0, "average_period_h": 0.0}


async def test_a_failing_sensor_is_an_error_not_an_absence() -> None:
    server = FakeServer({"temperature": 11.5})
    server.faults["humidity"] = _refuse(0x500, "sensor cable cut")
    async with server.client() as client:
        weather = AlpacaObservingConditions(client)
        with pytest.raises(AlpacaDriverError, match="sensor cable cut"):
            await weather.readings()
    assert Sensor.HUMIDITY not in weather.absent


async def test_sensor_queries_send_the_ascom_name() -> None:
    server = FakeServer({"timesincelastupdate": 12.0})
    async with server.client() as client:
        weather = AlpacaObservingConditions(client)
        assert await weather.time_since_last_update("sky_quality") == 12.0
        assert await weather.time_since_last_update() == 12.0
        assert await weather.sensor_description("rainrate") is None  # 0x400 from the fake
        with pytest.raises(AlpacaValueError, match="AveragePeriod=-1"):
            await weather.set_average_period(-1)
    sent = [r.url.params.get("SensorName") for r in server.requests if r.method == "GET"]
    assert sent == ["SkyQuality", "", "RainRate"]
    assert _puts(server) == []


# --- switch -------------------------------------------------------------------------------------

DIMMER = SwitchInfo(1, "Dimmer", "Panel lamp", True, 0.0, 1.0, 0.1)


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        (0.0, True),
        (0.3, True),
        (0.1 * 3, True),
        (1.0, True),
        (0.35, False),
        (1.1, False),
        (-0.1, False),
        (math.nan, False),
    ],
)
def test_switch_values_must_be_in_range_and_on_the_step_grid(value: float, ok: bool) -> None:
    if ok:
        assert check_switch_value(DIMMER, value) == value
    else:
        with pytest.raises(AlpacaValueError, match="Value="):
            check_switch_value(DIMMER, value)


def _switch_server(can_write: list[bool]) -> FakeServer:
    server = FakeServer({"maxswitch": len(can_write)})
    per_id: dict[str, Callable[[int], Any]] = {
        "getswitchname": lambda i: f"Switch {i}",
        "getswitchdescription": lambda i: f"Outlet {i}",
        "canwrite": lambda i: can_write[i],
        "minswitchvalue": lambda i: 0.0,
        "maxswitchvalue": lambda i: 1.0,
        "switchstep": lambda i: 1.0,
        "getswitchvalue": lambda i: float(i % 2),
    }
    for member, value in per_id.items():
        server.faults[member] = lambda request, value=value: _reply(
            request, value(int(request.url.params["Id"]))
        )
    return server


async def test_switches_are_read_once_and_refusals_send_nothing() -> None:
    server = _switch_server([True, False])
    async with server.client() as client:
        switch = AlpacaSwitch(client)
        infos = await switch.switches()
        assert [(i.id, i.name, i.can_write, i.is_boolean) for i in infos] == [
            (0, "Switch 0", True, True),
            (1, "Switch 1", False, True),
        ]
        assert (await switch.find("Switch 1")).id == 1
        with pytest.raises(AlpacaValueError, match="'Switch 0', 'Switch 1'"):
            await switch.find("Heater")
        with pytest.raises(AlpacaCapabilityError, match=r"switch 1 .* read-only"):
            await switch.set_switch(1, True)
        with pytest.raises(AlpacaValueError, match=r"Id=2 .* 0\.\.1 \(2 switches\)"):
            await switch.set_value(2, 1.0)
        await switch.set_switch(0, True)
        assert await switch.telemetry() == {"switch_0": 0.0, "switch_1": 1.0}
    assert _puts(server) == ["setswitch"]
    assert server.calls("getswitchname") == 2


# --- cover calibrator ---------------------------------------------------------------------------


async def test_a_lamp_brighter_than_its_maximum_is_refused() -> None:
    server = FakeServer({"coverstate": 1, "calibratorstate": 1, "maxbrightness": 10})
    async with server.client() as client:
        panel = AlpacaCoverCalibrator(client)
        with pytest.raises(AlpacaValueError, match=r"Brightness=11 .* 0\.\.10"):
            await panel.calibrator_on(11)
        await panel.calibrator_on(10)
    assert _puts(server) == ["calibratoron"]


async def test_parts_that_are_not_present_are_refused() -> None:
    server = FakeServer({"coverstate": 0, "calibratorstate": 0})
    async with server.client() as client:
        panel = AlpacaCoverCalibrator(client)
        with pytest.raises(AlpacaCapabilityError, match="no cover"):
            await panel.open_cover()
        with pytest.raises(AlpacaCapabilityError, match="no calibrator"):
            await panel.calibrator_on(1)
        assert await panel.telemetry() == {"cover": "NOT_PRESENT", "calibrator": "NOT_PRESENT"}
    assert _puts(server) == []
    assert server.calls("maxbrightness") == 0


async def test_a_cover_in_error_ends_the_wait_and_a_lamp_warming_up_is_waited_for() -> None:
    server = FakeServer(
        {"coverstate": _sequence(2, 5), "calibratorstate": _sequence(2, 2, 3), "maxbrightness": 1}
    )
    async with server.client() as client:
        panel = AlpacaCoverCalibrator(client)
        with pytest.raises(AlpacaDeviceFaultError, match="cover reports Error"):
            await panel.wait_cover(CoverState.OPEN, timeout=5, poll=0.01)
        await panel.wait_calibrator(CalibratorState.READY, timeout=5, poll=0.01)
    assert server.calls("calibratorstate") == 3
