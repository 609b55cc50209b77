"""The instrument a run drives: a configured instrument's name, or a whole config.

In the Prefect UI an operator picks the instrument by name from a list (the YAML
files in the instruments folder) instead of editing a nested form of every
controller, CCD and storage setting for each run. Through the API and the CLI a full
InstrumentConfig is still accepted. The list is read when the flows' module is
loaded (by ``prefect deploy`` and by the worker), so the deployment's form offers the
instruments of the host; the server refuses any other name before a run exists.

The folder is ``deploy/instruments`` under the working directory (the project root,
where the worker runs flows), or the one named by ``CCDFLOW_INSTRUMENTS``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, WithJsonSchema

from schemas.errors import ConfigError
from schemas.instrument import InstrumentConfig, load_instrument

FOLDER_VARIABLE = "CCDFLOW_INSTRUMENTS"
DEFAULT_FOLDER = Path("deploy/instruments")
DEFAULT_INSTRUMENT = "sim"
NAME_PATTERN = r"^[A-Za-z0-9][\w.-]*$"


def instruments_folder() -> Path:
    return Path(os.environ.get(FOLDER_VARIABLE) or DEFAULT_FOLDER)


def instrument_names(folder: Path | None = None) -> list[str]:
    """The configured instruments: one per ``NAME.yaml`` in the folder, sorted."""
    folder = instruments_folder() if folder is None else folder
    return sorted(path.stem for path in folder.glob("*.yaml"))


def _name_schema() -> dict[str, Any]:
    schema: dict[str, Any] = {
        "type": "string",
        "title": "Configured instrument",
        "description": f"an instrument file of {instruments_folder()}",
    }
    if names := instrument_names():
        schema["enum"] = names
    return schema


InstrumentName = Annotated[
    str, Field(min_length=1, max_length=64, pattern=NAME_PATTERN), WithJsonSchema(_name_schema())
]
"""A configured instrument's name; the form shows the host's instruments as a list."""

InstrumentChoice = Annotated[
    InstrumentName | InstrumentConfig,
    Field(
        title="Instrument",
        description="a configured instrument by name, or a whole instrument config (API)",
    ),
]


def resolve_instrument(choice: str | InstrumentConfig) -> InstrumentConfig:
    """The config a run uses: loaded from the folder for a name (ConfigError naming
    the ``instrument`` parameter and the instruments there when it is not one)."""
    if isinstance(choice, InstrumentConfig):
        return choice
    folder = instruments_folder()
    path = folder / f"{choice}.yaml"
    if not path.is_file():
        known = ", ".join(instrument_names(folder)) or "none"
        raise ConfigError(
            "parameter instrument",
            [f"no instrument named {choice!r} in {folder} (configured: {known})"],
        )
    return load_instrument(path)
