"""Our Alpaca device views (filter wheel ... cover calibrator) against a third-party server
and a third-party client.

The server is ``alpaca-simulators`` (tests/alpaca_sim.py: 127.0.0.1, a free port, an
offline catalogue), its config given a calibrator lamp (the template has none) and a
faster mount. The independent client is ``alpyca``, the official ASCOM library: what
our views move, it must see moved. Every device is reloaded to its configured state
before each test. Requests are counted at the httpx seam of a real connection, so
"refused before sending" means no request left this process.

Deviations of the simulator these tests meet (shared/design/alpaca.md lists the
camera's): filter wheel, focuser, rotator, shutter and cover moves are instantaneous
(the filter wheel never reports -1), the focuser clamps an out-of-range Move instead
of refusing it, HaltCover is NotImplemented, dome slews take a fixed 4 s, parking the
mount sets RightAscension to 180 "hours" until its motion loop wraps it to 12, and
``PUT issafe`` / ``PUT humidity`` inject weather.
"""

from __future__ import annotations

import asyncio
import importlib
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest
import yaml

from devices.alpaca.checks import AlpacaValueError
from devices.alpaca.client import AlpacaClient
from devices.alpaca.covercalibrator import AlpacaCoverCalibrator, CalibratorState, CoverState
from devices.alpaca.dome import AlpacaDome, ShutterState
from devices.alpaca.errors import AlpacaInvalidWhileParkedError, AlpacaNotImplementedError
from devices.alpaca.filterwheel import AlpacaFilterWheel
from devices.alpaca.focuser import AlpacaFocuser
from devices.alpaca.observingconditions import AlpacaObservingConditions, Sensor
from devices.alpaca.rotator import AlpacaRotator
from devices.alpaca.safetymonitor import AlpacaSafetyMonitor
from devices.alpaca.switch import AlpacaSwitch
from devices.alpaca.telescope import AlpacaTelescope, PierSide
from tests.alpaca_sim import RunningSimulator, running_simulator

pytestmark = pytest.mark.slow

MAX_BRIGHTNESS = 200
SLEW_RATE_DEG_S = 60.0


def _configure(simulator: RunningSimulator) -> None:
    """Give the cover calibrator a lamp (Off, not NotPresent) and speed up the mount,
    then reload: the simulator rereads its config file in place."""
    config = yaml.safe_load(simulator.config.read_text(encoding="utf-8"))
    config["devices"]["covercalibrator"][0].update(
        calibratorstate=int(CalibratorState.OFF), maxbrightness=MAX_BRIGHTNESS
    )
    config["devices"]["telescope"][0].update(slew_rate=SLEW_RATE_DEG_S)
    simulator.config.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    simulator.reload()


@pytest.fixture(scope="module")
def simulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSimulator]:
    with running_simulator(tmp_path_factory.mktemp("alpaca-devices")) as sim:
        _configure(sim)
        yield sim
    assert sim.process.poll() is not None, "the simulator is still running"


class CountingTransport(httpx.AsyncBaseTransport):
    """A real connection that records every request's method and member."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.sent: list[tuple[str, str]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append((request.method, request.url.path.rsplit("/", 1)[-1]))
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()

    def puts(self) -> list[str]:
        return [member for method, member in self.sent if method == "PUT"]


@pytest.fixture
async def wire(
    simulator: RunningSimulator,
) -> AsyncIterator[tuple[AlpacaClient, CountingTransport]]:
    """A fresh client on a counting transport, every device back to its configured state."""
    await asyncio.to_thread(simulator.reload)
    transport = CountingTransport()
    async with AlpacaClient(simulator.host, simulator.port, timeout=5, transport=transport) as c:
        yield c, transport


@pytest.fixture
def client(wire: tuple[AlpacaClient, CountingTransport]) -> AlpacaClient:
    return wire[0]


@pytest.fixture
def alpyca(simulator: RunningSimulator) -> Callable[[str], Any]:
    """alpyca's view of device 0 of a type: ``alpyca("filterwheel")``."""
    classes = {
        "filterwheel": "FilterWheel",
        "focuser": "Focuser",
        "telescope": "Telescope",
        "dome": "Dome",
        "rotator": "Rotator",
        "safetymonitor": "SafetyMonitor",
        "observingconditions": "ObservingConditions",
        "switch": "Switch",
        "covercalibrator": "CoverCalibrator",
    }

    def make(device_type: str) -> Any:
        module = importlib.import_module(f"alpaca.{device_type}")
        return getattr(module, classes[device_type])(f"{simulator.host}:{simulator.port}", 0)

    return make


