"""The ``twilight-flats`` flow: sky flats whose times follow the fading (or rising) sky.

Checked before anything moves: the instrument has a site, the filters are its own,
the exposure limits suit every camera, and the twilight asked for is still to come
or under way (the flow waits for the Sun to reach ``sun_highest`` in the evening,
``sun_lowest`` in the morning). Then, with a telescope, it points at the sky's
flattest patch (opposite the Sun, 75 degrees high) with the dome following and opened,
and takes the filters in the twilight's order, each frame's time set by
tasks/observing/twilight.py from the frames before it. Each frame's level is measured
from the raw buffer as soon as it is read out (tasks/processing/flat_level.py); a
frame off its level is written, marked FLATOK = F, and taken again. The good flats of
each filter are combined into a master flat, as a calibration set's are.
"""

# No `from __future__ import annotations` here: Prefect validates a deployed run's
# parameters against the flow's signature (see flows/exposure.py).
import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from prefect import flow, get_run_logger

from flows.exposure import RunPlan, Verdict, check_all, not_taken, take_all
from flows.frame import Acquired
from flows.instrument_choice import DEFAULT_INSTRUMENT, InstrumentChoice, resolve_instrument
from flows.masters import build_masters
from flows.observe import Observer
from schemas.errors import ConfigError
from schemas.exposure import ExposureSpec, ImageType
from schemas.fits_rules import CardValue
from schemas.instrument import InstrumentConfig
from schemas.observation import FilterExposures, ObservationSpec, Target
from schemas.results import SequenceResult
from schemas.site import Site
from schemas.twilight import TwilightFlatSpec, TwilightWhen
from tasks.control.instrument import plan_instrument
from tasks.durable.instrument_lock import instrument_lock
from tasks.observing.sun_events import local_night, sun_altitude, sun_crossing
from tasks.observing.twilight import (
    Judgement,
    Measurement,
    SkyClock,
    TwilightPlanner,
    flat_spot,
    judge,
    sun_track,
)
from tasks.processing.flat_level import frame_level
from tasks.reporting.artifacts import publish_results

SKY_POLL_S = 10.0
"""How often a sky too bright (evening) or too faint (morning) is looked at again."""
ATTEMPTS_PER_FLAT = 3
"""A filter is given up after this many frames per good flat wanted (clouds)."""
LIMIT_MARGIN = 0.75
"""At an exposure limit, a frame is taken when its predicted level is within this
fraction of the tolerance (the prediction's own error takes the rest)."""
START_LAG_S = 1.0
"""Assumed seconds from choosing a time to the shutter opening, until measured."""


def twilight_wait_s(spec: TwilightFlatSpec, site: Site, now: datetime) -> float | None:
    """Seconds until this twilight's flats can start (0: now); None when it is over.

    The evening starts when the setting Sun reaches ``sun_highest`` and ends at
    ``sun_lowest``; the morning the other way round. Only the night ``now`` belongs
    to counts (tasks/observing/sun_events.local_night: before local noon, the night
    before), so a morning asked for in the evening waits for the night to pass, and
    an evening asked for after midnight is over.
    """
    altitude = sun_altitude(site, now)
    rising = sun_altitude(site, now + timedelta(minutes=1)) > altitude
    evening = spec.twilight is TwilightWhen.EVENING
    if rising != evening and spec.sun_lowest <= altitude <= spec.sun_highest:
        return 0.0
    start = spec.sun_highest if evening else spec.sun_lowest
    when = sun_crossing(site, local_night(site, now), start, rising=not evening)
    if when is None or when <= now:
        return None
    return (when - now).total_seconds()


def check_twilight(spec: TwilightFlatSpec, instrument: InstrumentConfig) -> Site:
    """The instrument's site; ConfigError listing every reason these flats cannot be taken."""
    source = f"twilight flats {spec.name}"
    problems: list[str] = []
    known = instrument.filters
    for index, wanted in enumerate(spec.filters):
        if wanted.filter not in known:
            problems.append(
                f"filters.{index}.filter: {wanted.filter!r} is not a filter of "
                f"{instrument.name} ({', '.join(known) or 'none configured'})"
            )
    if instrument.site is None:
        problems.append("site: twilight flats need the instrument's site (site: ...)")
    if problems:
        raise ConfigError(source, problems)
    plans = plan_instrument(instrument)
    for exptime in (spec.min_exptime, spec.max_exptime):
        check_all(
            [s.model_copy(update={"exptime": exptime}) for s in spec.expand()], instrument, plans
        )
    assert instrument.site is not None
    return instrument.site


