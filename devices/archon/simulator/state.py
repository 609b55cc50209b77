"""Everything one simulated controller holds, in one place the command handlers share.

The parts (configuration memory, timing parameters, buffers, shutter, timing core)
each have one job; this object wires them together and owns the one piece of state
that belongs to none of them: the configuration in force (the last one an APPLY
command parsed from memory), from which the core takes its geometry.
"""

from __future__ import annotations

from devices.archon.acf import AcfConfig, AcfError
from devices.archon.sensor import SensorModel
from devices.archon.simulator.buffers import BufferBank, check_capacity, n_buffers
from devices.archon.simulator.clock import Clock
from devices.archon.simulator.config_memory import ConfigMemory
from devices.archon.simulator.core import TimingCore
from devices.archon.simulator.errors import CommandError
from devices.archon.simulator.housekeeping import EventLog, system_info
from devices.archon.simulator.params import TimingParameters
from devices.archon.simulator.shutter import Shutter, ShutterBlade

__all__ = ["ControllerState", "check_sensor"]


def check_sensor(acf: AcfConfig, sensor: SensorModel) -> None:
    """A sensor with explicit bias levels needs one per tap."""
    if sensor.bias is not None and len(sensor.bias) < len(acf.taps):
        raise ValueError(f"sensor has {len(sensor.bias)} bias levels for {len(acf.taps)} taps")


class ControllerState:
    """The simulated controller minus its network side."""

    def __init__(
        self,
        acf: AcfConfig,
        sensor: SensorModel,
        *,
        pixel_rate_hz: float,
        power_on: bool,
        shutter_blade: ShutterBlade | None = None,
    ) -> None:
        check_sensor(acf, sensor)
        check_capacity(acf)
        self.system = system_info(acf.system)
        self.acf = acf
        self.sensor = sensor
        self.clock = Clock()
        self.events = EventLog()
        self.memory = ConfigMemory(acf.wire_lines())
        self.shutter = Shutter(shutter_blade)
        self.status_count = 0
        self.params = TimingParameters(on_change=self._notify)
        self.bank = BufferBank(n_buffers(acf), on_change=self._notify)
        self.core = TimingCore(
            params=self.params,
            bank=self.bank,
            shutter=self.shutter,
            clock=self.clock,
            events=self.events,
            sensor=sensor,
            acf=lambda: self.acf,
            pixel_rate_hz=pixel_rate_hz,
            power_on=power_on,
        )
        self.params.load(acf)

    def _notify(self) -> None:
        self.core.notify()

    def memory_config(self) -> AcfConfig:
        """Parse configuration memory; a bad memory makes the APPLY command fail."""
        try:
            acf = self.memory.parse(self.acf.system)
            check_capacity(acf)
            check_sensor(acf, self.sensor)
        except (AcfError, ValueError) as exc:
            self.events.add(f"configuration error: {exc}")
            raise CommandError(str(exc)) from exc
        return acf

    def apply(self, acf: AcfConfig) -> None:
        """Make ``acf`` the configuration in force (geometry, buffer count)."""
        self.acf = acf
        self.bank.count = n_buffers(acf)
