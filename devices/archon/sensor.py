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

__all__ = [
    "ReadoutWindow",
    "SensorModel",
    "StarField",
    "data_region",
    "flat_field",
    "readout_window",
    "render_frame",
    "star_field",
]

# Streams of the seed sequence that are not frames: the flat field must not change
# from frame to frame, so it has its own stream keyed on the tap.
_FLAT_STREAM = 0xF1A7
_PRNU_TILE = 64
# Stars sit still on the detector (their own stream per tap); the guiding error that
# moves them is common to every tap of a frame (its own stream per frame).
_STAR_STREAM = 0x57A2
_JITTER_STREAM = 0x717E
_STAR_MARGIN = 8
"""No star is centred closer than this to a tap's edge: its light stays on the tap."""
_PSF_RADIUS = 4.0
"""A star's postage stamp reaches this many PSF sigmas from its centre."""


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
    stars: int = 0
    """Gaussian sources per tap, fixed on the detector (0: none, the default)."""
    star_flux: tuple[float, float] = (2.0e4, 4.0e5)
    """Range of the stars' fluxes in e-/s (log-uniform): a guide camera's field."""
    psf_sigma: float = 1.5
    """Gaussian PSF sigma in unbinned pixels."""
    star_jitter: float = 0.0
    """RMS per-frame shift of the whole star field in pixels (a guiding error)."""

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
        if self.stars < 0 or self.star_jitter < 0:
            raise ValueError("stars and star_jitter must be >= 0")
        if not 0 < self.star_flux[0] <= self.star_flux[1] or not 0 < self.psf_sigma <= 20:
            raise ValueError("star_flux must be 0 < low <= high, psf_sigma in (0, 20]")

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


@dataclass(frozen=True, slots=True)
class ReadoutWindow:
    """What the timing script clocks out of each amplifier, in unbinned CCD pixels.

    One definition shared by the pixels (:func:`render_frame`) and the simulator's
    readout timing, so the rows a readout takes time for are exactly the rows that get
    charge.  Along each axis the script skips ``preskip``, reads ``lines``/``pixels``
    of image, skips ``postskip`` and reads ``overscan`` (bias only); binning sums
    ``vbin`` lines / ``hbin`` pixels into one stored sample, so the stored geometry is
    ``(lines + overscan) // bin`` (the LINECOUNT/PIXELCOUNT a client applies).
    """

    lines: int
    pixels: int
    overscan_lines: int = 0
    overscan_pixels: int = 0
    preskip_lines: int = 0
    postskip_lines: int = 0
    preskip_pixels: int = 0
    postskip_pixels: int = 0
    vbin: int = 1
    hbin: int = 1

    @property
    def data_rows(self) -> int:
        """Stored image rows (binned)."""
        return self.lines // self.vbin

    @property
    def rows(self) -> int:
        """Stored rows, image plus overscan (binned)."""
        return (self.lines + self.overscan_lines) // self.vbin

    @property
    def data_cols(self) -> int:
        """Stored image pixels per row (binned)."""
        return self.pixels // self.hbin

    @property
    def cols(self) -> int:
        """Stored pixels per row, image plus overscan (binned)."""
        return (self.pixels + self.overscan_pixels) // self.hbin

    @property
    def ccd_shape(self) -> tuple[int, int]:
        """The part of the CCD the window lies in: skipped plus read image pixels."""
        return (
            self.preskip_lines + self.lines + self.postskip_lines,
            self.preskip_pixels + self.pixels + self.postskip_pixels,
        )


def readout_window(acf: AcfConfig, params: Mapping[str, int] | None = None) -> ReadoutWindow:
    """The window the timing parameters describe.

    ``params`` (current timing parameters, any case) override the ACF's, because a
    client may change the window with FASTLOADPARAM without rewriting the ACF.  An
    absent ``Lines``/``Pixels`` fills the buffer (LINECOUNT x binning less overscan);
    absent skips and overscan are 0, absent or non-positive binning is 1.
    """
    folded = {k.lower(): v for k, v in (params or {}).items()}

    def lookup(name: str, default: int) -> int:
        if name.lower() in folded:
            return max(0, folded[name.lower()])
        try:
            return max(0, acf.parameter_int(name))
        except (KeyError, ValueError):
            return default

    vbin = max(1, lookup("VerticalBinning", 1))
    hbin = max(1, lookup("HorizontalBinning", 1))
    overscan_lines = lookup("OverscanLines", 0)
    overscan_pixels = lookup("OverscanPixels", 0)
    return ReadoutWindow(
        lines=lookup("Lines", max(0, acf.line_count * vbin - overscan_lines)),
        pixels=lookup("Pixels", max(0, acf.pixel_count * hbin - overscan_pixels)),
        overscan_lines=overscan_lines,
        overscan_pixels=overscan_pixels,
        preskip_lines=lookup("PreSkipLines", 0),
        postskip_lines=lookup("PostSkipLines", 0),
        preskip_pixels=lookup("PreSkipPixels", 0),
        postskip_pixels=lookup("PostSkipPixels", 0),
        vbin=vbin,
        hbin=hbin,
    )