@dataclass
class SkySteering:
    """Sets each flat's time from the sky and keeps those on their level
    (flows.exposure.FrameSteering)."""

    spec: TwilightFlatSpec
    site: Site
    clock: SkyClock = field(default_factory=SkyClock)
    follow_sun: bool = True
    planner: TwilightPlanner = field(init=False)
    filter: str | None = None
    given_up: dict[str, str] = field(default_factory=dict)
    attempts: dict[str, int] = field(default_factory=dict)
    kept: dict[int, str] = field(default_factory=dict)
    """Exposure number -> filter of every flat kept."""
    shaped_at: datetime | None = None
    lag_s: float = START_LAG_S
    last_exptime: float | None = None

    def __post_init__(self) -> None:
        self.planner = TwilightPlanner(self.spec.target_adu, follow_sun=self.follow_sun)

    @property
    def evening(self) -> bool:
        return self.spec.twilight is TwilightWhen.EVENING

    def _probe_s(self) -> float:
        """The first frame of a filter: the time the last filter ended on, or for the
        first filter the shortest (bright evening sky) or a third of the longest."""
        if self.last_exptime is not None:
            return self.last_exptime
        return self.spec.min_exptime if self.evening else self.spec.max_exptime / 3

    def _altitude(self, when: datetime) -> float:
        return sun_altitude(self.site, when)

    def _out_of_window(self, altitude: float) -> str | None:
        if self.evening and altitude < self.spec.sun_lowest:
            return f"the Sun is at {altitude:.1f} deg, below sun_lowest ({self.spec.sun_lowest:g})"
        if not self.evening and altitude > self.spec.sun_highest:
            return (
                f"the Sun is at {altitude:.1f} deg, above sun_highest ({self.spec.sun_highest:g})"
            )
        return None

    async def shape(self, position: int, spec: ExposureSpec) -> ExposureSpec | str:
        name = spec.filter or "none"
        if name != self.filter:
            self.filter = name
            self.planner.new_filter()
        if (reason := self.given_up.get(name)) is not None:
            return f"{name}: {reason}"
        self.attempts[name] = self.attempts.get(name, 0) + 1
        wanted = next(f.count for f in self.spec.filters if f.filter == name)
        if self.attempts[name] > ATTEMPTS_PER_FLAT * wanted:
            return self._give_up(name, f"{self.attempts[name] - 1} frames gave too few good flats")
        while True:
            start = datetime.now(UTC) + timedelta(seconds=self.lag_s)
            track = sun_track(self._altitude, start, self.clock)
            if (reason := self._out_of_window(track(0.0))) is not None:
                return self._give_up(name, reason)
            seconds = self.planner.exptime(track)
            if seconds is None and self.planner.rate is None:
                seconds = self._probe_s()
            seconds = self._within_limits(seconds, track)
            if seconds is not None and self.spec.min_exptime <= seconds <= self.spec.max_exptime:
                break
            too_bright = seconds is not None and seconds < self.spec.min_exptime
            if too_bright == self.evening:
                # The sky will come our way: an evening too bright, a morning too faint.
                get_run_logger().info(
                    "%s: the sky is too %s for %s yet; looking again in %.0f s",
                    self.spec.name,
                    "bright" if too_bright else "faint",
                    name,
                    SKY_POLL_S,
                )
                await asyncio.sleep(SKY_POLL_S / self.clock.speed)
                continue
            limit = "min_exptime" if too_bright else "max_exptime"
            return self._give_up(
                name, f"the sky is too {'bright' if too_bright else 'faint'} for {limit}"
            )
        self.shaped_at = datetime.now(UTC)
        self.last_exptime = round(seconds, 3)
        return spec.model_copy(update={"exptime": self.last_exptime})

    def _within_limits(
        self, seconds: float | None, track: Callable[[float], float]
    ) -> float | None:
        """A time beyond a limit becomes the limit when the level there is still well
        within the tolerance (the last flats of a fading evening are kept this way)."""
        spec = self.spec
        if seconds is None or seconds > spec.max_exptime:
            limit = spec.max_exptime
        elif seconds < spec.min_exptime:
            limit = spec.min_exptime
        else:
            return seconds
        level = self.planner.level(limit, track)
        if level is not None and abs(level / spec.target_adu - 1) <= spec.tolerance * LIMIT_MARGIN:
            return limit
        return seconds

    def _give_up(self, name: str, reason: str) -> str:
        self.given_up[name] = reason
        return f"{name}: {reason}"

    async def judge(self, acquired: Acquired) -> Verdict:
        frame = acquired.frames[0]
        level = await asyncio.to_thread(frame_level, frame.raw, acquired.plan.plans, acquired.spec)
        exptime = acquired.spec.exptime
        middle = frame.date_obs + timedelta(seconds=exptime / 2)
        altitude = self._altitude(self.clock.at(middle))
        if self.shaped_at is not None:
            self.lag_s = min(max((frame.date_obs - self.shaped_at).total_seconds(), 0.0), 30.0)
        self.planner.learn(Measurement(exptime, level.level_adu, altitude, level.saturated))
        verdict = judge(level.level_adu, level.saturated, self.spec.target_adu, self.spec.tolerance)
        cards: dict[str, CardValue] = {
            "FLATLEVL": round(level.level_adu, 1),
            "FLATTARG": self.spec.target_adu,
            "FLATOK": verdict is Judgement.GOOD,
            "SUNALT": round(altitude, 3),
        }
        if verdict is Judgement.GOOD:
            self.kept[acquired.expnum] = acquired.spec.filter or "none"
            return Verdict(cards)
        return Verdict(
            cards,
            rejected=f"level {level.level_adu:.0f} ADU is {verdict.value} (target "
            f"{self.spec.target_adu:g} +- {self.spec.tolerance:.0%})",
        )


