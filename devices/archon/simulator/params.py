"""Timing parameters: the integers the timing script reads (Exposures, IntCS, ...).

Clients upper-case whole commands (sdss-archon does), so names match
case-insensitively; a name keeps the spelling it was first loaded with so tests and
logs read like the ACF.  Every change wakes the timing core through ``on_change``.
"""

from __future__ import annotations

from collections.abc import Callable

from devices.archon.acf import AcfConfig

__all__ = ["TimingParameters", "parse_int"]


def parse_int(text: str) -> int | None:
    """``int(text)`` or None: parameter values on the wire are decimal integers."""
    try:
        return int(text.strip())
    except ValueError:
        return None


class TimingParameters:
    """Current parameter values, keyed by folded name."""

    def __init__(self, on_change: Callable[[], None]) -> None:
        self._values: dict[str, int] = {}
        self._names: dict[str, str] = {}
        self._on_change = on_change

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._values

    def load(self, acf: AcfConfig) -> None:
        """LOADPARAMS / APPLYALL: take every integer parameter of ``acf``."""
        for name, value in acf.parameters.items():
            number = parse_int(value)
            if number is not None:
                self._define(name, number)
        self._on_change()

    def get(self, name: str, default: int = 0) -> int:
        return self._values.get(name.lower(), default)

    def set(self, name: str, value: int) -> bool:
        """Change an existing parameter (FASTLOADPARAM); False if there is none."""
        if name.lower() not in self._values:
            return False
        self._values[name.lower()] = value
        self._on_change()
        return True

    def define(self, name: str, value: int) -> None:
        """Set a parameter, creating it if needed (LOADPARAM from configuration memory)."""
        self._define(name, value)
        self._on_change()

    def snapshot(self) -> dict[str, int]:
        """Name (first spelling) -> value."""
        return {self._names[k]: v for k, v in self._values.items()}

    def _define(self, name: str, value: int) -> None:
        self._names.setdefault(name.lower(), name)
        self._values[name.lower()] = value