async def _read(device: Any, *members: str) -> tuple[Any, ...]:
    """alpyca properties, read in a thread (alpyca blocks)."""
    return await asyncio.to_thread(lambda: tuple(getattr(device, name) for name in members))


# --- filter wheel -------------------------------------------------------------------------------


async def test_the_filter_wheel_moves_by_name_and_alpyca_sees_it(
    client: AlpacaClient, alpyca: Callable[[str], Any]
) -> None:
    wheel = AlpacaFilterWheel(client)
    await wheel.connect(timeout=5)
    theirs = alpyca("filterwheel")
    names, offsets, start = await _read(theirs, "Names", "FocusOffsets", "Position")
    assert await wheel.names() == names
    assert await wheel.focus_offsets() == offsets
    target = next(slot for slot, name in enumerate(names) if slot != start)

    # By name, in the operator's spelling: the wheel's name differs in case.
    assert await wheel.move_to_name(f" {names[target].lower()} ") == target
    assert await wheel.wait_until_stopped(timeout=10) == target
    assert (await _read(theirs, "Position")) == (target,)

    other = (target + 1) % len(names)
    slot = await wheel.select(names[other], timeout=10)
    assert (slot.position, slot.name, slot.focus_offset) == (other, names[other], offsets[other])
    assert await _read(theirs, "Position") == (other,)
    assert await wheel.telemetry() == {
        "filter_position": other,
        "filter_name": names[other],
        "filter_focus_offset": offsets[other],
    }


async def test_an_unknown_filter_is_refused_before_any_put(
    wire: tuple[AlpacaClient, CountingTransport], alpyca: Callable[[str], Any]
) -> None:
    client, transport = wire
    wheel = AlpacaFilterWheel(client)
    names = [slot.name for slot in await wheel.slots()]
    before = await wheel.position()
    with pytest.raises(AlpacaValueError) as info:
        await wheel.move_to_name("Halpha")
    assert "'Halpha' is not in the wheel" in str(info.value)
    for name in names:
        assert repr(name) in info.value.allowed
    assert info.value.field == "name"
    with pytest.raises(AlpacaValueError, match=r"Position=5 .* 0\.\.4"):
        await wheel.move_to(len(names))
    assert transport.puts() == []
    assert await wheel.position() == before
    assert await _read(alpyca("filterwheel"), "Position") == (before,)


# --- focuser ------------------------------------------------------------------------------------


async def test_the_focuser_moves_within_its_limits(
    wire: tuple[AlpacaClient, CountingTransport], alpyca: Callable[[str], Any]
) -> None:
    client, transport = wire
    focuser = AlpacaFocuser(client)
    await focuser.connect(timeout=5)
    theirs = alpyca("focuser")
    caps = await focuser.capabilities()
    absolute, max_step, max_increment, step_size, temp_comp = await _read(
        theirs, "Absolute", "MaxStep", "MaxIncrement", "StepSize", "TempCompAvailable"
    )
    assert (caps.absolute, caps.max_step, caps.max_increment) == (absolute, max_step, max_increment)
    assert (caps.step_size_um, caps.temp_comp_available) == (step_size, temp_comp)

    start = await focuser.position()
    target = start + 1234 if start + 1234 <= max_step else start - 1234
    await focuser.move(target)
    await focuser.wait_until_stopped(timeout=10)
    assert await focuser.position() == target
    assert await _read(theirs, "Position") == (target,)
    await focuser.move_by(-max_increment)
    await focuser.wait_until_stopped(timeout=10)
    assert await _read(theirs, "Position") == (target - max_increment,)

    # The simulator would clamp these silently; we refuse them before sending.
    puts = len(transport.puts())
    with pytest.raises(AlpacaValueError, match=r"0\.\.MaxStep"):
        await focuser.move(max_step + 1)
    with pytest.raises(AlpacaValueError, match="MaxIncrement"):
        await focuser.move_by(max_increment + 1)
    assert len(transport.puts()) == puts
    assert await focuser.position() == target - max_increment

    await focuser.set_temp_comp(True)
    assert await _read(theirs, "TempComp") == (True,)
    telemetry = await focuser.telemetry()
    assert telemetry["focus_position"] == target - max_increment
    assert telemetry["focus_temp_comp"] is True
    assert (telemetry["focus_temperature_c"],) == await _read(theirs, "Temperature")


