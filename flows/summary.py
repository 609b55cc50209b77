"""A readable summary of a sequence: one row per exposure, seconds per stage."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from schemas.results import SequenceResult

STAGE_COLUMNS = ("flush", "expose", "readout", "fetch", "post_process", "write")


def sequence_table(result: SequenceResult) -> Table:
    table = Table(title=f"sequence {result.name}: {len(result.exposures)} exposures")
    table.add_column("exp #", justify="right")
    table.add_column("type")
    table.add_column("exptime s", justify="right")
    table.add_column("files")
    for stage in STAGE_COLUMNS:
        table.add_column(f"{stage} s", justify="right")
    table.add_column("total s", justify="right")
    for exposure in result.exposures:
        table.add_row(
            f"{exposure.expnum:08d}",
            exposure.image_type.value,
            f"{exposure.exptime:.2f}",
            "\n".join(record.path.name for record in exposure.files),
            *(f"{exposure.timings.get(stage, 0.0):.3f}" for stage in STAGE_COLUMNS),
            f"{sum(exposure.timings.values()):.3f}",
        )
    return table


def print_sequence_summary(result: SequenceResult, console: Console | None = None) -> None:
    console = console or Console()
    console.print(sequence_table(result))
    folders = sorted({str(r.path.parent) for e in result.exposures for r in e.files})
    n_files = sum(len(e.files) for e in result.exposures)
    console.print(f"{n_files} files in {', '.join(folders)}; sequence took {result.elapsed_s:.1f} s")
