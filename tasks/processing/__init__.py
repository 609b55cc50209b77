"""Pixels: raw frames and processed images, overscan, steps, stacking, masters, Dask."""
