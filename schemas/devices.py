"""The instrument's other devices: filter wheel, focuser, telescope, dome, weather ...

Each entry of an instrument config's ``devices:`` names one device on an Alpaca
server. Its readings can go into headers as ``device.<name>.<property>`` sources,
sampled at integration start and end like a camera's telemetry. The properties each
device type reports are listed here (the keys of the adapters' telemetry,
devices/alpaca/, which a test keeps in step), so a card naming an unknown device or
property is refused when the config loads.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Literal

from pydantic import Field

from schemas.form_order import FormModel

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,15}$"


class DeviceType(StrEnum):
    """ASCOM device types, as Alpaca spells them in its URLs."""

    FILTERWHEEL = "filterwheel"
    FOCUSER = "focuser"
    TELESCOPE = "telescope"
    DOME = "dome"
    ROTATOR = "rotator"
    SAFETYMONITOR = "safetymonitor"
    OBSERVINGCONDITIONS = "observingconditions"
    SWITCH = "switch"
    COVERCALIBRATOR = "covercalibrator"


DEVICE_PROPERTIES: dict[DeviceType, frozenset[str]] = {
    DeviceType.FILTERWHEEL: frozenset({"filter_position", "filter_name", "filter_focus_offset"}),
    DeviceType.FOCUSER: frozenset(
        {"focus_position", "focus_moving", "focus_temperature_c", "focus_temp_comp"}
    ),
    DeviceType.TELESCOPE: frozenset(
        {
            "ra_hours",
            "dec_deg",
            "alt_deg",
            "az_deg",
            "tracking",
            "tracking_rate",
            "pier_side",
            "sidereal_time_hours",
            "slewing",
            "at_park",
        }
    ),
    DeviceType.DOME: frozenset(
        {
            "shutter",
            "dome_azimuth_deg",
            "dome_altitude_deg",
            "dome_slewing",
            "dome_slaved",
            "dome_at_park",
            "dome_at_home",
        }
    ),
    DeviceType.ROTATOR: frozenset(
        {"rotator_position_deg", "rotator_mechanical_deg", "rotator_moving", "rotator_reverse"}
    ),
    DeviceType.SAFETYMONITOR: frozenset({"is_safe"}),
    DeviceType.OBSERVINGCONDITIONS: frozenset(
        {
            "cloud_cover_pct",
            "dew_point_c",
            "humidity_pct",
            "pressure_hpa",
            "rain_rate_mm_per_h",
            "sky_brightness_lux",
            "sky_quality_mag_arcsec2",
            "sky_temperature_c",
            "star_fwhm_arcsec",
            "temperature_c",
            "wind_direction_deg",
            "wind_gust_m_per_s",
            "wind_speed_m_per_s",
            "average_period_h",
        }
    ),
    DeviceType.SWITCH: frozenset(),  # switch_<id>, see SWITCH_PROPERTY
    DeviceType.COVERCALIBRATOR: frozenset({"cover", "calibrator", "calibrator_brightness"}),
}
"""Per device type, the properties a header card may name."""

SWITCH_PROPERTY = re.compile(r"^switch_[0-9]{1,3}$")
"""A switch's readings are one per switch: ``switch_0``, ``switch_1`` ..."""


def property_problem(device_type: DeviceType, name: str) -> str | None:
    """Why ``name`` is not a property of ``device_type`` (None: it is)."""
    if name in DEVICE_PROPERTIES[device_type]:
        return None
    if device_type is DeviceType.SWITCH and SWITCH_PROPERTY.match(name):
        return None
    known = sorted(DEVICE_PROPERTIES[device_type]) or ["switch_<id>"]
    return f"a {device_type.value} has no property {name!r} (it has {', '.join(known)})"


class DeviceConfig(FormModel):
    """One device on an Alpaca server (``kind: alpaca``, the one kind so far)."""

    name: str = Field(pattern=NAME_PATTERN, description="how header sources name it")
    kind: Literal["alpaca"] = "alpaca"
    type: DeviceType
    host: str = Field(default="127.0.0.1", min_length=1)
    port: int = Field(default=11111, ge=1, le=65535)
    device_number: int = Field(default=0, ge=0, le=99)
    timeout_s: float = Field(default=5.0, gt=0, le=600, description="bound on every call")
