"""The controller's configuration memory: 16384 numbered ``KEY=VALUE`` lines.

WCONFIG/RCONFIG/CLEARCONFIG only touch the text; nothing takes effect until an APPLY
or LOAD command parses the memory, which is why the applied configuration lives
elsewhere (the simulator keeps the last :class:`AcfConfig` that parsed).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from devices.archon.acf import AcfConfig, parse_wire_lines
from devices.archon.simulator.errors import CommandError
from devices.archon.simulator.params import parse_int

__all__ = ["CONFIG_SLOTS", "ConfigMemory", "config_address"]

CONFIG_SLOTS = 0x4000
_PARAMETER_SLOT_RE = re.compile(r"PARAMETER(\d+)", re.IGNORECASE)


def config_address(text: str) -> int:
    """The slot a 4-hex-digit RCONFIG/WCONFIG address names."""
    address = int(text, 16)
    if address >= CONFIG_SLOTS:
        raise CommandError(f"config address {text} out of range")
    return address


class ConfigMemory:
    """Sparse slots; used lines are contiguous from 0 after a full upload."""

    def __init__(self, lines: Iterable[str] = ()) -> None:
        self._slots: dict[int, str] = dict(enumerate(lines))

    def read(self, address: int) -> str:
        return self._slots.get(address, "")

    def write(self, address: int, line: str) -> None:
        """Store a line; an empty one clears the slot, one without ``=`` is refused."""
        if not line:
            self._slots.pop(address, None)
        elif "=" not in line:
            raise CommandError("WCONFIG line without '='")
        else:
            self._slots[address] = line

    def clear(self) -> None:
        self._slots.clear()

    def lines(self) -> list[str]:
        return [self._slots[k] for k in sorted(self._slots)]

    def parse(self, system: dict[str, str]) -> AcfConfig:
        """The configuration the memory describes (AcfError when it is not one)."""
        return parse_wire_lines(self.lines(), system=system, source="config memory")

    def parameter(self, wanted: str) -> tuple[str, int]:
        """LOADPARAM: (name, value) of the PARAMETERn line named by number or name."""
        for key, _, value in (line.partition("=") for line in self.lines()):
            slot = _PARAMETER_SLOT_RE.fullmatch(key.strip())
            name, sep, number = value.partition("=")
            if not slot or not sep:
                continue
            if slot[1] == wanted or name.strip().lower() == wanted.lower():
                parsed = parse_int(number)
                if parsed is None:
                    raise CommandError(f"parameter {name} is not an integer")
                return name.strip(), parsed
        raise CommandError(f"no parameter {wanted}")
