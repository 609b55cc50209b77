"""What to take: exposure specs, sequences and calibration sets.

These models are flow parameters, so the Prefect UI builds validated forms from them
and a bad value is refused before any hardware moves. Sequences and calibration sets
expand deterministically into exposure specs: the same input always gives the same
frames in the same order.
"""

from __future__ import annotations

import hashlib
from enum import StrEnum
from typing import Any

from pydantic import Field, field_validator, model_validator

from schemas.fits_rules import CardValue, check_cards
from schemas.form_order import FormModel
from schemas.night_window import NightMoment, TimeWindow
from schemas.observation import ObservationSpec
from schemas.operator import OperatorQuestion

MAX_EXPTIME = 86_400.0
"""One day: longer integrations are a typo, not an observation."""

PRINTABLE = r"^[\x20-\x7e]*$"


class ImageType(StrEnum):
    """Kinds of exposure; they decide the default shutter and the IMAGETYP card."""

    BIAS = "bias"
    DARK = "dark"
    FLAT = "flat"
    OBJECT = "object"
    ARC = "arc"
    TEST = "test"

    @property
    def opens_shutter(self) -> bool:
        """Light frames open the shutter by default; bias and dark keep it shut."""
        return self in (ImageType.FLAT, ImageType.OBJECT, ImageType.ARC)


class ShutterPolicy(StrEnum):
    """``auto`` follows the image type; ``open``/``closed`` force it (test frames)."""

    AUTO = "auto"
    OPEN = "open"
    CLOSED = "closed"


class StackMethod(StrEnum):
    MEDIAN = "median"
    MEAN = "mean"
    SUM = "sum"


class Binning(FormModel):
    """On-chip binning: columns (x) and lines (y) summed per pixel."""

    x: int = Field(default=1, ge=1, le=16, title="Columns (x)")
    y: int = Field(default=1, ge=1, le=16, title="Lines (y)")


class Window(FormModel):
    """A region of interest per amplifier, in unbinned readout lines and pixels.

    Checked against the controller's geometry when the flow plans the exposure.
    """

    first_line: int = Field(default=0, ge=0, title="First line")
    lines: int = Field(ge=1, title="Lines")
    first_pixel: int = Field(default=0, ge=0, title="First pixel")
    pixels: int = Field(ge=1, title="Pixels")


class Coordinates(FormModel):
    """Where the telescope points, ICRS degrees."""

    ra_deg: float = Field(ge=0.0, lt=360.0, allow_inf_nan=False, title="RA (deg)")
    dec_deg: float = Field(ge=-90.0, le=90.0, allow_inf_nan=False, title="Dec (deg)")


class Stacking(FormModel):
    """Take ``frames`` readouts and combine them into one file (NCOMBINE, COMBMETH)."""

    frames: int = Field(ge=2, le=1000, title="Frames")
    method: StackMethod = Field(default=StackMethod.MEDIAN, title="Method")


class Lamp(FormModel):
    """A flat-field lamp of the instrument's (a ``covercalibrator`` device) lit for
    the exposure: a dome flat. Its cover closes first; the lamp is off for any
    exposure that does not name it."""

    device: str = Field(
        min_length=1, max_length=64, title="Lamp device", description="a device's name"
    )
    brightness: int | None = Field(
        default=None, ge=0, le=1_000_000, title="Brightness", description="None: the brightest"
    )


