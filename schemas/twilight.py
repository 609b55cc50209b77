"""Twilight sky flats: which filters, how many, at what level, in which twilight."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field, model_validator

from schemas.exposure import Binning, ExposureSpec, ImageType, StackMethod
from schemas.form_order import FormModel


class TwilightWhen(StrEnum):
    EVENING = "evening"
    MORNING = "morning"


class TwilightFilter(FormModel):
    """``count`` good flats through one filter."""

    filter: str = Field(min_length=1, max_length=68, title="Filter")
    count: int = Field(default=5, ge=1, le=100, title="Good flats wanted")


class TwilightFlatSpec(FormModel):
    """Sky flats in one twilight, each frame's time chosen to reach ``target_adu``.

    ``filters`` are listed in evening order: the filter that needs the brightest sky
    (narrow band, blue) first; the morning takes them reversed. A frame whose level is
    outside ``target_adu`` +- ``tolerance`` is written and marked rejected, never used
    for a master; a filter whose flats would need more than ``max_exptime`` (or less
    than ``min_exptime`` when the sky only gets brighter) is given up for the next.
    Nothing starts while the Sun is above ``sun_highest`` or below ``sun_lowest``.
    """

    name: str = Field(default="twilight-flats", min_length=1, max_length=64, pattern=r"^[\w.-]+$")
    twilight: TwilightWhen = Field(title="Twilight")
    filters: list[TwilightFilter] = Field(min_length=1, title="Filters (evening order)")
    target_adu: float = Field(
        default=20000.0, gt=0, le=1_000_000, allow_inf_nan=False, title="Target level (ADU)"
    )
    tolerance: float = Field(
        default=0.25, gt=0, lt=1, title="Tolerance", description="fraction of the target"
    )
    min_exptime: float = Field(
        default=1.0,
        ge=0.01,
        le=600,
        allow_inf_nan=False,
        title="Shortest exposure (s)",
        description="shorter exposures show the shutter's pattern",
    )
    max_exptime: float = Field(
        default=30.0, gt=0, le=600, allow_inf_nan=False, title="Longest exposure (s)"
    )
    sun_highest: float = Field(default=-1.0, ge=-30, le=10, title="Sun highest (deg)")
    sun_lowest: float = Field(default=-12.0, ge=-30, le=10, title="Sun lowest (deg)")
    binning: Binning = Field(default_factory=Binning, title="Binning")
    build_masters: bool = Field(default=True, description="combine the good flats per filter")
    combine: StackMethod = Field(default=StackMethod.MEDIAN)

    @model_validator(mode="after")
    def _ordered(self) -> TwilightFlatSpec:
        if self.max_exptime <= self.min_exptime:
            raise ValueError("max_exptime must be longer than min_exptime")
        if self.sun_lowest >= self.sun_highest:
            raise ValueError("sun_lowest must be below sun_highest")
        names = [f.filter for f in self.filters]
        if len(set(names)) != len(names):
            raise ValueError("filters: each filter once")
        return self

    def filter_names(self) -> list[str]:
        """In the order this twilight takes them."""
        names = [f.filter for f in self.filters]
        return names if self.twilight is TwilightWhen.EVENING else names[::-1]

    def expand(self) -> list[ExposureSpec]:
        """One spec per filter, in this twilight's order; each frame's time is set as
        it is taken (``min_exptime`` here is what the instrument is checked with)."""
        counts = {f.filter: f.count for f in self.filters}
        return [
            ExposureSpec(
                image_type=ImageType.FLAT,
                exptime=self.min_exptime,
                count=counts[name],
                filter=name,
                binning=self.binning,
                object_name="twilight flat",
            )
            for name in self.filter_names()
        ]
