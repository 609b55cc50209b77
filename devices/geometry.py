"""Where each CCD and amplifier sits in a camera's frame, whoever made the camera.

A frame buffer holds one or more CCDs, each read by one or more amplifiers, each with
its overscan, in readout order. These regions say where each block is in the buffer
and where it goes in the assembled CCD (flipped for amplifiers that read an axis in
reverse). A vendor package derives them from its own configuration (an Archon ACF's
taps, an Alpaca camera's size); processing, headers and raw files use only these.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import numpy as np
import numpy.typing as npt

_S = TypeVar("_S", bound=np.generic)


@dataclass(frozen=True, slots=True)
class Tap:
    """One amplifier's digitizer: its channel, readout direction and digital gain/offset
    (an Archon TAPLINE; a one-amplifier camera has one)."""

    index: int
    channel: str
    direction: Literal["L", "R"]
    gain: float
    offset: float


@dataclass(frozen=True, slots=True)
class AmplifierRegion:
    """Where one amplifier's pixels are in the raw buffer and in its assembled CCD."""

    name: str
    tap: Tap
    buffer_rows: slice
    buffer_cols: slice
    flip_rows: bool
    flip_cols: bool
    ccd_rows: slice
    ccd_cols: slice


@dataclass(frozen=True, slots=True)
class CcdRegion:
    """One CCD's part of the raw buffer and how its amplifiers assemble into an image."""

    index: int
    buffer_rows: slice
    buffer_cols: slice
    shape: tuple[int, int]
    amplifiers: tuple[AmplifierRegion, ...]


def _check_covers(buffer: npt.NDArray[Any], rows: slice, cols: slice) -> None:
    if buffer.ndim != 2:
        raise ValueError(f"expected a 2-D buffer, got shape {buffer.shape}")
    if buffer.shape[0] < rows.stop or buffer.shape[1] < cols.stop:
        raise ValueError(
            f"buffer of shape {buffer.shape} does not cover rows {rows.start}:{rows.stop}, "
            f"columns {cols.start}:{cols.stop}"
        )


def amplifier_data(buffer: npt.NDArray[_S], amp: AmplifierRegion) -> npt.NDArray[_S]:
    """View of one amplifier's block in READOUT order (overscan columns last, no flip)."""
    _check_covers(buffer, amp.buffer_rows, amp.buffer_cols)
    return buffer[amp.buffer_rows, amp.buffer_cols]


def assemble_ccd(buffer: npt.NDArray[_S], ccd: CcdRegion) -> npt.NDArray[_S]:
    """New array with the CCD's amplifiers flipped into physical orientation."""
    _check_covers(buffer, ccd.buffer_rows, ccd.buffer_cols)
    image: npt.NDArray[_S] = np.empty(ccd.shape, dtype=buffer.dtype)
    for amp in ccd.amplifiers:
        block = buffer[amp.buffer_rows, amp.buffer_cols]
        if amp.flip_rows:
            block = block[::-1, :]
        if amp.flip_cols:
            block = block[:, ::-1]
        image[amp.ccd_rows, amp.ccd_cols] = block
    return image
