"""A configuration error that lists every problem at once, each with its field path."""

from __future__ import annotations

from pydantic import ValidationError


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
            location = ".".join(str(part) for part in item["loc"]) or "(top level)"
            problems.append(f"{location}: {item['msg']}")
        return cls(source, problems)
