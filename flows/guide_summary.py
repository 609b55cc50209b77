"""The table ``ccdflow guide`` prints: what a guide exposure took and how promptly."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from schemas.guide import GuideResult


def print_guide_summary(result: GuideResult, console: Console | None = None) -> None:
    """Frames, lateness, latency percentiles, the stamp centres and the files."""
    console = console or Console()
    table = Table(title=f"guide exposure {result.expnum}")
    table.add_column("what")
    table.add_column("value", justify="right")
    rows = [
        ("frames asked", str(result.frames_asked)),
        ("frames archived", str(result.frames_taken)),
        ("frames late", str(result.frames_late)),
        ("frames dropped", str(result.frames_dropped)),
        ("cadence s", f"{result.cadence_s:g}"),
        ("stamp size px", str(result.stamp_size)),
        ("latency p50 ms", str(result.latency_ms_p50)),
        ("latency p95 ms", str(result.latency_ms_p95)),
        ("latency p99 ms", str(result.latency_ms_p99)),
        ("latency max ms", str(result.latency_ms_max)),
        ("elapsed s", f"{result.elapsed_s:.1f}"),
    ]
    for what, value in rows:
        table.add_row(what, value)
    console.print(table)
    how = "found on the first frame" if result.found_on_first_frame else "given"
    for camera, centres in result.rois.items():
        where = ", ".join(f"({c.x}, {c.y})" for c in centres)
        console.print(f"{camera}: stamps at {where} ({how})")
    for path in result.files:
        console.print(f"wrote {path}")
