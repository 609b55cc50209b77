"""What a run shows in the Prefect UI: progress, tables, summaries."""