# --- dome ---------------------------------------------------------------------------------------


async def test_the_dome_shutter_opens_and_closes(
    client: AlpacaClient, alpyca: Callable[[str], Any]
) -> None:
    dome = AlpacaDome(client)
    await dome.connect(timeout=5)
    theirs = alpyca("dome")
    assert await dome.shutter_status() == ShutterState.CLOSED
    await dome.open_shutter()
    await dome.wait_shutter(ShutterState.OPEN, timeout=10)
    assert await _read(theirs, "ShutterStatus") == (ShutterState.OPEN,)
    assert (await dome.telemetry())["shutter"] == "OPEN"
    await dome.close_shutter()
    await dome.wait_shutter(ShutterState.CLOSED, timeout=10)
    assert await _read(theirs, "ShutterStatus") == (ShutterState.CLOSED,)


async def test_the_dome_turns_to_an_azimuth_parks_and_slaves(
    client: AlpacaClient, alpyca: Callable[[str], Any]
) -> None:
    dome = AlpacaDome(client)
    theirs = alpyca("dome")
    await dome.slew_to_azimuth(90.0)
    assert await dome.is_slewing() is True
    await dome.wait_until_stopped(timeout=15)  # the simulator turns in a fixed 4 s
    assert await dome.azimuth() == 90.0
    assert await _read(theirs, "Azimuth", "AtPark") == (90.0, False)

    await dome.slew_to_azimuth(180.0)
    await dome.abort_slew()
    assert await dome.is_slewing() is False
    assert await dome.azimuth() == 90.0

    await dome.park()
    await dome.wait_parked(timeout=10)
    assert await _read(theirs, "AtPark") == (True,)
    await dome.set_slaved(True)
    assert await _read(theirs, "Slaved") == (True,)
    telemetry = await dome.telemetry()
    assert telemetry["dome_slaved"] is True
    assert telemetry["dome_at_park"] is True


# --- telescope ----------------------------------------------------------------------------------


async def test_the_mount_slews_to_coordinates_and_alpyca_agrees(
    client: AlpacaClient, alpyca: Callable[[str], Any]
) -> None:
    mount = AlpacaTelescope(client)
    await mount.connect(timeout=5)
    theirs = alpyca("telescope")
    caps = await mount.capabilities()
    flags = await _read(theirs, "CanSlewAsync", "CanSlewAltAzAsync", "CanPark", "CanSetTracking")
    assert (
        caps.can_slew_async,
        caps.can_slew_alt_az_async,
        caps.can_park,
        caps.can_set_tracking,
    ) == flags
    assert [int(rate) for rate in caps.tracking_rates] == [
        int(rate) for rate in await asyncio.to_thread(lambda: list(theirs.TrackingRates))
    ]
    assert await mount.tracking() is True  # tests/alpaca_sim.py points it, tracking

    ra, dec = 7.0, 40.0  # 18 degrees from the configured pointing: under a second
    await mount.slew_to_coordinates(ra, dec)
    assert await mount.is_slewing() is True
    began = time.monotonic()
    await mount.wait_until_stopped(timeout=20, poll=0.05)
    assert time.monotonic() - began < 5
    ours = (await mount.right_ascension(), await mount.declination())
    assert ours == pytest.approx((ra, dec), abs=1e-3)
    assert await _read(theirs, "RightAscension", "Declination") == pytest.approx(ours, abs=1e-3)

    telemetry = await mount.telemetry()
    assert telemetry["ra_hours"] == pytest.approx(ra, abs=1e-3)
    assert telemetry["dec_deg"] == pytest.approx(dec, abs=1e-3)
    assert telemetry["tracking"] is True
    assert telemetry["slewing"] is False
    assert telemetry["pier_side"] in {side.name for side in PierSide}
    alt, az = await _read(theirs, "Altitude", "Azimuth")
    assert telemetry["alt_deg"] == pytest.approx(alt, abs=0.05)
    assert telemetry["az_deg"] == pytest.approx(az, abs=0.05)
    assert 0 <= float(str(telemetry["sidereal_time_hours"])) < 24


