"""How the instrument is built: controllers, CCDs, storage, archive, receivers, Dask.

Loaded from YAML (``deploy/instruments/*.yaml``) with environment overrides
(``CCDFLOW_STORAGE__DATA_ROOT=/data`` sets ``storage.data_root``; nested fields are
joined with ``__``; lists and mappings take JSON). Relative ACF paths are resolved
against the YAML file's folder, so a config can be moved together with its ACFs.
Every problem in a file is reported at once, each with its YAML path.
"""

from __future__ import annotations

import warnings
from datetime import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AnyHttpUrl,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from schemas.devices import DeviceConfig, DeviceType, property_problem
from schemas.errors import ConfigError
from schemas.form_order import FormModel
from schemas.header import HeaderSpec, device_source
from schemas.naming import NightRule, check_template, check_timezone
from schemas.processing import ProcessingConfig
from schemas.products import Product
from schemas.site import Site, SunHorizons
from schemas.weather import WeatherSafety

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,15}$"
"""Names that are safe in file names and FITS values."""

STATUS_KEY = r"^[A-Z0-9_]+(/[A-Z0-9_]+)?$"

ENV_PREFIX = "CCDFLOW_"


class AmplifierConfig(FormModel):
    """Per-amplifier gain and noise, when they differ from the CCD's."""

    name: str = Field(pattern=r"^[A-Z]$", description="A, B, ... in the controller's tap order")
    gain: float = Field(gt=0, le=100, description="e-/ADU")
    read_noise: float = Field(ge=0, le=1000, description="e- rms")


class CcdConfig(FormModel):
    """One CCD read by a controller; order follows the controller's taps."""

    name: str = Field(pattern=NAME_PATTERN, description="CCDNAME, also used in file names")
    gain: float = Field(gt=0, le=100, description="e-/ADU")
    read_noise: float = Field(ge=0, le=1000, description="e- rms")
    amplifiers: list[AmplifierConfig] = Field(default_factory=list)
    mosaic_origin: tuple[int, int] = Field(
        default=(0, 0), description="0-based (x, y) of this CCD's first data pixel in the mosaic"
    )
    temperature_key: str | None = Field(
        default=None, pattern=STATUS_KEY, description="STATUS key giving CCDTEMP, e.g. MOD2/TEMPA"
    )
    saturation_adu: int | None = Field(
        default=None,
        ge=1,
        le=2**32 - 1,
        description="raw level counted as saturated; default: the sample's full scale",
    )

    @field_validator("amplifiers")
    @classmethod
    def _unique_amplifiers(cls, amps: list[AmplifierConfig]) -> list[AmplifierConfig]:
        names = [a.name for a in amps]
        if len(set(names)) != len(names):
            raise ValueError("amplifier names must be unique")
        return amps


class CameraEntry(FormModel):
    """What every camera of the instrument has, whoever made it: a name, an address,
    the CCDs it reads (in readout order) and the bounds on talking to it."""

    name: str = Field(pattern=NAME_PATTERN)
    host: str = Field(default="127.0.0.1", min_length=1)
    ccds: list[CcdConfig] = Field(min_length=1)
    command_timeout_s: float = Field(default=5.0, gt=0, le=600)
    flush_count: int = Field(default=1, ge=1, le=100)
    readout_clears_s: float = Field(
        default=0.0,
        ge=0,
        le=60,
        description=(
            "a readout clocks every line out, as a flush does: an integration that "
            "starts within this many seconds of the previous readout's end is not "
            "flushed first (back-to-back exposures); 0 flushes before every integration"
        ),
    )
    readout_timeout_s: float = Field(default=120.0, gt=0, le=3600)

    @field_validator("ccds")
    @classmethod
    def _unique_ccd_names(cls, ccds: list[CcdConfig]) -> list[CcdConfig]:
        names = [ccd.name for ccd in ccds]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"CCD names must be unique; repeated: {', '.join(duplicates)}")
        return ccds


