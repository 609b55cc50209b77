"""Dead time between exposures: in a pipelined run a frame is fetched while the next
one integrates, and a readout that just cleared the CCDs is not followed by a flush."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import pytest
from astropy.io import fits

import flows.frame
from devices.archon.acf import parse_acf
from devices.archon.capabilities import archon_capabilities
from devices.archon.sensor import SensorModel
from devices.archon.simulator import ArchonSimulator
from flows.exposure import run_sequence
from schemas.exposure import ExposureSpec, SequenceSpec
from schemas.instrument import InstrumentConfig, load_instrument
from tasks.control.instrument import plan_instrument

from .conftest import SIM_ACF, SIM_YAML

ALPACA_YAML = SIM_YAML.parent / "sim-alpaca.yaml"

Spans = list[tuple[str, float, float]]


def _timed(name: str, work: Callable[..., Awaitable[Any]], spans: Spans) -> Callable[..., Any]:
    """``work`` (a stage's task), recording when each call began and ended."""

    async def timed(*args: Any, **kwargs: Any) -> Any:
        began = time.monotonic()
        try:
            return await work(*args, **kwargs)
        finally:
            spans.append((name, began, time.monotonic()))

    return timed


def _with_controllers(instrument: InstrumentConfig, **changes: Any) -> InstrumentConfig:
    data = instrument.model_dump()
    for controller in data["controllers"]:
        controller.update(changes)
    return InstrumentConfig.model_validate(data)


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
async def test_a_frame_is_fetched_while_the_next_integrates(
    sim_instrument: InstrumentConfig,
    archon_sim: ArchonSimulator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A link slow enough that each fetch takes about a second: the next integration
    starts before the previous frame's fetch has ended, and every frame is intact."""
    spans: Spans = []
    monkeypatch.setattr(flows.frame, "fetch", _timed("fetch", flows.frame.fetch, spans))
    monkeypatch.setattr(flows.frame, "expose", _timed("expose", flows.frame.expose, spans))
    archon_sim.bandwidth_limit_bps = 16e6  # 2.2 MB per frame: about 1.1 s
    result = await run_sequence(
        SequenceSpec(name="overlap", exposures=[ExposureSpec(image_type="bias", count=3)]),
        sim_instrument,
    )
    archon_sim.bandwidth_limit_bps = None
    assert len(result.exposures) == 3
    fetches = sorted((b, e) for name, b, e in spans if name == "fetch")
    exposes = sorted((b, e) for name, b, e in spans if name == "expose")
    assert len(fetches) == len(exposes) == 3
    # The second integration follows the first readout at once. A later one may also
    # wait for the finishing of the exposure two before it (backpressure: biases read
    # out in a moment), which is not waiting for the fetch; such a wait is its `held`.
    held = [e.timings.get("held", 0.0) for e in result.exposures]
    pairs = list(zip(fetches[:-1], exposes[1:], held[1:], strict=True))
    assert held[1] == 0.0
    for (_, fetch_end), (next_start, _), waited in pairs:
        if waited == 0.0:
            assert next_start < fetch_end, "an integration waited for the previous fetch"
    # Each frame is still the buffer it was read into: the raw files hold a tap's bias.
    model = SensorModel()
    for exposure in result.exposures:
        for record in exposure.files:
            with fits.open(record.path) as hdul:
                data = np.asarray(next(h.data for h in hdul if h.data is not None))
            level = float(np.median(data))
            assert any(abs(level - model.bias_level(tap)) < 5 for tap in range(8)), level


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
@pytest.mark.parametrize(
    ("clears_s", "flushed"), [(0.0, [True, True, True]), (30.0, [True, False, False])]
)
async def test_a_readout_that_just_cleared_the_ccds_is_not_flushed_again(
    sim_instrument: InstrumentConfig, clears_s: float, flushed: list[bool]
) -> None:
    """``readout_clears_s``: the first exposure of a run is flushed (nothing is known
    of the CCDs), the back-to-back ones after it are not; 0 flushes every time."""
    instrument = _with_controllers(sim_instrument, readout_clears_s=clears_s)
    result = await run_sequence(
        SequenceSpec(name="clears", exposures=[ExposureSpec(image_type="bias", count=3)]),
        instrument,
    )
    assert ["flush" in e.timings for e in result.exposures] == flushed


def test_only_a_camera_with_frame_buffers_overlaps_a_fetch_with_the_next_integration() -> None:
    archon = archon_capabilities(parse_acf(SIM_ACF.read_text()))
    assert archon.fetch_overlaps_next
    (alpaca,) = plan_instrument(load_instrument(ALPACA_YAML))
    assert not alpaca.capabilities.fetch_overlaps_next
    assert "StartExposure discards" in alpaca.capabilities.reason("fetch_overlaps_next")
