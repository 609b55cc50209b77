"""The ``observe`` flow: point at a target, then take its exposures filter by filter.

Everything that can be checked is checked before anything moves: the instrument has
a site and a telescope; the target is up (above ``constraints.min_altitude_deg``,
below ``max_airmass``) and inside its time window; every filter is one of the
instrument's; a dither stays on the sky. Then, for each dither position, the mount
slews while the dome turns to the target's azimuth and the wheel and focuser get the
first filter ready, all at once; for each filter the wheel moves and the focuser goes
to its base position plus the filter's offset. Each call returns only when its device
has stopped, so no exposure integrates while anything moves. The exposures are
pipelined as in every run: while one is processed and written, the wheel and focuser
are already moving for the next.
"""

# No `from __future__ import annotations` here: Prefect validates a deployed run's
# parameters against the flow's signature, and string annotations of pydantic models
# cannot be resolved when the engine loads this module from its entrypoint.
import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from prefect import flow, get_run_logger

from devices.base import DeviceStateError
from devices.observatory import DeviceSet
from flows.exposure import RunPlan, check_all, not_taken, take_all
from flows.instrument_choice import DEFAULT_INSTRUMENT, InstrumentChoice, resolve_instrument
from flows.night_clock import NightClock
from schemas.errors import ConfigError
from schemas.exposure import ExposureSpec, NightPlan, SequenceSpec
from schemas.instrument import InstrumentConfig
from schemas.observation import ObservationSpec
from schemas.results import SequenceResult
from tasks.control.instrument import plan_instrument
from tasks.durable.instrument_lock import instrument_lock
from tasks.observing.pointing import Pointing, where

SLEW_TIMEOUT_S = 300.0
"""Longest a slew, a dome turn, a filter move or a focus move may take."""


def check_observation(
    spec: ObservationSpec, instrument: InstrumentConfig, now: datetime
) -> tuple[Pointing, NightClock]:
    """Where the target is now and the observation's clock; ConfigError listing every
    reason it cannot be observed (nothing has moved yet)."""
    source = f"observation {spec.name}"
    site = instrument.site
    if site is None:
        raise ConfigError(source, ["site: observing needs the instrument's site (site: ...)"])
    problems: list[str] = []
    if not any(d.type.value == "telescope" for d in instrument.devices):
        problems.append("devices: the instrument has no telescope to point")
    pointing = where(spec.target, site, now)
    constraints = spec.constraints
    if pointing.alt_deg < constraints.min_altitude_deg:
        problems.append(
            f"target: {spec.target.name} is at altitude {pointing.alt_deg:.1f} deg from "
            f"{site.name}, below constraints.min_altitude_deg ({constraints.min_altitude_deg:g})"
        )
    elif constraints.max_airmass is not None and (
        pointing.airmass is None or pointing.airmass > constraints.max_airmass
    ):
        problems.append(
            f"target: {spec.target.name} is at airmass {pointing.airmass or float('inf'):.2f}, "
            f"above constraints.max_airmass ({constraints.max_airmass:g})"
        )
    for index, dither in enumerate(spec.dithers):
        north = pointing.dec_deg + dither.north_arcsec / 3600.0
        if abs(north) > 90.0:
            problems.append(
                f"dithers.{index}: {dither.north_arcsec:g} arcsec north of Dec "
                f"{pointing.dec_deg:.4f} leaves the sky"
            )
    night = NightPlan(
        name=spec.name,
        steps=[SequenceSpec(name=spec.name, exposures=spec.expand())],
        windows={spec.name: constraints.window} if constraints.window else {},
    )
    if constraints.window is not None:
        checking = NightClock.for_plan(night, instrument, now=lambda: now)
        if wait := checking.wait_s(spec.name):
            problems.append(f"constraints.window: it opens in {wait / 60:.0f} min")
        elif closed := checking.closed(spec.name):
            problems.append(f"constraints.window: {closed}")
    # The run's clock reads the time as it goes (windows close, twilight comes).
    clock = NightClock.for_plan(night, instrument, now=lambda: datetime.now(UTC))
    if problems:
        raise ConfigError(source, problems)
    return pointing, clock


