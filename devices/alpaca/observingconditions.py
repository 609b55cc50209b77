"""The ASCOM ObservingConditions as an Alpaca device view: weather, where measured.

A weather station implements the sensors it has and answers NotImplemented (0x400)
for the rest; a missing sensor is absent (None, left out of :meth:`readings`), never
an error, while any other failure of a sensor propagates. Which sensors are absent is
remembered per view, so telemetry stops asking for them.

Units are ASCOM's: cloud cover and humidity in percent, temperatures in degrees
Celsius, pressure in hPa, rain rate in mm/h, sky brightness in lux, sky quality in
mag/arcsec^2, star FWHM in arcseconds, wind in m/s and degrees, AveragePeriod in hours.
"""

from __future__ import annotations

import asyncio
import math
from enum import StrEnum
from typing import ClassVar

from devices.alpaca.checks import AlpacaValueError, check_range
from devices.alpaca.client import AlpacaClient, Device
from devices.alpaca.reads import optional, read_all


class Sensor(StrEnum):
    """The sensors of IObservingConditions, by their ASCOM names (``SensorName``)."""

    CLOUD_COVER = "CloudCover"
    DEW_POINT = "DewPoint"
    HUMIDITY = "Humidity"
    PRESSURE = "Pressure"
    RAIN_RATE = "RainRate"
    SKY_BRIGHTNESS = "SkyBrightness"
    SKY_QUALITY = "SkyQuality"
    SKY_TEMPERATURE = "SkyTemperature"
    STAR_FWHM = "StarFWHM"
    TEMPERATURE = "Temperature"
    WIND_DIRECTION = "WindDirection"
    WIND_GUST = "WindGust"
    WIND_SPEED = "WindSpeed"

    @property
    def member(self) -> str:
        """The Alpaca member that reads it (``cloudcover``)."""
        return self.value.lower()


TELEMETRY_KEYS: dict[Sensor, str] = {
    Sensor.CLOUD_COVER: "cloud_cover_pct",
    Sensor.DEW_POINT: "dew_point_c",
    Sensor.HUMIDITY: "humidity_pct",
    Sensor.PRESSURE: "pressure_hpa",
    Sensor.RAIN_RATE: "rain_rate_mm_per_h",
    Sensor.SKY_BRIGHTNESS: "sky_brightness_lux",
    Sensor.SKY_QUALITY: "sky_quality_mag_arcsec2",
    Sensor.SKY_TEMPERATURE: "sky_temperature_c",
    Sensor.STAR_FWHM: "star_fwhm_arcsec",
    Sensor.TEMPERATURE: "temperature_c",
    Sensor.WIND_DIRECTION: "wind_direction_deg",
    Sensor.WIND_GUST: "wind_gust_m_per_s",
    Sensor.WIND_SPEED: "wind_speed_m_per_s",
}
"""The telemetry key of each sensor, with its unit."""


def sensor_named(name: str, *, device: str = "", member: str = "") -> Sensor:
    """The sensor called ``name``: its ASCOM name (``StarFWHM``), member (``starfwhm``)
    or Python spelling (``star_fwhm``, ``STAR_FWHM``); anything else is refused."""
    if isinstance(name, Sensor):
        return name
    key = name.replace("_", "").strip().lower()
    for sensor in Sensor:
        if sensor.member == key:
            return sensor
    raise AlpacaValueError(
        "SensorName",
        name,
        "the sensors are " + ", ".join(sensor.value for sensor in Sensor),
        device=device,
        member=member,
    )


