"""Opening an instrument: check every config against its ACF, connect, make safe.

The checks run before any connection is made, so a config that does not match the
controller's geometry (wrong number of CCDs for its taps, a bad ACF) is refused
before anything moves. On the way out the controllers are reset, which closes the
shutter whatever happened inside.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from devices.archon.acf import AcfConfig, AcfError, CcdRegion, ccd_layout, load_acf
from devices.archon.controller import ArchonController, ControllerTiming
from devices.archon.errors import ArchonError
from schemas.errors import ConfigError
from schemas.instrument import ControllerConfig, InstrumentConfig


@dataclass(frozen=True, slots=True)
class ControllerPlan:
    """A controller's config with its parsed ACF and the CCD regions of its buffer."""

    config: ControllerConfig
    acf: AcfConfig
    layout: tuple[CcdRegion, ...]
    pixels: int
    overscan_pixels: int
    lines: int


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
        plans.append(ControllerPlan(config, acf, layout, pixels, overscan, lines))
    if problems:
        raise ConfigError(f"instrument {instrument.name}", problems)
    return plans


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