@dataclass
class Observer:
    """Moves the devices before each exposure (flows.exposure.BeforeExposure)."""

    spec: ObservationSpec
    instrument: InstrumentConfig
    per_dither: int
    dither: int | None = None
    filter: str | None = None
    focus_base: int | None = None

    async def __call__(self, index: int, exposure: ExposureSpec, devices: DeviceSet) -> None:
        dither = index // self.per_dither
        moves = []
        if self.dither is None:
            await self._check_filters(devices)
            if devices.enclosure is not None:  # a sky watch, if any, opened it already
                moves.append(devices.enclosure.open(timeout_s=SLEW_TIMEOUT_S))
        # Point for a new dither, and again after a weather shutdown parked the mount.
        if dither != self.dither or (devices.mount is not None and await devices.mount.parked()):
            moves.append(self._point(dither, devices))
        if exposure.filter != self.filter and exposure.filter is not None:
            moves.append(self._set_filter(exposure.filter, devices))
        if moves:
            await asyncio.gather(*moves)
        self.dither, self.filter = dither, exposure.filter

    async def _check_filters(self, devices: DeviceSet) -> None:
        """Every filter the observation names is on the wheel (before anything moves)."""
        wanted = [group.filter for group in self.spec.exposures]
        if devices.filters is None:
            raise DeviceStateError("devices: no filter wheel to set " + ", ".join(wanted))
        offsets = await devices.filters.offsets()
        missing = [name for name in wanted if name not in offsets]
        if missing:
            raise ConfigError(
                f"observation {self.spec.name}",
                [
                    f"exposures: the wheel has no filter {name!r} ({', '.join(offsets)})"
                    for name in missing
                ],
            )
        if devices.focuser is not None:
            # The focuser is at best focus for the filter in the beam now: the base is
            # that position less its filter's offset.
            current = await devices.filters.current()
            offset = offsets.get(current, 0) if current is not None else 0
            self.focus_base = await devices.focuser.position() - offset

    async def _point(self, dither: int, devices: DeviceSet) -> None:
        site = self.instrument.site
        if devices.mount is None or site is None:  # check_observation refuses both
            raise DeviceStateError("observing needs a telescope and the instrument's site")
        target = self.spec.target
        ra, dec = self.spec.dithers[dither].apply(target.ra_deg, target.dec_deg)
        moved = target.model_copy(update={"ra_deg": ra, "dec_deg": dec})
        pointing = where(moved, site, datetime.now(UTC))
        moves = [devices.mount.point(pointing.ra_deg, pointing.dec_deg, timeout_s=SLEW_TIMEOUT_S)]
        if devices.enclosure is not None:
            moves.append(devices.enclosure.follow(pointing.az_deg, timeout_s=SLEW_TIMEOUT_S))
        await asyncio.gather(*moves)
        get_run_logger().info(
            "%s: pointed at %s dither %d (RA %.5f, Dec %.5f; alt %.1f, az %.1f)",
            self.spec.name,
            self.spec.target.name,
            dither,
            pointing.ra_deg,
            pointing.dec_deg,
            pointing.alt_deg,
            pointing.az_deg,
        )

    async def _set_filter(self, name: str, devices: DeviceSet) -> None:
        assert devices.filters is not None
        offset = await devices.filters.select(name, timeout_s=SLEW_TIMEOUT_S)
        if devices.focuser is not None and self.focus_base is not None:
            await devices.focuser.move_to(self.focus_base + offset, timeout_s=SLEW_TIMEOUT_S)


async def _take(
    spec: ObservationSpec,
    instrument: InstrumentConfig,
    plan: RunPlan,
    first_index: int,
    gate: Callable[[ExposureSpec], str | None],
    close_at_end: bool = False,
) -> SequenceResult:
    """The observation's exposures, the devices moved before each."""
    per_dither = sum(group.count for group in spec.exposures)
    return await take_all(
        spec.name,
        spec.expand(),
        instrument,
        pipelined=True,
        plan=plan,
        first_index=first_index,
        gate=gate,
        before=Observer(spec, instrument, per_dither),
        close_at_end=close_at_end,
    )


async def observation_step(
    spec: ObservationSpec,
    instrument: InstrumentConfig,
    plan: RunPlan,
    first_index: int,
    gate: Callable[[ExposureSpec], str | None],
) -> SequenceResult:
    """An observation as a night plan's step: skipped, with the reason, when its target
    cannot be observed when the step comes (a night moves on, it does not fail)."""
    try:
        check_observation(spec, instrument, datetime.now(UTC))
    except ConfigError as exc:
        reason = "; ".join(exc.problems)
        get_run_logger().warning("%s: not observed: %s", spec.name, reason)
        return not_taken(spec.name, reason)
    return await _take(spec, instrument, plan, first_index, gate)


@flow(name="observe")
async def observe(
    spec: ObservationSpec,
    instrument: InstrumentChoice = DEFAULT_INSTRUMENT,
    resume: bool = True,
    close_at_end: bool = True,
) -> SequenceResult:
    """Point at the spec's target and take its exposures (module docstring).

    Refused before anything moves when the target is not observable now, a filter is
    unknown or a dither leaves the sky (ConfigError naming the field). Light exposures
    also stop at morning twilight (the instrument's site), like a night plan's. When
    the run ends, however it ends, the telescope parks and the dome closes (untick
    ``close_at_end`` to leave them for a run that follows at once).
    """
    instrument = resolve_instrument(instrument)
    specs = spec.expand()
    check_all(specs, instrument, plan_instrument(instrument))
    _, clock = check_observation(spec, instrument, datetime.now(UTC))
    async with instrument_lock(instrument):
        plan = RunPlan.open(instrument, spec.name, specs, resume)
        gate = clock.exposure_gate(spec.name)
        result = await _take(spec, instrument, plan, 0, gate, close_at_end)
        plan.journal.close()
    return result
