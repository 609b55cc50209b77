"""Issue-4 specs: every kind of bad input is refused, naming the field and the reason."""

from __future__ import annotations

from datetime import UTC, datetime, time
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from schemas.errors import ConfigError
from schemas.exposure import CalibrationSpec, ExposureSpec, ImageType, SequenceSpec
from schemas.fits_rules import check_keyword
from schemas.header import HeaderCard, HeaderSpec
from schemas.instrument import load_instrument
from schemas.naming import NightRule, check_template, render, sanitize, sjd_of

from .conftest import SIM_YAML


def _message(exc: ValidationError) -> str:
    return str(ConfigError.from_validation("spec", exc))


@pytest.mark.parametrize(
    ("fields", "field", "reason"),
    [
        ({"image_type": "bias", "shutter": "open"}, "(top level)", "bias cannot"),
        ({"image_type": "flat", "exptime": 1, "shutter": "closed"}, "(top level)", "needs the"),
        ({"image_type": "dark", "binning": {"x": 0}}, "binning.x", "greater than or equal"),
        ({"image_type": "dark", "window": {"lines": 0, "pixels": 5}}, "window.lines", "greater"),
        ({"image_type": "object", "coordinates": {"ra_deg": 360, "dec_deg": 0}}, "ra_deg", "less"),
        ({"image_type": "object", "coordinates": {"ra_deg": 1, "dec_deg": 91}}, "dec_deg", "less"),
        ({"image_type": "dark", "stacking": {"frames": 1}}, "stacking.frames", "greater"),
        ({"image_type": "dark", "stacking": {"frames": 3, "method": "max"}}, "method", "median"),
        ({"image_type": "dark", "readout_delay": -1}, "readout_delay", "greater"),
        ({"image_type": "dark", "header": {"NAXIS1": 3}}, "header", "reserved"),
        ({"image_type": "dark", "header": {"EXPTIME": 3}}, "header", "written by ccdflow"),
        ({"image_type": "dark", "header": {"BAD KEY!": 3}}, "header", "HIERARCH"),
        ({"image_type": "dark", "header": {"NOTE": "é"}}, "header", "printable ASCII"),
        ({"image_type": "dark", "header": {"NOTE": "x" * 69}}, "header", "does not fit"),
        ({"image_type": "dark", "header": {"NOTE": float("nan")}}, "header", "cannot store"),
        ({"image_type": "dark", "header": {"note": 1, "NOTE": 2}}, "header", "twice"),
        ({"image_type": "dark", "filter": ""}, "filter", "at least 1"),
    ],
)
def test_bad_exposure_specs(fields: dict[str, object], field: str, reason: str) -> None:
    with pytest.raises(ValidationError) as info:
        ExposureSpec.model_validate(fields)
    message = _message(info.value)
    assert field in message
    assert reason in message


def test_header_keywords_follow_fits_rules() -> None:
    assert check_keyword("seeing") == "SEEING"
    assert check_keyword("DET TEMP") == "HIERARCH DET TEMP"
    assert check_keyword("longkeyword") == "HIERARCH LONGKEYWORD"
    spec = ExposureSpec(image_type="test", header={"seeing": 0.8, "ESO DET TEMP": -100.0})
    assert spec.header == {"SEEING": 0.8, "HIERARCH ESO DET TEMP": -100.0}


def test_shutter_policy_and_spec_hash() -> None:
    assert ExposureSpec(image_type="test", shutter="open").opens_shutter
    assert not ExposureSpec(image_type="test").opens_shutter
    assert ExposureSpec(image_type="arc", exptime=1).opens_shutter
    one = ExposureSpec(image_type="dark", exptime=2)
    assert one.spec_hash() == ExposureSpec(image_type="dark", exptime=2.0).spec_hash()
    assert one.spec_hash() != ExposureSpec(image_type="dark", exptime=3).spec_hash()


def test_sequences_and_calibrations_expand_deterministically() -> None:
    sequence = SequenceSpec(
        exposures=[ExposureSpec(image_type="bias", count=2), ExposureSpec(image_type="dark")],
        repeats=2,
    )
    assert [s.image_type.value for s in sequence.expand()] == ["bias", "dark", "bias", "dark"]
    assert sequence.total_frames == 6
    calibrations = CalibrationSpec(
        biases=5,
        darks=[{"exptime": 10, "count": 3}],
        flats=[{"filter": "r", "exptime": 2, "count": 4}],
        arcs=[{"lamp": "HgAr", "exptime": 1, "count": 1}],
    )
    expanded = calibrations.expand()
    assert [(s.image_type, s.exptime, s.count) for s in expanded] == [
        (ImageType.BIAS, 0.0, 5),
        (ImageType.DARK, 10.0, 3),
        (ImageType.FLAT, 2.0, 4),
        (ImageType.ARC, 1.0, 1),
    ]
    assert expanded[2].filter == "r"
    assert expanded[3].header == {"LAMP": "HgAr"}
    assert expanded == calibrations.expand()
    with pytest.raises(ValidationError, match="at least one"):
        CalibrationSpec()
    with pytest.raises(ValidationError, match="greater than 0"):
        CalibrationSpec(darks=[{"exptime": 0, "count": 1}])


