"""How the instrument is built: controllers, their CCDs, and where data goes.

Loaded from YAML (``deploy/instruments/*.yaml``). Relative ACF paths are resolved
against the YAML file's folder, so a config can be moved together with its ACFs.
Every problem in a file is reported at once, each with its YAML path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from schemas.errors import ConfigError

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,15}$"
"""Names that are safe in file names and FITS values."""


class CcdConfig(BaseModel):
    """One CCD read by a controller; order follows the controller's taps."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=NAME_PATTERN, description="CCDNAME, also used in file names")
    gain: float = Field(gt=0, le=100, description="e-/ADU")
    read_noise: float = Field(ge=0, le=1000, description="e- rms")


class ControllerConfig(BaseModel):
    """One Archon controller and what the adapter needs to know to drive it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=NAME_PATTERN)
    host: str = Field(default="127.0.0.1", min_length=1)
    port: int = Field(default=4242, ge=1, le=65535)
    acf: Path = Field(description="ACF file; relative paths are relative to the YAML file")
    ccds: list[CcdConfig] = Field(min_length=1)
    command_timeout_s: float = Field(default=5.0, gt=0, le=600)
    flush_time_s: float = Field(default=0.05, ge=0, le=60, description="duration of one flush")
    flush_count: int = Field(default=1, ge=1, le=100)
    readout_timeout_s: float = Field(default=120.0, gt=0, le=3600)

    @field_validator("ccds")
    @classmethod
    def _unique_ccd_names(cls, ccds: list[CcdConfig]) -> list[CcdConfig]:
        names = [ccd.name for ccd in ccds]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"CCD names must be unique; repeated: {', '.join(duplicates)}")
        return ccds


class StorageConfig(BaseModel):
    """Where files go. A relative ``data_root`` is relative to the working directory."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    data_root: Path = Field(default=Path("data"))


class InstrumentConfig(BaseModel):
    """The whole instrument: identity cards, controllers, storage."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=NAME_PATTERN, description="INSTRUME card and file-name prefix")
    observatory: str = Field(default="ccdflow", max_length=68)
    telescope: str = Field(default="none", max_length=68)
    controllers: list[ControllerConfig] = Field(min_length=1)
    storage: StorageConfig = Field(default_factory=StorageConfig)

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

    @property
    def ccd_names(self) -> list[str]:
        return [ccd.name for c in self.controllers for ccd in c.ccds]

    def with_overrides(
        self,
        *,
        host: str | None = None,
        port: int | None = None,
        data_root: Path | None = None,
    ) -> InstrumentConfig:
        """A copy with the first controller's address or the data root replaced.

        The copy is validated again, so an override is checked like the file was.
        """
        data = self.model_dump()
        if host is not None:
            data["controllers"][0]["host"] = host
        if port is not None:
            data["controllers"][0]["port"] = port
        if data_root is not None:
            data["storage"]["data_root"] = data_root
        return InstrumentConfig.model_validate(data)


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
        config = InstrumentConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError.from_validation(source, exc) from exc
    return resolve_paths(config, path.parent, source)


def resolve_paths(config: InstrumentConfig, base: Path, source: str) -> InstrumentConfig:
    """Make ACF paths absolute and check they exist, naming each bad one."""
    problems: list[str] = []
    controllers = []
    for index, controller in enumerate(config.controllers):
        acf = controller.acf if controller.acf.is_absolute() else (base / controller.acf)
        acf = acf.resolve()
        if not acf.is_file():
            problems.append(f"controllers.{index}.acf: file not found: {acf}")
        controllers.append(controller.model_copy(update={"acf": acf}))
    if problems:
        raise ConfigError(source, problems)
    return config.model_copy(update={"controllers": controllers})
