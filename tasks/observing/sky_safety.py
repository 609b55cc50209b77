"""Is it safe to open the shutter? The rule, without any device (schemas/weather.py).

Readings come in with the time they were taken; :class:`SkySafety` says safe or
unsafe, and why. The first judgement is safe at once if every reading is in and
safe (a run that starts under a clear sky does not wait). Unsafe at once when a
monitor says so, a limit is broken, or a watched device's last reading is older than
``max_age_s`` (or there is none); safe again only after every reading has been safe
for ``resume_after_s`` without a break. Pure, so the hysteresis and the staleness
are tested without a sky.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from devices.telemetry import Reading
from schemas.weather import WeatherSafety


@dataclass(frozen=True, slots=True)
class Verdict:
    safe: bool
    reason: str
    """Why unsafe; for safe, "safe" or what it still waits for."""


class SkySafety:
    """Readings in, verdicts out (module docstring). Starts unsafe: nothing read yet."""

    def __init__(self, config: WeatherSafety) -> None:
        self.config = config
        self._seen: dict[str, tuple[float, Mapping[str, Reading]]] = {}
        self._safe_since: float | None = None
        self._judged = False
        self.verdict = Verdict(False, "no reading yet")

    def reading(self, device: str, at_s: float, values: Mapping[str, Reading]) -> None:
        """Record what ``device`` said at monotonic ``at_s``."""
        self._seen[device] = (at_s, values)

    def judge(self, now_s: float) -> Verdict:
        """The verdict at ``now_s`` (also kept as ``self.verdict``)."""
        problem = self._problem(now_s)
        first, self._judged = not self._judged, True
        if problem is None and first:
            self.verdict = Verdict(True, "safe")
            return self.verdict
        if problem is not None:
            self._safe_since = None
            self.verdict = Verdict(False, problem)
            return self.verdict
        if self.verdict.safe:
            return self.verdict
        if self._safe_since is None:
            self._safe_since = now_s
        waited = now_s - self._safe_since
        if waited >= self.config.resume_after_s:
            self.verdict = Verdict(True, "safe")
        else:
            left = self.config.resume_after_s - waited
            self.verdict = Verdict(False, f"safe for {waited:.0f} s, {left:.0f} s to go")
        return self.verdict

    def _problem(self, now_s: float) -> str | None:
        config = self.config
        for name in config.devices():
            seen = self._seen.get(name)
            if seen is None:
                return f"no reading from {name}"
            age = now_s - seen[0]
            if age > config.max_age_s:
                return f"{name}'s last reading is {age:.0f} s old (max_age_s {config.max_age_s:g})"
        for name in config.monitors:
            if self._seen[name][1].get("is_safe") is not True:
                return f"{name} says unsafe"
        for limit in config.limits:
            value = self._seen[limit.device][1].get(limit.property)
            if not isinstance(value, int | float) or isinstance(value, bool):
                return f"{limit.device}.{limit.property} not reported"
            if (broken := limit.broken_by(float(value))) is not None:
                return broken
        return None