class ArchonControllerConfig(CameraEntry):
    """An Archon controller (``kind: archon``, the default) and what its adapter needs."""

    kind: Literal["archon"] = "archon"
    port: int = Field(default=4242, ge=1, le=65535)
    acf: Path = Field(description="ACF file; relative paths are relative to the YAML file")
    flush_time_s: float = Field(default=0.05, ge=0, le=60, description="duration of one flush")
    shutter_timestamps: bool = Field(
        default=False,
        description=(
            "the timing script latches BUFnRETIMESTAMP/FETIMESTAMP at shutter open and "
            "close: DATE-OBS and DATE-END then come from the controller's timer"
        ),
    )
    fetch_piece_kib: int = Field(
        default=1024,
        ge=0,
        le=524288,
        description=(
            "a frame is fetched in FETCHes of this many KiB, so the next exposure's "
            "commands are answered during a transfer; 0: one FETCH per frame"
        ),
    )


class CoolingConfig(FormModel):
    """A cooled sensor: the set point, and when it counts as there.

    Before each exposure the temperature must have stayed within ``tolerance_c`` of
    ``set_point_c`` for ``stable_s`` seconds (approached from either side); a camera
    that does not get there within ``timeout_s`` fails the run with its last reading.
    ``lowest_c`` is the cooler's range (its datasheet's lowest set point): a set point
    below it is refused when the config loads.
    """

    set_point_c: float = Field(ge=-150, le=40, description="SET-TEMP, degrees Celsius")
    tolerance_c: float = Field(default=0.5, gt=0, le=10)
    stable_s: float = Field(default=10.0, ge=0, le=3600)
    timeout_s: float = Field(default=900.0, gt=0, le=7200)
    lowest_c: float = Field(default=-60.0, ge=-150, le=40, description="the cooler's lowest")

    @model_validator(mode="after")
    def _set_point_in_range(self) -> CoolingConfig:
        if self.set_point_c < self.lowest_c:
            raise ValueError(
                f"set_point_c {self.set_point_c:g} C is below the cooler's range (lowest_c "
                f"{self.lowest_c:g} C)"
            )
        return self


class AlpacaCameraConfig(CameraEntry):
    """An ASCOM Alpaca camera (``kind: alpaca``): one CCD on an Alpaca server.

    The sensor size, binning limits and shutter are stated here, so exposures are
    planned before anything is contacted; a run checks them against the camera.
    """

    kind: Literal["alpaca"]
    port: int = Field(default=11111, ge=1, le=65535)
    device_number: int = Field(default=0, ge=0, le=99, description="camera/N on the server")
    sensor_x: int = Field(ge=1, le=65536, description="CameraXSize, unbinned pixels")
    sensor_y: int = Field(ge=1, le=65536, description="CameraYSize, unbinned pixels")
    max_bin_x: int = Field(default=1, ge=1, le=64, description="largest binning used (<= MaxBinX)")
    max_bin_y: int = Field(default=1, ge=1, le=64)
    has_shutter: bool = Field(default=True, description="light frames possible")
    gain: int | None = Field(default=None, ge=0, description="Gain (index or value)")
    offset: int | None = Field(default=None, ge=0, description="Offset (index or value)")
    readout_mode: int | None = Field(default=None, ge=0, description="ReadoutMode index")
    cooling: CoolingConfig | None = None

    @field_validator("ccds")
    @classmethod
    def _one_ccd(cls, ccds: list[CcdConfig]) -> list[CcdConfig]:
        if len(ccds) != 1:
            raise ValueError(f"an Alpaca camera is one CCD, not {len(ccds)}")
        if any(amp.name != "A" for amp in ccds[0].amplifiers):
            raise ValueError("an Alpaca camera is read by one amplifier, named A")
        return ccds


def _camera_kind(entry: Any) -> str:
    """The kind of a camera entry; ``archon`` when it names none (older YAML)."""
    if isinstance(entry, dict):
        return str(entry.get("kind", "archon"))
    return str(getattr(entry, "kind", "archon"))


ControllerConfig = Annotated[
    Annotated[ArchonControllerConfig, Tag("archon")] | Annotated[AlpacaCameraConfig, Tag("alpaca")],
    Discriminator(
        _camera_kind,
        custom_error_type="camera_kind",
        custom_error_message="kind must be archon (the default) or alpaca",
    ),
]
"""One camera of the instrument, by its ``kind``."""


class FileLayout(StrEnum):
    PER_CCD = "per_ccd"
    MEF = "mef"


class FitsEngineName(StrEnum):
    ASTROPY = "astropy"
    FITSIO = "fitsio"