class ExposureSpec(FormModel):
    """One kind of exposure, taken ``count`` times.

    A bias always has an exposure time of 0: a non-zero value given for a bias is set
    to 0 rather than integrating for a frame that would then not be a bias.
    """

    image_type: ImageType = Field(
        description="bias, dark, flat, object, arc or test", title="Image type"
    )
    exptime: float = Field(
        title="Exposure time (s)",
        default=0.0,
        ge=0.0,
        le=MAX_EXPTIME,
        allow_inf_nan=False,
        description="integration time in seconds (forced to 0 for a bias)",
    )
    count: int = Field(
        default=1, ge=1, le=10_000, description="how many frames to take", title="Count"
    )
    binning: Binning = Field(default_factory=Binning, title="Binning")
    window: Window | None = Field(
        default=None, description="region of interest; None = all", title="Window"
    )
    filter: str | None = Field(
        default=None, min_length=1, max_length=32, pattern=PRINTABLE, title="Filter"
    )
    object_name: str | None = Field(
        title="Object name",
        default=None,
        max_length=68,
        pattern=PRINTABLE,
        description="OBJECT card",
    )
    coordinates: Coordinates | None = Field(default=None, title="Coordinates")
    shutter: ShutterPolicy = Field(default=ShutterPolicy.AUTO, title="Shutter")
    readout_delay: int = Field(
        title="Readout delay",
        default=0,
        ge=0,
        le=1_000_000,
        description="WaitCount units (10 ns) added per pixel",
    )
    stacking: Stacking | None = Field(default=None, title="Stacking")
    lamp: Lamp | None = Field(default=None, title="Flat-field lamp")
    header: dict[str, CardValue] = Field(
        title="Extra header cards",
        default_factory=dict,
        description="extra FITS cards, checked against FITS rules",
    )

    @model_validator(mode="before")
    @classmethod
    def _bias_has_no_exposure_time(cls, data: Any) -> Any:
        if isinstance(data, dict) and str(data.get("image_type", "")).lower() == "bias":
            return {**data, "exptime": 0.0}
        return data

    @field_validator("header")
    @classmethod
    def _fits_legal_cards(cls, header: dict[str, CardValue]) -> dict[str, CardValue]:
        return check_cards(header)

    @model_validator(mode="after")
    def _shutter_matches_the_image_type(self) -> ExposureSpec:
        if self.image_type is ImageType.BIAS and self.shutter is ShutterPolicy.OPEN:
            raise ValueError("a bias cannot be taken with the shutter open")
        if self.image_type is ImageType.DARK and self.shutter is ShutterPolicy.OPEN:
            raise ValueError("a dark cannot be taken with the shutter open")
        if self.image_type in (ImageType.FLAT, ImageType.OBJECT, ImageType.ARC) and (
            self.shutter is ShutterPolicy.CLOSED
        ):
            raise ValueError(f"a {self.image_type.value} needs the shutter open")
        if self.lamp is not None and not self.opens_shutter:
            raise ValueError("lamp: a lamp lights nothing behind a closed shutter")
        return self

    @property
    def opens_shutter(self) -> bool:
        if self.shutter is ShutterPolicy.AUTO:
            return self.image_type.opens_shutter
        return self.shutter is ShutterPolicy.OPEN

    @property
    def needs_sky(self) -> bool:
        """Light from the sky: the shutter opens and no lamp of ours is the light (an
        arc or a dome flat goes on in bad weather, as a dark does)."""
        return self.opens_shutter and self.lamp is None and self.image_type is not ImageType.ARC

    @property
    def frames_per_exposure(self) -> int:
        """Readouts behind one written exposure (more than one when stacking)."""
        return self.stacking.frames if self.stacking else 1

    def spec_hash(self) -> str:
        """A short, stable digest of the spec, written to headers for provenance."""
        canonical = self.model_dump_json(exclude_defaults=False).encode()
        return hashlib.sha256(canonical).hexdigest()[:16]


class SequenceSpec(FormModel):
    """An ordered list of exposure specs, the whole list taken ``repeats`` times."""

    name: str = Field(default="sequence", min_length=1, max_length=64, pattern=r"^[\w.-]+$")
    exposures: list[ExposureSpec] = Field(min_length=1)
    repeats: int = Field(default=1, ge=1, le=1000)

    def expand(self) -> list[ExposureSpec]:
        """The exposure specs in the order they are taken."""
        return [spec for _ in range(self.repeats) for spec in self.exposures]

    @property
    def total_frames(self) -> int:
        return sum(spec.count for spec in self.expand())


class DarkSet(FormModel):
    exptime: float = Field(gt=0.0, le=MAX_EXPTIME, allow_inf_nan=False)
    count: int = Field(ge=1, le=1000)


class FlatSet(FormModel):
    filter: str | None = Field(default=None, min_length=1, max_length=32, pattern=PRINTABLE)
    exptime: float = Field(gt=0.0, le=MAX_EXPTIME, allow_inf_nan=False)
    count: int = Field(ge=1, le=1000)
    lamp: Lamp | None = Field(default=None, description="a dome flat: the lamp to light")