def _pointer(
    spec: TwilightFlatSpec, instrument: InstrumentConfig, site: Site, clock: SkyClock
) -> Observer | None:
    """Points at the flat spot, opens and turns the dome, sets filter and focus; None
    when the instrument has no telescope (the operator points it)."""
    if not any(d.type.value == "telescope" for d in instrument.devices):
        return None
    ra, dec = flat_spot(site, clock.now())
    target = ObservationSpec(
        name=spec.name,
        target=Target(name="twilight flat spot", ra_deg=ra, dec_deg=dec),
        exposures=[
            FilterExposures(filter=f.filter, exptime=spec.min_exptime, count=f.count)
            for f in spec.filters
        ],
    )
    return Observer(target, instrument, per_dither=sum(f.count for f in spec.filters))


@flow(name="twilight-flats")
async def twilight_flats(
    spec: TwilightFlatSpec,
    instrument: InstrumentChoice = DEFAULT_INSTRUMENT,
    close_at_end: bool = True,
    wait_for_twilight: bool = True,
) -> SequenceResult:
    """Sky flats in the evening or morning twilight, then a master flat per filter
    (module docstring). Waits for the twilight when it is still to come; returns at
    once, with the reason, when it is over (or still to come and
    ``wait_for_twilight`` is off). The telescope parks and the dome closes at the end
    unless ``close_at_end`` is off (observing follows at once)."""
    return await take_twilight_flats(
        spec,
        resolve_instrument(instrument),
        close_at_end=close_at_end,
        wait_for_twilight=wait_for_twilight,
    )


async def take_twilight_flats(
    spec: TwilightFlatSpec,
    instrument: InstrumentConfig,
    clock: SkyClock | None = None,
    *,
    follow_sun: bool = True,
    close_at_end: bool = True,
    wait_for_twilight: bool = True,
) -> SequenceResult:
    """The flow's work (in a flow run); ``clock`` runs the Sun faster for a simulator,
    ``follow_sun=False`` is the baseline bench/twilight.py compares with."""
    clock = clock or SkyClock()
    site = check_twilight(spec, instrument)
    logger = get_run_logger()
    wait = twilight_wait_s(spec, site, clock.now())
    if wait is None:
        reason = f"the {spec.twilight.value} twilight is over"
        logger.warning("%s: not taken: %s", spec.name, reason)
        return not_taken(spec.name, reason)
    if wait > 0 and not wait_for_twilight:
        starts = (clock.now() + timedelta(seconds=wait)).strftime("%Y-%m-%d %H:%M UTC")
        reason = f"the {spec.twilight.value} twilight starts at {starts}; not waiting"
        logger.warning("%s: not taken: %s", spec.name, reason)
        return not_taken(spec.name, reason)
    if wait > 0:
        logger.info(
            "%s: waiting %.0f min for the %s twilight", spec.name, wait / 60, spec.twilight.value
        )
        await asyncio.sleep(wait / clock.speed)
    specs = spec.expand()
    steering = SkySteering(spec, site, clock, follow_sun)
    async with instrument_lock(instrument):
        # Twilight does not come back: a run always starts afresh.
        plan = RunPlan.open(instrument, spec.name, specs, resume=False)
        result = await take_all(
            spec.name,
            specs,
            instrument,
            pipelined=True,
            plan=plan,
            publish=False,
            before=_pointer(spec, instrument, site, clock),
            steer=steering,
            close_at_end=close_at_end,
        )
        plan.journal.close()
    if spec.build_masters and result.exposures:
        inputs = [
            ExposureSpec(
                image_type=ImageType.FLAT, exptime=r.exptime, filter=steering.kept[r.expnum]
            )
            for r in result.exposures
        ]
        masters = await build_masters(inputs, result.exposures, instrument, spec.combine)
        result = result.model_copy(update={"masters": masters})
    await publish_results(result)
    return result