class CompressionName(StrEnum):
    NONE = "none"
    RICE_1 = "RICE_1"


class NoRawProductWarning(UserWarning):
    """A storage config turned the raw product off: the data as read will be lost."""


class StorageConfig(FormModel):
    """Where files go, what is written and how it is named. A relative ``data_root`` is
    relative to the working directory.

    ``raw`` (on by default) writes the frame as read: integer ADU, every amplifier with
    its overscan, in readout order, per CCD or one extension per CCD (``layout``),
    named by ``file_template``. ``processed`` adds the post-processed image (the
    ``processing:`` chain) beside it, named by ``processed_template``. Turning ``raw``
    off must be said explicitly and is warned about: the ADU as read are then gone.
    ``quicklook`` adds a PNG of the whole mosaic per exposure beside its FITS files
    (``{instrument}-{expnum:08d}.png``); ``url_base`` says where ``data_root`` is served,
    so the run's summary can link each one.
    """

    data_root: Path = Field(default=Path("data"))
    layout: FileLayout = FileLayout.PER_CCD
    raw: bool = Field(default=True, description="write the raw frame as read (integer ADU)")
    processed: bool = Field(default=False, description="also write the processed image")
    file_template: str = Field(
        default="{instrument}-{ccd}-{expnum:08d}.fits", description="raw files"
    )
    processed_template: str = Field(
        default="{instrument}-{ccd}-{expnum:08d}-proc.fits", description="processed files"
    )
    engine: FitsEngineName = FitsEngineName.ASTROPY
    compression: CompressionName = CompressionName.NONE
    timezone: str = Field(default="UTC", description="IANA zone of the observatory")
    night_rollover: time = Field(default=time(12, 0), description="local time a night starts")
    manifest: bool = Field(default=True, description="per-night SHA256SUMS file")
    quicklook: bool = Field(
        default=False,
        description="also write a PNG per exposure: every CCD in its mosaic place, zscaled, "
        "science pixels only (processed image if written, else raw minus overscan)",
    )
    quicklook_size: int = Field(
        default=1024,
        ge=64,
        le=8192,
        description="[px] longest side of the quick-look PNG at most (CCDs block-averaged)",
    )
    url_base: AnyHttpUrl | None = Field(
        default=None,
        description="where the data folder (data_root) is served; the run's summary links "
        "each exposure's quick-look under it",
    )

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, zone: str) -> str:
        return check_timezone(zone)

    @field_validator("file_template", "processed_template")
    @classmethod
    def _template_fits_layout(cls, template: str, info: ValidationInfo) -> str:
        layout = info.data.get("layout", FileLayout.PER_CCD)
        return check_template(template, needs_ccd=layout is FileLayout.PER_CCD)

    @model_validator(mode="after")
    def _products_are_sound(self) -> StorageConfig:
        if not (self.raw or self.processed):
            raise ValueError("raw and processed are both off: an exposure would write nothing")
        if self.raw and self.processed and self.file_template == self.processed_template:
            raise ValueError(
                "file_template and processed_template are the same: the raw and processed "
                "files of an exposure would have one name"
            )
        if not self.raw:
            warnings.warn(
                "storage.raw is false: only processed images are written and the ADU as "
                "read are lost (overscan, orientation and the processing choice cannot be "
                "undone)",
                NoRawProductWarning,
                stacklevel=2,
            )
        return self

    @property
    def products(self) -> tuple[Product, ...]:
        """What each exposure writes, raw first (the processed file names the raw one)."""
        wanted = ((Product.RAW, self.raw), (Product.PROCESSED, self.processed))
        return tuple(product for product, on in wanted if on)

    def template(self, product: Product) -> str:
        return self.file_template if product is Product.RAW else self.processed_template

    @property
    def night_rule(self) -> NightRule:
        return NightRule(timezone=self.timezone, rollover=self.night_rollover)


class ArchiveConfig(FormModel):
    """An HDF5 archive per sequence, beside the night's FITS files: one cube per CCD of
    the raw frames as read (their integer samples) by default, or of the processed
    images (float32) with ``product: processed``, which needs ``storage.processed``."""

    hdf5: bool = False
    product: Product = Product.RAW


