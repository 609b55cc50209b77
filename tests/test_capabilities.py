"""What a camera cannot do is data: a spec asking for it is refused when the exposure
is planned, naming the field and the camera's reason, before any device is contacted."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from devices.archon.acf import parse_acf
from devices.archon.capabilities import FRAME_BUFFERS, archon_capabilities
from flows.frame import plan_exposure
from schemas.errors import ConfigError
from schemas.exposure import ExposureSpec
from schemas.instrument import InstrumentConfig, load_instrument
from tasks.control.instrument import plan_instrument

from .conftest import SIM_ACF, SIM_YAML


def _without_parameter(text: str, name: str) -> str:
    """The ACF with ``name`` renamed, so its timing script no longer defines it."""
    return re.sub(rf'"{name}=', f'"Not{name}=', text)


def _instrument_with_acf(tmp_path: Path, acf_text: str) -> InstrumentConfig:
    acf = tmp_path / "cut.acf"
    acf.write_text(acf_text)
    config = load_instrument(SIM_YAML)
    data = config.model_dump()
    data["controllers"][0]["acf"] = acf
    return InstrumentConfig.model_validate(data)


def test_the_sim_camera_can_do_everything_its_script_defines() -> None:
    able = archon_capabilities(parse_acf(SIM_ACF.read_text()))
    assert (able.opens_shutter, able.readout_delay) == (True, True)
    assert able.buffered_frames == FRAME_BUFFERS
    assert able.why_not == {}


@pytest.mark.parametrize(
    ("parameter", "spec", "field", "reason"),
    [
        (
            "WaitCount",
            {"image_type": "dark", "exptime": 1, "readout_delay": 5},
            "readout_delay",
            "no WaitCount parameter",
        ),
        (
            "OpenShutter",
            {"image_type": "flat", "exptime": 1},
            "shutter",
            "no OpenShutter parameter",
        ),
    ],
)
def test_a_spec_the_camera_cannot_take_is_refused_at_plan_time(
    tmp_path: Path, parameter: str, spec: dict[str, object], field: str, reason: str
) -> None:
    text = _without_parameter(SIM_ACF.read_text(), parameter)
    instrument = _instrument_with_acf(tmp_path, text)
    plans = plan_instrument(instrument)
    assert not getattr(plans[0].capabilities, field if field != "shutter" else "opens_shutter")
    with pytest.raises(ConfigError, match=rf"{field}: sim1 cannot .*\(.*{reason}\)"):
        plan_exposure(ExposureSpec.model_validate(spec), instrument, plans)
    # What it can do still plans.
    plan_exposure(ExposureSpec(image_type="bias"), instrument, plans)
