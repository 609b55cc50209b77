"""Sequence and calibration files for ``ccdflow run``: read, recognise, validate.

A file holds one of two models, told apart by its keys (``exposures`` for a
sequence; ``biases``, ``darks``, ``flats`` or ``arcs`` for a calibration set), so
the operator never has to say which kind it is. Every problem is a
:class:`ConfigError` naming the file and each bad field by its path, raised before
Prefect is imported or a controller is touched: this module imports only pydantic,
PyYAML and the schemas.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from schemas.errors import ConfigError
from schemas.exposure import CalibrationSpec, ExposureSpec, NightPlan, SequenceSpec
from schemas.guide import GuideSpec
from schemas.instrument import InstrumentConfig
from schemas.observation import ObservationSpec
from schemas.twilight import TwilightFlatSpec

M = TypeVar("M", bound=BaseModel)

SEQUENCE_KEY = "exposures"
CALIBRATION_KEYS = ("biases", "darks", "flats", "arcs")

RunSpec = SequenceSpec | CalibrationSpec
"""What ``ccdflow run`` can run: each kind has its own flow."""


def load_spec_file(path: Path) -> RunSpec:
    """Read ``path`` (JSON if it ends in ``.json``, else YAML) and validate it.

    JSON files are parsed as JSON, not as YAML (which mostly accepts JSON), so a
    syntax error is reported in the terms of the language the operator wrote.
    """
    data = _read_mapping(path)
    is_sequence = SEQUENCE_KEY in data
    calibration_keys = [key for key in CALIBRATION_KEYS if key in data]
    if is_sequence and calibration_keys:
        raise ConfigError(
            f"spec file {path}",
            [
                f"(top level): has both {SEQUENCE_KEY!r} (a sequence) and "
                f"{', '.join(map(repr, calibration_keys))} (a calibration set); "
                "a file holds one or the other"
            ],
        )
    model: type[SequenceSpec] | type[CalibrationSpec]
    if is_sequence:
        model, kind = SequenceSpec, "sequence"
    elif calibration_keys:
        model, kind = CalibrationSpec, "calibration set"
    else:
        found = ", ".join(map(str, data)) or "none"
        raise ConfigError(
            f"spec file {path}",
            [
                f"(top level): neither a sequence (needs {SEQUENCE_KEY!r}) nor a calibration "
                f"set (needs one of {', '.join(CALIBRATION_KEYS)}); keys found: {found}"
            ],
        )
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError.from_validation(f"{kind} file {path}", exc) from exc


def _load_model(path: Path, model: type[M], what: str) -> M:
    """A file of one kind (YAML or JSON); ConfigError naming every bad field."""
    data = _read_mapping(path)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError.from_validation(f"{what} {path}", exc) from exc


def load_night_plan(path: Path) -> NightPlan:
    """A night plan file (YAML or JSON); ConfigError naming every bad field."""
    return _load_model(path, NightPlan, "night plan")


def load_observation(path: Path) -> ObservationSpec:
    """An observation file (YAML or JSON); ConfigError naming every bad field."""
    return _load_model(path, ObservationSpec, "observation")


def load_twilight_flats(path: Path) -> TwilightFlatSpec:
    """A twilight flats file (YAML or JSON); ConfigError naming every bad field."""
    return _load_model(path, TwilightFlatSpec, "twilight flats")


def load_guide_spec(path: Path) -> GuideSpec:
    """A guide exposure file (YAML or JSON); ConfigError naming every bad field."""
    return _load_model(path, GuideSpec, "guide spec")


def _read_mapping(path: Path) -> dict[str, Any]:
    source = f"spec file {path}"
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(source, [f"cannot read the file: {reason}"]) from exc
    data: Any
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(source, [f"not valid JSON: {exc}"]) from exc
    else:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(source, [f"not valid YAML: {exc}"]) from exc
    if not isinstance(data, dict):
        raise ConfigError(
            source, ["(top level): must be a mapping of fields, e.g. exposures: [...]"]
        )
    return data


def _filters_asked(spec: ExposureSpec | RunSpec) -> Iterator[tuple[str, str]]:
    """(field path, filter) for every filter the spec asks for, paths as in the spec.

    Paths follow what the operator wrote (``flats.1.filter``), not the expanded list
    the flow takes, so the message points at a line of the file.
    """
    if isinstance(spec, ExposureSpec):
        if spec.filter is not None:
            yield "filter", spec.filter
    elif isinstance(spec, SequenceSpec):
        for index, exposure in enumerate(spec.exposures):
            if exposure.filter is not None:
                yield f"exposures.{index}.filter", exposure.filter
    else:
        for index, flat in enumerate(spec.flats):
            if flat.filter is not None:
                yield f"flats.{index}.filter", flat.filter


def check_filters(spec: ExposureSpec | RunSpec, instrument: InstrumentConfig, source: str) -> None:
    """Refuse filters the instrument does not have, before anything connects.

    The flow checks this too, but only once Prefect has started; a misspelt filter is
    an input error the command line can report at once, with exit code 2, and with
    the path in the file it came from (``flats.1.filter``).
    """
    known = ", ".join(instrument.filters) or "none configured"
    problems = [
        f"{where}: {name!r} is not a filter of {instrument.name} ({known})"
        for where, name in _filters_asked(spec)
        if name not in instrument.filters
    ]
    if problems:
        raise ConfigError(source, problems)
