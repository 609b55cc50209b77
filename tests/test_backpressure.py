"""When finishing falls behind, the next integration waits: memory stays bounded,
nothing is dropped, and the lag is in the result, the progress note and the summary.
Also the reference instruments of the scale bench and the simulator's frame reuse."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import flows.exposure
from bench.reference import S3, S10, ReferenceInstrument, write_reference
from bench.scale import _percentile
from devices.archon.acf import load_acf
from devices.archon.sensor import SensorModel, render_frame
from devices.archon.simulator.reused_frames import ReusedFrames
from flows.exposure import lag_note, run_sequence
from schemas.exposure import ExposureSpec, ImageType, SequenceSpec
from schemas.instrument import DeadlineConfig, InstrumentConfig, load_instrument
from schemas.results import ExposureResult, SequenceResult
from tasks.control.deadline import missed_deadline, paper_deadline_problem
from tasks.control.instrument import plan_instrument
from tasks.reporting.artifacts import summary_markdown

SLOW_FINISH_S = 1.0


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
async def test_a_slow_finish_holds_the_next_integration_and_says_so(
    sim_instrument: InstrumentConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_finish = flows.exposure.finish
    finishing = 0
    most_at_once = 0

    async def slow_disk_finish(*args: Any, **kwargs: Any) -> ExposureResult:
        """The real finish behind a disk that takes a second longer per exposure."""
        nonlocal finishing, most_at_once
        finishing += 1
        most_at_once = max(most_at_once, finishing)
        try:
            await asyncio.sleep(SLOW_FINISH_S)
            return await real_finish(*args, **kwargs)
        finally:
            finishing -= 1

    monkeypatch.setattr(flows.exposure, "finish", slow_disk_finish)
    result = await run_sequence(
        SequenceSpec(name="slow-disk", exposures=[ExposureSpec(image_type="bias", count=4)]),
        sim_instrument,
    )
    exposures = result.exposures
    assert len({e.expnum for e in exposures}) == 4  # nothing dropped
    assert most_at_once == 1  # one exposure finishing while the next is taken
    for exposure in exposures:
        assert exposure.files_after_readout_s is not None
        assert exposure.files_after_readout_s >= SLOW_FINISH_S
    # Biases are read in a fraction of a second: from the third on, each integration
    # waited for the finishing of the exposure two before it.
    held = [e.timings.get("held", 0.0) for e in exposures]
    assert held[0] == 0.0
    assert all(h > SLOW_FINISH_S / 2 for h in held[2:]), held
    assert "Finishing held" in summary_markdown(result)
    assert "files on disk after readout" in summary_markdown(result)


def _result(**fields: Any) -> ExposureResult:
    now = datetime(2026, 11, 30, tzinfo=UTC)
    values: dict[str, Any] = {
        "expnum": 7,
        "image_type": ImageType.BIAS,
        "exptime": 0.0,
        "date_obs": now,
        "files": [],
        "timings": {},
        **fields,
    }
    return ExposureResult.model_validate(values)


def test_the_progress_note_names_the_lag_and_a_held_integration() -> None:
    assert lag_note(_result()) is None
    note = lag_note(_result(files_after_readout_s=3.21, timings={"held": 1.5}))
    assert (
        note
        == "exposure 7 on disk 3.2 s after its readout, its integration held 1.5 s by finishing"
    )
    # A hand-over of a few milliseconds is the pipeline working, not a lag.
    assert lag_note(_result(files_after_readout_s=0.5, timings={"held": 0.01})) == (
        "exposure 7 on disk 0.5 s after its readout"
    )


def test_the_summary_counts_only_real_holds() -> None:
    exposures = [
        _result(expnum=n, files_after_readout_s=1.0 + n, timings={"held": h})
        for n, h in enumerate([0.0, 0.02, 2.0, 3.0])
    ]
    text = summary_markdown(
        SequenceResult(name="x", flow_run_id=None, exposures=exposures, elapsed_s=1.0)
    )
    assert "Finishing held 2 integrations back, 5.0 s in all (longest 3.0 s)" in text
    assert "| files on disk after readout | 2.500 | 4.000 |" in text


# --- the scale bench's reference instruments ------------------------------------------


@pytest.mark.parametrize(("ref", "megabytes"), [(S3, 309.1), (S10, 1030.3)])
def test_reference_instruments_have_the_issue_s_size(
    ref: ReferenceInstrument, megabytes: float, tmp_path: Path
) -> None:
    config = load_instrument(write_reference(ref, tmp_path, tmp_path / "data"))
    plans = plan_instrument(config)
    assert len(plans) == ref.controllers
    assert sum(len(c.ccds) for c in config.controllers) == ref.ccds
    acf = load_acf(tmp_path / f"{ref.name}.acf")
    assert 2 * acf.buffer_shape[0] * acf.buffer_shape[1] * ref.controllers == (
        ref.bytes_per_exposure
    )
    assert round(ref.bytes_per_exposure / 1e6, 1) == megabytes
    assert config.storage.compression.value == "RICE_1"
    names = [ccd.name for c in config.controllers for ccd in c.ccds]
    assert len(set(names)) == len(names)


def test_a_reference_readout_takes_its_lines_at_the_pixel_rate() -> None:
    # 2064 lines of 4160 pixels per amplifier at 1 Mpx/s.
    assert S3.readout_s(1e6) == pytest.approx(8.586, abs=1e-3)


def test_percentiles_interpolate() -> None:
    assert _percentile([3.0, 1.0, 2.0], 0.5) == 2.0
    assert _percentile(list(map(float, range(21))), 0.95) == pytest.approx(19.0)
    assert _percentile([4.0], 0.95) == 4.0


# --- the simulator's frame reuse (benchmarks only) ------------------------------------


SIM_ACF_PATH = Path(__file__).resolve().parents[1] / "deploy" / "instruments" / "sim.acf"
SIM_ACF = load_acf(SIM_ACF_PATH)


def _render(source: Callable[..., Any], frame: int, dark: float = 1.0) -> np.ndarray:
    acf = load_acf(SIM_ACF_PATH) if frame % 2 else SIM_ACF  # another object, same ACF
    return np.asarray(
        source(acf, SensorModel(seed=3), dark_seconds=dark, light_seconds=0.0, frame_number=frame)
    )


def test_reused_frames_differ_but_keep_the_statistics_of_a_render() -> None:
    reuse = ReusedFrames()
    first, second = _render(reuse, 1), _render(reuse, 2)
    rendered = _render(render_frame, 1)
    np.testing.assert_array_equal(first, rendered)  # the first is a real render
    assert not np.array_equal(first, second)
    # The same rows, in another order: each row keeps its own overscan.
    np.testing.assert_array_equal(np.sort(first, axis=None), np.sort(second, axis=None))
    rows = {r.tobytes() for r in first}
    assert all(r.tobytes() in rows for r in second)


def test_another_kind_of_frame_is_rendered_anew() -> None:
    reuse = ReusedFrames()
    dark = _render(reuse, 1, dark=1.0)
    longer = _render(reuse, 2, dark=100.0)
    assert longer.mean() > dark.mean()  # dark current grew: not the cached frame


# --- the deadline on paper and per exposure -------------------------------------------


def test_a_deadline_the_instrument_cannot_meet_on_paper_names_its_fields(
    tmp_path: Path,
) -> None:
    config = load_instrument(write_reference(S10, tmp_path, tmp_path / "data"))
    assert config.deadline is not None
    pixels = S10.bytes_per_exposure // 2
    assert paper_deadline_problem(config.deadline, pixels) is None  # 515 Mpx at 60 Mpx/s
    tight = DeadlineConfig(files_within_s=5.0)
    problem = paper_deadline_problem(tight, pixels)
    assert problem is not None
    assert problem.startswith("deadline.files_within_s: an exposure of 515 Mpixel takes")
    assert "deadline.host_mpix_per_s = 60" in problem


def test_a_late_exposure_is_named_with_the_deadline_it_missed() -> None:
    deadline = DeadlineConfig(files_within_s=5.0)
    assert missed_deadline(deadline, _result(files_after_readout_s=4.9)) is None
    assert missed_deadline(deadline, _result()) is None
    assert missed_deadline(deadline, _result(files_after_readout_s=6.25)) == (
        "exposure 7: files on disk 6.2 s after its readout, over the deadline of 5 s "
        "(deadline.files_within_s)"
    )


def test_back_to_back_dark_times_share_a_frame_and_a_few_kinds_are_kept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Dark times that differ by the gap between exposures (1.0 to 1.45 s) are one kind;
    a few kinds stay kept, so going back to one renders nothing anew."""
    import devices.archon.simulator.reused_frames as reused

    renders: list[float] = []

    def counting_render(*args: Any, **kwargs: Any) -> Any:
        renders.append(kwargs["dark_seconds"])
        return render_frame(*args, **kwargs)

    monkeypatch.setattr(reused, "render_frame", counting_render)
    reuse = ReusedFrames()
    for frame, dark in enumerate([1.03, 1.2, 1.45, 1.13, 1.38], start=1):
        _render(reuse, frame, dark=dark)
    assert renders == [1.03]
    for frame, dark in enumerate([10.0, 20.0, 0.1, 1.2, 40.0, 1.1], start=6):
        _render(reuse, frame, dark=dark)
    # Three kinds kept: after 10, 20 and 0.1 the 1 s kind was gone (1.2 rendered it
    # again); 40 then dropped the oldest (0.1), so 1.1 found the 1 s kind kept.
    assert renders == [1.03, 10.0, 20.0, 0.1, 1.2, 40.0]
