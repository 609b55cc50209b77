"""Overscan correction of one amplifier, in readout order (overscan columns follow data).

Pure functions on numpy arrays: the bias level is estimated from the amplifier's
overscan columns by the configured method and subtracted in place. Lines past the
science lines (overscan lines) are corrected with the amplifier's overall level, as
they have no overscan columns of their own that differ from the rest.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from schemas.processing import OverscanMethod

FloatImage = npt.NDArray[np.float32]


def correct_overscan(
    block: FloatImage, *, pixels: int, overscan: int, lines: int, method: OverscanMethod
) -> float:
    """Subtract the bias level from ``block`` (in place); return the level subtracted.

    ``block`` is one amplifier in readout order: ``pixels`` science columns, then
    ``overscan`` overscan columns; ``lines`` science lines, then overscan lines. With
    no overscan columns, or the ``none`` method, nothing changes and the level is 0.
    """
    if overscan <= 0 or method is OverscanMethod.NONE:
        return 0.0
    strip = block[:lines, pixels : pixels + overscan]
    if method is OverscanMethod.MEDIAN:
        level = float(np.median(strip))
        block -= np.float32(level)
        return level
    per_row = np.median(strip, axis=1) if method is OverscanMethod.MEDIAN_ROW else strip.mean(1)
    per_row = per_row.astype(np.float32)
    level = float(np.median(per_row))
    block[:lines] -= per_row[:, np.newaxis]
    block[lines:] -= np.float32(level)
    return level
