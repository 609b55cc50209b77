"""The guide flow: one guide exposure (many frames on several guide cameras) per run.

The spec is checked against the instrument before any camera is contacted; the run
then holds the instrument like every other flow, opens the guide cameras only, and
takes the frames on the cadence grid. The frame loop is plain asyncio inside this
flow, with no Prefect task per frame or per stamp (tasks/guide/cycle.py says why):
every camera of a frame is exposed, read out and fetched at once, its stamps cut and
measured, and the frame appended to the HDF5 archive before the next frame starts,
so each frame's stamps are on disk before the next frame's readout ends. At the end
the FITS guide file is written from the archive and both files go into the night's
manifest. Shutters are closed on the way out, however the run ends (open_instrument
stands every camera down).
"""

# No `from __future__ import annotations`: Prefect validates a run's parameters
# against the flow's signature (see flows/exposure.py).
import asyncio
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from flows.instrument_choice import DEFAULT_INSTRUMENT, InstrumentChoice, resolve_instrument
from schemas.guide import FindBrightest, GuideResult, GuideSpec, RoiCentre
from schemas.header import is_sampled
from schemas.instrument import FailurePolicy, InstrumentConfig
from schemas.naming import mjd_of
from tasks.control.instrument import ControllerSession, open_instrument, plan_instrument
from tasks.durable.instrument_lock import instrument_lock
from tasks.durable.numbering import next_exposure_number
from tasks.guide.archive import CameraLayout, CameraRow, GuideArchive
from tasks.guide.cycle import CameraFrame, CameraOutcome, read_all
from tasks.guide.guide_file import GuideFacts, guide_paths, publish_guide_files
from tasks.guide.plan import GuidePlan, plan_guide
from tasks.guide.sources import find_sources
from tasks.guide.stamps import cut_stamps, measure_stamps
from tasks.guide.timing import CadenceGrid, percentile_ms


def check_guide(spec: GuideSpec, instrument: InstrumentConfig) -> GuidePlan:
    """The guide exposure planned against ``instrument`` (ConfigError naming every
    bad field), contacting nothing: the CLI calls this before the flow runs."""
    return plan_guide(spec, instrument, plan_instrument(instrument))


def header_columns(instrument: InstrumentConfig) -> dict[str, str]:
    """Per-frame table column -> STATUS key: the header values a guide frame records.

    ``ccdtemp`` (each camera's CCD temperature_key) is handled per camera; the
    instrument's sampled ``controller.status`` cards add one column each.
    """
    columns: dict[str, str] = {}
    for card in instrument.header.sampled():
        source = card.source or ""
        if is_sampled(source) and source.startswith("controller.status."):
            columns[card.keyword.lower().replace("-", "_")] = source.split(".", 2)[2]
    return columns


@dataclass(slots=True)
class _Run:
    """What the frame loop has done so far."""

    rois: dict[str, list[RoiCentre]] | None
    """The stamp centres: the spec's, or found on the first frame."""
    flow_run_id: str | None
    archive: GuideArchive | None = None
    latencies: list[float] = field(default_factory=list)
    late: int = 0
    dropped: int = 0
    taken: int = 0
    date_obs: datetime | None = None


def _find_rois(
    spec: GuideSpec, plan: GuidePlan, frames: dict[str, CameraFrame]
) -> dict[str, list[RoiCentre]]:
    """Each camera's brightest sources on the first frame (RuntimeError if a camera
    shows none: it would have nothing to guide on)."""
    assert isinstance(spec.regions, FindBrightest)
    rois: dict[str, list[RoiCentre]] = {}
    for name in plan.cameras:
        image = plan.detectors[name].image(frames[name].raw)
        sources = find_sources(
            image, spec.regions.find, min_separation=spec.separation, stamp_size=spec.stamp_size
        )
        if not sources:
            raise RuntimeError(f"{name}: no source above the background on the first frame")
        rois[name] = [RoiCentre(x=round(s.x), y=round(s.y)) for s in sources]
    return rois


def _camera_rows(
    spec: GuideSpec,
    plan: GuidePlan,
    instrument: InstrumentConfig,
    rois: dict[str, list[RoiCentre]],
    frames: dict[str, CameraFrame],
    index: int,
    lag: float,
    late: bool,
) -> dict[str, CameraRow]:
    """Cut and measure every camera's stamps of one frame: its archive rows."""
    columns = header_columns(instrument)
    temperature = {c.name: c.ccds[0].temperature_key for c in instrument.controllers}
    rows = {}
    for name, frame in frames.items():
        centres = rois[name]
        stamps = cut_stamps(plan.detectors[name].image(frame.raw), centres, spec.stamp_size)
        measured = measure_stamps(stamps, centres, spec.stamp_size)
        status = frame.status
        key = temperature.get(name)
        values: dict[str, Any] = {
            "frame": index,
            "date_obs": frame.date_obs.isoformat(timespec="milliseconds")[:23].encode(),
            "mjd_obs": mjd_of(frame.date_obs),
            "exptime": frame.exptime,
            "readout_end": frame.readout_end,
            "start_lag_ms": lag * 1000.0,
            "late": late,
            "centroid_x": measured.x,
            "centroid_y": measured.y,
            "flux": measured.flux,
            "ccdtemp": _number(status.get(key)) if key else float("nan"),
            **{column: _number(status.get(k)) for column, k in columns.items()},
        }
        full = frame.raw if spec.keep_full_frames else None
        rows[name] = CameraRow(stamps, values, frame.readout_end_clock, full)
    return rows


