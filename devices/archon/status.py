"""Typed views of the controller's STATUS, SYSTEM and FRAME replies.

The controller answers with flat ``KEY=VALUE`` strings; these classes turn them into
values the rest of the code can rely on (power as an enum, buffers as records), and
fail with the raw payload when a key the adapter needs is missing.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from devices.archon.errors import ArchonProtocolError
from devices.archon.protocol import parse_key_values

N_BUFFERS = 3
"""Frame buffers in the controller (two when BIGBUF is set, three reported always)."""


class PowerState(IntEnum):
    """STATUS POWER values, as the controller reports them."""

    UNKNOWN = 0
    NOT_CONFIGURED = 1
    OFF = 2
    INTERMEDIATE = 3
    ON = 4
    STANDBY = 5


@dataclass(frozen=True, slots=True)
class ArchonStatus:
    """One STATUS reply. ``values`` keeps every key (temperatures, supplies, ...)."""

    values: dict[str, float]

    @property
    def power(self) -> PowerState:
        try:
            return PowerState(int(self.values.get("POWER", 0)))
        except ValueError:
            return PowerState.UNKNOWN

    @property
    def power_good(self) -> bool:
        return bool(self.values.get("POWERGOOD", 0))

    @property
    def backplane_temp(self) -> float | None:
        return self.values.get("BACKPLANE_TEMP")

    @classmethod
    def parse(cls, payload: str) -> ArchonStatus:
        raw = parse_key_values(payload)
        values: dict[str, float] = {}
        for key, text in raw.items():
            try:
                values[key] = float(text)
            except ValueError as exc:
                raise ArchonProtocolError(
                    f"STATUS value {key}={text!r} is not numeric", payload.encode()
                ) from exc
        if "POWER" not in values:
            raise ArchonProtocolError("STATUS without POWER", payload.encode())
        return cls(values)


@dataclass(frozen=True, slots=True)
class BufferInfo:
    """One frame buffer as FRAME describes it."""

    number: int
    sample: int
    complete: bool
    mode: int
    base: int
    frame: int
    width: int
    height: int
    lines: int
    timestamp: int
    re_timestamp: int = 0
    """TIMER ticks latched by the timing script at the integration's rising edge
    (shutter open), if it latches them; 0 when the controller does not report it."""
    fe_timestamp: int = 0
    """TIMER ticks latched at the falling edge (shutter closed); 0 when not reported."""

    @property
    def bytes_per_pixel(self) -> int:
        return 2 if self.sample == 0 else 4

    @property
    def nbytes(self) -> int:
        return self.width * self.height * self.bytes_per_pixel


@dataclass(frozen=True, slots=True)
class FrameStatus:
    """One FRAME reply: the timer, the read and write buffers, and each buffer."""

    timer: int
    rbuf: int
    wbuf: int
    buffers: tuple[BufferInfo, ...]

    def buffer(self, number: int) -> BufferInfo:
        for info in self.buffers:
            if info.number == number:
                return info
        raise ValueError(f"no frame buffer {number}; the controller has 1..{len(self.buffers)}")

    def newest_complete(self) -> BufferInfo | None:
        """The complete buffer with the newest timestamp, as FETCH -1 means."""
        complete = [info for info in self.buffers if info.complete]
        return max(complete, key=lambda info: info.timestamp) if complete else None

    @property
    def last_frame(self) -> int:
        """The highest frame counter of any buffer: a readout makes a bigger one."""
        return max((info.frame for info in self.buffers), default=0)

    @classmethod
    def parse(cls, payload: str) -> FrameStatus:
        raw = parse_key_values(payload)

        def number(key: str, default: int | None = None) -> int:
            if key not in raw and default is not None:
                return default
            try:
                text = raw[key]
                return int(text, 16) if "TIME" in key else int(text)
            except KeyError as exc:
                raise ArchonProtocolError(f"FRAME without {key}", payload.encode()) from exc
            except ValueError as exc:
                raise ArchonProtocolError(
                    f"FRAME value {key}={raw[key]!r} is not a number", payload.encode()
                ) from exc

        buffers = tuple(
            BufferInfo(
                number=n,
                sample=number(f"BUF{n}SAMPLE"),
                complete=bool(number(f"BUF{n}COMPLETE")),
                mode=number(f"BUF{n}MODE"),
                base=number(f"BUF{n}BASE"),
                frame=number(f"BUF{n}FRAME"),
                width=number(f"BUF{n}WIDTH"),
                height=number(f"BUF{n}HEIGHT"),
                lines=number(f"BUF{n}LINES"),
                timestamp=number(f"BUF{n}TIMESTAMP"),
                # Optional: a timing script that latches no edges leaves them out.
                re_timestamp=number(f"BUF{n}RETIMESTAMP", 0),
                fe_timestamp=number(f"BUF{n}FETIMESTAMP", 0),
            )
            for n in range(1, N_BUFFERS + 1)
        )
        return cls(timer=number("TIMER"), rbuf=number("RBUF"), wbuf=number("WBUF"), buffers=buffers)


MODULE_TYPES: dict[int, str] = {
    0: "none",
    1: "Driver",
    2: "AD",
    3: "LVBias",
    4: "HVBias",
    5: "Heater",
    7: "HS",
    8: "HVXBias",
    9: "LVXBias",
    10: "LVDS",
    11: "HeaterX",
    12: "XVBias",
    13: "ADF",
    14: "ADX",
    15: "ADLN",
    16: "DriverX",
}
"""Archon module type codes (6 is not a valid type)."""

N_SLOTS = 12


@dataclass(frozen=True, slots=True)
class ModuleInfo:
    """One backplane slot that holds a module."""

    slot: int
    type: int
    rev: int
    version: str
    id: str

    @property
    def type_name(self) -> str:
        return MODULE_TYPES.get(self.type, f"type {self.type}")


@dataclass(frozen=True, slots=True)
class SystemInfo:
    """One SYSTEM reply: the backplane and the modules present (MOD_PRESENT mask)."""

    backplane_type: int
    backplane_rev: int
    backplane_version: str
    backplane_id: str
    power_id: str
    modules: tuple[ModuleInfo, ...]
    values: dict[str, str]

    @classmethod
    def parse(cls, payload: str) -> SystemInfo:
        raw = parse_key_values(payload)
        try:
            present = int(raw.get("MOD_PRESENT", "0"), 16)
            modules = []
            for slot in range(1, N_SLOTS + 1):
                if not present & (1 << (slot - 1)):
                    continue
                module_type = int(raw[f"MOD{slot}_TYPE"])
                if module_type == 6 or module_type not in MODULE_TYPES:
                    raise ArchonProtocolError(
                        f"SYSTEM reports invalid module type {module_type} in slot {slot}",
                        payload.encode(),
                    )
                modules.append(
                    ModuleInfo(
                        slot=slot,
                        type=module_type,
                        rev=int(raw.get(f"MOD{slot}_REV", "0")),
                        version=raw.get(f"MOD{slot}_VERSION", ""),
                        id=raw.get(f"MOD{slot}_ID", ""),
                    )
                )
            return cls(
                backplane_type=int(raw["BACKPLANE_TYPE"]),
                backplane_rev=int(raw["BACKPLANE_REV"]),
                backplane_version=raw["BACKPLANE_VERSION"],
                backplane_id=raw["BACKPLANE_ID"],
                power_id=raw.get("POWER_ID", ""),
                modules=tuple(modules),
                values=raw,
            )
        except KeyError as exc:
            raise ArchonProtocolError(f"SYSTEM without {exc.args[0]}", payload.encode()) from exc
        except ValueError as exc:
            raise ArchonProtocolError(
                f"SYSTEM value not a number: {exc}", payload.encode()
            ) from exc
