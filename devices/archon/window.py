"""The readout window: which lines and pixels are read, skipped and binned.

A window is set through timing parameters (FASTLOADPARAM) plus the geometry the
controller stores frames with (LINECOUNT, PIXELCOUNT), which must agree with them or
the buffer would hold garbage rows.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from devices.archon.acf import AcfConfig

PARAMETER_NAMES: dict[str, str] = {
    "lines": "Lines",
    "pixels": "Pixels",
    "preskip_lines": "PreSkipLines",
    "postskip_lines": "PostSkipLines",
    "preskip_pixels": "PreSkipPixels",
    "postskip_pixels": "PostSkipPixels",
    "overscan_lines": "OverscanLines",
    "overscan_pixels": "OverscanPixels",
    "vbin": "VerticalBinning",
    "hbin": "HorizontalBinning",
}
"""Window field -> timing-script parameter name."""


@dataclass(frozen=True, slots=True)
class Window:
    """Lines and pixels per amplifier, as the timing script reads them."""

    lines: int
    pixels: int
    preskip_lines: int = 0
    postskip_lines: int = 0
    preskip_pixels: int = 0
    postskip_pixels: int = 0
    overscan_lines: int = 0
    overscan_pixels: int = 0
    vbin: int = 1
    hbin: int = 1

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if value < 0:
                raise ValueError(f"window {name} must be >= 0, got {value}")
        if self.lines < 1 or self.pixels < 1:
            raise ValueError("a window needs at least one line and one pixel")
        if self.vbin < 1 or self.hbin < 1:
            raise ValueError("binning factors must be >= 1")

    @property
    def line_count(self) -> int:
        """LINECOUNT: stored lines per amplifier after vertical binning."""
        return (self.lines + self.overscan_lines) // self.vbin

    @property
    def pixel_count(self) -> int:
        """PIXELCOUNT: stored pixels per line and amplifier after horizontal binning."""
        return (self.pixels + self.overscan_pixels) // self.hbin

    def with_changes(self, **changes: int) -> Window:
        unknown = set(changes) - set(PARAMETER_NAMES)
        if unknown:
            raise ValueError(f"unknown window fields: {', '.join(sorted(unknown))}")
        return replace(self, **changes)

    def parameters(self) -> dict[str, int]:
        """Timing parameter name -> value for every field."""
        return {PARAMETER_NAMES[name]: value for name, value in asdict(self).items()}

    @classmethod
    def from_acf(cls, acf: AcfConfig) -> Window:
        """The window an ACF starts with (missing parameters take their defaults)."""
        defaults = {"lines": acf.line_count, "pixels": acf.pixel_count, "vbin": 1, "hbin": 1}
        values = {
            name: acf.parameter_int(parameter, defaults.get(name, 0))
            for name, parameter in PARAMETER_NAMES.items()
        }
        return cls(**values)
