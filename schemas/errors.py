"""A configuration error that lists every problem at once, each with its field path."""

from __future__ import annotations

from pydantic import ValidationError

VARIANT_TAGS = frozenset({"archon", "alpaca"})
"""Tags of the tagged unions in the schemas (a camera entry's ``kind``). Pydantic puts
the tag in an error's location (``controllers.0.archon.port``); the YAML has no such
level, so it is left out of the path a user reads."""


def _path(location: tuple[int | str, ...]) -> str:
    parts = [
        str(part)
        for index, part in enumerate(location)
        if not (part in VARIANT_TAGS and index and isinstance(location[index - 1], int))
    ]
    return ".".join(parts) or "(top level)"


class ConfigError(ValueError):
    """Invalid user input (spec, config file); raised before any hardware moves."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        listing = "\n".join(f"  - {problem}" for problem in problems)
        super().__init__(f"invalid {source}:\n{listing}")

    @classmethod
    def from_validation(cls, source: str, error: ValidationError) -> ConfigError:
        """Turn pydantic's errors into ``field.path: reason`` lines."""
        problems = []
        for item in error.errors():
            problems.append(f"{_path(item['loc'])}: {item['msg']}")
        return cls(source, problems)
