"""A readable summary of a sequence: one row per exposure, seconds per stage."""

from __future__ import annotations

from collections import Counter

from rich import box
from rich.console import Console
from rich.table import Table

from schemas.products import Product
from schemas.results import SequenceResult

STAGE_COLUMNS = {
    "flush": "flush",
    "expose": "expose",
    "readout": "readout",
    "fetch": "fetch",
    "post_process": "post",
    "write": "write",
}
"""Stage name -> column heading (short, so the table fits an 80-column terminal)."""


def _cell(timings: dict[str, float], stage: str) -> str:
    """Seconds of one stage; on Dask workers post-processing and writing are one."""
    if "process_write" in timings and stage in ("post_process", "write"):
        return f"{timings['process_write']:.3f}*" if stage == "post_process" else "*"
    return f"{timings.get(stage, 0.0):.3f}"


def sequence_table(result: SequenceResult) -> Table:
    table = Table(
        title=f"sequence {result.name}: {len(result.exposures)} exposures (seconds per stage)",
        box=box.SIMPLE_HEAD,
        padding=(0, 1),
        pad_edge=False,
        collapse_padding=True,
    )
    table.add_column("exp", justify="right", no_wrap=True, min_width=3)
    table.add_column("type", no_wrap=True, min_width=6)
    table.add_column("exptime", justify="right", no_wrap=True, min_width=7)
    for heading in STAGE_COLUMNS.values():
        table.add_column(heading, justify="right", no_wrap=True, min_width=len(heading))
    table.add_column("total", justify="right", no_wrap=True, min_width=5)
    for exposure in result.exposures:
        table.add_row(
            str(exposure.expnum),
            exposure.image_type.value,
            f"{exposure.exptime:.2f}",
            *(_cell(exposure.timings, stage) for stage in STAGE_COLUMNS),
            f"{sum(exposure.timings.values()):.3f}",
        )
    return table


def print_sequence_summary(result: SequenceResult, console: Console | None = None) -> None:
    console = console or Console()
    console.print(sequence_table(result))
    if result.stopped is not None:
        console.print(f"stopped: {result.stopped}")
    for reason, count in Counter(result.skipped).items():
        console.print(f"skipped {count}: {reason}")
    if result.rejected:
        numbers = ", ".join(str(r.expnum) for r in result.rejected)
        console.print(f"written but not kept (marked in their headers): {numbers}")
    folders = sorted({str(r.path.parent) for e in result.exposures for r in e.files})
    n_files = sum(r.product is not Product.QUICKLOOK for e in result.exposures for r in e.files)
    if n_files:
        console.print(
            f"{n_files} FITS files in {', '.join(folders)}; sequence took {result.elapsed_s:.1f} s"
        )
    if any("process_write" in e.timings for e in result.exposures):
        console.print("  * post-processing and writing ran together on Dask workers")
    if result.exposures:
        first = result.exposures[0]
        for product in dict.fromkeys(record.product for record in first.files):
            mine = [record for record in first.files if record.product is product]
            if product is Product.QUICKLOOK:
                console.print(f"  quick-look PNG of the mosaic, e.g. {mine[0].path.name}")
                continue
            what = "raw frame as read" if product is Product.RAW else "processed image"
            ccds = ", ".join(record.ccd for record in mine)
            console.print(f"  {what} per CCD ({ccds}), e.g. {mine[0].path.name}")
        source = first.time_source or "host clock"
        console.print(f"  DATE-OBS/DATE-END measured by the {source}")
    for master in result.masters:
        numbers = f"{min(master.inputs)}-{max(master.inputs)}"
        label = master.kind if master.kind != "flat" else f"flat ({master.filter})"
        console.print(
            f"master {label} from {len(master.inputs)} exposures ({numbers}): {master.file.path}"
        )