class ArcSet(FormModel):
    lamp: str = Field(min_length=1, max_length=32, pattern=PRINTABLE)
    exptime: float = Field(gt=0.0, le=MAX_EXPTIME, allow_inf_nan=False)
    count: int = Field(ge=1, le=1000)


class CalibrationSpec(FormModel):
    """A calibration set: biases, then darks, flats and arcs, in the order given."""

    name: str = Field(default="calibrations", min_length=1, max_length=64, pattern=r"^[\w.-]+$")
    biases: int = Field(default=0, ge=0, le=1000)
    darks: list[DarkSet] = Field(default_factory=list)
    flats: list[FlatSet] = Field(default_factory=list)
    arcs: list[ArcSet] = Field(default_factory=list)
    build_masters: bool = Field(
        default=True, description="combine the biases, darks and flats into master frames"
    )
    combine: StackMethod = Field(default=StackMethod.MEDIAN, description="how masters combine")

    @model_validator(mode="after")
    def _not_empty(self) -> CalibrationSpec:
        if not (self.biases or self.darks or self.flats or self.arcs):
            raise ValueError("a calibration set needs at least one bias, dark, flat or arc")
        return self

    def expand(self) -> list[ExposureSpec]:
        specs: list[ExposureSpec] = []
        if self.biases:
            specs.append(ExposureSpec(image_type=ImageType.BIAS, count=self.biases))
        specs += [
            ExposureSpec(image_type=ImageType.DARK, exptime=d.exptime, count=d.count)
            for d in self.darks
        ]
        specs += [
            ExposureSpec(
                image_type=ImageType.FLAT,
                exptime=f.exptime,
                count=f.count,
                filter=f.filter,
                lamp=f.lamp,
            )
            for f in self.flats
        ]
        specs += [
            ExposureSpec(
                image_type=ImageType.ARC,
                exptime=a.exptime,
                count=a.count,
                header={"LAMP": a.lamp},
            )
            for a in self.arcs
        ]
        return specs

    def as_sequence(self) -> SequenceSpec:
        return SequenceSpec(name=self.name, exposures=self.expand())


class NightPlan(FormModel):
    """A night: sequences and calibration sets, taken in the order listed.

    Each step is a SequenceSpec (it has ``exposures``) or a CalibrationSpec (it has
    ``biases``/``darks``/``flats``/``arcs``); both forbid unknown keys, so a step is
    one or the other, never both. ``windows`` and ``ask`` name steps: a step does
    not start outside its window, and may first ask the operator. Light exposures
    (shutter open) are not started after ``light_until`` (morning twilight by
    default; it needs the instrument's site).
    """

    name: str = Field(default="night", min_length=1, max_length=64, pattern=r"^[\w.-]+$")
    steps: list[SequenceSpec | CalibrationSpec | ObservationSpec] = Field(min_length=1)
    windows: dict[str, TimeWindow] = Field(
        default_factory=dict, title="Step windows", description="step name -> time window"
    )
    ask: dict[str, OperatorQuestion] = Field(
        default_factory=dict, title="Operator questions", description="step name -> question"
    )
    light_until: NightMoment | None = Field(
        default_factory=lambda: NightMoment(event="astronomical_dawn"),
        title="Light exposures until",
        description="no light exposure starts (or would end) after this; null: no limit",
    )

    @model_validator(mode="after")
    def _unique_step_names(self) -> NightPlan:
        names = [step.name for step in self.steps]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"step names must be unique (they name archives): {repeated}")
        for field, named in (("windows", self.windows), ("ask", self.ask)):
            unknown = sorted(set(named) - set(names))
            if unknown:
                raise ValueError(f"{field}: no step named {', '.join(map(repr, unknown))}")
        return self

    def uses_the_sun(self) -> bool:
        """True when a window or the light limit is a Sun event (the site is needed)."""
        moments = [self.light_until] + [
            moment for window in self.windows.values() for moment in (window.start, window.end)
        ]
        return any(moment is not None and moment.event is not None for moment in moments)
