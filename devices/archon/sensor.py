"""Synthetic CCD pixels for the Archon simulator.

The simulator must produce frames whose statistics a pipeline can check: a bias frame
sits at the per-tap bias level with the read noise, a dark grows with the time since
the CCD was last cleared, a flat only has flux when the shutter was open, and the
overscan never carries signal.  Frames are reproducible (same seed and frame number
give the same pixels) so a failing test can be replayed exactly.

Pixels are written in the buffer layout of :mod:`devices.archon.acf` (readout order
per tap block), one vectorised pass per tap; no Python loop runs per pixel.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from devices.archon.acf import AcfConfig, tap_regions

__all__ = ["SensorModel", "data_region", "flat_field", "render_frame"]

# Streams of the seed sequence that are not frames: the flat field must not change
# from frame to frame, so it has its own stream keyed on the tap.
_FLAT_STREAM = 0xF1A7
_PRNU_TILE = 64


@dataclass(frozen=True, slots=True)
class SensorModel:
    """Noise, dark, illumination and defects of the simulated detector (ADU and e-)."""

    bias: tuple[float, ...] | None = None
    read_noise: float = 3.5
    gain: float = 1.5
    dark_current: float = 2.0
    illumination: float = 4000.0
    flat_gradient: float = 0.03
    flat_prnu: float = 0.005
    cosmic_rate: float = 2e-6
    cosmic_electrons: float = 4000.0
    full_well: float = 150_000.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.gain <= 0:
            raise ValueError(f"gain must be > 0 e-/ADU, got {self.gain}")
        for name in ("read_noise", "dark_current", "illumination", "cosmic_rate", "full_well"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if not 0 <= self.flat_gradient < 0.5 or not 0 <= self.flat_prnu < 0.1:
            raise ValueError("flat_gradient must be in [0, 0.5) and flat_prnu in [0, 0.1)")
        if self.seed < 0:
            raise ValueError("seed must be >= 0 (it seeds a numpy SeedSequence)")

    def bias_level(self, tap: int) -> float:
        """Bias of the tap at position ``tap`` in the ACF's tap order, in ADU."""
        if self.bias is None:
            return 1000.0 + 100.0 * tap
        if tap >= len(self.bias):
            raise ValueError(f"SensorModel.bias has {len(self.bias)} levels, tap {tap} needs one")
        return self.bias[tap]

    def signal_electrons(self, *, dark_seconds: float, light_seconds: float) -> float:
        """Mean charge of an image pixel (flat = 1, no cosmics), clipped at full well."""
        charge = self.dark_current * dark_seconds + self.illumination * light_seconds
        return min(charge, self.full_well)

    def expected_adu(
        self, tap: int, *, dark_seconds: float = 0.0, light_seconds: float = 0.0
    ) -> float:
        """Mean ADU of an image pixel of ``tap`` (before clipping to the sample range)."""
        signal = self.signal_electrons(dark_seconds=dark_seconds, light_seconds=light_seconds)
        return self.bias_level(tap) + signal / self.gain

    def noise_adu(self, *, dark_seconds: float = 0.0, light_seconds: float = 0.0) -> float:
        """Standard deviation of an image pixel in ADU: read noise plus shot noise."""
        signal = self.signal_electrons(dark_seconds=dark_seconds, light_seconds=light_seconds)
        return math.sqrt(self.read_noise**2 + signal / self.gain**2)


def data_region(acf: AcfConfig, params: Mapping[str, int] | None = None) -> tuple[int, int]:
    """(lines, pixels) of image data at the start of each tap block; the rest is overscan.

    ``params`` (current timing parameters, any case) override the ACF's, because a
    client may change the window with FASTLOADPARAM without rewriting the ACF.
    """
    folded = {k.lower(): v for k, v in (params or {}).items()}

    def lookup(name: str) -> int | None:
        if name.lower() in folded:
            return folded[name.lower()]
        try:
            return acf.parameter_int(name)
        except KeyError:
            return None

    return (
        _data_extent(acf.line_count, lookup("Lines"), lookup("OverscanLines")),
        _data_extent(acf.pixel_count, lookup("Pixels"), lookup("OverscanPixels")),
    )


def _data_extent(total: int, data: int | None, overscan: int | None) -> int:
    """Data size along one axis, preferring the explicit data count."""
    if data is not None:
        return max(0, min(total, data))
    if overscan is not None:
        return max(0, total - overscan)
    return total


