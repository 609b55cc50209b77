"""Flat-field lamps: lit for the exposures that name one, dark for every other.

A dome flat names its lamp (schemas.exposure.Lamp). Before each exposure of a run the
lamp it names is lit (its cover closed first) and every other lamp is dark, so a
dark, a bias or a sky frame never sees a lamp left on, by this run or by someone
before it: the first exposure darkens every lamp it does not want. The run's end
darkens the lamp it lit.
"""

from __future__ import annotations

from collections.abc import Mapping

from devices.observatory import FlatLamp
from schemas.exposure import ExposureSpec

LAMP_TIMEOUT_S = 120.0
"""Longest a cover may take to close or a lamp to warm up or go dark."""


class LampControl:
    """The state of a run's lamps, moved only when an exposure wants it different."""

    def __init__(self, lamps: Mapping[str, FlatLamp], timeout_s: float = LAMP_TIMEOUT_S) -> None:
        self.lamps = lamps
        self.timeout_s = timeout_s
        self.lit: tuple[str, int | None] | None = None
        self.known = False
        """False until the first exposure: lamps may be on from before the run."""

    async def set_for(self, spec: ExposureSpec) -> None:
        """Light the lamp ``spec`` names (if any) and darken every other."""
        wanted = (spec.lamp.device, spec.lamp.brightness) if spec.lamp is not None else None
        if self.known and wanted == self.lit:
            return
        others = [name for name in self.lamps if wanted is None or name != wanted[0]]
        if not self.known:
            dark = others
        else:
            dark = [self.lit[0]] if self.lit is not None and self.lit[0] in others else []
        for name in dark:
            await self.lamps[name].darken(timeout_s=self.timeout_s)
        self.lit, self.known = None, True
        if wanted is not None:
            await self.lamps[wanted[0]].illuminate(wanted[1], timeout_s=self.timeout_s)
            self.lit = wanted

    async def close(self) -> None:
        """The run is over: the lamp it lit goes dark."""
        if self.lit is not None:
            name, self.lit = self.lit[0], None
            await self.lamps[name].darken(timeout_s=self.timeout_s)
