"""Guide and focus mode: what a guide exposure takes, and what it reports.

A guide exposure (DESI's guider image builder) is many short frames on several guide
cameras at once, on a fixed cadence; of each frame only small stamps around guide
stars are kept (regions of interest given here, or found on the first frame), with a
per-frame table of times and header values. What can be checked from the spec alone
is checked by the model; what needs the instrument (camera names, detector sizes) by
:func:`check_guide_spec`, before any camera is contacted, every problem at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    Field,
    TypeAdapter,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)

from schemas.errors import ConfigError
from schemas.fits_rules import CardValue, check_cards
from schemas.form_order import FormModel
from schemas.instrument import InstrumentConfig

MAX_ROIS = 32
"""Stamps per camera: a guider follows a few stars, not a catalogue."""
RESERVED_KEYWORDS = frozenset({"NFRAMES", "FRAME", "EXPNUM", "IMAGETYP", "NAXIS", "EXTNAME"})
"""Cards the guide file writes itself; a spec may not set them."""


class RoiCentre(FormModel):
    """The centre of a stamp, in unbinned pixels of the camera's detector (0-based:
    ``x`` along a line, ``y`` the line)."""

    x: int = Field(ge=0, le=100_000, title="x (pixel)")
    y: int = Field(ge=0, le=100_000, title="y (line)")


class FindBrightest(FormModel):
    """Find the regions on the first frame: each camera's ``find`` brightest sources."""

    find: int = Field(ge=1, le=MAX_ROIS, title="Sources per camera")
    min_separation: int | None = Field(
        default=None,
        ge=1,
        le=10_000,
        title="Minimum separation (px)",
        description="between two sources' centres, so two regions are never one star; "
        "default: half the stamp size",
    )


ExplicitRois = dict[str, list[RoiCentre]]
_EXPLICIT = TypeAdapter(ExplicitRois)