def flat_field(model: SensorModel, tap: int, shape: tuple[int, int]) -> npt.NDArray[np.float32]:
    """Deterministic flat for one tap's data region, mean 1.

    A few-percent tilted gradient plus a radial fall-off (as vignetting would give)
    and a small tiled pixel-to-pixel pattern.  The tile keeps the cost per frame
    tiny while still making neighbouring pixels differ.
    """
    lines, pixels = shape
    if lines == 0 or pixels == 0:
        return np.ones(shape, dtype=np.float32)
    rng = np.random.default_rng(np.random.SeedSequence([model.seed, _FLAT_STREAM, tap]))
    angle = rng.uniform(0.0, 2.0 * math.pi)
    y = np.linspace(-1.0, 1.0, lines, dtype=np.float32)[:, None]
    x = np.linspace(-1.0, 1.0, pixels, dtype=np.float32)[None, :]
    gradient = np.float32(model.flat_gradient)
    flat = 1.0 + gradient * (np.float32(math.cos(angle)) * x + np.float32(math.sin(angle)) * y)
    flat -= gradient * np.float32(0.5) * (x * x + y * y)
    tile = 1.0 + model.flat_prnu * rng.standard_normal((_PRNU_TILE, _PRNU_TILE), dtype=np.float32)
    reps = (-(-lines // _PRNU_TILE), -(-pixels // _PRNU_TILE))
    flat *= np.tile(tile, reps)[:lines, :pixels]
    flat /= np.float32(flat.mean(dtype=np.float64))
    return flat.astype(np.float32, copy=False)


def render_frame(
    acf: AcfConfig,
    model: SensorModel,
    *,
    dark_seconds: float,
    light_seconds: float,
    frame_number: int,
    lines_read: int | None = None,
    params: Mapping[str, int] | None = None,
) -> npt.NDArray[Any]:
    """A whole frame buffer (shape ``acf.buffer_shape``, uint16 or uint32 per sample mode).

    ``lines_read`` < LINECOUNT leaves the later lines of every tap zero, as in a buffer
    whose readout was cut short.  ``params`` are the timing parameters in force
    (see :func:`data_region`).
    """
    if dark_seconds < 0 or light_seconds < 0:
        raise ValueError("dark_seconds and light_seconds must be >= 0")
    dtype = np.uint32 if acf.sample_mode == 1 else np.uint16
    buffer = np.zeros(acf.buffer_shape, dtype=dtype)
    n_lines = acf.line_count if lines_read is None else max(0, min(lines_read, acf.line_count))
    data_shape = data_region(acf, params)
    rng = np.random.default_rng(np.random.SeedSequence([model.seed, frame_number]))
    for tap, (rows, cols) in enumerate(tap_regions(acf)):
        block = buffer[rows, cols][:n_lines]
        _render_tap(block, tap, model, rng, data_shape, dark_seconds, light_seconds)
    return buffer


def _render_tap(
    block: npt.NDArray[Any],
    tap: int,
    model: SensorModel,
    rng: np.random.Generator,
    data_shape: tuple[int, int],
    dark_seconds: float,
    light_seconds: float,
) -> None:
    """Fill one tap block (readout order) in place: data region signal, overscan bias."""
    lines = min(block.shape[0], data_shape[0])
    pixels = data_shape[1]
    adu = rng.standard_normal(block.shape, dtype=np.float32)
    # The charge pattern is that of the whole data region even when fewer lines were
    # read, so a cut-short frame matches the first lines of the full one.
    signal = _signal(tap, model, rng, data_shape, dark_seconds, light_seconds)
    if isinstance(signal, np.ndarray):
        signal = signal[:lines]
    data = adu[:lines, :pixels]
    signal_adu = signal / np.float32(model.gain)
    # Shot noise variance in ADU^2 is signal_e / gain^2 = signal_adu / gain.
    data *= np.sqrt(np.float32(model.read_noise**2) + signal_adu / np.float32(model.gain))
    data += signal_adu
    adu[:lines, pixels:] *= np.float32(model.read_noise)
    adu[lines:, :] *= np.float32(model.read_noise)
    adu += np.float32(model.bias_level(tap))
    max_value = float(np.iinfo(block.dtype).max)
    np.clip(adu, 0.0, max_value, out=adu)
    np.add(adu, np.float32(0.5), out=block, casting="unsafe")


def _signal(
    tap: int,
    model: SensorModel,
    rng: np.random.Generator,
    shape: tuple[int, int],
    dark_seconds: float,
    light_seconds: float,
) -> npt.NDArray[np.float32] | np.float32:
    """Electrons in each data pixel: dark + flat-fielded light + cosmic rays, clipped.

    Stays a scalar when the charge is uniform (bias/dark without cosmics) so the
    common case costs nothing per pixel.
    """
    dark = np.float32(model.dark_current * dark_seconds)
    signal: npt.NDArray[np.float32] | np.float32 = dark
    if light_seconds > 0 and model.illumination > 0:
        flux = np.float32(model.illumination * light_seconds)
        signal = flat_field(model, tap, shape) * flux + dark
    hits = int(rng.poisson(model.cosmic_rate * shape[0] * shape[1] * dark_seconds))
    if hits and shape[0] and shape[1]:
        if not isinstance(signal, np.ndarray):
            signal = np.full(shape, signal, dtype=np.float32)
        _add_cosmics(signal, rng, hits, model.cosmic_electrons)
    if isinstance(signal, np.ndarray):
        np.minimum(signal, np.float32(model.full_well), out=signal)
        return signal
    return np.float32(min(float(signal), model.full_well))


def _add_cosmics(
    signal: npt.NDArray[np.float32], rng: np.random.Generator, hits: int, electrons: float
) -> None:
    """Deposit ``hits`` short tracks: a bright pixel and two dimmer neighbours each."""
    lines, pixels = signal.shape
    rows = rng.integers(0, lines, hits)
    cols = rng.integers(0, pixels, hits)
    energy = (rng.exponential(electrons, hits) + 0.25 * electrons).astype(np.float32)
    step_r = rng.integers(-1, 2, hits)
    step_c = rng.integers(-1, 2, hits)
    np.add.at(signal, (rows, cols), 0.6 * energy)
    for sign in (1, -1):
        r = np.clip(rows + sign * step_r, 0, lines - 1)
        c = np.clip(cols + sign * step_c, 0, pixels - 1)
        np.add.at(signal, (r, c), 0.2 * energy)
