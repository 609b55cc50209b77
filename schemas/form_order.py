"""Form order for the Prefect UI: every property gets its place in the model.

The Prefect server stores a deployment's parameter schema in its database, and
PostgreSQL's JSONB does not keep key order, so the UI would show a model's fields
shuffled (the one required field of an exposure came 9th). The UI sorts the fields of
every form, nested ones included, by a ``position`` key; models that are flow
parameters add it with :func:`positioned` as their ``json_schema_extra``, so fields
come in the order they are declared.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


def positioned(schema: dict[str, Any]) -> None:
    """Number the schema's properties in declaration order (pydantic keeps it)."""
    for position, field_schema in enumerate(schema.get("properties", {}).values()):
        if isinstance(field_schema, dict):
            field_schema["position"] = position


class FormModel(BaseModel):
    """Base of the user-facing models: frozen, unknown keys refused, and fields in
    their declared order in the Prefect UI's forms."""

    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra=positioned)