class GuideSpec(FormModel):
    """One guide exposure: ``frames`` frames every ``cadence_s`` on the guide cameras.

    Frames start on a fixed grid (t0 + k x cadence): a frame that cannot start on its
    time is started at once and counted late, and the grid never drifts.
    """

    cameras: list[str] | None = Field(
        default=None,
        min_length=1,
        title="Guide cameras",
        description="names of the instrument's controllers to guide with; default: all",
    )
    frames: int = Field(ge=1, le=1_000_000, title="Frames", description="frames to take")
    exptime: float = Field(
        gt=0.0, le=600.0, allow_inf_nan=False, title="Exposure time (s)", description="per frame"
    )
    cadence_s: float = Field(
        gt=0.0,
        le=3600.0,
        allow_inf_nan=False,
        title="Cadence (s)",
        description="frame period: frame k starts at t0 + k x cadence",
    )
    stamp_size: int = Field(
        default=64, ge=16, le=8192, title="Stamp size (px)", description="square stamps"
    )
    regions: FindBrightest | ExplicitRois = Field(
        default_factory=lambda: FindBrightest(find=2),
        title="Regions of interest",
        description="{find: N} brightest sources on the first frame, or per camera a list "
        "of stamp centres {x, y}",
    )
    keep_full_frames: bool = Field(
        default=False,
        title="Keep full frames",
        description="also archive every whole frame (large: 2 MB per camera and frame)",
    )
    header: dict[str, CardValue] = Field(
        default_factory=dict,
        title="Extra header cards",
        description="extra FITS cards of the guide file, checked against FITS rules",
    )

    @field_validator("cameras")
    @classmethod
    def _unique_cameras(cls, cameras: list[str] | None) -> list[str] | None:
        if cameras is not None:
            repeated = sorted({name for name in cameras if cameras.count(name) > 1})
            if repeated:
                raise ValueError(f"cameras named twice: {', '.join(repeated)}")
        return cameras

    @field_validator("regions", mode="wrap")
    @classmethod
    def _one_kind_of_regions(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        """``{find: N}`` or explicit centres, told apart by the ``find`` key, so an
        error names the field as written (``regions.gfa2.1.x``), not a union branch."""
        if isinstance(value, FindBrightest) or (isinstance(value, dict) and "find" in value):
            return FindBrightest.model_validate(value)
        rois = _EXPLICIT.validate_python(value)
        problems = []
        if not rois:
            problems.append("give {find: N} or at least one camera's stamp centres")
        for camera, centres in rois.items():
            if not 1 <= len(centres) <= MAX_ROIS:
                problems.append(f"{camera}: 1 to {MAX_ROIS} stamp centres, not {len(centres)}")
            if len({(c.x, c.y) for c in centres}) != len(centres):
                problems.append(f"{camera}: a stamp centre is given twice")
        if problems:
            raise ValueError("; ".join(problems))
        return rois

    @field_validator("header")
    @classmethod
    def _fits_legal_cards(cls, header: dict[str, CardValue]) -> dict[str, CardValue]:
        reserved = dict.fromkeys(RESERVED_KEYWORDS, "is written by the guide file itself")
        return check_cards(header, reserved)

    @model_validator(mode="after")
    def _frame_fits_its_period(self) -> GuideSpec:
        if self.exptime >= self.cadence_s:
            raise ValueError(
                f"cadence_s: a frame of {self.exptime:g} s cannot start every "
                f"{self.cadence_s:g} s (the readout needs time too)"
            )
        return self

    @property
    def separation(self) -> int:
        """Least distance between found sources (pixels)."""
        if isinstance(self.regions, FindBrightest) and self.regions.min_separation:
            return self.regions.min_separation
        return max(1, self.stamp_size // 2)

    def guide_cameras(self, instrument: InstrumentConfig) -> list[str]:
        """The cameras to guide with, in the spec's order (all the instrument's if none)."""
        return list(self.cameras or [c.name for c in instrument.controllers])


def stamp_problem(centre: RoiCentre, size: int, detector: tuple[int, int]) -> str | None:
    """Why a stamp of ``size`` centred on ``centre`` does not lie wholly on a detector
    of (lines, pixels), or None. Stamps are never clipped: all have the full size."""
    lines, pixels = detector
    x0, y0 = centre.x - size // 2, centre.y - size // 2
    if x0 >= 0 and y0 >= 0 and x0 + size <= pixels and y0 + size <= lines:
        return None
    return (
        f"stamp at ({centre.x}, {centre.y}) of {size} x {size} lies outside the "
        f"{pixels} x {lines} detector"
    )


def check_guide_spec(
    spec: GuideSpec,
    instrument: InstrumentConfig,
    detectors: Mapping[str, tuple[int, int]],
    problems: list[str] | None = None,
) -> list[str]:
    """Check ``spec`` against the instrument; raise one ConfigError with every problem.

    ``detectors``: per guide-capable camera, its detector's (lines, pixels) of science
    pixels (the caller plans them from the cameras' configs, contacting nothing);
    ``problems``: what the caller already found, reported together. Returns the guide
    cameras in order.
    """
    found = list(problems or [])
    known = [c.name for c in instrument.controllers]
    cameras = spec.guide_cameras(instrument)
    if len(cameras) > len(known):
        found.append(
            f"cameras: {len(cameras)} guide cameras asked, {instrument.name} has "
            f"{len(known)} ({', '.join(known)})"
        )
    for index, name in enumerate(cameras):
        if name not in known:
            found.append(
                f"cameras.{index}: {name!r} is not a camera of {instrument.name} "
                f"({', '.join(known)})"
            )
    size = spec.stamp_size
    for name in cameras:
        shape = detectors.get(name)
        if shape is not None and (size > shape[0] or size > shape[1]):
            found.append(
                f"stamp_size: {size} x {size} stamps are larger than the {shape[1]} x "
                f"{shape[0]} detector of {name}"
            )
    if not isinstance(spec.regions, FindBrightest):
        for camera, centres in spec.regions.items():
            if camera not in cameras:
                found.append(
                    f"regions.{camera}: not a guide camera of this exposure ({', '.join(cameras)})"
                )
                continue
            shape = detectors.get(camera)
            for index, centre in enumerate(centres):
                if shape is not None and (why := stamp_problem(centre, size, shape)):
                    found.append(f"regions.{camera}.{index}: {why}")
        for camera in cameras:
            if camera in known and camera not in spec.regions:
                found.append(f"regions.{camera}: no stamp centres for this guide camera")
    if found:
        raise ConfigError(f"guide spec for {instrument.name}", found)
    return cameras


class GuideResult(BaseModel):
    """What a guide exposure took, where it is, and how late its frames were."""

    expnum: int
    flow_run_id: str | None = None
    date_obs: datetime | None = Field(default=None, description="first frame's start")
    files: list[Path] = Field(description="the HDF5 archive and the FITS guide file")
    cameras: list[str]
    rois: dict[str, list[RoiCentre]] = Field(description="per camera, the stamp centres")
    found_on_first_frame: bool
    cadence_s: float
    stamp_size: int
    frames_asked: int
    frames_taken: int = Field(description="frames whose stamps of every camera are archived")
    frames_late: int = Field(description="frames that could not start on the cadence grid")
    frames_dropped: int = Field(description="frames asked but not archived for every camera")
    latency_ms_p50: float | None = Field(description="readout end -> stamps archived")
    latency_ms_p95: float | None
    latency_ms_p99: float | None
    latency_ms_max: float | None
    elapsed_s: float
