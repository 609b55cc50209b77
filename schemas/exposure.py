"""What to take: one exposure spec and an ordered sequence of them.

These models are flow parameters, so the Prefect UI builds validated forms from them
and a bad value is refused before any hardware moves.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

MAX_EXPTIME = 86_400.0
"""One day: longer integrations are a typo, not an observation."""


class ImageType(StrEnum):
    """Kinds of exposure; they decide the shutter and the IMAGETYP card."""

    BIAS = "bias"
    DARK = "dark"
    FLAT = "flat"
    OBJECT = "object"

    @property
    def opens_shutter(self) -> bool:
        """Light frames open the shutter; bias and dark frames keep it shut."""
        return self in (ImageType.FLAT, ImageType.OBJECT)


class ExposureSpec(BaseModel):
    """One kind of exposure, taken ``count`` times.

    A bias always has an exposure time of 0: a non-zero value given for a bias is set
    to 0 rather than integrating for a frame that would then not be a bias.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    image_type: ImageType = Field(description="bias, dark, flat or object")
    exptime: float = Field(
        default=0.0,
        ge=0.0,
        le=MAX_EXPTIME,
        allow_inf_nan=False,
        description="integration time in seconds (forced to 0 for a bias)",
    )
    count: int = Field(default=1, ge=1, le=10_000, description="how many frames to take")
    object_name: str | None = Field(
        default=None,
        max_length=68,
        pattern=r"^[\x20-\x7e]*$",
        description="OBJECT card (printable ASCII)",
    )

    @model_validator(mode="before")
    @classmethod
    def _bias_has_no_exposure_time(cls, data: Any) -> Any:
        if isinstance(data, dict) and str(data.get("image_type", "")).lower() == "bias":
            return {**data, "exptime": 0.0}
        return data

    @property
    def opens_shutter(self) -> bool:
        return self.image_type.opens_shutter


class SequenceSpec(BaseModel):
    """An ordered list of exposure specs, taken one after the other."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(default="sequence", min_length=1, max_length=64, pattern=r"^[\w.-]+$")
    exposures: list[ExposureSpec] = Field(min_length=1)

    @property
    def total_frames(self) -> int:
        return sum(spec.count for spec in self.exposures)
