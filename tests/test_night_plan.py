"""Night plans by the clock and by the Sun: windows, twilight, the operator, plan-night.

Pure checks (bad input named, moments resolved) need no server; the flows run on the
session's Prefect test API and the in-process Archon simulator.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from schemas.errors import ConfigError
from schemas.exposure import NightPlan
from schemas.instrument import InstrumentConfig
from schemas.night_schedule import NightSchedule
from schemas.night_window import SUN_EVENTS, NightMoment, TimeWindow
from schemas.site import Site

APO = Site(
    name="Apache Point Observatory",
    latitude_deg=32.780,
    longitude_deg=-105.820,
    elevation_m=2788,
    timezone="America/Denver",
)
STEPS: list[dict[str, Any]] = [
    {"name": "darks", "biases": 1, "darks": [{"exptime": 0.2, "count": 1}]},
    {"name": "science", "exposures": [{"image_type": "object", "exptime": 0.2, "count": 2}]},
]


def _with_site(instrument: InstrumentConfig, site: Site = APO) -> InstrumentConfig:
    return instrument.model_copy(update={"site": site})


# --- bad input is refused when it loads, naming the field --------------------------------


def test_the_schemas_sun_events_are_the_ones_computed() -> None:
    from tasks.observing.sun_events import EVENT_NAMES

    assert SUN_EVENTS == EVENT_NAMES


@pytest.mark.parametrize(
    ("site", "field"),
    [
        ({"latitude_deg": 91, "longitude_deg": 0}, "latitude_deg"),
        ({"latitude_deg": 0, "longitude_deg": 0, "timezone": "Mars/Olympus"}, "timezone"),
    ],
)
def test_an_instrument_with_a_bad_site_is_refused_naming_the_field(
    site: dict[str, Any], field: str
) -> None:
    import yaml

    from .conftest import SIM_YAML

    data = yaml.safe_load(SIM_YAML.read_text())
    data["controllers"][0]["acf"] = str(SIM_YAML.parent / "sim.acf")
    data["site"] = site
    with pytest.raises(ValidationError, match=rf"site\.{field}"):
        InstrumentConfig.model_validate(data)


@pytest.mark.parametrize(
    "window",
    [
        {"start": {"clock": "05:00"}, "end": {"clock": "04:00"}},
        {"start": {"clock": "22:00"}, "end": {"clock": "21:00"}},
        {"start": {"event": "sunset", "offset_min": 30}, "end": {"event": "sunset"}},
        {"start": {"event": "nautical_dawn"}, "end": {"event": "astronomical_dusk"}},
    ],
)
def test_a_window_that_ends_before_it_starts_is_refused_naming_it(window: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match=r"windows\.science") as caught:
        NightPlan.model_validate({"steps": STEPS, "windows": {"science": window}})
    assert "not after" in str(caught.value) or "before start" in str(caught.value)


def test_a_window_across_midnight_is_one_night() -> None:
    window = TimeWindow.model_validate({"start": {"clock": "20:00"}, "end": {"clock": "05:30"}})
    assert window.end is not None


def test_windows_and_questions_must_name_steps() -> None:
    with pytest.raises(ValidationError, match="windows: no step named 'nope'"):
        NightPlan.model_validate({"steps": STEPS, "windows": {"nope": {}}})
    with pytest.raises(ValidationError, match="ask: no step named 'x'"):
        NightPlan.model_validate({"steps": STEPS, "ask": {"x": {"prompt": "lamps on?"}}})


def test_a_moment_is_an_event_or_a_clock_time_not_both() -> None:
    with pytest.raises(ValidationError, match="exactly one"):
        NightMoment.model_validate({"event": "sunset", "clock": "20:00"})
    with pytest.raises(ValidationError, match="exactly one"):
        NightMoment.model_validate({})


def test_an_invalid_cron_in_the_deployment_file_is_refused_naming_cron() -> None:
    from prefect.client.schemas.schedules import CronSchedule

    with pytest.raises(ValidationError, match="cron"):
        CronSchedule(cron="61 25 * * *", timezone="America/Denver")
    with pytest.raises(ValidationError, match="timezone"):
        CronSchedule(cron="0 13 * * *", timezone="Mars/Olympus")


def test_every_schedule_in_the_deployment_file_is_valid() -> None:
    import yaml
    from prefect.cli.deploy._models import PrefectYamlModel

    from .conftest import REPO

    model = PrefectYamlModel.model_validate(
        yaml.safe_load((REPO / "deploy" / "prefect.yaml").read_text())
    )
    crons = [
        schedule for deployment in model.deployments for schedule in (deployment.schedules or [])
    ]
    assert len(crons) >= 2
    from prefect.client.schemas.schedules import CronSchedule

    for schedule in crons:
        raw = schedule.model_dump() if hasattr(schedule, "model_dump") else dict(schedule)
        CronSchedule(cron=raw["cron"], timezone=raw["timezone"])


# --- the clock of a night ----------------------------------------------------------------


def test_windows_and_twilight_resolve_to_the_nights_sun_events(
    sim_instrument: InstrumentConfig,
) -> None:
    from flows.night_clock import NightClock
    from schemas.exposure import ExposureSpec
    from tasks.observing.sun_events import night_events

    plan = NightPlan.model_validate(
        {
            "steps": STEPS,
            "windows": {
                "science": {"start": {"event": "astronomical_dusk"}, "end": {"clock": "03:00"}}
            },
        }
    )
    events = night_events(APO, date(2026, 12, 1))
    evening = events.sunset
    assert evening is not None
    clock = NightClock.for_plan(plan, _with_site(sim_instrument), now=lambda: evening)
    start, end = clock.window("science")
    assert start == events.astronomical_dusk
    assert end == datetime(2026, 12, 2, 10, 0, tzinfo=UTC)  # 03:00 MST
    assert clock.light_until == events.astronomical_dawn
    assert clock.wait_s("science") > 3600  # an hour and more from sunset to dark
    dawn = events.astronomical_dawn
    assert dawn is not None
    late = NightClock.for_plan(plan, _with_site(sim_instrument), now=lambda: dawn)
    gate = late.exposure_gate("darks")
    assert gate(ExposureSpec(image_type="dark", exptime=60)) is None  # darks go on
    assert "morning twilight" in (gate(ExposureSpec(image_type="object", exptime=1)) or "")
    assert "window closed" in (late.exposure_gate("science")(ExposureSpec(image_type="bias")) or "")


def test_a_window_needs_a_site(sim_instrument: InstrumentConfig) -> None:
    from flows.night_clock import NightClock

    plan = NightPlan.model_validate(
        {"steps": STEPS, "windows": {"science": {"end": {"clock": "03:00"}}}}
    )
    with pytest.raises(ConfigError, match=r"windows\.science: a time window needs"):
        NightClock.for_plan(plan, sim_instrument)


def test_a_moment_the_sun_does_not_give_is_refused(sim_instrument: InstrumentConfig) -> None:
    from flows.night_clock import NightClock

    svalbard = Site(latitude_deg=78.22, longitude_deg=15.65, timezone="Arctic/Longyearbyen")
    plan = NightPlan.model_validate({"steps": STEPS})  # light until astronomical dawn
    midsummer = datetime(2026, 6, 21, 22, 0, tzinfo=UTC)
    with pytest.raises(ConfigError, match="light_until: the Sun gives no astronomical_dawn"):
        NightClock.for_plan(plan, _with_site(sim_instrument, svalbard), now=lambda: midsummer)


# --- the flow ------------------------------------------------------------------------------


def _local_clock(site: Site, when: datetime) -> str:
    return when.astimezone(site.zone).strftime("%H:%M")


def _closed_window(now: datetime) -> dict[str, Any]:
    """A window of the current night that closed a minute ago (by the site's clock)."""
    end = now - timedelta(minutes=1)
    start = end - timedelta(minutes=2)
    if _local_clock(APO, start) > _local_clock(APO, end) or (
        _local_clock(APO, start) < "12:00" <= _local_clock(APO, end)
    ):
        pytest.skip("too close to midnight or noon at the site for a clock-time window")
    return {"start": {"clock": _local_clock(APO, start)}, "end": {"clock": _local_clock(APO, end)}}


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
async def test_a_step_whose_window_closed_is_skipped_and_the_night_goes_on(
    sim_instrument: InstrumentConfig,
) -> None:
    from flows.exposure import observe_night

    plan = NightPlan.model_validate(
        {
            "name": "windowed",
            "steps": STEPS,
            "windows": {"science": _closed_window(datetime.now(UTC))},
            "light_until": None,
        }
    )
    results = await observe_night(plan, _with_site(sim_instrument))
    assert [r.name for r in results] == ["darks", "science"]
    assert len(results[0].exposures) == 2
    assert results[0].stopped is None
    assert results[1].exposures == []
    assert "window closed" in (results[1].stopped or "")


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
async def test_light_exposures_stop_at_morning_twilight_and_darks_go_on(
    sim_instrument: InstrumentConfig,
) -> None:
    from flows.exposure import observe_night

    now = datetime.now(UTC)
    # "Twilight" one minute ago by the site's clock; skipped where that is across noon.
    passed = _closed_window(now)["end"]
    plan = NightPlan.model_validate(
        {"name": "dawn", "steps": list(reversed(STEPS)), "light_until": passed}
    )
    results = await observe_night(plan, _with_site(sim_instrument))
    science, darks = results
    assert science.exposures == []
    assert "morning twilight" in (science.stopped or "")
    assert [e.image_type.value for e in darks.exposures] == ["bias", "dark"]


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
async def test_a_question_nobody_answers_takes_its_configured_outcome_without_the_lock(
    sim_instrument: InstrumentConfig,
) -> None:
    from flows.exposure import observe_night, take_exposure
    from schemas.exposure import ExposureSpec

    plan = NightPlan.model_validate(
        {
            "name": "asked",
            "steps": STEPS,
            "ask": {"science": {"prompt": "dome open?", "timeout_s": 8, "if_no_answer": "skip"}},
            "light_until": None,
        }
    )
    night = asyncio.ensure_future(observe_night(plan, sim_instrument))
    # While the run waits for its operator, another run can take the instrument.
    await asyncio.sleep(4)
    other = await asyncio.wait_for(
        take_exposure(ExposureSpec(image_type="bias"), sim_instrument), 30
    )
    assert not night.done()
    results = await asyncio.wait_for(night, 60)
    assert len(other) == 1
    assert [len(r.exposures) for r in results] == [2, 0]
    assert results[1].stopped == "the operator skipped it" or "skip" in (results[1].stopped or "")


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
async def test_an_operator_answer_resumes_the_night(sim_instrument: InstrumentConfig) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState
    from prefect.flow_runs import resume_flow_run

    from flows.exposure import observe_night

    plan = NightPlan.model_validate(
        {
            "name": "answered",
            "steps": STEPS,
            "ask": {"science": {"prompt": "dome open?", "timeout_s": 120}},
            "light_until": None,
        }
    )
    night = asyncio.ensure_future(observe_night(plan, sim_instrument))
    paused = None
    async with get_client() as client:
        for _ in range(300):
            runs = await client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    state=FlowRunFilterState(type={"any_": ["PAUSED"]})  # type: ignore[arg-type]
                )
            )
            paused = next(
                (r for r in runs if r.parameters.get("plan", {}).get("name") == "answered"), None
            )
            if paused is not None:
                break
            await asyncio.sleep(0.2)
    assert paused is not None, "the run never paused for its question"
    await asyncio.sleep(1)  # the run saves its form's schema after pausing
    await resume_flow_run(paused.id, run_input={"go_ahead": True, "note": "dome is open"})
    results = await asyncio.wait_for(night, 60)
    assert [len(r.exposures) for r in results] == [2, 2]


