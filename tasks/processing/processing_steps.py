"""The instrument's own post-processing steps, run after the built-in ones.

A step is a plain function ``step(image, context)`` named in the instrument config
as ``package.module:function`` (checked at load, see schemas/processing.py). It gets
the float32 image and a :class:`StepContext`, and either changes the image in place
and returns None, or returns a new image of the same shape. Each step that ran is
recorded in the header as ``HISTORY ccdflow step <name>``, so a reader knows what was
done to the pixels.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from schemas.exposure import ExposureSpec
from schemas.instrument import CcdConfig
from schemas.processing import load_step
from tasks.processing.sections import AmplifierResult, Box

FloatImage = npt.NDArray[np.float32]


class StepError(RuntimeError):
    """A user step that raised or returned something that is not an image like its input."""


@dataclass(frozen=True, slots=True)
class StepContext:
    """What a step may want to know about the image it is given."""

    ccd: CcdConfig
    spec: ExposureSpec
    bunit: str
    amplifiers: tuple[AmplifierResult, ...]
    datasec: Box | None


@functools.cache
def _step(name: str) -> Callable[..., Any]:
    return load_step(name)


def run_steps(
    image: FloatImage, names: Sequence[str], context: StepContext
) -> tuple[FloatImage, list[tuple[str, str, str]]]:
    """Run each named step in order; return the image and one HISTORY card per step."""
    cards: list[tuple[str, str, str]] = []
    for name in names:
        try:
            result = _step(name)(image, context)
        except Exception as exc:
            raise StepError(f"processing step {name} failed on {context.ccd.name}: {exc}") from exc
        if result is not None:
            if not isinstance(result, np.ndarray) or result.shape != image.shape:
                got = getattr(result, "shape", type(result).__name__)
                raise StepError(
                    f"processing step {name} returned {got}; it must return None or an "
                    f"image of shape {image.shape}"
                )
            image = np.asarray(result, dtype=np.float32)
        cards.append(("HISTORY", f"ccdflow step {name}"[:72], ""))
    return image, cards
