"""The header model: which cards go into every file and where their values come from.

A card holds either a literal value or a named source. Sources are a fixed grammar,
resolved by lookup, never by ``eval``; an unknown source is refused when the config
is loaded, not when a file is written:

* ``exposure.<field>``            a field of the ExposureSpec (``exposure.filter``)
* ``instrument.<field>``          ``instrument.name``, ``.observatory``, ``.telescope``
* ``ccd.<field>``                 the CCD's ``name``, ``gain``, ``read_noise``
* ``controller.status.<KEY>``     a STATUS key of the CCD's controller (``MOD2/TEMPA``)
* ``controller.system.<KEY>``     a SYSTEM key (``BACKPLANE_VERSION``)
* ``device.<name>.<property>``    a reading of one of the instrument's ``devices``
                                  (``device.wheel.filter_name``; schemas/devices.py)

Controller status and device sources are sampled while the exposure runs: at
integration start, at its end, or both (``end_keyword`` names the second card, as in RASTART/RAEND).
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from schemas.fits_rules import CardValue, check_keyword, check_value

EXPOSURE_FIELDS = frozenset(
    {"image_type", "exptime", "count", "filter", "object_name", "readout_delay", "shutter"}
)
INSTRUMENT_FIELDS = frozenset({"name", "observatory", "telescope"})
CCD_FIELDS = frozenset({"name", "gain", "read_noise"})
CONTROLLER_KEY = re.compile(r"^[A-Z0-9_]+(/[A-Z0-9_]+)?$")
DEVICE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,15}$")
DEVICE_PROPERTY = re.compile(r"^[a-z][a-z0-9_]{0,40}$")


class Snapshot(StrEnum):
    """When a sampled source is read, relative to the integration."""

    START = "start"
    END = "end"
    BOTH = "both"


def check_source(source: str) -> str:
    """Return the source if it names something that exists, else raise ValueError."""
    parts = source.split(".")
    head = parts[0]
    if head == "exposure" and len(parts) == 2 and parts[1] in EXPOSURE_FIELDS:
        return source
    if head == "instrument" and len(parts) == 2 and parts[1] in INSTRUMENT_FIELDS:
        return source
    if head == "ccd" and len(parts) == 2 and parts[1] in CCD_FIELDS:
        return source
    if (
        head == "controller"
        and len(parts) == 3
        and parts[1] in ("status", "system")
        and CONTROLLER_KEY.match(parts[2])
    ):
        return source
    if (
        head == "device"
        and len(parts) == 3
        and DEVICE_NAME.match(parts[1])
        and DEVICE_PROPERTY.match(parts[2])
    ):
        return source
    exposure = "|".join(sorted(EXPOSURE_FIELDS))
    instrument = "|".join(sorted(INSTRUMENT_FIELDS))
    ccd = "|".join(sorted(CCD_FIELDS))
    raise ValueError(
        f"unknown header source {source!r}; sources are exposure.<{exposure}>, "
        f"instrument.<{instrument}>, ccd.<{ccd}>, controller.status.<KEY>, "
        "controller.system.<KEY>, device.<name>.<property>"
    )


def is_sampled(source: str) -> bool:
    """Controller status and device readings are telemetry: read during the exposure."""
    return source.startswith(("controller.status.", "device."))


def device_source(source: str) -> tuple[str, str] | None:
    """(device name, property) of a ``device.<name>.<property>`` source, else None."""
    parts = source.split(".")
    return (parts[1], parts[2]) if parts[0] == "device" and len(parts) == 3 else None


class HeaderCard(BaseModel):
    """One card: a FITS-legal keyword and a literal value or a named source."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    keyword: str
    value: CardValue | None = None
    source: str | None = None
    comment: str = Field(default="", max_length=60, pattern=r"^[\x20-\x7e]*$")
    unit: str | None = Field(default=None, max_length=16, pattern=r"^[\x20-\x7e]*$")
    type: Literal["str", "int", "float", "bool"] | None = None
    snapshot: Snapshot = Snapshot.START
    end_keyword: str | None = None

    @field_validator("keyword", "end_keyword")
    @classmethod
    def _legal_keyword(cls, keyword: str | None) -> str | None:
        return None if keyword is None else check_keyword(keyword)

    @field_validator("source")
    @classmethod
    def _known_source(cls, source: str | None) -> str | None:
        return None if source is None else check_source(source)

    @model_validator(mode="after")
    def _one_value(self) -> HeaderCard:
        if (self.value is None) == (self.source is None):
            raise ValueError(f"{self.keyword}: give exactly one of 'value' or 'source'")
        if self.value is not None:
            check_value(self.keyword, self.value)
        sampled = self.source is not None and is_sampled(self.source)
        if self.snapshot is Snapshot.BOTH and not self.end_keyword:
            raise ValueError(f"{self.keyword}: snapshot 'both' needs an end_keyword")
        if self.end_keyword and self.snapshot is not Snapshot.BOTH:
            raise ValueError(f"{self.keyword}: end_keyword only goes with snapshot 'both'")
        if self.snapshot is not Snapshot.START and not sampled:
            raise ValueError(
                f"{self.keyword}: only controller.status and device sources are sampled"
            )
        return self

    @property
    def full_comment(self) -> str:
        return f"[{self.unit}] {self.comment}".strip() if self.unit else self.comment

    def convert(self, raw: object) -> CardValue:
        """Cast a source's value to the card's type (when one is given) and check it."""
        value: CardValue
        if self.type == "int":
            value = int(float(str(raw)))
        elif self.type == "float":
            value = float(str(raw))
        elif self.type == "bool":
            value = str(raw).strip().lower() in ("1", "true", "t", "yes")
        elif self.type == "str":
            value = str(raw)
        elif isinstance(raw, bool | int | float | str):
            value = raw
        else:
            value = str(raw)
        return check_value(self.keyword, value)


class HeaderSpec(BaseModel):
    """The instrument's extra cards, in the order they are written."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cards: list[HeaderCard] = Field(default_factory=list)

    @field_validator("cards")
    @classmethod
    def _unique_keywords(cls, cards: list[HeaderCard]) -> list[HeaderCard]:
        seen: set[str] = set()
        for card in cards:
            for keyword in (card.keyword, card.end_keyword):
                if keyword is None:
                    continue
                if keyword in seen:
                    raise ValueError(f"keyword {keyword} is defined twice")
                seen.add(keyword)
        return cards

    def sampled(self) -> list[HeaderCard]:
        return [c for c in self.cards if c.source is not None and is_sampled(c.source)]