# --- plan-night ----------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
async def test_plan_night_schedules_each_run_at_its_sun_event_once(
    sim_instrument: InstrumentConfig,
) -> None:
    from prefect.client.orchestration import get_client

    from flows.plan_night import plan_night
    from tasks.observing.sun_events import local_night, night_events

    tonight = local_night(APO, datetime.now(UTC)) + timedelta(days=1)  # all in the future
    async with get_client() as client:
        flow_id = await client.create_flow_from_name("take-exposure")
        deployment_id = await client.create_deployment(flow_id=flow_id, name="plan-test")
    schedule = NightSchedule.model_validate(
        {
            "name": "test-night",
            "runs": [
                {
                    "name": "dusk-bias",
                    "deployment": "take-exposure/plan-test",
                    "at": {"event": "civil_dusk", "offset_min": 10},
                    "parameters": {"spec": {"image_type": "bias"}},
                },
                {
                    "name": "late-bias",
                    "deployment": "take-exposure/plan-test",
                    "at": {"clock": "02:30"},
                    "parameters": {"spec": {"image_type": "bias"}},
                },
            ],
        }
    )
    site_instrument = _with_site(sim_instrument)
    first = await plan_night(schedule, site_instrument, night=tonight)
    again = await plan_night(schedule, site_instrument, night=tonight)
    assert [r.flow_run_id for r in first] == [r.flow_run_id for r in again]
    events = night_events(APO, tonight)
    assert events.civil_dusk is not None
    assert first[0].scheduled_time == events.civil_dusk + timedelta(minutes=10)
    late = datetime.combine(tonight + timedelta(days=1), time(2, 30), tzinfo=APO.zone)
    assert first[1].scheduled_time == late.astimezone(UTC)
    async with get_client() as client:
        runs = await client.read_flow_runs()
        ours = [r for r in runs if r.deployment_id == deployment_id]
        assert len(ours) == 2
        for run in ours:
            assert run.state is not None
            assert run.state.is_scheduled()
            assert run.parameters["spec"] == {"image_type": "bias"}
        expected = sorted(r.scheduled_time for r in first if r.scheduled_time)
        assert sorted(r.expected_start_time for r in ours if r.expected_start_time) == expected
        for run in ours:
            await client.delete_flow_run(run.id)
        await client.delete_deployment(deployment_id)


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
async def test_plan_night_checks_everything_before_scheduling_anything(
    sim_instrument: InstrumentConfig,
) -> None:
    from flows.plan_night import plan_night

    schedule = NightSchedule.model_validate(
        {
            "runs": [
                {"name": "a", "deployment": "take-exposure/nowhere", "at": {"event": "sunset"}},
            ]
        }
    )
    with pytest.raises(ConfigError, match="no site"):
        await plan_night(schedule, sim_instrument)
    with pytest.raises(ConfigError, match=r"runs\.0\.deployment: no deployment"):
        await plan_night(schedule, _with_site(sim_instrument))


def test_a_simulated_sky_is_not_ended_by_the_morning() -> None:
    """daylight_light (the simulators' instruments): no light_until; an observatory's
    instrument keeps it (light exposures stop at morning twilight)."""
    from flows.night_clock import NightClock
    from schemas.instrument import load_instrument

    from .conftest import REPO

    simulated = load_instrument(REPO / "deploy" / "instruments" / "sim-observatory.yaml")
    assert simulated.daylight_light
    real = simulated.model_copy(update={"daylight_light": False})
    plan = NightPlan.model_validate(
        {"name": "n", "steps": [{"name": "s", "exposures": [{"image_type": "dark"}]}]}
    )
    morning = datetime(2026, 6, 1, 14, 0, tzinfo=UTC)  # 08:00 at APO, after twilight
    assert NightClock.for_plan(plan, simulated, now=lambda: morning).light_until is None
    assert NightClock.for_plan(plan, real, now=lambda: morning).light_until is not None
