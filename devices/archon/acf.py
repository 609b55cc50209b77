"""Archon configuration files (ACF): parsing, wire form and frame-buffer geometry.

An ACF is the INI file the Archon GUI saves. Its ``[CONFIG]`` section is exactly what
the controller holds in its configuration memory, one ``KEY=VALUE`` line per slot;
``[SYSTEM]`` records the backplane and module inventory it was written on.  Two
spellings of the same line exist and both matter to us:

* in the file, keys use ``\\`` (``MOD2\\XVN_V1``) and values that contain commas or
  semicolons are double-quoted (``TAPLINE0="AD4L, -3, 1000"``);
* on the wire (``WCONFIG``/``RCONFIG``) keys use ``/`` and values carry no quotes.

:class:`AcfConfig` stores the wire form, because that is what we send, what the
controller echoes back, and what the simulator keeps in its memory.

Frame-buffer geometry (THE convention of ccdflow; post-processing and the simulator
both rely on it).  Let ``L = LINECOUNT``, ``P = PIXELCOUNT`` and ``T`` the number of
non-empty TAPLINEs.

* Split mode (``FRAMEMODE=2``): the buffer is ``(2L, P*T/2)``.  Tap ``j < T/2`` sits
  in rows ``[0, L)``, columns ``[jP, (j+1)P)``; tap ``j >= T/2`` sits in rows
  ``[L, 2L)``, columns ``[(j-T/2)P, (j-T/2+1)P)``.
* Top/bottom modes (``FRAMEMODE`` 0/1): the buffer is ``(L, P*T)`` and tap ``j`` sits
  in rows ``[0, L)``, columns ``[jP, (j+1)P)``.
* Each tap's block is in READOUT order: column 0 is the first pixel read (nearest the
  amplifier), row 0 the first line read (nearest the serial register).  The first
  ``Pixels`` columns are image data, the last ``OverscanPixels`` columns overscan
  (``P = Pixels + OverscanPixels``); rows ``[Lines, L)`` would be overscan lines.
* :func:`ccd_layout` with ``n`` CCDs gives each CCD ``t = T/n`` taps.  Split mode:
  CCD ``i`` owns columns ``[i*(t/2)*P, (i+1)*(t/2)*P)`` over all ``2L`` rows, i.e.
  bottom taps ``i*t/2 ..`` and top taps ``T/2 + i*t/2 ..``.  Other modes: CCD ``i``
  owns columns ``[i*t*P, (i+1)*t*P)``.  Each amplifier keeps its block's position
  relative to the CCD and is flipped in place into physical orientation: columns
  when its direction is ``R`` (the amplifier is at the right, so its first pixel
  is the rightmost), rows when it is in the upper half in split mode (its serial
  register is at the top).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np

from devices.geometry import (
    AmplifierRegion,
    CcdRegion,
    Tap,
    amplifier_data,
    assemble_ccd,
)

__all__ = [
    "AcfConfig",
    "AcfError",
    "AmplifierRegion",
    "CcdRegion",
    "Tap",
    "amplifier_data",
    "assemble_ccd",
    "ccd_layout",
    "load_acf",
    "parse_acf",
    "parse_wire_lines",
    "tap_regions",
]

__all__ = [
    "AcfConfig",
    "AcfError",
    "AmplifierRegion",
    "CcdRegion",
    "Tap",
    "amplifier_data",
    "assemble_ccd",
    "ccd_layout",
    "load_acf",
    "parse_acf",
    "parse_wire_lines",
    "tap_regions",
]

_S = TypeVar("_S", bound=np.generic)

_SECTION_RE = re.compile(r"^\[([^\]]*)\]$")
_TAPLINE_KEY_RE = re.compile(r"^TAPLINE(\d+)$", re.IGNORECASE)
_PARAMETER_KEY_RE = re.compile(r"^PARAMETER(\d+)$", re.IGNORECASE)
_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_TAPLINE_VALUE_RE = re.compile(
    rf"^\s*([A-Za-z]+\d+)([LRlr])\s*,\s*({_NUMBER})\s*,\s*({_NUMBER})\s*$"
)
_PARAM_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class AcfError(ValueError):
    """Bad ACF content; message names the line number (1-based) and the key.

    A ValueError subclass so callers validating user input can catch one type.
    """

    line: int | None
    key: str | None

    def __init__(
        self,
        message: str,
        *,
        line: int | None = None,
        key: str | None = None,
        source: str | None = None,
    ) -> None:
        self.line = line
        self.key = key
        where = source or ""
        if line is not None:
            where = f"{where}:line {line}" if where else f"line {line}"
        prefix = f"{where}: " if where else ""
        if key:
            prefix += f"{key}: "
        super().__init__(prefix + message)


@dataclass(frozen=True, slots=True)
class _Entry:
    key: str
    value: str
    line: int


@dataclass(frozen=True)
class AcfConfig:
    """A parsed ACF: the [CONFIG] lines in wire form plus the values we derive from them."""

    source: str
    config: tuple[tuple[str, str], ...]
    system: dict[str, str]
    parameters: dict[str, str]
    taps: tuple[Tap, ...]
    line_count: int
    pixel_count: int
    frame_mode: int
    sample_mode: int
    bigbuf: bool
    _param_index: dict[str, tuple[str, str]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Archon clients upper-case names (sdss-archon does), so lookups must not
        # depend on case; precompute the folded index once.
        index = {name.lower(): (name, value) for name, value in self.parameters.items()}
        object.__setattr__(self, "_param_index", index)

    def parameter(self, name: str) -> str:
        """Value of timing parameter ``name``, matched case-insensitively."""
        try:
            return self._param_index[name.lower()][1]
        except KeyError:
            raise KeyError(f"ACF {self.source} has no parameter {name!r}") from None

    def parameter_int(self, name: str, default: int | None = None) -> int:
        """Integer value of parameter ``name``; ``default`` if absent (KeyError if none)."""
        found = self._param_index.get(name.lower())
        if found is None:
            if default is None:
                raise KeyError(f"ACF {self.source} has no parameter {name!r}")
            return default
        spelled, value = found
        try:
            return int(value.strip())
        except ValueError:
            raise AcfError(
                f"parameter value {value!r} is not an integer", key=spelled, source=self.source
            ) from None

    @property
    def bytes_per_pixel(self) -> int:
        """2 in 16-bit sample mode, 4 in 32-bit mode."""
        return 4 if self.sample_mode == 1 else 2

    @property
    def buffer_shape(self) -> tuple[int, int]:
        """(height, width) of one frame buffer; see the module docstring."""
        n_taps = len(self.taps)
        if self.frame_mode == 2:
            return 2 * self.line_count, self.pixel_count * n_taps // 2
        return self.line_count, self.pixel_count * n_taps

    @property
    def buffer_bytes(self) -> int:
        """Size of one frame in bytes (what FETCH must transfer before padding)."""
        height, width = self.buffer_shape
        return height * width * self.bytes_per_pixel

    def wire_lines(self) -> list[str]:
        """The [CONFIG] lines as WCONFIG sends them and RCONFIG returns them."""
        return [f"{key}={value}" for key, value in self.config]


def load_acf(path: str | os.PathLike[str]) -> AcfConfig:
    """Read and parse an ACF file (ACFs are ASCII; undecodable bytes are an error)."""
    p = Path(path)
    return parse_acf(p.read_text(encoding="utf-8-sig"), source=str(p))


def parse_acf(text: str, source: str = "<string>") -> AcfConfig:
    """Parse ACF file text (file form: ``\\`` in keys, quoted values)."""
    sections = _scan_sections(text, source)
    config = sections.get("CONFIG")
    if config is None:
        raise AcfError("no [CONFIG] section", source=source)
    system = {e.key: e.value for e in sections.get("SYSTEM", [])}
    return _build(config, system, source)


def parse_wire_lines(
    lines: Iterable[str],
    *,
    system: Mapping[str, str] | None = None,
    source: str = "<wire>",
) -> AcfConfig:
    """Build an AcfConfig from configuration memory lines (wire form, no quotes).

    Used by the simulator to re-derive its geometry after WCONFIG/APPLY*, and by
    clients that read a controller's memory back with RCONFIG.  Line numbers in
    errors are 1-based positions in ``lines``.  Empty lines are skipped, as the
    controller's memory ends at the first empty slot.
    """
    entries: list[_Entry] = []
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line:
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise AcfError("expected KEY=VALUE", line=number, source=source)
        entries.append(_Entry(key.strip().replace("\\", "/"), value.strip(), number))
    return _build(entries, dict(system or {}), source)


def _unquote(value: str) -> str:
    """Strip the double quotes the GUI puts around values with commas/semicolons."""
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        return value[1:-1]
    return value


def _scan_sections(text: str, source: str) -> dict[str, list[_Entry]]:
    """Split INI text into sections of entries, remembering each entry's line number."""
    sections: dict[str, list[_Entry]] = {}
    current: list[_Entry] | None = None
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line[0] in ";#":
            continue
        header = _SECTION_RE.match(line)
        if header:
            current = sections.setdefault(header.group(1).strip().upper(), [])
            continue
        key, sep, value = line.partition("=")
        if current is None:
            raise AcfError("content before the first [SECTION]", line=number, source=source)
        if not sep or not key.strip():
            raise AcfError(f"expected KEY=VALUE, got {line[:60]!r}", line=number, source=source)
        wire_key = key.strip().replace("\\", "/")
        current.append(_Entry(wire_key, _unquote(value.strip()), number))
    return sections


