"""The committed JSON Schemas match the models, and the example files validate."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from schemas.exposure import CalibrationSpec, ExposureSpec, NightPlan, SequenceSpec
from schemas.guide import GuideSpec
from schemas.instrument import load_instrument
from schemas.json_schema import MODELS, schema_text
from schemas.night_schedule import NightSchedule
from schemas.observation import ObservationSpec
from schemas.twilight import TwilightFlatSpec

from .conftest import REPO

EXAMPLES = REPO / "deploy" / "examples"


@pytest.mark.parametrize("name", sorted(MODELS))
def test_committed_schema_matches_the_model(name: str) -> None:
    path = REPO / "deploy" / "schemas" / f"{name}.schema.json"
    assert path.read_text() == schema_text(MODELS[name]), (
        f"{path} is stale: run `uv run python -m schemas.json_schema deploy/schemas`"
    )


@pytest.mark.parametrize(
    ("file", "model"),
    [
        ("exposure.yaml", ExposureSpec),
        ("sequence.yaml", SequenceSpec),
        ("calibrations.yaml", CalibrationSpec),
        ("night.yaml", NightPlan),
        ("night-by-the-sun.yaml", NightPlan),
        ("night-schedule.yaml", NightSchedule),
        ("observation.yaml", ObservationSpec),
        ("twilight-flats.yaml", TwilightFlatSpec),
        ("dome-flats.yaml", CalibrationSpec),
        ("guide.yaml", GuideSpec),
    ],
)
def test_examples_validate(file: str, model: type[ExposureSpec]) -> None:
    data = yaml.safe_load((EXAMPLES / file).read_text())
    model.model_validate(data)


def test_every_shipped_instrument_config_loads() -> None:
    configs = sorted((REPO / "deploy" / "instruments").glob("*.yaml"))
    assert configs
    for path in configs:
        load_instrument(Path(path))
