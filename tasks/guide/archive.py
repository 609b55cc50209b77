"""The per-exposure HDF5 archive of a guide exposure, written as its frames come.

Layout (DESI's guide-file layout, in HDF5: pixels in cubes, facts in tables)::

    /                         attributes: software, format, instrument, expnum, exptime,
                              cadence_s, stamp_size, frames_asked, flow_run_id, created
    /cameras/<name>/stamps    (frames, nroi, size, size) of the raw samples; chunks
                              (1, nroi, size, size): one frame is one chunk, written and
                              read as one unit
    /cameras/<name>/frames    one row per frame (compound): frame (0-based: the cube
                              index of a complete run), date_obs (ISO UTC), mjd_obs,
                              exptime (measured), readout_end and archived (UNIX s),
                              latency_ms, start_lag_ms, late, centroid_x / centroid_y /
                              flux (one value per stamp) and the configured header
                              values (ccdtemp, and each sampled controller.status card),
                              NaN where the camera did not give them
    /cameras/<name>/full      (frames, H, W) whole raw frames, only when asked
    /cameras/<name>           attributes: ccd, roi_x, roi_y (stamp centres), detector

Full frames go into this same file rather than one FITS file per frame: at 1 Hz on
six cameras that would be six files a second, each fsynced, linked and added to the
manifest on the path a frame's latency is measured on, where one more chunk here
costs one write; the frame's table row (its FRAME number, times and header values) is
the header of the full frame of the same index.

Readers may watch the file grow (SWMR); every frame is appended to every camera and
flushed once, the table rows last, so a reader never sees a row whose pixels are not
there. The file is created exclusively: an existing file is never overwritten.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import numpy.typing as npt

from schemas.guide import RoiCentre
from tasks.headers.header import software_version

FORMAT = "ccdflow-guide-archive"
FORMAT_VERSION = 1
LIBVER = ("v110", "v110")
"""HDF5 1.10 file format: the oldest with SWMR, readable by Debian's h5dump."""
ISO_BYTES = 23
"""``YYYY-MM-DDTHH:MM:SS.mmm``."""


@dataclass(frozen=True, slots=True)
class CameraLayout:
    """What one camera's part of the archive holds."""

    name: str
    ccd: str
    centres: Sequence[RoiCentre]
    stamp_size: int
    dtype: np.dtype[Any]
    detector: tuple[int, int]
    full_shape: tuple[int, int] | None = None
    """The raw frame's shape when whole frames are kept; None: stamps only."""


@dataclass(frozen=True, slots=True)
class CameraRow:
    """One camera's part of one frame: stamps, table values (all columns but archived
    and latency_ms, which the archive sets as it writes) and the whole frame if kept."""

    stamps: npt.NDArray[Any]
    values: Mapping[str, Any]
    readout_end_clock: float
    full: npt.NDArray[Any] | None = None


def row_dtype(nroi: int, header_columns: Sequence[str]) -> np.dtype[Any]:
    """A camera's table row."""
    return np.dtype(
        [
            ("frame", "<i8"),
            ("date_obs", f"S{ISO_BYTES}"),
            ("mjd_obs", "<f8"),
            ("exptime", "<f8"),
            ("readout_end", "<f8"),
            ("archived", "<f8"),
            ("latency_ms", "<f8"),
            ("start_lag_ms", "<f8"),
            ("late", "u1"),
            ("centroid_x", "<f8", (nroi,)),
            ("centroid_y", "<f8", (nroi,)),
            ("flux", "<f8", (nroi,)),
            *((name, "<f8") for name in header_columns),
        ]
    )


class GuideArchive:
    """Writes one guide exposure's archive: :meth:`create`, :meth:`append` per frame."""

    def __init__(self, h5: h5py.File, path: Path, layouts: Mapping[str, CameraLayout]) -> None:
        self._h5 = h5
        self.path = path
        self._layouts = dict(layouts)

    @classmethod
    def create(
        cls,
        path: Path,
        cameras: Sequence[CameraLayout],
        header_columns: Sequence[str],
        attributes: Mapping[str, str | int | float],
    ) -> GuideArchive:
        """Create the file (FileExistsError if it exists) with every dataset, SWMR on."""
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            h5 = h5py.File(path, "x", libver=LIBVER)
        except OSError as exc:  # h5py says "file exists" as an OSError
            if path.exists():
                raise FileExistsError(f"refusing to overwrite {path}") from exc
            raise
        try:
            h5.attrs.update(
                {
                    "software": "ccdflow",
                    "software_version": software_version(),
                    "format": FORMAT,
                    "format_version": FORMAT_VERSION,
                    "created": datetime.now(UTC).isoformat(timespec="milliseconds"),
                    **attributes,
                }
            )
            for layout in cameras:
                _create_camera(h5.create_group(f"cameras/{layout.name}"), layout, header_columns)
            h5.swmr_mode = True  # after the last object is created: SWMR cannot add any
            h5.flush()
        except BaseException:
            h5.close()
            path.unlink(missing_ok=True)
            raise
        return cls(h5, path, {layout.name: layout for layout in cameras})

    def frame_count(self, camera: str) -> int:
        return int(self._h5[f"cameras/{camera}/frames"].shape[0])

    def append(self, rows: Mapping[str, CameraRow]) -> dict[str, float]:
        """Append one frame of the cameras in ``rows`` (a camera that missed the frame
        is left out) and flush; return each camera's latency in seconds, from its
        readout's end to this frame being on disk."""
        for name, row in rows.items():
            group = self._h5[f"cameras/{name}"]
            index = group["frames"].shape[0]
            _append(group["stamps"], index, row.stamps)
            if row.full is not None and "full" in group:
                _append(group["full"], index, row.full)
            record = np.zeros((), dtype=group["frames"].dtype)
            for key, value in row.values.items():
                record[key] = value
            record["archived"] = time.time()
            record["latency_ms"] = (time.perf_counter() - row.readout_end_clock) * 1000.0
            _append(group["frames"], index, record)
        self._h5.flush()
        done = time.perf_counter()
        return {name: done - row.readout_end_clock for name, row in rows.items()}

    def close(self) -> None:
        self._h5.close()


def _create_camera(group: h5py.Group, layout: CameraLayout, header_columns: Sequence[str]) -> None:
    size, nroi = layout.stamp_size, len(layout.centres)
    group.attrs["ccd"] = layout.ccd
    group.attrs["roi_x"] = np.array([c.x for c in layout.centres], dtype=np.int64)
    group.attrs["roi_y"] = np.array([c.y for c in layout.centres], dtype=np.int64)
    group.attrs["detector_lines"], group.attrs["detector_pixels"] = layout.detector
    group.create_dataset(
        "stamps",
        shape=(0, nroi, size, size),
        maxshape=(None, nroi, size, size),
        chunks=(1, nroi, size, size),
        dtype=layout.dtype,
    )
    group.create_dataset(
        "frames", shape=(0,), maxshape=(None,), chunks=(64,), dtype=row_dtype(nroi, header_columns)
    )
    if layout.full_shape is not None:
        lines, pixels = layout.full_shape
        group.create_dataset(
            "full",
            shape=(0, lines, pixels),
            maxshape=(None, lines, pixels),
            chunks=(1, lines, pixels),
            dtype=layout.dtype,
        )


def _append(dataset: h5py.Dataset, index: int, value: npt.NDArray[Any]) -> None:
    dataset.resize(index + 1, axis=0)
    dataset[index] = value