def _build(entries: list[_Entry], system: dict[str, str], source: str) -> AcfConfig:
    """Validate [CONFIG] entries and derive geometry, taps and parameters."""
    index: dict[str, _Entry] = {}
    for entry in entries:
        folded = entry.key.upper()
        if folded in index:
            first = index[folded].line
            raise AcfError(
                f"duplicate key (first on line {first})",
                line=entry.line,
                key=entry.key,
                source=source,
            )
        index[folded] = entry

    line_count = _required_int(index, "LINECOUNT", source, minimum=1)
    pixel_count = _required_int(index, "PIXELCOUNT", source, minimum=1)
    frame_mode = _optional_int(index, "FRAMEMODE", source, allowed=range(3))
    sample_mode = _optional_int(index, "SAMPLEMODE", source, allowed=range(2))
    bigbuf = _optional_int(index, "BIGBUF", source, allowed=range(2)) == 1
    taps = _parse_taps(entries, source)
    if not taps:
        raise AcfError("no non-empty TAPLINEn entries", source=source)
    if frame_mode == 2 and len(taps) % 2:
        raise AcfError(
            f"split frame mode needs an even number of taps, found {len(taps)}",
            line=index["FRAMEMODE"].line,
            key="FRAMEMODE",
            source=source,
        )
    return AcfConfig(
        source=source,
        config=tuple((e.key, e.value) for e in entries),
        system=system,
        parameters=_parse_parameters(entries, source),
        taps=taps,
        line_count=line_count,
        pixel_count=pixel_count,
        frame_mode=frame_mode,
        sample_mode=sample_mode,
        bigbuf=bigbuf,
    )


