"""How raw frames become the images that are written: the post-processing settings.

The built-in chain, always in this order (each step optional except assembly):

1. assemble the amplifiers into CCDs, physically oriented;
2. overscan correction (``overscan``: median per row by default);
3. trim the overscan columns and lines (``trim``);
4. gain: ADU to electrons, per amplifier when configured (``electrons``);
5. master calibrations (``masters``): bias, dark scaled by exposure time, flat;
6. the instrument's own steps (``steps``), in the order listed;
7. quick-look statistics (mean, median, std, saturated pixels).

Master calibrations are applied by image type, as a reduction would: the bias to
everything but biases, the dark to flats, objects and arcs, the flat to objects.

User steps are named ``package.module:function``. They are imported and their
signatures checked when the config is loaded, so a typo fails before anything moves;
on Dask workers on other machines the module must be importable there too.
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from schemas.products import Product

STEP_PATTERN = r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$"


class OverscanMethod(StrEnum):
    """How each amplifier's bias level is estimated from its overscan columns.

    ``median_row`` and ``mean_row`` follow the level line by line (robust to a bias
    that drifts during readout); ``median`` takes one level for the whole amplifier
    (lowest noise when the bias is flat); ``none`` leaves the counts as read.
    """

    NONE = "none"
    MEDIAN_ROW = "median_row"
    MEAN_ROW = "mean_row"
    MEDIAN = "median"


class MasterFrames(BaseModel):
    """Master calibration files (as written by the calibrations flow), one extension per
    CCD named by CCDNAME. Relative paths are relative to the instrument YAML file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    bias: Path | None = None
    dark: Path | None = Field(default=None, description="per second of exposure")
    flats: dict[str, Path] = Field(
        default_factory=dict, description="filter name ('none' without a filter) -> master flat"
    )

    def paths(self) -> list[tuple[str, Path]]:
        """Every configured file with the config path that names it."""
        named: list[tuple[str, Path]] = []
        if self.bias is not None:
            named.append(("bias", self.bias))
        if self.dark is not None:
            named.append(("dark", self.dark))
        named += [(f"flats.{name}", path) for name, path in self.flats.items()]
        return named


class ProcessingConfig(BaseModel):
    """Post-processing of every CCD image before it is written (module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    overscan: OverscanMethod = OverscanMethod.MEDIAN_ROW
    trim: bool = Field(default=False, description="write only the science pixels")
    electrons: bool = Field(default=False, description="multiply by the gain (BUNIT electron)")
    masters: MasterFrames = Field(default_factory=MasterFrames)
    steps: list[str] = Field(
        default_factory=list, description="user steps, 'package.module:function', in order"
    )
    masters_from: Product | None = Field(
        default=None,
        description=(
            "build master frames from the raw files (each put through this chain, masters "
            "and steps left out) or the processed ones; default: processed when written"
        ),
    )

    @field_validator("steps")
    @classmethod
    def _importable_steps(cls, steps: list[str]) -> list[str]:
        problems = [problem for name in steps if (problem := step_problem(name))]
        if problems:
            raise ValueError("; ".join(problems))
        return steps


def load_step(name: str) -> Callable[..., Any]:
    """The function a step name points at (ImportError/AttributeError when absent)."""
    module_name, _, attribute = name.partition(":")
    module = importlib.import_module(module_name)
    function: object = getattr(module, attribute)
    if not callable(function):
        raise TypeError(f"{name} is not callable")
    return function


def step_problem(name: str) -> str | None:
    """Why ``name`` cannot be a processing step, or None when it can.

    A step is ``function(image, context)``: two positional parameters, the float32
    image and a context with the CCD, the exposure spec and the sections.
    """
    if not re.fullmatch(STEP_PATTERN, name):
        return f"{name!r}: a step is named 'package.module:function'"
    try:
        function = load_step(name)
    except ImportError as exc:
        return f"{name!r}: cannot import its module: {exc}"
    except (AttributeError, TypeError) as exc:
        return f"{name!r}: {exc}"
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return None  # builtins without a signature: trust the call
    try:
        signature.bind(object(), object())
    except TypeError:
        return f"{name!r}: a step takes (image, context); it has {signature}"
    return None
