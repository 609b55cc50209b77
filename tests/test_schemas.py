"""Specs and instrument configs: bad input is refused with the field and the reason."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from schemas.errors import ConfigError
from schemas.exposure import ExposureSpec, ImageType, SequenceSpec
from schemas.instrument import load_instrument

from .conftest import SIM_YAML


def test_bias_forces_zero_exposure_time() -> None:
    assert ExposureSpec(image_type="bias", exptime=5).exptime == 0.0


def test_light_frames_open_the_shutter_and_dark_frames_do_not() -> None:
    assert ExposureSpec(image_type="flat", exptime=1).opens_shutter
    assert ExposureSpec(image_type="object", exptime=1).opens_shutter
    assert not ExposureSpec(image_type="dark", exptime=1).opens_shutter
    assert not ExposureSpec(image_type="bias").opens_shutter


@pytest.mark.parametrize(
    ("fields", "field", "reason"),
    [
        ({"image_type": "dark", "exptime": -1}, "exptime", "greater than or equal to 0"),
        ({"image_type": "dark", "exptime": float("nan")}, "exptime", "finite"),
        ({"image_type": "dark", "exptime": 1e9}, "exptime", "less than or equal"),
        (
            {"image_type": "science"},
            "image_type",
            "'bias', 'dark', 'flat', 'object', 'arc' or 'test'",
        ),
        ({"image_type": "flat", "count": 0}, "count", "greater than or equal to 1"),
        ({"image_type": "flat", "colour": "red"}, "colour", "Extra inputs"),
        ({"image_type": "object", "object_name": "a\nb"}, "object_name", "pattern"),
    ],
)
def test_bad_exposure_specs_name_the_field(
    fields: dict[str, object], field: str, reason: str
) -> None:
    with pytest.raises(ValidationError) as info:
        ExposureSpec.model_validate(fields)
    message = str(ConfigError.from_validation("exposure spec", info.value))
    assert f"{field}:" in message
    assert reason in message


def test_sequence_counts_frames_and_needs_exposures() -> None:
    sequence = SequenceSpec(
        exposures=[ExposureSpec(image_type="bias", count=2), ExposureSpec(image_type="dark")]
    )
    assert sequence.total_frames == 3
    with pytest.raises(ValidationError, match="exposures"):
        SequenceSpec(exposures=[])


def test_the_shipped_instrument_config_loads() -> None:
    config = load_instrument(SIM_YAML)
    assert config.ccd_names == ["r1", "b1"]
    assert config.controllers[0].acf.is_absolute()
    assert config.controllers[0].acf.is_file()


def test_instrument_errors_are_reported_all_at_once_with_their_paths(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        """
name: "bad name with spaces"
controllers:
  - name: c1
    port: 99999
    acf: missing.acf
    ccds:
      - {name: r1, gain: -1, read_noise: 3}
    colour: blue
"""
    )
    with pytest.raises(ConfigError) as info:
        load_instrument(bad)
    message = str(info.value)
    assert "name: String should match pattern" in message
    assert "controllers.0.port: Input should be less than or equal to 65535" in message
    assert "controllers.0.ccds.0.gain: Input should be greater than 0" in message
    assert "controllers.0.colour: Extra inputs are not permitted" in message


def test_missing_acf_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "inst.yaml"
    bad.write_text(
        "name: x\ncontrollers:\n"
        "  - {name: c, acf: nowhere.acf, ccds: [{name: r, gain: 1, read_noise: 1}]}\n"
    )
    with pytest.raises(ConfigError, match=r"controllers\.0\.acf: file not found"):
        load_instrument(bad)


@pytest.mark.parametrize(
    ("text", "reason"),
    [("[unclosed", "not valid YAML"), ("- a list", "must be a mapping")],
)
def test_unreadable_instrument_files(tmp_path: Path, text: str, reason: str) -> None:
    bad = tmp_path / "inst.yaml"
    bad.write_text(text)
    with pytest.raises(ConfigError, match=reason):
        load_instrument(bad)


def test_overrides_are_validated_like_the_file() -> None:
    config = load_instrument(SIM_YAML)
    assert config.with_overrides(port=5000).controllers[0].port == 5000
    with pytest.raises(ValidationError, match="port"):
        config.with_overrides(port=0)


def test_image_type_values() -> None:
    assert [t.value for t in ImageType] == ["bias", "dark", "flat", "object", "arc", "test"]
