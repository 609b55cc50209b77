"""An exposure's quick-look PNG beside its FITS files, in the night's manifest.

``{instrument}-{expnum:08d}.png`` in the night folder: the mosaic of every CCD
(tasks/processing/quicklook.py) as 8-bit grey, with the exposure number, instrument,
image type and zscale limits as PNG text chunks, so the file says what it shows.

Pillow encodes the PNG (a well-kept encoder: a zlib and CRC chunk writer of our own
would be code to maintain for nothing); the bytes are published like every FITS file
(tasks/files/publish.py: temporary name, fsync, link), so an existing file is never
overwritten. Exposure numbers are never reused: a PNG already there is this exposure's
from an earlier attempt (a recovered frame), kept as it is, or else refused.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from urllib.parse import quote

from PIL import Image, PngImagePlugin

from schemas.instrument import InstrumentConfig
from schemas.products import Product
from schemas.results import FileRecord
from tasks.files.manifest import append_manifest
from tasks.files.publish import HashingWriter, WrittenFile, publish_stream
from tasks.processing.quicklook import (
    GreyImage,
    MosaicPlan,
    Thumbnail,
    assemble_mosaic,
    to_8bit,
    zscale_limits,
)
from tasks.write import night_folder


@dataclass(frozen=True, slots=True)
class QuickLook:
    """The PNG written for one exposure, and where it is served (None: no url_base)."""

    record: FileRecord
    url: str | None


def quicklook_name(instrument: str, expnum: int) -> str:
    return f"{instrument}-{expnum:08d}.png"


def quicklook_url(instrument: InstrumentConfig, when: datetime, name: str) -> str | None:
    """The PNG's address under ``storage.url_base`` (which serves ``data_root``)."""
    base = instrument.storage.url_base
    if base is None:
        return None
    relative = f"{instrument.storage.night_rule.folder(when)}/{name}"
    return f"{str(base).rstrip('/')}/{quote(relative)}"


def png_bytes(grey: GreyImage, text: Mapping[str, str]) -> bytes:
    """An 8-bit greyscale PNG of ``grey`` (first row on top) with ``text`` chunks."""
    info = PngImagePlugin.PngInfo()
    for key, value in text.items():
        info.add_text(key, value)
    out = io.BytesIO()
    Image.fromarray(grey).save(out, format="PNG", pnginfo=info)
    return out.getvalue()


def png_text(path: Path) -> dict[str, str]:
    """The text chunks of a PNG file (ValueError or OSError when it is none)."""
    with Image.open(path) as image:
        if image.format != "PNG":
            raise ValueError(f"{path} is not a PNG")
        return {str(k): str(v) for k, v in image.info.items() if isinstance(v, str)}


def publish_png(path: Path, data: bytes, text: Mapping[str, str]) -> WrittenFile:
    """Publish ``data`` at ``path`` (never over an existing file); a PNG already there
    with the same EXPNUM and INSTRUME text is an earlier attempt's and is kept."""
    if path.exists():
        try:
            existing = png_text(path)
        except (OSError, ValueError):
            existing = {}
        if all(existing.get(key) == text[key] for key in ("INSTRUME", "EXPNUM")):
            content = path.read_bytes()
            digest = hashlib.sha256(content).hexdigest()
            return WrittenFile(path=path, sha256=digest, nbytes=len(content))
        raise FileExistsError(
            f"refusing to overwrite {path}: it is not the quick-look of exposure "
            f"{text['EXPNUM']} of {text['INSTRUME']} (exposure numbers are never reused)"
        )

    def fill(writer: HashingWriter) -> None:
        writer.write(data)

    return publish_stream(path, fill)


def write_quicklook(
    thumbnails: Sequence[Thumbnail],
    plan: MosaicPlan,
    instrument: InstrumentConfig,
    expnum: int,
    image_type: str,
    when: datetime,
) -> QuickLook:
    """Assemble, zscale and publish one exposure's PNG; list it in the night's manifest."""
    mosaic = assemble_mosaic(thumbnails, plan)
    low, high = zscale_limits(mosaic)
    text = {
        "INSTRUME": instrument.name,
        "EXPNUM": str(expnum),
        "IMAGETYP": image_type,
        "PRODUCT": Product.QUICKLOOK.value,
        "ZLOW": f"{low:.6g}",
        "ZHIGH": f"{high:.6g}",
        "SCALE": f"{plan.scale} unbinned pixels per PNG pixel",
        "BLANK": "grey level 0: no CCD there",
    }
    folder = night_folder(instrument, when)
    name = quicklook_name(instrument.name, expnum)
    written = publish_png(folder / name, png_bytes(to_8bit(mosaic, low, high), text), text)
    if instrument.storage.manifest:
        append_manifest(folder, [written])
    record = FileRecord(
        path=written.path,
        ccd="all",
        sha256=written.sha256,
        nbytes=written.nbytes,
        product=Product.QUICKLOOK,
    )
    return QuickLook(record, quicklook_url(instrument, when, name))