async def test_the_mount_slews_to_alt_az_with_tracking_off(
    client: AlpacaClient, alpyca: Callable[[str], Any]
) -> None:
    mount = AlpacaTelescope(client)
    theirs = alpyca("telescope")
    await mount.set_tracking(False)
    assert await mount.tracking() is False
    assert await _read(theirs, "Tracking") == (False,)

    # Near where it points now (which depends on the hour), above the horizon.
    altitude = min(max(await mount.altitude() + 10.0, 20.0), 80.0)
    azimuth = (await mount.azimuth() + 15.0) % 360.0
    await mount.slew_to_altaz(azimuth, altitude)
    await mount.wait_until_stopped(timeout=20, poll=0.05)
    assert await mount.altitude() == pytest.approx(altitude, abs=0.05)
    assert await mount.azimuth() == pytest.approx(azimuth, abs=0.05)
    assert await _read(theirs, "Altitude", "Azimuth") == pytest.approx(
        (altitude, azimuth), abs=0.05
    )
    await mount.set_tracking(True)
    assert await _read(theirs, "Tracking") == (True,)


async def test_a_parked_mount_refuses_slews_until_unparked(
    client: AlpacaClient, alpyca: Callable[[str], Any]
) -> None:
    mount = AlpacaTelescope(client)
    theirs = alpyca("telescope")
    await mount.park()
    await mount.wait_parked(timeout=10)
    assert await _read(theirs, "AtPark") == (True,)
    with pytest.raises(AlpacaInvalidWhileParkedError) as info:
        await mount.slew_to_coordinates(8.0, 20.0)
    assert info.value.number == 0x408
    assert info.value.member == "slewtocoordinatesasync"

    await mount.unpark()
    assert await mount.at_park() is False
    await mount.find_home()
    await mount.wait_home(timeout=10)
    assert await _read(theirs, "AtHome") == (True,)

    await mount.slew_to_coordinates(8.0, 20.0)
    assert await mount.is_slewing() is True
    await mount.abort_slew()
    assert await mount.is_slewing() is False
    assert await _read(theirs, "Slewing") == (False,)


# --- rotator ------------------------------------------------------------------------------------


async def test_the_rotator_moves_and_alpyca_agrees(
    client: AlpacaClient, alpyca: Callable[[str], Any]
) -> None:
    rotator = AlpacaRotator(client)
    await rotator.connect(timeout=5)
    theirs = alpyca("rotator")
    await rotator.move_absolute(45.0)
    assert await rotator.wait_until_stopped(timeout=10) == 45.0
    assert await _read(theirs, "Position") == (45.0,)
    await rotator.move(10.0)
    assert await rotator.wait_until_stopped(timeout=10) == 55.0
    assert await rotator.target_position() == 55.0
    await rotator.move_mechanical(100.0)
    await rotator.wait_until_stopped(timeout=10)
    assert await rotator.mechanical_position() == 100.0
    assert await _read(theirs, "MechanicalPosition") == (100.0,)
    await rotator.set_reverse(True)
    assert await _read(theirs, "Reverse") == (True,)
    assert await rotator.telemetry() == {
        "rotator_position_deg": 100.0,
        "rotator_mechanical_deg": 100.0,
        "rotator_moving": False,
        "rotator_reverse": True,
    }


# --- safety monitor -----------------------------------------------------------------------------


async def test_the_safety_monitor_reports_injected_bad_weather(
    client: AlpacaClient, alpyca: Callable[[str], Any]
) -> None:
    monitor = AlpacaSafetyMonitor(client)
    await monitor.connect(timeout=5)
    assert await monitor.is_safe() is True
    await monitor.put("issafe", IsSafe=False)  # the simulator's injection, not ASCOM
    assert await monitor.is_safe() is False
    assert await _read(alpyca("safetymonitor"), "IsSafe") == (False,)
    assert await monitor.telemetry() == {"is_safe": False}


# --- observing conditions -----------------------------------------------------------------------


async def test_the_weather_readings_are_the_ones_alpyca_reads(
    client: AlpacaClient, alpyca: Callable[[str], Any]
) -> None:
    weather = AlpacaObservingConditions(client)
    await weather.connect(timeout=5)
    await weather.put("humidity", Humidity=93.5)  # the simulator's injection
    readings = await weather.readings()
    theirs = await _read(alpyca("observingconditions"), *(sensor.value for sensor in Sensor))
    assert readings == dict(zip(Sensor, theirs, strict=True))
    assert readings[Sensor.HUMIDITY] == 93.5
    assert weather.absent == frozenset()  # the simulator implements every sensor

    await weather.refresh()
    assert await weather.humidity() == 93.5
    since = await weather.time_since_last_update("temperature")
    assert since is not None
    assert since >= 0
    assert await weather.time_since_last_update() is not None
    description = await weather.sensor_description(Sensor.STAR_FWHM)
    assert description is not None
    assert "FWHM" in description
    await weather.set_average_period(0.5)
    assert await weather.average_period() == 0.5
    telemetry = await weather.telemetry()
    assert telemetry["humidity_pct"] == 93.5
    assert telemetry["average_period_h"] == 0.5
    assert len(telemetry) == len(Sensor) + 1