def _number(value: object) -> float:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return float("nan")


def _layouts(
    spec: GuideSpec,
    plan: GuidePlan,
    rois: dict[str, list[RoiCentre]],
    frames: dict[str, CameraFrame],
) -> list[CameraLayout]:
    return [
        CameraLayout(
            name=name,
            ccd=session_plan.config.ccds[0].name,
            centres=rois[name],
            stamp_size=spec.stamp_size,
            dtype=frames[name].raw.dtype,
            detector=plan.detectors[name].shape,
            full_shape=session_plan.buffer_shape if spec.keep_full_frames else None,
        )
        for name, session_plan in zip(plan.cameras, plan.plans, strict=True)
    ]


def _usable(
    outcomes: dict[str, CameraOutcome | Exception],
    index: int,
    policy: FailurePolicy,
    first: bool,
) -> dict[str, CameraOutcome]:
    """The cameras' frames that came; a camera's error fails the run under the
    ``fail`` policy (and on the first frame, which every camera's regions come from)."""
    logger = get_run_logger()
    for name, outcome in outcomes.items():
        if isinstance(outcome, Exception):
            if policy is FailurePolicy.FAIL or first:
                raise outcome
            logger.error("guide frame %d: %s dropped it: %s", index, name, outcome)
    return {name: o for name, o in outcomes.items() if isinstance(o, CameraOutcome)}


async def _first_frame(
    spec: GuideSpec,
    plan: GuidePlan,
    sessions: list[ControllerSession],
    instrument: InstrumentConfig,
    archive_path: Path,
    attributes: dict[str, str | int | float],
    run: _Run,
) -> tuple[dict[str, CameraFrame], GuideArchive]:
    """The first frame on every camera together: its regions (when found here) and
    the archive they shape."""
    outcomes = await read_all(sessions, spec.exptime)
    frames = {n: o.frame for n, o in _usable(outcomes, 0, FailurePolicy.FAIL, True).items()}
    if run.rois is None:
        run.rois = await asyncio.to_thread(_find_rois, spec, plan, frames)
    layouts = _layouts(spec, plan, run.rois, frames)
    columns = ["ccdtemp", *header_columns(instrument)]
    archive = await asyncio.to_thread(
        GuideArchive.create, archive_path, layouts, columns, attributes
    )
    run.date_obs = min(f.date_obs for f in frames.values())
    return frames, archive


async def _archive_one(
    spec: GuideSpec,
    plan: GuidePlan,
    instrument: InstrumentConfig,
    archive: GuideArchive,
    rois: dict[str, list[RoiCentre]],
    index: int,
    lag: float,
    late: bool,
    name: str,
    frame: CameraFrame,
) -> float:
    """Archive one camera's stamps of a frame; its latency in seconds."""
    rows = _camera_rows(spec, plan, instrument, rois, {name: frame}, index, lag, late)
    return (await asyncio.to_thread(archive.append, rows))[name]


async def _frames(
    spec: GuideSpec,
    plan: GuidePlan,
    sessions: list[ControllerSession],
    instrument: InstrumentConfig,
    archive_path: Path,
    attributes: dict[str, str | int | float],
    run: _Run,
) -> None:
    """Take every frame on the cadence grid into ``run.archive``.

    The first frame is read on every camera before anything is archived (the
    regions and the archive's shape come from it); from then on each camera archives
    its stamps the moment its own frame is fetched.
    """
    logger = get_run_logger()
    grid = CadenceGrid(spec.cadence_s)
    for index in range(spec.frames):
        lag = await grid.wait(index)
        late = grid.is_late(lag)
        if late:
            run.late += 1
            logger.warning("guide frame %d starts %.0f ms late", index, lag * 1000)
        if run.archive is None:
            frames, run.archive = await _first_frame(
                spec, plan, sessions, instrument, archive_path, attributes, run
            )
            assert run.rois is not None
            rows = _camera_rows(spec, plan, instrument, run.rois, frames, index, lag, late)
            latencies = await asyncio.to_thread(run.archive.append, rows)
        else:
            assert run.rois is not None
            archive_one = partial(
                _archive_one, spec, plan, instrument, run.archive, run.rois, index, lag, late
            )
            outcomes = await read_all(sessions, spec.exptime, archive_one)
            policy = instrument.on_controller_failure
            usable = _usable(outcomes, index, policy, False)
            latencies = {name: o.after or 0.0 for name, o in usable.items()}
        if len(latencies) == len(plan.cameras):
            run.taken += 1
            run.latencies.append(max(latencies.values()))
        else:
            run.dropped += 1


