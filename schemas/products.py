"""The products an exposure writes: the raw frame as read, and the processed image.

The raw frame is the instrument's first duty: the ADU exactly as the controller
digitized them (integer samples, overscan and pre/post-scan included, amplifiers in
readout order), so any reduction can be redone downstream. The processed image (the
chain in schemas/processing.py applied to it) is an optional second product, for
quick looks and for instruments whose users want reduced frames at once. A quick-look
PNG of the whole mosaic (``storage.quicklook``) may come with them: for eyes, never an
input (no master, archive or recovery reads one).
"""

from __future__ import annotations

from enum import StrEnum


class Product(StrEnum):
    """What a file holds; written in its header as PRODUCT (a PNG's text chunk)."""

    RAW = "raw"
    PROCESSED = "processed"
    QUICKLOOK = "quicklook"
