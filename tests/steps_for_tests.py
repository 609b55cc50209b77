"""Processing steps for the tests: named in configs as ``tests.steps_for_tests:NAME``."""

from __future__ import annotations

from typing import Any

import numpy as np


def add_ten(image: np.ndarray[Any, Any], context: Any) -> None:
    """Changes the image in place."""
    image += 10


def clip_negative(image: np.ndarray[Any, Any], context: Any) -> np.ndarray[Any, Any]:
    """Returns a new image; uses the context."""
    assert context.ccd.name
    return np.clip(image, 0, None)


def wrong_shape(image: np.ndarray[Any, Any], context: Any) -> np.ndarray[Any, Any]:
    return image[:2]


def one_argument(image: np.ndarray[Any, Any]) -> None:
    """Not a step: steps take (image, context)."""


NOT_CALLABLE = 3