def _publish(
    spec: GuideSpec,
    plan: GuidePlan,
    instrument: InstrumentConfig,
    expnum: int,
    paths: tuple[Path, Path],
    run: _Run,
) -> list[Path]:
    """Close the archive, write the FITS guide file from it, list both (blocking)."""
    assert run.archive is not None
    run.archive.close()
    facts = GuideFacts(
        instrument=instrument,
        expnum=expnum,
        exptime=spec.exptime,
        cadence_s=spec.cadence_s,
        stamp_size=spec.stamp_size,
        frames_asked=spec.frames,
        frames_late=run.late,
        frames_dropped=spec.frames - run.taken,
        date_obs=run.date_obs,
        flow_run_id=run.flow_run_id,
        header=spec.header,
    )
    return [w.path for w in publish_guide_files(*paths, plan.cameras, facts)]


async def take_guide_exposure(
    spec: GuideSpec,
    plan: GuidePlan,
    sessions: list[ControllerSession],
    instrument: InstrumentConfig,
) -> GuideResult:
    """Number the exposure, take its frames, write and list its files.

    A run that fails after its first frame still closes its archive and writes the
    guide file of the frames taken (best effort) before the error goes on.
    """
    logger = get_run_logger()
    started = time.perf_counter()
    now = datetime.now(UTC)
    expnum = next_exposure_number(
        instrument.storage.data_root,
        taken=lambda n: any(p.exists() for p in guide_paths(instrument, n, now)),
    )
    paths = guide_paths(instrument, expnum, now)
    run_id = flow_run.get_id()
    run = _Run(rois=plan.rois, flow_run_id=str(run_id) if run_id else None)
    attributes: dict[str, str | int | float] = {
        "instrument": instrument.name,
        "expnum": expnum,
        "exptime": spec.exptime,
        "cadence_s": spec.cadence_s,
        "stamp_size": spec.stamp_size,
        "frames_asked": spec.frames,
        "flow_run_id": run.flow_run_id or "",
    }
    try:
        await _frames(spec, plan, sessions, instrument, paths[0], attributes, run)
    except BaseException:
        if run.archive is not None:
            publishing = asyncio.to_thread(_publish, spec, plan, instrument, expnum, paths, run)
            try:
                await asyncio.shield(publishing)
            except Exception as exc:  # the run's own error is the one to raise
                logger.error("guide exposure %d: its files were not written: %s", expnum, exc)
        raise
    files = await asyncio.to_thread(_publish, spec, plan, instrument, expnum, paths, run)
    assert run.rois is not None
    result = GuideResult(
        expnum=expnum,
        flow_run_id=run.flow_run_id,
        date_obs=run.date_obs,
        files=files,
        cameras=plan.cameras,
        rois=run.rois,
        found_on_first_frame=plan.rois is None,
        cadence_s=spec.cadence_s,
        stamp_size=spec.stamp_size,
        frames_asked=spec.frames,
        frames_taken=run.taken,
        frames_late=run.late,
        frames_dropped=spec.frames - run.taken,
        latency_ms_p50=percentile_ms(run.latencies, 50),
        latency_ms_p95=percentile_ms(run.latencies, 95),
        latency_ms_p99=percentile_ms(run.latencies, 99),
        latency_ms_max=percentile_ms(run.latencies, 100),
        elapsed_s=round(time.perf_counter() - started, 3),
    )
    logger.info(
        "guide exposure %d: %d of %d frames on %d cameras (%d late, %d dropped), "
        "latency p50 %s ms, p99 %s ms",
        expnum,
        run.taken,
        spec.frames,
        len(plan.cameras),
        run.late,
        result.frames_dropped,
        result.latency_ms_p50,
        result.latency_ms_p99,
    )
    return result


@flow(name="guide")
async def guide(spec: GuideSpec, instrument: InstrumentChoice = DEFAULT_INSTRUMENT) -> GuideResult:
    """Take one guide exposure: ``spec.frames`` frames every ``spec.cadence_s`` on the
    guide cameras, stamps archived per frame (HDF5) and a FITS guide file at the end."""
    instrument = resolve_instrument(instrument)
    plan = check_guide(spec, instrument)
    async with instrument_lock(instrument), open_instrument(plan.plans) as sessions:
        return await take_guide_exposure(spec, plan, sessions, instrument)