def data_region(acf: AcfConfig, params: Mapping[str, int] | None = None) -> tuple[int, int]:
    """(rows, columns) of image data at the start of each tap block; the rest is overscan.

    Binned: a window of 512 lines read with VerticalBinning=2 stores 256 image rows.
    """
    window = readout_window(acf, params)
    return min(acf.line_count, window.data_rows), min(acf.pixel_count, window.data_cols)


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

    ``params`` are the timing parameters in force (see :func:`readout_window`): binned
    pixels carry the summed charge of ``vbin x hbin`` CCD pixels with one read noise,
    and a window offset by skipped lines/pixels sees that part of the flat field.
    Everything after the image data reads as bias (overscan, and rows or columns a
    window smaller than LINECOUNT/PIXELCOUNT leaves over; the real controller would
    store garbage there).  Every row from ``lines_read`` on stays zero (a readout cut
    short).
    """
    if dark_seconds < 0 or light_seconds < 0:
        raise ValueError("dark_seconds and light_seconds must be >= 0")
    dtype = np.uint32 if acf.sample_mode == 1 else np.uint16
    buffer = np.zeros(acf.buffer_shape, dtype=dtype)
    window = readout_window(acf, params)
    n_rows = acf.line_count if lines_read is None else max(0, min(lines_read, acf.line_count))
    data_shape = (min(acf.line_count, window.data_rows), min(acf.pixel_count, window.data_cols))
    rng = np.random.default_rng(np.random.SeedSequence([model.seed, frame_number]))
    exposure = _Exposure(model, window, dark_seconds, light_seconds, frame_number)
    for tap, (rows, cols) in enumerate(tap_regions(acf)):
        block = buffer[rows, cols][:n_rows]
        _render_tap(block, tap, exposure, rng, data_shape)
    return buffer


@dataclass(frozen=True, slots=True)
class _Exposure:
    """What every tap of one frame shares: the detector, the window and the times."""

    model: SensorModel
    window: ReadoutWindow
    dark_seconds: float
    light_seconds: float
    frame_number: int = 0


def _render_tap(
    block: npt.NDArray[Any],
    tap: int,
    exposure: _Exposure,
    rng: np.random.Generator,
    data_shape: tuple[int, int],
) -> None:
    """Fill one tap block (readout order) in place: data region signal, overscan bias."""
    model = exposure.model
    lines = min(block.shape[0], data_shape[0])
    pixels = data_shape[1]
    adu = rng.standard_normal(block.shape, dtype=np.float32)
    # The charge pattern is that of the whole data region even when fewer lines were
    # read, so a cut-short frame matches the first lines of the full one.
    signal = _signal(tap, exposure, rng, data_shape)
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
    exposure: _Exposure,
    rng: np.random.Generator,
    shape: tuple[int, int],
) -> npt.NDArray[np.float32] | np.float32:
    """Electrons in each stored data pixel: dark + flat-fielded light + cosmic rays.

    Charge is clipped at full well per CCD pixel, then binned (summed); cosmic rays hit
    the stored pixels.  Stays a scalar when the charge is uniform (bias/dark without
    cosmics) so the common case costs nothing per pixel.
    """
    model, window = exposure.model, exposure.window
    binned = window.vbin * window.hbin
    full_well = np.float32(model.full_well)
    dark = np.float32(model.dark_current * exposure.dark_seconds)
    signal: npt.NDArray[np.float32] | np.float32 = np.minimum(dark, full_well) * binned
    rows, cols = shape
    lit = model.illumination > 0 or model.stars > 0
    if exposure.light_seconds > 0 and lit and rows and cols:
        flux = np.float32(model.illumination * exposure.light_seconds)
        r0, c0 = window.preskip_lines, window.preskip_pixels
        flat = flat_field(model, tap, window.ccd_shape)
        charge = flat[r0 : r0 + rows * window.vbin, c0 : c0 + cols * window.hbin] * flux + dark
        if model.stars:
            _add_stars(charge, tap, exposure, (r0, c0))
        np.minimum(charge, full_well, out=charge)
        signal = _bin(charge, window.vbin, window.hbin)
    area = rows * window.vbin * cols * window.hbin
    hits = int(rng.poisson(model.cosmic_rate * area * exposure.dark_seconds))
    if hits and rows and cols:
        if not isinstance(signal, np.ndarray):
            signal = np.full(shape, signal, dtype=np.float32)
        _add_cosmics(signal, rng, hits, model.cosmic_electrons)
        np.minimum(signal, full_well * binned, out=signal)
    return signal


@dataclass(frozen=True, slots=True)
class StarField:
    """Stars of one tap: centres in unbinned CCD pixels of the tap's image area (x along
    the readout's pixels, y along its lines; pixel ``i`` spans ``[i - 0.5, i + 0.5)``)
    and fluxes in e-/s."""

    x: npt.NDArray[np.float64]
    y: npt.NDArray[np.float64]
    flux: npt.NDArray[np.float64]


def star_field(model: SensorModel, tap: int, ccd_shape: tuple[int, int]) -> StarField:
    """The ``model.stars`` stars of ``tap`` on an image area of ``ccd_shape`` (lines,
    pixels): the same for every frame, so a test knows where the simulator's stars are."""
    rng = np.random.default_rng(np.random.SeedSequence([model.seed, _STAR_STREAM, tap]))
    lines, pixels = ccd_shape
    count = model.stars if min(lines, pixels) > 2 * _STAR_MARGIN else 0
    x = rng.uniform(_STAR_MARGIN, pixels - _STAR_MARGIN, count)
    y = rng.uniform(_STAR_MARGIN, lines - _STAR_MARGIN, count)
    low, high = model.star_flux
    flux = np.exp(rng.uniform(math.log(low), math.log(high), count))
    return StarField(x, y, flux)


