"""Header cards for our FITS files, formatted once so every engine writes the same bytes.

astropy and cfitsio format values differently (floats especially: cfitsio writes 15
significant digits, astropy enough to round-trip), and they encode long strings
differently. So each card is validated and rendered to its 80-character image here, by
astropy, and both engines write that image verbatim: the header a reader sees does not
depend on the engine that wrote the file.

Structural keywords (SIMPLE, BITPIX, NAXISn, BZERO, the tile-compression Z* keywords,
CHECKSUM, ...) are refused: the engines write them from the data, and a caller's copy
would either be ignored or contradict the data.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Sequence

from astropy.io import fits
from astropy.io.fits.verify import VerifyWarning

Card = tuple[str, str | int | float | bool, str]
"""keyword, value, comment. Keywords longer than 8 characters or with spaces become
HIERARCH cards (ESO convention), e.g. ``("DET CHIP TEMP", -110.2, "[C] CCD temperature")``.
There is no None: FITS's undefined value (``KEY     =  / comment``) makes fitsverify
warn, so a value that is unknown is better left out, or said in words."""

_STANDARD = re.compile(r"[A-Z0-9_-]{1,8}")
_HIERARCH = re.compile(r"[A-Z0-9_-]+( [A-Z0-9_-]+)*")
_RESERVED = re.compile(
    r"SIMPLE|BITPIX|NAXIS\d*|EXTEND|XTENSION|PCOUNT|GCOUNT|GROUPS|END|BLANK|BSCALE|BZERO"
    r"|CHECKSUM|DATASUM|EXTNAME|TFIELDS|THEAP|T(TYPE|FORM|DIM|SCAL|ZERO|NULL)\d+"
    r"|ZIMAGE|ZCMPTYPE|ZBITPIX|ZNAXIS\d*|ZTILE\d+|ZNAME\d+|ZVAL\d+|ZMASKCMP|ZSIMPLE|ZTENSION"
    r"|ZEXTEND|ZBLOCKED|ZPCOUNT|ZGCOUNT|ZHECKSUM|ZDATASUM|ZQUANTIZ|ZDITHER0|ZBLANK|ZSCALE|ZZERO"
)
_COMMENTARY = frozenset({"COMMENT", "HISTORY"})
_INT64 = (-(2**63), 2**63 - 1)


class CardError(ValueError):
    """A header card that cannot be written as one standard, engine-independent card."""


def render_cards(cards: Sequence[Card], where: str) -> list[fits.Card]:
    """Validate one HDU's ``cards`` and return them as astropy cards of 80 characters.

    Raises CardError naming ``where`` and the keyword for anything an engine would
    silently change: a reserved keyword, a lowercase or non-ASCII name, a non-finite
    float, a value or comment too long for one card (no CONTINUE cards: engines differ
    on those), or a keyword given twice (readers would see only one of the values).
    """
    rendered = []
    seen: set[str] = set()
    for card in cards:
        try:
            one = _render(card)
        except CardError as exc:
            raise CardError(f"{where}: {exc}") from exc
        if one.keyword not in _COMMENTARY:
            if one.keyword in seen:
                raise CardError(f"{where}: keyword {one.keyword!r} given twice")
            seen.add(one.keyword)
        rendered.append(one)
    return rendered


def _render(card: Card) -> fits.Card:
    keyword, value, comment = card
    name = keyword.removeprefix("HIERARCH ")
    if _STANDARD.fullmatch(name):
        hierarch = False
    elif _HIERARCH.fullmatch(name):
        hierarch = True
    else:
        raise CardError(f"{keyword!r}: keywords are uppercase A-Z, 0-9, '-', '_' (and spaces)")
    if not hierarch and _RESERVED.fullmatch(name):
        raise CardError(f"{keyword!r} is written by the FITS engine, not by callers")
    _check_value(keyword, value, commentary=name in _COMMENTARY)
    if not comment.isascii() or not comment.isprintable():
        raise CardError(f"{keyword!r}: comment must be printable ASCII")
    with warnings.catch_warnings():
        # astropy only warns when it truncates a comment or splits a value; we refuse.
        warnings.simplefilter("error", VerifyWarning)
        try:
            if name in _COMMENTARY:
                if comment:
                    raise CardError(f"{keyword!r} cards carry text in the value only")
                rendered = fits.Card(name, value)
            else:
                rendered = fits.Card(f"HIERARCH {name}" if hierarch else name, value, comment)
            image = rendered.image
        except VerifyWarning as exc:
            raise CardError(f"{keyword!r} does not fit on one 80-character card: {exc}") from exc
    if len(image) != fits.Card.length:
        raise CardError(f"{keyword!r} does not fit on one 80-character card")
    return rendered


def _check_value(keyword: str, value: object, *, commentary: bool) -> None:
    if commentary and not isinstance(value, str):
        raise CardError(f"{keyword!r} takes text")
    if value is None:
        raise CardError(f"{keyword!r}: no undefined values (fitsverify warns); omit the card")
    if isinstance(value, bool):
        return
    if isinstance(value, int):
        if not _INT64[0] <= value <= _INT64[1]:
            raise CardError(f"{keyword!r}: integer {value} does not fit in 64 bits")
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise CardError(f"{keyword!r}: FITS has no NaN or infinite header values")
        return
    if isinstance(value, str):
        if not value.isascii() or not value.isprintable():
            raise CardError(f"{keyword!r}: string values must be printable ASCII")
        return
    raise CardError(f"{keyword!r}: unsupported value type {type(value).__name__}")


def extname_card(extname: str) -> fits.Card:
    """The EXTNAME card of an image (callers name images through ImagePart.extname)."""
    if not extname or not extname.isascii() or not extname.isprintable():
        raise CardError(f"EXTNAME {extname!r} must be non-empty printable ASCII")
    if len(extname) > 68:
        raise CardError(f"EXTNAME {extname!r} does not fit on one card")
    return fits.Card("EXTNAME", extname, "extension name")
