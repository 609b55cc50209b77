"""What a flow returns: files written, checksums, and how long each stage took."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from schemas.exposure import ImageType
from schemas.products import Product


class FileRecord(BaseModel):
    """One file on disk with the digest computed while it was written."""

    model_config = ConfigDict(frozen=True)

    path: Path
    ccd: str
    sha256: str
    nbytes: int
    product: Product = Field(
        default=Product.RAW, description="raw frame, processed image or quick-look PNG"
    )


class ExposureResult(BaseModel):
    """One exposure: its number, what it was, its files and per-stage seconds."""

    model_config = ConfigDict(frozen=True)

    expnum: int
    image_type: ImageType
    exptime: float = Field(description="[s] integration time asked for")
    date_obs: datetime = Field(description="UTC start of the integration (shutter open)")
    date_end: datetime | None = Field(default=None, description="UTC end of the integration")
    exptime_measured: float | None = Field(
        default=None, description="[s] integration time measured (DATE-END - DATE-OBS)"
    )
    time_source: str | None = Field(
        default=None, description="what measured the times: controller timer or host clock"
    )
    time_uncertainty_s: float | None = Field(
        default=None, description="[s] +- bound on DATE-OBS and DATE-END, when known"
    )
    exptime_flagged: bool = Field(
        default=False,
        description="measured and requested integration differ by more than the tolerance",
    )
    files: list[FileRecord]
    archive: Path | None = Field(default=None, description="HDF5 archive it was appended to")
    missing: dict[str, str] = Field(
        default_factory=dict, description="controllers that failed: name -> what happened"
    )
    finished_at: datetime | None = Field(
        default=None, description="UTC time the files (and archive entry) were complete"
    )
    files_after_readout_s: float | None = Field(
        default=None,
        description="seconds from the end of the (last) readout to every file of the "
        "exposure written, fsynced, checksummed and in the night's manifest: the "
        "deadline an observatory holds the instrument to",
    )
    timings: dict[str, float] = Field(description="seconds per stage, in stage order")
    stats: dict[str, dict[str, float]] = Field(
        default_factory=dict,
        description="quick-look statistics per CCD: mean, median, std, saturated ...",
    )
    quicklook_url: str | None = Field(
        default=None,
        description="where the exposure's quick-look PNG is served (storage.url_base), "
        "for the run's summary to link; None without a url_base or a PNG",
    )


class MasterRecord(BaseModel):
    """A master calibration frame built from a calibration set, with its inputs."""

    model_config = ConfigDict(frozen=True)

    kind: str = Field(description="bias, dark or flat")
    filter: str = Field(description="filter of the inputs ('none' without one)")
    file: FileRecord
    inputs: list[int] = Field(description="exposure numbers combined")
    seconds: float


class SequenceResult(BaseModel):
    """A finished sequence, with the Prefect flow-run id to find it in the history."""

    model_config = ConfigDict(frozen=True)

    name: str
    flow_run_id: str | None
    exposures: list[ExposureResult]
    elapsed_s: float
    masters: list[MasterRecord] = Field(
        default_factory=list, description="master frames built (calibration sets)"
    )
    resumed: list[int] = Field(
        default_factory=list,
        description="exposure numbers taken by an earlier, interrupted run of this plan",
    )
    stopped: str | None = Field(
        default=None,
        description="why the step ended before its last exposure (its window closed, "
        "morning twilight, skipped by the operator); None when it took everything",
    )
    rejected: list[ExposureResult] = Field(
        default_factory=list,
        description="exposures written but not kept (a twilight flat off its level): "
        "their files carry the reason; they never feed a master",
    )
    skipped: list[str] = Field(
        default_factory=list,
        description="exposures the run decided not to take, each with the reason",
    )