def _jitter(model: SensorModel, frame_number: int) -> tuple[float, float]:
    """This frame's (dx, dy) shift of the whole field: the telescope's guiding error."""
    if model.star_jitter == 0:
        return 0.0, 0.0
    rng = np.random.default_rng(np.random.SeedSequence([model.seed, _JITTER_STREAM, frame_number]))
    dx, dy = rng.normal(0.0, model.star_jitter, 2)
    return float(dx), float(dy)


def _add_stars(
    charge: npt.NDArray[np.float32], tap: int, exposure: _Exposure, origin: tuple[int, int]
) -> None:
    """Add each star's light as a small Gaussian postage stamp (never a full-frame one).

    ``charge`` is the unbinned part of the tap's image area that is read, starting at
    ``origin`` (the skipped lines and pixels); a stamp's pixels outside it are dropped.
    """
    model = exposure.model
    stars = star_field(model, tap, exposure.window.ccd_shape)
    if not stars.x.size:
        return
    dx, dy = _jitter(model, exposure.frame_number)
    x, y = stars.x + dx, stars.y + dy
    radius = math.ceil(_PSF_RADIUS * model.psf_sigma)
    offsets = np.arange(-radius, radius + 1)
    cx, cy = np.rint(x).astype(np.int64), np.rint(y).astype(np.int64)
    cols = cx[:, None] + offsets  # (stars, 2r+1)
    rows = cy[:, None] + offsets
    profile_x = np.exp(-0.5 * ((cols - x[:, None]) / model.psf_sigma) ** 2)
    profile_y = np.exp(-0.5 * ((rows - y[:, None]) / model.psf_sigma) ** 2)
    profile_x /= profile_x.sum(axis=1, keepdims=True)
    profile_y /= profile_y.sum(axis=1, keepdims=True)
    electrons = stars.flux * exposure.light_seconds
    light = electrons[:, None, None] * profile_y[:, :, None] * profile_x[:, None, :]
    r = np.broadcast_to((rows - origin[0])[:, :, None], light.shape)
    c = np.broadcast_to((cols - origin[1])[:, None, :], light.shape)
    inside = (r >= 0) & (r < charge.shape[0]) & (c >= 0) & (c < charge.shape[1])
    np.add.at(charge, (r[inside], c[inside]), light[inside].astype(np.float32))


def _bin(charge: npt.NDArray[np.float32], vbin: int, hbin: int) -> npt.NDArray[np.float32]:
    """Sum ``vbin x hbin`` blocks, as on-chip binning does."""
    if vbin == hbin == 1:
        return charge
    rows, cols = charge.shape[0] // vbin, charge.shape[1] // hbin
    blocks = charge.reshape(rows, vbin, cols, hbin)
    summed: npt.NDArray[np.float32] = blocks.sum(axis=(1, 3), dtype=np.float32)
    return summed


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