def _as_int(entry: _Entry, source: str) -> int:
    try:
        return int(entry.value.strip())
    except ValueError:
        raise AcfError(
            f"expected an integer, got {entry.value!r}",
            line=entry.line,
            key=entry.key,
            source=source,
        ) from None


def _required_int(index: dict[str, _Entry], key: str, source: str, *, minimum: int) -> int:
    entry = index.get(key)
    if entry is None:
        raise AcfError("missing required key", key=key, source=source)
    value = _as_int(entry, source)
    if value < minimum:
        raise AcfError(
            f"must be >= {minimum}, got {value}", line=entry.line, key=entry.key, source=source
        )
    return value


def _optional_int(index: dict[str, _Entry], key: str, source: str, *, allowed: range) -> int:
    """Integer key that defaults to 0 (the controller's power-on value) when absent."""
    entry = index.get(key)
    if entry is None:
        return 0
    value = _as_int(entry, source)
    if value not in allowed:
        raise AcfError(
            f"must be in {allowed.start}..{allowed.stop - 1}, got {value}",
            line=entry.line,
            key=entry.key,
            source=source,
        )
    return value


def _parse_taps(entries: list[_Entry], source: str) -> tuple[Tap, ...]:
    """Non-empty TAPLINEn entries ordered by n; empty ones are unused slots."""
    taps: list[Tap] = []
    for entry in entries:
        match = _TAPLINE_KEY_RE.match(entry.key)
        if not match or not entry.value.strip():
            continue
        value = _TAPLINE_VALUE_RE.match(entry.value)
        if value is None:
            raise AcfError(
                f"expected 'ADnL|R, gain, offset', got {entry.value!r}",
                line=entry.line,
                key=entry.key,
                source=source,
            )
        channel, direction, gain, offset = value.groups()
        taps.append(
            Tap(
                index=int(match.group(1)),
                channel=channel.upper(),
                direction="R" if direction.upper() == "R" else "L",
                gain=float(gain),
                offset=float(offset),
            )
        )
    return tuple(sorted(taps, key=lambda t: t.index))


