"""An observation: one target, exposures per filter, dithers, and when it may be seen.

The ``observe`` flow points the telescope at the target (the dome follows), and for
each dither position takes every filter's exposures, setting the filter and its focus
offset first and never integrating while anything moves. Coordinates are ICRS at the
catalogue epoch, with optional proper motion; the flow checks the target's altitude
and airmass at the site before anything moves.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from pydantic import Field, model_validator

from schemas.form_order import FormModel
from schemas.night_window import TimeWindow

if TYPE_CHECKING:
    from schemas.exposure import ExposureSpec

MAX_DITHER_ARCSEC = 3600.0
"""A dither is a small offset: beyond a degree it is another pointing."""


class Target(FormModel):
    """Where to point: ICRS right ascension and declination at ``epoch``."""

    name: str = Field(min_length=1, max_length=68, title="Name", description="OBJECT card")
    ra_deg: float = Field(ge=0.0, lt=360.0, allow_inf_nan=False, title="RA (deg)")
    dec_deg: float = Field(ge=-90.0, le=90.0, allow_inf_nan=False, title="Dec (deg)")
    pm_ra_mas_per_yr: float = Field(
        default=0.0,
        ge=-20000,
        le=20000,
        allow_inf_nan=False,
        title="PM RA (mas/yr)",
        description="proper motion in RA times cos(Dec)",
    )
    pm_dec_mas_per_yr: float = Field(
        default=0.0, ge=-20000, le=20000, allow_inf_nan=False, title="PM Dec (mas/yr)"
    )
    epoch_jyear: float = Field(
        default=2016.0,
        ge=1900,
        le=2100,
        title="Epoch",
        description="of the coordinates (Gaia DR3: 2016.0)",
    )


class FilterExposures(FormModel):
    """``count`` exposures of ``exptime`` seconds through one filter."""

    filter: str = Field(
        min_length=1, max_length=68, title="Filter", description="a name of the wheel's"
    )
    exptime: float = Field(gt=0.0, le=36000.0, allow_inf_nan=False, title="Exposure time (s)")
    count: int = Field(default=1, ge=1, le=1000, title="Count")


class Dither(FormModel):
    """An offset from the target, in arcseconds on the sky (RA offset times cos Dec)."""

    east_arcsec: float = Field(
        default=0.0, ge=-MAX_DITHER_ARCSEC, le=MAX_DITHER_ARCSEC, allow_inf_nan=False
    )
    north_arcsec: float = Field(
        default=0.0, ge=-MAX_DITHER_ARCSEC, le=MAX_DITHER_ARCSEC, allow_inf_nan=False
    )

    def apply(self, ra_deg: float, dec_deg: float) -> tuple[float, float]:
        """(RA, Dec) degrees offset by this dither (Dec kept on the sphere)."""
        cos_dec = math.cos(math.radians(dec_deg))
        dra = self.east_arcsec / 3600.0 / cos_dec if cos_dec > 1e-9 else 0.0
        dec = max(-90.0, min(90.0, dec_deg + self.north_arcsec / 3600.0))
        return (ra_deg + dra) % 360.0, dec


class Constraints(FormModel):
    """When the target may be observed: above an altitude, below an airmass, in a window."""

    min_altitude_deg: float = Field(default=30.0, ge=0.0, le=89.0, title="Lowest altitude (deg)")
    max_airmass: float | None = Field(default=None, ge=1.0, le=40.0, title="Highest airmass")
    window: TimeWindow | None = Field(default=None, title="Time window")


class ObservationSpec(FormModel):
    """One target observed through one or more filters, at one or more dither positions."""

    name: str = Field(default="observation", min_length=1, max_length=64, pattern=r"^[\w.-]+$")
    target: Target
    exposures: list[FilterExposures] = Field(min_length=1, max_length=50)
    dithers: list[Dither] = Field(default_factory=lambda: [Dither()], min_length=1, max_length=100)
    constraints: Constraints = Field(default_factory=Constraints)

    @model_validator(mode="after")
    def _filters_named_once(self) -> ObservationSpec:
        names = [e.filter for e in self.exposures]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(
                f"exposures: filter {repeated[0]!r} is listed twice (give it one count)"
            )
        return self

    def expand(self) -> list[ExposureSpec]:
        """The exposures in the order they are taken: per dither, per filter. RA/DEC
        are where each dither points; OBJRA/OBJDEC the target as asked."""
        # Here, not at the top: schemas.exposure's night plans take observations.
        from schemas.exposure import Coordinates, ExposureSpec, ImageType

        target = self.target
        asked = {"OBJRA": target.ra_deg, "OBJDEC": target.dec_deg}
        specs = []
        for dither in self.dithers:
            ra, dec = dither.apply(target.ra_deg, target.dec_deg)
            specs += [
                ExposureSpec(
                    image_type=ImageType.OBJECT,
                    exptime=group.exptime,
                    count=group.count,
                    filter=group.filter,
                    object_name=target.name,
                    coordinates=Coordinates(ra_deg=ra, dec_deg=dec),
                    header=asked,
                )
                for group in self.exposures
            ]
        return specs
