"""The files' deadline: checked on paper before the first exposure, then on each one.

An observatory holds its instrument to "files on disk within N seconds of the
readout" (DESI: 9-15 s for 30 CCDs). Whether a configuration can meet it follows from
the pixels an exposure reads and what the host finishes per second, so a deadline the
instrument cannot meet is said before anything moves, naming the settings to change,
rather than discovered exposure by exposure. It is a warning, not a refusal: the
throughput is the operator's measurement, and the run's own figures are the truth.
"""

from __future__ import annotations

from schemas.instrument import DeadlineConfig
from schemas.results import ExposureResult


def paper_seconds(deadline: DeadlineConfig, pixels: int) -> float:
    """Seconds this host takes to fetch and finish ``pixels`` at its stated rate."""
    return pixels / (deadline.host_mpix_per_s * 1e6)


def paper_deadline_problem(deadline: DeadlineConfig, pixels: int) -> str | None:
    """Why the largest exposure of a run cannot meet the deadline on paper, or None."""
    needed = paper_seconds(deadline, pixels)
    if needed <= deadline.files_within_s:
        return None
    return (
        f"deadline.files_within_s: an exposure of {pixels / 1e6:.0f} Mpixel takes about "
        f"{needed:.1f} s to finish at deadline.host_mpix_per_s = "
        f"{deadline.host_mpix_per_s:g}, over the {deadline.files_within_s:g} s asked: "
        "expect late files (spread the work over more Dask workers, or write fewer or "
        "uncompressed products)"
    )


def missed_deadline(deadline: DeadlineConfig, result: ExposureResult) -> str | None:
    """What to log when ``result``'s files came later than the deadline, or None."""
    late = result.files_after_readout_s
    if late is None or late <= deadline.files_within_s:
        return None
    return (
        f"exposure {result.expnum}: files on disk {late:.1f} s after its readout, "
        f"over the deadline of {deadline.files_within_s:g} s (deadline.files_within_s)"
    )