# --- switch -------------------------------------------------------------------------------------


async def test_switches_are_set_and_read_back(
    wire: tuple[AlpacaClient, CountingTransport], alpyca: Callable[[str], Any]
) -> None:
    client, transport = wire
    switch = AlpacaSwitch(client)
    await switch.connect(timeout=5)
    theirs = alpyca("switch")
    switches = await switch.switches()
    assert switches
    assert await _read(theirs, "MaxSwitch") == (len(switches),)
    names = await asyncio.to_thread(lambda: [theirs.GetSwitchName(i) for i in range(len(switches))])
    assert [info.name for info in switches] == names

    boolean = next(info for info in switches if info.is_boolean and info.can_write)
    dimmer = next(info for info in switches if not info.is_boolean and info.can_write)
    await switch.set_switch(boolean.id, True)
    assert await switch.get_switch(boolean.id) is True
    assert await asyncio.to_thread(theirs.GetSwitch, boolean.id) is True

    value = dimmer.minimum + 7 * dimmer.step
    await switch.set_value(dimmer.id, value)
    assert await switch.get_value(dimmer.id) == pytest.approx(value)
    assert await asyncio.to_thread(theirs.GetSwitchValue, dimmer.id) == pytest.approx(value)

    puts = len(transport.puts())
    with pytest.raises(AlpacaValueError, match="in steps of"):
        await switch.set_value(dimmer.id, dimmer.minimum + 6.5 * dimmer.step)
    with pytest.raises(AlpacaValueError, match=r"takes 0\.\.1"):
        await switch.set_value(dimmer.id, dimmer.maximum + dimmer.step)
    with pytest.raises(AlpacaValueError, match="Id"):
        await switch.set_switch(len(switches), True)
    assert len(transport.puts()) == puts
    assert await switch.get_value(dimmer.id) == pytest.approx(value)

    telemetry = await switch.telemetry()
    assert telemetry[f"switch_{boolean.id}"] == 1.0
    assert telemetry[f"switch_{dimmer.id}"] == pytest.approx(value)


# --- cover calibrator ---------------------------------------------------------------------------


async def test_the_cover_opens_and_closes_and_the_lamp_turns_on_and_off(
    wire: tuple[AlpacaClient, CountingTransport], alpyca: Callable[[str], Any]
) -> None:
    client, transport = wire
    panel = AlpacaCoverCalibrator(client)
    await panel.connect(timeout=5)
    theirs = alpyca("covercalibrator")
    caps = await panel.capabilities()
    assert (caps.has_cover, caps.has_calibrator, caps.max_brightness) == (
        True,
        True,
        MAX_BRIGHTNESS,
    )

    await panel.open_cover()
    await panel.wait_cover(CoverState.OPEN, timeout=10)
    assert await _read(theirs, "CoverState") == (CoverState.OPEN,)
    await panel.close_cover()
    await panel.wait_cover(CoverState.CLOSED, timeout=10)
    assert await _read(theirs, "CoverState") == (CoverState.CLOSED,)
    with pytest.raises(AlpacaNotImplementedError):  # the simulator's cover is synchronous
        await panel.halt_cover()

    brightness = MAX_BRIGHTNESS // 2
    await panel.calibrator_on(brightness)
    await panel.wait_calibrator(CalibratorState.READY, timeout=10)
    assert await panel.brightness() == brightness
    assert await _read(theirs, "Brightness", "CalibratorState") == (
        brightness,
        CalibratorState.READY,
    )
    assert await panel.telemetry() == {
        "cover": "CLOSED",
        "calibrator": "READY",
        "calibrator_brightness": brightness,
    }
    puts = len(transport.puts())
    with pytest.raises(AlpacaValueError, match="MaxBrightness"):
        await panel.calibrator_on(MAX_BRIGHTNESS + 1)
    assert len(transport.puts()) == puts
    await panel.calibrator_off()
    await panel.wait_calibrator(CalibratorState.OFF, timeout=10)
    assert await _read(theirs, "Brightness", "CalibratorState") == (0, CalibratorState.OFF)