class ReceiverConfig(FormModel):
    """Where to announce new files. The bearer token is read from an environment
    variable, never stored in the config.

    Notifications wait in a durable outbox and are retried with exponential backoff
    (``backoff_s``, doubling, at most ``backoff_max_s``) until the receiver accepts
    them or ``max_attempts`` is reached; then they are kept as dead, never dropped.
    The defaults ride out a receiver outage of about three hours.
    """

    name: str = Field(pattern=NAME_PATTERN)
    url: AnyHttpUrl
    token_env: str | None = Field(default=None, pattern=r"^[A-Z_][A-Z0-9_]*$")
    send_file: bool = False
    products: list[Product] = Field(
        default_factory=lambda: [Product.RAW, Product.PROCESSED],
        min_length=1,
        description="which products' files this receiver is sent (and told about)",
    )
    timeout_s: float = Field(default=10.0, gt=0, le=600)
    max_attempts: int = Field(
        default=20, ge=1, le=1000, description="attempts before a notification is dead"
    )
    backoff_s: float = Field(
        default=2.0, gt=0, le=3600, description="wait after the first failed attempt"
    )
    backoff_max_s: float = Field(
        default=900.0, gt=0, le=86400, description="longest wait between two attempts"
    )

    @model_validator(mode="after")
    def _backoff_cap_not_below_start(self) -> ReceiverConfig:
        if self.backoff_max_s < self.backoff_s:
            raise ValueError(
                f"backoff_max_s ({self.backoff_max_s}) must be >= backoff_s ({self.backoff_s})"
            )
        return self


class DaskConfig(FormModel):
    """Per-CCD work: an in-process threaded cluster, or a scheduler to scale out."""

    scheduler: str | None = Field(default=None, pattern=r"^(tcp|tls|inproc)://\S+$")
    threads: int = Field(default=2, ge=1, le=256)


class DeadlineConfig(FormModel):
    """How soon after its readout an exposure's files must be on disk (DESI holds its
    instrument to 9-15 s), and what this host finishes per second, so the deadline is
    checked on paper before the first exposure and measured on every one."""

    files_within_s: float = Field(
        gt=0,
        le=3600,
        description="seconds from readout end to every file written, fsynced, "
        "checksummed and in the manifest",
    )
    host_mpix_per_s: float = Field(
        default=60.0,
        gt=0,
        le=100_000,
        description="megapixels this host fetches and finishes per second with this "
        "storage (RICE_1 on 2 cores: about 60; measure it with bench/scale.py)",
    )


class FailurePolicy(StrEnum):
    """What one exposure does when one of several controllers fails.

    ``fail``: the exposure fails (the flow resets every controller). ``write_partial``:
    the other controllers' CCDs are written, the missing controller and the reason are
    recorded in every header and in the result.
    """

    FAIL = "fail"
    WRITE_PARTIAL = "write_partial"


class BusyPolicy(StrEnum):
    """What a run does when another run already drives the instrument."""

    WAIT = "wait"
    FAIL = "fail"