class AlpacaObservingConditions(Device):
    """One Alpaca weather station (``/api/v1/observingconditions/{number}/...``)."""

    device_type: ClassVar[str] = "observingconditions"

    def __init__(self, client: AlpacaClient, number: int = 0) -> None:
        super().__init__(client, number)
        self._absent: set[Sensor] = set()

    @property
    def absent(self) -> frozenset[Sensor]:
        """The sensors this station said it does not implement (so far)."""
        return frozenset(self._absent)

    async def reading(self, sensor: Sensor | str, *, recheck: bool = False) -> float | None:
        """One sensor's value, or None when the station does not implement it.

        A sensor found absent is not asked again unless ``recheck``.
        """
        which = sensor_named(sensor, device=str(self.address), member="")
        if which in self._absent and not recheck:
            return None
        value = await optional(self.get_float(which.member))
        if value is None:
            self._absent.add(which)
        else:
            self._absent.discard(which)
        return value

    async def cloud_cover(self) -> float | None:
        """CloudCover, percent of the sky."""
        return await self.reading(Sensor.CLOUD_COVER)

    async def dew_point(self) -> float | None:
        """DewPoint, degrees Celsius."""
        return await self.reading(Sensor.DEW_POINT)

    async def humidity(self) -> float | None:
        """Humidity, percent relative humidity."""
        return await self.reading(Sensor.HUMIDITY)

    async def pressure(self) -> float | None:
        """Pressure, hPa at the observatory's altitude."""
        return await self.reading(Sensor.PRESSURE)

    async def rain_rate(self) -> float | None:
        """RainRate, mm per hour."""
        return await self.reading(Sensor.RAIN_RATE)

    async def sky_brightness(self) -> float | None:
        """SkyBrightness, lux."""
        return await self.reading(Sensor.SKY_BRIGHTNESS)

    async def sky_quality(self) -> float | None:
        """SkyQuality, magnitudes per square arcsecond."""
        return await self.reading(Sensor.SKY_QUALITY)

    async def sky_temperature(self) -> float | None:
        """SkyTemperature, degrees Celsius."""
        return await self.reading(Sensor.SKY_TEMPERATURE)

    async def star_fwhm(self) -> float | None:
        """StarFWHM, arcseconds."""
        return await self.reading(Sensor.STAR_FWHM)

    async def temperature(self) -> float | None:
        """Temperature of the air, degrees Celsius."""
        return await self.reading(Sensor.TEMPERATURE)

    async def wind_direction(self) -> float | None:
        """WindDirection, degrees from north through east (0 when calm)."""
        return await self.reading(Sensor.WIND_DIRECTION)

    async def wind_gust(self) -> float | None:
        """WindGust, m/s: the peak over the last two minutes."""
        return await self.reading(Sensor.WIND_GUST)

    async def wind_speed(self) -> float | None:
        """WindSpeed, m/s."""
        return await self.reading(Sensor.WIND_SPEED)

    async def readings(self, *, recheck: bool = False) -> dict[Sensor, float]:
        """Every sensor the station has, read concurrently; absent ones are left out."""
        values = await read_all(
            {sensor.value: self.reading(sensor, recheck=recheck) for sensor in Sensor}
        )
        return {Sensor(name): value for name, value in values.items() if isinstance(value, float)}

    async def average_period(self) -> float:
        """AveragePeriod, hours over which readings are averaged (0: instantaneous)."""
        return await self.get_float("averageperiod")

    async def set_average_period(self, hours: float) -> None:
        """PUT AveragePeriod (negative periods are refused before sending)."""
        where = str(self.address)
        value = check_range(
            hours, 0, math.inf, "AveragePeriod", device=where, member="averageperiod", unit="h"
        )
        await self.put("averageperiod", AveragePeriod=value)

    async def refresh(self) -> None:
        """PUT Refresh: ask the station to read its sensors now (NotImplemented on many)."""
        await self.put("refresh")

    async def time_since_last_update(self, sensor: Sensor | str | None = None) -> float | None:
        """Seconds since ``sensor`` (default: any sensor) was last updated; None if absent."""
        where, member = str(self.address), "timesincelastupdate"
        name = "" if sensor is None else sensor_named(sensor, device=where, member=member).value
        return await optional(self.get_float(member, SensorName=name))

    async def sensor_description(self, sensor: Sensor | str) -> str | None:
        """What the station says about ``sensor`` (model, placement); None if absent."""
        where, member = str(self.address), "sensordescription"
        name = sensor_named(sensor, device=where, member=member).value
        return await optional(self.get_str(member, SensorName=name))

    async def telemetry(self) -> dict[str, object]:
        """Every available reading under a key with its unit (``temperature_c`` ...),
        and ``average_period_h`` when the station reports it."""
        readings, period = await asyncio.gather(self.readings(), optional(self.average_period()))
        values: dict[str, object] = {
            TELEMETRY_KEYS[sensor]: value for sensor, value in readings.items()
        }
        if period is not None:
            values["average_period_h"] = period
        return values


__all__ = ["TELEMETRY_KEYS", "AlpacaObservingConditions", "Sensor", "sensor_named"]
