"""FITS rules for keywords and values that users may put into headers.

Checked when a spec or config is loaded, so a bad card is refused before any
hardware moves, not discovered when the file is written at the end of a readout.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

KEYWORD = re.compile(r"^[A-Z0-9_-]{1,8}$")
"""A standard keyword: up to 8 upper-case letters, digits, '-' or '_'."""

HIERARCH_WORD = re.compile(r"^[A-Z0-9_-]+$")

RESERVED = frozenset(
    {
        "SIMPLE",
        "BITPIX",
        "EXTEND",
        "END",
        "CHECKSUM",
        "DATASUM",
        "XTENSION",
        "PCOUNT",
        "GCOUNT",
        "TFIELDS",
        "BSCALE",
        "BZERO",
        "BLANK",
        "ZIMAGE",
        "ZBITPIX",
        "ZCMPTYPE",
        "ZTENSION",
        "ZPCOUNT",
        "ZGCOUNT",
        "ZQUANTIZ",
        "ZDITHER0",
        "EXTNAME",
    }
)
"""Structural keywords the writer owns; a user card may not set them."""

RESERVED_PREFIXES = ("NAXIS", "ZNAXIS", "ZTILE", "ZNAME", "ZVAL", "TTYPE", "TFORM")

WRITER_CARDS = frozenset(
    {
        "DATE-OBS",
        "TIMESYS",
        "MJD-OBS",
        "EXPTIME",
        "DARKTIME",
        "IMAGETYP",
        "OBJECT",
        "EXPNUM",
        "OBSERVAT",
        "TELESCOP",
        "INSTRUME",
        "DETECTOR",
        "CCDNAME",
        "CONTRLR",
        "FRAMEBUF",
        "GAIN",
        "RDNOISE",
        "CCDSUM",
        "BUNIT",
        "DATASEC",
        "TRIMSEC",
        "BIASSEC",
        "DETSEC",
        "NAMPS",
        "CCDTEMP",
        "FILTER",
        "RA",
        "DEC",
        "RADESYS",
        "NCOMBINE",
        "COMBMETH",
        "RUNID",
        "SPECHASH",
        "ORIGIN",
        "SWVERS",
        "SHUTTER",
        "CTRLMISS",
    }
)
"""Cards the writer sets from the exposure itself; a user card may not replace them."""

MAX_VALUE_CHARS = 68
"""Longest string value that fits one card (80 - 10 - 2 quotes)."""

MAX_HIERARCH_CARD = 80

CardValue = str | int | float | bool


def check_keyword(keyword: str) -> str:
    """Return the keyword as written to the file, or raise ValueError saying why.

    Standard keywords are upper-cased; longer names, or names with spaces, become
    HIERARCH cards (``HIERARCH ESO DET TEMP``), each word itself FITS-legal.
    """
    if not keyword or keyword != keyword.strip():
        raise ValueError(f"keyword {keyword!r} is empty or has surrounding spaces")
    upper = keyword.upper()
    if upper.startswith("HIERARCH "):
        words = upper.split()[1:]
    elif len(upper) > 8 or " " in upper:
        words = upper.split()
    else:
        if not KEYWORD.match(upper):
            raise ValueError(
                f"keyword {keyword!r} may only hold A-Z, 0-9, '-' and '_' (up to 8 characters)"
            )
        if upper in RESERVED or upper.startswith(RESERVED_PREFIXES):
            raise ValueError(f"keyword {upper} is reserved for the file's structure")
        if upper in WRITER_CARDS:
            raise ValueError(f"keyword {upper} is written by ccdflow itself")
        return upper
    if not words or not all(HIERARCH_WORD.match(word) for word in words):
        raise ValueError(f"HIERARCH keyword {keyword!r} may only hold words of A-Z, 0-9, '-', '_'")
    return "HIERARCH " + " ".join(words)


def check_value(keyword: str, value: CardValue) -> CardValue:
    """Refuse values a FITS card cannot carry (non-ASCII, too long, not finite)."""
    if isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"{keyword}: FITS cannot store {value}")
        return value
    if not value.isascii() or not value.isprintable():
        raise ValueError(f"{keyword}: value must be printable ASCII")
    room = MAX_VALUE_CHARS
    if keyword.startswith("HIERARCH "):
        room = MAX_HIERARCH_CARD - len(keyword) - 5
    if len(value) > room:
        raise ValueError(f"{keyword}: value of {len(value)} characters does not fit (max {room})")
    return value


def check_cards(
    header: Mapping[str, CardValue], reserved: Mapping[str, str] | None = None
) -> dict[str, CardValue]:
    """A spec's extra header cards, each keyword and value FITS-legal, none given twice
    (``DATE-OBS`` and ``date-obs`` are one card) and none of ``reserved`` (keyword ->
    why the file writes it itself)."""
    checked: dict[str, CardValue] = {}
    for keyword, value in header.items():
        name = check_keyword(keyword)
        if name in checked:
            raise ValueError(f"keyword {name} given twice")
        if reserved and name in reserved:
            raise ValueError(f"keyword {name} {reserved[name]}")
        checked[name] = check_value(name, value)
    return checked
