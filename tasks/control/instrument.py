"""Opening an instrument: check every config against its ACF, connect, make safe.

The checks run before any connection is made, so a config that does not match the
controller's geometry (wrong number of CCDs for its taps, a bad ACF) is refused
before anything moves. On the way out the controllers are reset, which closes the
shutter whatever happened inside.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from devices.archon.acf import AcfConfig, AcfError, ccd_layout, load_acf
from devices.archon.capabilities import archon_capabilities
from devices.archon.controller import ArchonController, ControllerTiming
from devices.archon.errors import ArchonError
from devices.base import CameraCapabilities
from devices.geometry import CcdRegion
from schemas.errors import ConfigError
from schemas.instrument import ControllerConfig, InstrumentConfig
from schemas.processing import OverscanMethod
from schemas.products import Product
from tasks.processing.raw_frames import DetectorPlacement
from tasks.processing.sections import amp_boxes, trimmed_boxes


@dataclass(frozen=True, slots=True)
class ControllerPlan:
    """A controller's config with its parsed ACF and the CCD regions of its buffer."""

    config: ControllerConfig
    acf: AcfConfig
    layout: tuple[CcdRegion, ...]
    pixels: int
    overscan_pixels: int
    lines: int
    placements: tuple[DetectorPlacement, ...] = ()
    """Per CCD, where its amplifiers' science pixels sit on the detector, from the
    full unbinned readout (a window keeps it: raw headers map windows onto it)."""
    capabilities: CameraCapabilities = field(default_factory=CameraCapabilities)
    """What the camera can do, so a spec it cannot take is refused before contact."""


@dataclass(frozen=True, slots=True)
class ControllerSession:
    """A connected controller and its plan."""

    plan: ControllerPlan
    controller: ArchonController


def plan_instrument(instrument: InstrumentConfig) -> list[ControllerPlan]:
    """Parse every ACF and check it against the config; all problems in one error."""
    problems: list[str] = []
    plans: list[ControllerPlan] = []
    for index, config in enumerate(instrument.controllers):
        where = f"controllers.{index}"
        try:
            acf = load_acf(config.acf)
            layout = ccd_layout(acf, len(config.ccds))
            pixels = acf.parameter_int("Pixels")
            overscan = acf.parameter_int("OverscanPixels", 0)
            lines = acf.parameter_int("Lines", acf.line_count)
        except (AcfError, ValueError, KeyError, OSError) as exc:
            problems.append(f"{where}.acf: {exc}")
            continue
        if pixels + overscan > acf.pixel_count:
            problems.append(
                f"{where}.acf: Pixels ({pixels}) + OverscanPixels ({overscan}) exceed "
                f"PIXELCOUNT ({acf.pixel_count})"
            )
            continue
        try:
            placements = tuple(
                _placement(region, ccd.mosaic_origin, pixels, overscan, lines)
                for region, ccd in zip(layout, config.ccds, strict=True)
            )
        except ValueError as exc:
            problems.append(f"{where}.acf: {exc}")
            continue
        problems += _processing_problems(instrument, where, config, layout, overscan)
        plans.append(
            ControllerPlan(
                config,
                acf,
                layout,
                pixels,
                overscan,
                lines,
                placements,
                capabilities=archon_capabilities(acf),
            )
        )
    if problems:
        raise ConfigError(f"instrument {instrument.name}", problems)
    return plans


def _placement(
    region: CcdRegion, origin: tuple[int, int], pixels: int, overscan: int, lines: int
) -> DetectorPlacement:
    """Each amplifier's science pixels on the physically oriented, trimmed CCD."""
    boxes = [amp_boxes(amp, pixels, overscan, lines)[0] for amp in region.amplifiers]
    try:
        packed, _ = trimmed_boxes(boxes)
    except ValueError as exc:
        raise ValueError(f"CCD {region.index}: {exc}") from exc
    return DetectorPlacement(
        origin, {amp.name: box for amp, box in zip(region.amplifiers, packed, strict=True)}
    )


def _processing_problems(
    instrument: InstrumentConfig,
    where: str,
    config: ControllerConfig,
    layout: tuple[CcdRegion, ...],
    overscan: int,
) -> list[str]:
    """What the processing chain asks that this controller's readout cannot give.

    Checked when the chain is asked for: the processed product, or masters built
    from raw frames by name (each frame is put through the chain).
    """
    if not (instrument.storage.processed or instrument.processing.masters_from is Product.RAW):
        return []
    problems = []
    method = instrument.processing.overscan
    if method is not OverscanMethod.NONE and overscan == 0:
        problems.append(
            f"processing.overscan: {method.value!r} needs overscan columns, but {where} "
            f"({config.name}) reads none (OverscanPixels is 0); use overscan: none"
        )
    if instrument.processing.electrons:
        for index, (ccd, region) in enumerate(zip(config.ccds, layout, strict=True)):
            read = {amp.name for amp in region.amplifiers}
            for amp in ccd.amplifiers:
                if amp.name not in read:
                    problems.append(
                        f"processing.electrons: {where}.ccds.{index}.amplifiers names "
                        f"amplifier {amp.name}, but {ccd.name} is read by "
                        f"{', '.join(sorted(read))} only"
                    )
    return problems


def controller_for(plan: ControllerPlan) -> ArchonController:
    """A new, unconnected adapter for the plan's controller, with its configured timeouts.

    Every caller (a run, the make-safe action) builds it here, so they all talk to the
    controller with the same address, ACF and timeouts.
    """
    return ArchonController(
        plan.config.host,
        plan.config.port,
        plan.acf,
        name=plan.config.name,
        timing=ControllerTiming(
            command_timeout=plan.config.command_timeout_s,
            flush_seconds=plan.config.flush_time_s,
            readout_timeout=plan.config.readout_timeout_s,
            shutter_timestamps=plan.config.shutter_timestamps,
        ),
    )


@contextlib.asynccontextmanager
async def open_instrument(plans: list[ControllerPlan]) -> AsyncIterator[list[ControllerSession]]:
    """Connect to every controller, check power, reset; reset again on the way out."""
    sessions = [ControllerSession(plan, controller_for(plan)) for plan in plans]
    try:
        for session in sessions:
            await session.controller.connect()
            await session.controller.require_power()
            await session.controller.reset()
        yield sessions
    finally:
        for session in sessions:
            # Whatever happened, leave the controller idle with its shutter closed.
            with contextlib.suppress(ArchonError):
                if session.controller.client.connected:
                    await session.controller.reset()
            await session.controller.close()