@pytest.mark.parametrize(
    ("template", "reason"),
    [
        ("{instrument}-{ccd}.fits", "must contain {expnum}"),
        ("{instrument}-{expnum:08d}.fits", "must contain {ccd}"),
        ("{user}-{ccd}-{expnum}.fits", "unknown"),
        ("{ccd.__class__}-{expnum}.fits", "unknown"),
        ("{ccd!r}-{expnum}.fits", "conversions"),
        ("{ccd:08d}-{expnum}.fits", "{ccd:08d}"),
        ("../{ccd}-{expnum}.fits", "plain file name"),
        ("{date}/{ccd}-{expnum}.fits", "plain file name"),
        ("{ccd}-{expnum}.txt", "must end with .fits"),
        ("{ccd}-{expnum", "malformed"),
    ],
)
def test_bad_file_name_templates(template: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason.replace("{", r"\{").replace("}", r"\}")):
        check_template(template, needs_ccd=True)


def test_templates_render_with_sanitized_values() -> None:
    template = check_template("{date}-{object}-{ccd}-{expnum:08d}.fits", needs_ccd=True)
    name = render(template, date="20261121", object="../../etc/passwd", ccd="r1", expnum=7)
    assert name == "20261121-etc_passwd-r1-00000007.fits"
    assert sanitize("NGC 1300 / core") == "NGC_1300_core"
    assert sanitize("...") == "none"


def test_nights_roll_over_at_a_local_time() -> None:
    rule = NightRule(timezone="America/Santiago", rollover=time(12, 0))
    # 2026-11-22 05:00 UTC is 02:00 in Santiago (UTC-3): still the night of the 21st.
    assert rule.folder(datetime(2026, 11, 22, 5, 0, tzinfo=UTC)) == "20261121"
    # 16:00 UTC is 13:00 local: past the rollover, the night of the 22nd.
    assert rule.folder(datetime(2026, 11, 22, 16, 0, tzinfo=UTC)) == "20261122"
    assert sjd_of(datetime(2026, 11, 22, 5, 0, tzinfo=UTC)) == 61366
    with pytest.raises(ValueError, match="unknown time zone"):
        NightRule(timezone="Mars/Olympus")


@pytest.mark.parametrize(
    ("card", "reason"),
    [
        ({"keyword": "X", "source": "exposure.colour"}, "unknown header source"),
        ({"keyword": "X", "source": "os.system"}, "unknown header source"),
        ({"keyword": "X", "source": "controller.status.mod2/tempa"}, "unknown header source"),
        ({"keyword": "X", "value": 1, "source": "exposure.exptime"}, "exactly one"),
        ({"keyword": "X"}, "exactly one"),
        ({"keyword": "T", "source": "controller.status.MOD2/TEMPA", "snapshot": "both"}, "end_kw"),
        ({"keyword": "T", "source": "exposure.exptime", "snapshot": "end"}, "only controller"),
        ({"keyword": "DATE-OBS", "value": "x"}, "written by ccdflow"),
    ],
)
def test_bad_header_cards(card: dict[str, object], reason: str) -> None:
    with pytest.raises(ValidationError, match=reason.replace("end_kw", "end_keyword")):
        HeaderCard.model_validate(card)


def test_header_spec_refuses_duplicate_keywords() -> None:
    with pytest.raises(ValidationError, match="defined twice"):
        HeaderSpec(
            cards=[
                {
                    "keyword": "TEMPS",
                    "source": "controller.status.MOD2/TEMPA",
                    "snapshot": "both",
                    "end_keyword": "TEMPE",
                },
                {"keyword": "TEMPE", "value": 1},
            ]
        )


def test_environment_overrides_the_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CCDFLOW_STORAGE__DATA_ROOT", str(tmp_path))
    monkeypatch.setenv("CCDFLOW_TELESCOPE", "T80")
    config = load_instrument(SIM_YAML)
    assert config.storage.data_root == tmp_path
    assert config.telescope == "T80"
    monkeypatch.setenv("CCDFLOW_STORAGE__LAYOUT", "stacked")
    with pytest.raises(ConfigError, match=r"storage\.layout"):
        load_instrument(SIM_YAML)


def test_bad_storage_settings_are_named(tmp_path: Path) -> None:
    data = yaml.safe_load(SIM_YAML.read_text())
    data["controllers"][0]["acf"] = str(SIM_YAML.parent / "sim.acf")
    data["storage"].update(file_template="{ccd}.fits", timezone="Nowhere/Land")
    bad = tmp_path / "inst.yaml"
    bad.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as info:
        load_instrument(bad)
    message = str(info.value)
    assert "storage.timezone" in message
    assert "storage.file_template: Value error, template must contain {expnum}" in message
