"""JSON Schemas of the user-facing models, for the Prefect UI, editors and reviews.

``python -m schemas.json_schema deploy/schemas`` writes one file per model; a test
checks that the committed files match the models, so they never drift.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pydantic import BaseModel

from schemas.exposure import CalibrationSpec, ExposureSpec, NightPlan, SequenceSpec
from schemas.guide import GuideSpec
from schemas.header import HeaderSpec
from schemas.instrument import InstrumentConfig
from schemas.night_schedule import NightSchedule
from schemas.observation import ObservationSpec
from schemas.twilight import TwilightFlatSpec

MODELS: dict[str, type[BaseModel]] = {
    "exposure": ExposureSpec,
    "sequence": SequenceSpec,
    "calibration": CalibrationSpec,
    "night": NightPlan,
    "night-schedule": NightSchedule,
    "observation": ObservationSpec,
    "twilight-flats": TwilightFlatSpec,
    "guide": GuideSpec,
    "instrument": InstrumentConfig,
    "header": HeaderSpec,
}


def schema_text(model: type[BaseModel]) -> str:
    return json.dumps(model.model_json_schema(), indent=2, sort_keys=True) + "\n"


def write_schemas(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, model in MODELS.items():
        path = folder / f"{name}.schema.json"
        path.write_text(schema_text(model))
        written.append(path)
    return written


if __name__ == "__main__":
    for written_path in write_schemas(Path(sys.argv[1] if len(sys.argv) > 1 else "deploy/schemas")):
        print(written_path)