class InstrumentConfig(FormModel):
    """The whole instrument: identity cards, controllers, storage and services."""

    name: str = Field(pattern=NAME_PATTERN, description="INSTRUME card and file-name prefix")
    observatory: str = Field(default="ccdflow", max_length=68)
    telescope: str = Field(default="none", max_length=68)
    controllers: list[ControllerConfig] = Field(min_length=1)
    filters: list[str] = Field(default_factory=list, description="names a spec may ask for")
    shutter_controller: str | None = Field(
        default=None, description="controller whose timing script opens the one shutter"
    )
    on_controller_failure: FailurePolicy = FailurePolicy.FAIL
    storage: StorageConfig = Field(default_factory=StorageConfig)
    processing: ProcessingConfig = Field(default_factory=ProcessingConfig)
    archive: ArchiveConfig = Field(default_factory=ArchiveConfig)
    receivers: list[ReceiverConfig] = Field(default_factory=list)
    dask: DaskConfig = Field(default_factory=DaskConfig)
    concurrency_name: str | None = Field(
        default=None,
        pattern=r"^[\w.-]{1,64}$",
        description="Prefect limit; default instrument-NAME",
    )
    on_busy: BusyPolicy = Field(
        default=BusyPolicy.WAIT, description="a second run waits for the first, or fails"
    )
    busy_timeout_s: float | None = Field(
        default=None, gt=0, description="longest wait for the instrument (none: no limit)"
    )
    deadline: DeadlineConfig | None = Field(
        default=None,
        description="files on disk within a time of the readout (none: no deadline)",
    )
    exptime_tolerance_s: float = Field(
        default=0.02,
        ge=0,
        le=60,
        description="measured minus requested integration beyond this is flagged (EXPFLAG)",
    )
    header: HeaderSpec = Field(default_factory=HeaderSpec)
    site: Site | None = Field(
        default=None, description="where the instrument is (Sun events, the night's date)"
    )
    horizons: SunHorizons = Field(
        default_factory=SunHorizons, description="Sun altitudes of sunset and the twilights"
    )
    daylight_light: bool = Field(
        default=False,
        description="light exposures may start after morning twilight: a simulator or a "
        "lab, whose light is not the sky's (an observatory leaves this off)",
    )
    devices: list[DeviceConfig] = Field(
        default_factory=list,
        description="filter wheel, focuser, telescope, dome, weather ... (header sources)",
    )
    safety: WeatherSafety | None = Field(
        default=None, description="watched while the shutter may open (schemas/weather.py)"
    )

    @field_validator("controllers")
    @classmethod
    def _unique_controllers(cls, controllers: list[ControllerConfig]) -> list[ControllerConfig]:
        names = [c.name for c in controllers]
        if len(set(names)) != len(names):
            raise ValueError("controller names must be unique")
        ccds = [ccd.name for c in controllers for ccd in c.ccds]
        if len(set(ccds)) != len(ccds):
            raise ValueError("CCD names must be unique across controllers")
        return controllers

    @model_validator(mode="after")
    def _shutter_controller_exists(self) -> InstrumentConfig:
        names = [c.name for c in self.controllers]
        if self.shutter_controller is not None and self.shutter_controller not in names:
            raise ValueError(
                f"shutter_controller {self.shutter_controller!r} is not one of {', '.join(names)}"
            )
        return self

    @model_validator(mode="after")
    def _used_products_are_written(self) -> InstrumentConfig:
        images = "a quick-look PNG is for eyes, never an input: use raw or processed"
        if self.archive.product is Product.QUICKLOOK:
            raise ValueError(f"archive.product: {images}")
        if self.processing.masters_from is Product.QUICKLOOK:
            raise ValueError(f"processing.masters_from: {images}")
        if self.archive.hdf5 and self.archive.product not in self.storage.products:
            raise ValueError(
                f"archive.product: the HDF5 archive keeps {self.archive.product.value} "
                f"images, but storage does not write them (storage.{self.archive.product.value}"
                " is false)"
            )
        wanted = self.processing.masters_from
        if wanted is not None and wanted not in self.storage.products:
            raise ValueError(
                f"processing.masters_from: masters cannot be built from {wanted.value} "
                f"files, which storage does not write (storage.{wanted.value} is false)"
            )
        written = {*self.storage.products, *([Product.QUICKLOOK] if self.storage.quicklook else [])}
        for index, receiver in enumerate(self.receivers):
            if not set(receiver.products) & written:
                raise ValueError(
                    f"receivers.{index}.products: {receiver.name} wants "
                    f"{', '.join(p.value for p in receiver.products)}, which storage does "
                    "not write"
                )
        return self

    @model_validator(mode="after")
    def _device_sources_exist(self) -> InstrumentConfig:
        names = [device.name for device in self.devices]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"devices: names must be unique; repeated: {', '.join(repeated)}")
        by_name = {device.name: device for device in self.devices}
        problems = []
        for index, card in enumerate(self.header.cards):
            named = device_source(card.source) if card.source else None
            if named is None:
                continue
            where = f"header.cards.{index}.source"
            device = by_name.get(named[0])
            if device is None:
                known = ", ".join(names) or "none configured"
                problems.append(f"{where}: no device named {named[0]!r} in devices ({known})")
            elif (problem := property_problem(device.type, named[1])) is not None:
                problems.append(f"{where}: {problem}")
        problems += self._safety_problems(by_name)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def _safety_problems(self, by_name: dict[str, DeviceConfig]) -> list[str]:
        if self.safety is None:
            return []
        problems = []
        for index, name in enumerate(self.safety.monitors):
            device = by_name.get(name)
            if device is None or device.type is not DeviceType.SAFETYMONITOR:
                problems.append(
                    f"safety.monitors.{index}: {name!r} is not a safetymonitor of devices"
                )
        for index, limit in enumerate(self.safety.limits):
            device = by_name.get(limit.device)
            if device is None:
                problems.append(f"safety.limits.{index}.device: no device named {limit.device!r}")
            elif (problem := property_problem(device.type, limit.property)) is not None:
                problems.append(f"safety.limits.{index}.property: {problem}")
        return problems

    def masters_source(self) -> Product:
        """The product master frames are built from (processing.masters_from, or the
        processed images when they are written, else the raw frames)."""
        chosen = self.processing.masters_from
        if chosen is not None:
            return chosen
        return Product.PROCESSED if self.storage.processed else Product.RAW

    @property
    def shutter_controller_name(self) -> str:
        """The one controller that opens the shutter (the first, unless named)."""
        return self.shutter_controller or self.controllers[0].name

    @property
    def ccd_names(self) -> list[str]:
        return [ccd.name for c in self.controllers for ccd in c.ccds]

    @property
    def concurrency_limit_name(self) -> str:
        return self.concurrency_name or f"instrument-{self.name}"

    def with_overrides(
        self,
        *,
        host: str | None = None,
        port: int | None = None,
        data_root: Path | None = None,
    ) -> InstrumentConfig:
        """A copy with the first controller's address or the data root replaced.

        Devices on the same server as the first controller (an Alpaca camera's filter
        wheel, focuser ...) move with it. The copy is validated again, so an override
        is checked like the file was.
        """
        data = self.model_dump()
        first = data["controllers"][0]
        same_server = [
            device
            for device in data["devices"]
            if (device["host"], device["port"]) == (first["host"], first["port"])
        ]
        for entry in (first, *same_server):
            if host is not None:
                entry["host"] = host
            if port is not None:
                entry["port"] = port
        if data_root is not None:
            data["storage"]["data_root"] = data_root
        return InstrumentConfig.model_validate(data)


