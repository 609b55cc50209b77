"""STATUS and SYSTEM replies, and the controller log FETCHLOG drains.

Clients parse these strictly (every STATUS value numeric; SYSTEM with MODn keys for
n = 1..12 and no module type 6), so the text follows ``archon-protocol.md`` exactly.
Values drift slowly (temperatures follow a sine) so a client that caches a reply by
mistake shows up in tests.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from devices.archon.simulator.params import parse_int

__all__ = ["EventLog", "PowerReport", "status_reply", "system_info", "system_reply"]

_MAX_LOG = 64

DEFAULT_SYSTEM: dict[str, str] = {
    "BACKPLANE_TYPE": "1",
    "BACKPLANE_REV": "3",
    "BACKPLANE_VERSION": "1.0.1200",
    "BACKPLANE_ID": "0000CCDF00000000",
    "POWER_ID": "00000000C0DE",
    "MOD5_TYPE": "2",
    "MOD5_REV": "8",
    "MOD5_VERSION": "1.0.1200",
    "MOD5_ID": "0000CCDF00000005",
}
# (name, volts when powered, amps when powered, digital side); P2V5 and P5V feed the
# digital side and stay up when the CCD bias/clock power is off.
_SUPPLIES: tuple[tuple[str, float, float, bool], ...] = (
    ("P2V5", 2.5, 0.412, True),
    ("P5V", 5.0, 0.873, True),
    ("P6V", 6.0, 0.305, False),
    ("N6V", -6.0, 0.281, False),
    ("P17V", 17.0, 0.052, False),
    ("N17V", -17.0, 0.048, False),
    ("P35V", 35.0, 0.011, False),
    ("N35V", -35.0, 0.009, False),
    ("P100V", 100.0, 0.002, False),
    ("N100V", -100.0, 0.002, False),
)
# A supply fault: the analogue rails sag to this fraction of nominal.
_BAD_SUPPLY_FRACTION = 0.62
_HEATER_TYPES = frozenset({5, 11})
POWER_OFF, POWER_INTERMEDIATE, POWER_ON = 2, 3, 4


class EventLog:
    """The controller's message log: STATUS counts it, FETCHLOG pops it oldest first."""

    def __init__(self) -> None:
        self._messages: list[str] = []

    def __len__(self) -> int:
        return len(self._messages)

    def add(self, message: str) -> None:
        self._messages.append(message)
        del self._messages[:-_MAX_LOG]

    def pop(self) -> str:
        return self._messages.pop(0) if self._messages else "(null)"


@dataclass(frozen=True, slots=True)
class PowerReport:
    """What STATUS says about power: on/off, and whether a supply is out of range."""

    on: bool
    bad: bool

    @property
    def code(self) -> int:
        """STATUS POWER: 4 on, 2 off, 3 (intermediate) when on with a bad supply."""
        if not self.on:
            return POWER_OFF
        return POWER_INTERMEDIATE if self.bad else POWER_ON

    @property
    def good(self) -> bool:
        """POWERGOOD: no supply out of range. A cleanly switched-off controller is
        good too; sdss-archon, written against hardware, reads POWER=2 with
        POWERGOOD=0 as a power fault, not as "off"."""
        return not self.bad


def system_info(system: Mapping[str, str]) -> dict[str, str]:
    """[SYSTEM] keys upper-cased, or our defaults; module type 6 is refused."""
    info = {k.upper(): v for k, v in system.items()} if system else dict(DEFAULT_SYSTEM)
    for n in range(1, 13):
        if info.get(f"MOD{n}_TYPE", "0").strip() == "6":
            raise ValueError(f"MOD{n}_TYPE=6 is not a valid Archon module type")
    return info


def status_reply(
    info: Mapping[str, str], power: PowerReport, count: int, log_size: int, now: float
) -> str:
    """The STATUS payload; ``now`` is seconds since start (drives the slow drifts)."""
    items: list[tuple[str, object]] = [
        ("VALID", 1),
        ("COUNT", count),
        ("LOG", log_size),
        ("POWER", power.code),
        ("POWERGOOD", int(power.good)),
        ("OVERHEAT", 0),
        ("BACKPLANE_TEMP", f"{31.5 + 0.25 * math.sin(now / 60):.3f}"),
    ]
    for name, volts, amps, digital in _SUPPLIES:
        scale = 1.0 if power.on or digital else 0.0
        if power.on and power.bad and not digital:
            scale = _BAD_SUPPLY_FRACTION
        items += [(f"{name}_V", f"{volts * scale:.3f}"), (f"{name}_I", f"{amps * scale:.3f}")]
    items += _module_status(info, now)
    return " ".join(f"{k}={v}" for k, v in items)


def _module_status(info: Mapping[str, str], now: float) -> list[tuple[str, object]]:
    items: list[tuple[str, object]] = []
    for n in range(1, 13):
        mod_type = parse_int(info.get(f"MOD{n}_TYPE", "0")) or 0
        if not mod_type:
            continue
        items.append((f"MOD{n}/TEMP", f"{33.0 + 0.5 * n:.3f}"))
        if mod_type in _HEATER_TYPES:
            ccd_temp = -110.0 + 0.05 * math.sin(now / 7)
            items += [
                (f"MOD{n}/TEMPA", f"{ccd_temp:.3f}"),
                (f"MOD{n}/TEMPB", f"{ccd_temp + 4.0:.3f}"),
                (f"MOD{n}/TEMPC", f"{21.0:.3f}"),
                (f"MOD{n}/HEATERAOUTPUT", f"{1.250:.3f}"),
                (f"MOD{n}/HEATERBOUTPUT", f"{0.0:.3f}"),
            ]
    return items


def system_reply(info: Mapping[str, str]) -> str:
    """The SYSTEM payload: backplane, MOD_PRESENT (hex mask), then MODn for n = 1..12."""
    present = info.get("MOD_PRESENT")
    if present is None:
        mask = sum(1 << (n - 1) for n in range(1, 13) if parse_int(info.get(f"MOD{n}_TYPE", "0")))
        present = f"{mask:X}"
    items = [
        ("BACKPLANE_TYPE", info.get("BACKPLANE_TYPE", "1")),
        ("BACKPLANE_REV", info.get("BACKPLANE_REV", "0")),
        ("BACKPLANE_VERSION", info.get("BACKPLANE_VERSION", "1.0.0")),
        ("BACKPLANE_ID", info.get("BACKPLANE_ID", "0000000000000000")),
        ("POWER_ID", info.get("POWER_ID", "000000000000")),
        ("MOD_PRESENT", present),
    ]
    for n in range(1, 13):
        items += [
            (f"MOD{n}_TYPE", info.get(f"MOD{n}_TYPE", "0")),
            (f"MOD{n}_REV", info.get(f"MOD{n}_REV", "0")),
            (f"MOD{n}_VERSION", info.get(f"MOD{n}_VERSION", "0.0.0")),
            (f"MOD{n}_ID", info.get(f"MOD{n}_ID", "0000000000000000")),
        ]
    return " ".join(f"{k}={v}" for k, v in items)