def _parse_parameters(entries: list[_Entry], source: str) -> dict[str, str]:
    """PARAMETERn="Name=value" entries ordered by n.

    Values without ``=`` (empty slots, ``# Switches`` section labels the GUI users
    put in) are not parameters and are skipped.
    """
    found: list[tuple[int, str, str]] = []
    seen: dict[str, int] = {}
    for entry in entries:
        match = _PARAMETER_KEY_RE.match(entry.key)
        if not match:
            continue
        text = entry.value.strip()
        if not text or text.startswith("#") or "=" not in text:
            continue
        name, _, value = text.partition("=")
        name = name.strip()
        if not _PARAM_NAME_RE.match(name):
            raise AcfError(
                f"bad parameter name {name!r}", line=entry.line, key=entry.key, source=source
            )
        if name.lower() in seen:
            raise AcfError(
                f"parameter {name!r} already defined on line {seen[name.lower()]}",
                line=entry.line,
                key=entry.key,
                source=source,
            )
        seen[name.lower()] = entry.line
        found.append((int(match.group(1)), name, value.strip()))
    found.sort(key=lambda item: item[0])
    return {name: value for _, name, value in found}


# --------------------------------------------------------------------------- geometry


def tap_regions(acf: AcfConfig) -> tuple[tuple[slice, slice], ...]:
    """(rows, cols) of each tap's block in the raw buffer, in tap order."""
    lines, pixels, n_taps = acf.line_count, acf.pixel_count, len(acf.taps)
    regions: list[tuple[slice, slice]] = []
    for j in range(n_taps):
        if acf.frame_mode == 2:
            half = n_taps // 2
            row0 = 0 if j < half else lines
            col = j % half
        else:
            row0, col = 0, j
        regions.append((slice(row0, row0 + lines), slice(col * pixels, (col + 1) * pixels)))
    return tuple(regions)


def _amp_name(k: int) -> str:
    """A, B, ..., Z, AA, AB, ... (more than 26 amplifiers per CCD is not expected)."""
    name = ""
    k += 1
    while k:
        k, rem = divmod(k - 1, 26)
        name = chr(ord("A") + rem) + name
    return name


def _ccd_taps(acf: AcfConfig, n_ccds: int) -> list[list[int]]:
    """Tap indices of each CCD, bottom taps before top taps in split mode."""
    n_taps = len(acf.taps)
    if n_ccds < 1:
        raise ValueError(f"n_ccds must be >= 1, got {n_ccds}")
    if n_taps % n_ccds:
        raise AcfError(f"{n_taps} taps cannot be shared by {n_ccds} CCDs", source=acf.source)
    per_ccd = n_taps // n_ccds
    if acf.frame_mode != 2:
        return [list(range(i * per_ccd, (i + 1) * per_ccd)) for i in range(n_ccds)]
    if per_ccd % 2:
        raise AcfError(
            f"split frame mode needs an even number of taps per CCD, got {per_ccd}",
            source=acf.source,
        )
    half, per_half = n_taps // 2, per_ccd // 2
    return [
        list(range(i * per_half, (i + 1) * per_half))
        + list(range(half + i * per_half, half + (i + 1) * per_half))
        for i in range(n_ccds)
    ]


def ccd_layout(acf: AcfConfig, n_ccds: int) -> tuple[CcdRegion, ...]:
    """Split the buffer into ``n_ccds`` CCDs and their amplifiers (module docstring rules)."""
    height, width = acf.buffer_shape
    ccd_width = width // n_ccds if n_ccds >= 1 else 0
    regions = tap_regions(acf)
    split = acf.frame_mode == 2
    ccds: list[CcdRegion] = []
    for i, tap_ids in enumerate(_ccd_taps(acf, n_ccds)):
        col0 = i * ccd_width
        amps: list[AmplifierRegion] = []
        for k, j in enumerate(tap_ids):
            rows, cols = regions[j]
            amps.append(
                AmplifierRegion(
                    name=_amp_name(k),
                    tap=acf.taps[j],
                    buffer_rows=rows,
                    buffer_cols=cols,
                    flip_rows=split and rows.start >= acf.line_count,
                    flip_cols=acf.taps[j].direction == "R",
                    ccd_rows=rows,
                    ccd_cols=slice(cols.start - col0, cols.stop - col0),
                )
            )
        ccds.append(
            CcdRegion(
                index=i,
                buffer_rows=slice(0, height),
                buffer_cols=slice(col0, col0 + ccd_width),
                shape=(height, ccd_width),
                amplifiers=tuple(amps),
            )
        )
    return tuple(ccds)
