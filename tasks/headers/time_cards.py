"""When an exposure integrated, as header cards and result fields, and what each means.

Each frame's times come from the camera (devices.base.ExposureTimes): the moment the
shutter opened and closed as measured by the controller's own timer when its timing
script latches them, otherwise the host clock at the controller's acknowledgement of
the start, plus the integration the controller timed itself. From them:

* DATE-OBS / MJD-OBS: the shutter opened (the integration began), first frame;
* DATE-END / MJD-END: the shutter closed (the integration ended), last frame;
* DATE-AVG / MJD-AVG: the middle of the two (the time to use for the whole exposure);
* TIMESRC: what measured them; TIMSYER: their +- uncertainty in seconds (FITS
  standard's systematic time error), when known;
* EXPTIME: the integration asked for; EXPMEAS: the integration measured (per frame,
  averaged over stacked frames); EXPFLAG: T when they differ by more than the
  instrument's ``exptime_tolerance_s`` (a COMMENT then says by how much).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from astropy.time import Time

from devices.base import ExposureTimes
from tasks.files.fits_cards import Card


@dataclass(frozen=True, slots=True)
class TimeSummary:
    """An exposure's times, however many frames it read."""

    start: datetime
    end: datetime
    measured_s: float
    requested_s: float
    source: str
    uncertainty_s: float | None
    flagged: bool
    fallback_reason: str | None

    @property
    def middle(self) -> datetime:
        return self.start + (self.end - self.start) / 2


def summarize(times: Sequence[ExposureTimes], tolerance_s: float) -> TimeSummary:
    """One summary of the frames' times (ValueError without any frame)."""
    if not times:
        raise ValueError("an exposure without frame times")
    measured = sum(t.measured_s for t in times) / len(times)
    requested = times[0].requested_s
    sources = sorted({t.source for t in times})
    known = [t.uncertainty_s for t in times if t.uncertainty_s is not None]
    uncertainty = max(known) if len(known) == len(times) else None
    reasons = [t.fallback_reason for t in times if t.fallback_reason]
    return TimeSummary(
        start=times[0].start,
        end=times[-1].end,
        measured_s=measured,
        requested_s=requested,
        source=" + ".join(sources),
        uncertainty_s=uncertainty,
        flagged=any(abs(t.measured_s - t.requested_s) > tolerance_s for t in times),
        fallback_reason=reasons[0] if reasons else None,
    )


def _iso(moment: datetime) -> str:
    return str(Time(moment, scale="utc").isot)


def _mjd(moment: datetime) -> float:
    return round(float(Time(moment, scale="utc").mjd), 9)


def time_cards(summary: TimeSummary, tolerance_s: float) -> list[Card]:
    """The cards of the module docstring, in the order a reader looks for them."""
    cards: list[Card] = [
        ("DATE-OBS", _iso(summary.start), "shutter opened: start of integration (UTC)"),
        ("DATE-END", _iso(summary.end), "shutter closed: end of integration (UTC)"),
        ("DATE-AVG", _iso(summary.middle), "middle of the integration (UTC)"),
        ("TIMESYS", "UTC", "time scale of the DATE and MJD cards"),
        ("MJD-OBS", _mjd(summary.start), "MJD of DATE-OBS"),
        ("MJD-END", _mjd(summary.end), "MJD of DATE-END"),
        ("MJD-AVG", _mjd(summary.middle), "MJD of DATE-AVG"),
        ("TIMESRC", summary.source, "what measured DATE-OBS and DATE-END"),
    ]
    if summary.uncertainty_s is not None:
        cards.append(
            ("TIMSYER", float(f"{summary.uncertainty_s:.3g}"), "[s] +- error of DATE-OBS/END")
        )
    if summary.fallback_reason:
        cards.append(("COMMENT", f"TIMESRC fallback: {summary.fallback_reason}"[:72], ""))
    cards += [
        ("EXPTIME", round(summary.requested_s, 6), "[s] integration time asked for"),
        ("EXPMEAS", round(summary.measured_s, 6), "[s] integration measured (END-OBS)"),
        ("EXPFLAG", summary.flagged, f"EXPMEAS differs from EXPTIME by > {tolerance_s:g} s"),
    ]
    if summary.flagged:
        difference = summary.measured_s - summary.requested_s
        cards.append(
            ("COMMENT", f"EXPMEAS - EXPTIME = {difference:+.4f} s exceeds {tolerance_s:g} s", "")
        )
    return cards
