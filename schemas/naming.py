"""File names from templates, and the observing night a moment belongs to.

A template may only use a fixed set of fields, checked when the config is loaded:
no attribute access, no conversions, no eval, a format spec that works for the
field's type, and a result that is one plain file name (no folder, no '..').
Object names are sanitized before they reach a file name.
"""

from __future__ import annotations

import math
import re
import string
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

FIELDS: dict[str, type] = {
    "instrument": str,
    "ccd": str,
    "expnum": int,
    "mjd": int,
    "sjd": int,
    "date": str,
    "imagetyp": str,
    "object": str,
}
"""Every field a file-name template may use, with the type of its value."""

_SAMPLE: dict[str, object] = {
    "instrument": "inst",
    "ccd": "r1",
    "expnum": 12345,
    "mjd": 61000,
    "sjd": 61000,
    "date": "20261121",
    "imagetyp": "object",
    "object": "M42",
}

_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")
MAX_NAME = 200


def sanitize(text: str, *, fallback: str = "none", limit: int = 40) -> str:
    """Reduce free text (an object name) to characters safe in a file name.

    Separators, spaces, runs of dots and anything else become ``_``; leading dots
    are removed so that no name is hidden or means "parent folder".
    """
    cleaned = _UNSAFE.sub("_", text)
    cleaned = re.sub(r"\.{2,}", "_", cleaned)
    cleaned = re.sub(r"_{2,}", "_", cleaned).strip("._")
    return cleaned[:limit] or fallback


def check_template(template: str, *, needs_ccd: bool) -> str:
    """Return ``template`` if it is a safe file-name template, else raise ValueError."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"template {template!r} is malformed: {exc}") from exc
    used: set[str] = set()
    for _, field, spec, conversion in parsed:
        if field is None:
            continue
        if field not in FIELDS:
            allowed = ", ".join("{" + name + "}" for name in FIELDS)
            raise ValueError(f"template field {{{field}}} is unknown; allowed: {allowed}")
        if conversion:
            raise ValueError(
                f"template field {{{field}!{conversion}}}: conversions are not allowed"
            )
        if spec and ("{" in spec or "}" in spec):
            raise ValueError(f"template field {{{field}}}: nested fields are not allowed")
        try:
            format(_SAMPLE[field], spec or "")
        except ValueError as exc:
            raise ValueError(f"template field {{{field}:{spec}}}: {exc}") from exc
        used.add(field)
    if "expnum" not in used:
        raise ValueError("template must contain {expnum}, or two exposures would share a name")
    if needs_ccd and "ccd" not in used:
        raise ValueError("template must contain {ccd} when each CCD has its own file")
    sample = template.format(**_SAMPLE)
    if "/" in sample or "\\" in sample or sample.startswith(".") or ".." in sample:
        raise ValueError(f"template {template!r} must give a plain file name, not a path")
    if not sample.endswith((".fits", ".fits.fz", ".fit")):
        raise ValueError(f"template {template!r} must end with .fits (or .fits.fz)")
    if len(sample) > MAX_NAME:
        raise ValueError(f"template {template!r} gives names longer than {MAX_NAME} characters")
    return template


def render(template: str, **values: object) -> str:
    """Fill a checked template; string values are sanitized on the way in."""
    clean = {
        key: sanitize(value) if isinstance(value, str) else value for key, value in values.items()
    }
    return template.format(**clean)


@dataclass(frozen=True, slots=True)
class NightRule:
    """Which observing night a moment belongs to: nights roll over at a local time."""

    timezone: str = "UTC"
    rollover: time = time(12, 0)

    def __post_init__(self) -> None:
        check_timezone(self.timezone)

    def night(self, when: datetime) -> date:
        """The date on which the night containing ``when`` began (local calendar)."""
        local = when.astimezone(ZoneInfo(self.timezone))
        if local.time() < self.rollover:
            return local.date() - timedelta(days=1)
        return local.date()

    def folder(self, when: datetime) -> str:
        return self.night(when).strftime("%Y%m%d")


def check_timezone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {name!r} (use an IANA name such as 'UTC')") from exc
    return name


def mjd_of(when: datetime) -> float:
    """Modified Julian Date (UTC) of ``when``."""
    epoch = datetime(1858, 11, 17, tzinfo=ZoneInfo("UTC"))
    return (when - epoch).total_seconds() / 86400.0


def sjd_of(when: datetime) -> int:
    """SDSS-style integer day number: MJD + 0.3, so one number spans a night in the west."""
    return math.floor(mjd_of(when) + 0.3)
