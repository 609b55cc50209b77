"""What the device adapters refuse before anything is sent, and the errors that say so.

A value outside the limits a device tells (a focuser beyond MaxStep, a switch value off
its step, a declination of 91 degrees) and an operation the device says it lacks
(CanPark false) are refused here, in the caller's process: nothing reaches the
device, so nothing can half-happen, and the error names the field and its limits
instead of a driver's generic InvalidValue.

The errors inherit twice, like the rest of :mod:`devices.alpaca.errors`:

* :class:`AlpacaValueError` (``AlpacaError`` and ``ValueError``): a value the device
  cannot take; ``field``, ``value`` and ``allowed`` say which and why;
* :class:`AlpacaCapabilityError` (``AlpacaError`` and ``DeviceUnsupportedError``): the
  device says it cannot do this (``capability`` names the Can... property);
* :class:`AlpacaDeviceFaultError` (``AlpacaError`` and ``DeviceStateError``): while we
  waited, the device reported a fault (ShutterStatus Error, CoverState Error) or
  stopped somewhere it was not sent.
"""

from __future__ import annotations

import math

from devices.alpaca.errors import AlpacaError
from devices.base import DeviceStateError, DeviceUnsupportedError


class AlpacaValueError(AlpacaError, ValueError):
    """A value the device cannot take, refused before anything was sent."""

    def __init__(
        self, field: str, value: object, allowed: str, *, device: str = "", member: str = ""
    ) -> None:
        super().__init__(
            f"{field}={value!r} refused before sending: {allowed}", device=device, member=member
        )
        self.field = field
        self.value = value
        self.allowed = allowed


class AlpacaCapabilityError(AlpacaError, DeviceUnsupportedError):
    """The device says it cannot do this; nothing was sent.

    ``capability`` names the property that says so (``CanPark``, ``CoverState``).
    """

    def __init__(
        self, capability: str, *, device: str = "", member: str = "", detail: str = ""
    ) -> None:
        why = detail or f"the device reports {capability} = False"
        super().__init__(f"{why}; refused before sending", device=device, member=member)
        self.capability = capability


class AlpacaDeviceFaultError(AlpacaError, DeviceStateError):
    """The device reported a fault while we waited, or stopped short of its target.

    No ErrorNumber comes with it (the device answered the poll), so ``number`` is 0.
    """


def check_finite(value: float, field: str, *, device: str, member: str) -> float:
    """``value`` as a float, if it is a finite number (NaN and infinities mean nothing)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise AlpacaValueError(
            field, value, "a finite number is needed", device=device, member=member
        )
    return float(value)


def check_range(
    value: float,
    low: float,
    high: float,
    field: str,
    *,
    device: str,
    member: str,
    high_open: bool = False,
    unit: str = "",
) -> float:
    """``value`` if ``low <= value <= high`` (``< high`` when ``high_open``), else refused.

    ``high_open`` is for circular quantities where the top is the bottom again
    (azimuth 360 is 0, right ascension 24 h is 0 h): the devices take ``[0, 360)``.
    """
    number = check_finite(value, field, device=device, member=member)
    above = number >= high if high_open else number > high
    if number < low or above:
        close = ")" if high_open else "]"
        suffix = f" {unit}" if unit else ""
        raise AlpacaValueError(
            field,
            value,
            f"the device takes [{low:g}, {high:g}{close}{suffix}",
            device=device,
            member=member,
        )
    return number


def check_integer_range(
    value: int, low: int, high: int, field: str, *, device: str, member: str, what: str = ""
) -> int:
    """An integer in ``low..high`` inclusive (a slot, a step, a switch id), else refused."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise AlpacaValueError(field, value, "an integer is needed", device=device, member=member)
    if not low <= value <= high:
        limits = f"the device takes {low}..{high}"
        raise AlpacaValueError(
            field, value, f"{limits} ({what})" if what else limits, device=device, member=member
        )
    return value


def require(capable: bool, capability: str, *, device: str, member: str, detail: str = "") -> None:
    """Refuse an operation whose ``capability`` (``CanPark`` ...) the device reports false."""
    if not capable:
        raise AlpacaCapabilityError(capability, device=device, member=member, detail=detail)


__all__ = [
    "AlpacaCapabilityError",
    "AlpacaDeviceFaultError",
    "AlpacaValueError",
    "check_finite",
    "check_integer_range",
    "check_range",
    "require",
]