class _InstrumentSettings(InstrumentConfig, BaseSettings):
    """InstrumentConfig read from YAML values plus CCDFLOW_* environment variables."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", frozen=True
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment wins over the file: operators override a shipped config.
        return (env_settings, init_settings)


def load_instrument(path: str | Path) -> InstrumentConfig:
    """Read and validate an instrument YAML file; ConfigError lists every problem."""
    path = Path(path)
    source = f"instrument config {path}"
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(source, [f"cannot read the file: {exc.strerror or exc}"]) from exc
    try:
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(source, [f"not valid YAML: {exc}"]) from exc
    if not isinstance(data, dict):
        raise ConfigError(source, ["the top level must be a mapping of settings"])
    try:
        settings = _InstrumentSettings(**data)
        config = InstrumentConfig.model_validate(settings.model_dump())
    except ValidationError as exc:
        raise ConfigError.from_validation(source, exc) from exc
    return resolve_paths(config, path.parent, source)


def _resolved(path: Path, base: Path, where: str, problems: list[str]) -> Path:
    absolute = (path if path.is_absolute() else base / path).resolve()
    if not absolute.is_file():
        problems.append(f"{where}: file not found: {absolute}")
    return absolute


def resolve_paths(config: InstrumentConfig, base: Path, source: str) -> InstrumentConfig:
    """Make ACF and master-frame paths absolute and check they exist, naming each bad one."""
    problems: list[str] = []
    controllers = [
        controller.model_copy(
            update={"acf": _resolved(controller.acf, base, f"controllers.{i}.acf", problems)}
        )
        if isinstance(controller, ArchonControllerConfig)
        else controller
        for i, controller in enumerate(config.controllers)
    ]
    masters = config.processing.masters
    where = "processing.masters"
    resolved_masters = masters.model_copy(
        update={
            "bias": masters.bias and _resolved(masters.bias, base, f"{where}.bias", problems),
            "dark": masters.dark and _resolved(masters.dark, base, f"{where}.dark", problems),
            "flats": {
                name: _resolved(path, base, f"{where}.flats.{name}", problems)
                for name, path in masters.flats.items()
            },
        }
    )
    if problems:
        raise ConfigError(source, problems)
    processing = config.processing.model_copy(update={"masters": resolved_masters})
    return config.model_copy(update={"controllers": controllers, "processing": processing})
