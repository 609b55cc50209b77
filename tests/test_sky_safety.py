"""The sky-safety rule: monitors, limits, staleness, and the wait before light resumes."""

from __future__ import annotations

import pytest

from schemas.weather import WeatherSafety
from tasks.observing.sky_safety import SkySafety

CONFIG = WeatherSafety.model_validate(
    {
        "monitors": ["roof"],
        "limits": [{"device": "station", "property": "humidity_pct", "max": 85}],
        "poll_s": 1,
        "max_age_s": 10,
        "resume_after_s": 60,
    }
)
CLEAR = {"humidity_pct": 40.0}


def _rule(at: float = 0.0, *, safe: bool = True, humidity: float = 40.0) -> SkySafety:
    rule = SkySafety(CONFIG)
    rule.reading("roof", at, {"is_safe": safe})
    rule.reading("station", at, {"humidity_pct": humidity})
    return rule


def test_a_run_that_starts_under_a_clear_sky_does_not_wait() -> None:
    assert _rule().judge(0.0).safe


@pytest.mark.parametrize(
    ("rule", "reason"),
    [
        (_rule(safe=False), "roof says unsafe"),
        (_rule(humidity=92.0), "station.humidity_pct 92 above 85"),
    ],
)
def test_a_monitor_or_a_broken_limit_is_unsafe(rule: SkySafety, reason: str) -> None:
    verdict = rule.judge(0.0)
    assert not verdict.safe
    assert verdict.reason == reason


def test_no_reading_or_a_stale_one_is_unsafe() -> None:
    rule = SkySafety(CONFIG)
    rule.reading("roof", 0.0, {"is_safe": True})
    assert rule.judge(0.0).reason == "no reading from station"
    rule = _rule(0.0)
    assert rule.judge(5.0).safe
    rule.reading("roof", 12.0, {"is_safe": True})  # the station stopped answering at 0
    verdict = rule.judge(12.0)
    assert not verdict.safe
    assert verdict.reason == "station's last reading is 12 s old (max_age_s 10)"


def test_light_resumes_only_after_resume_after_s_of_unbroken_safety() -> None:
    rule = _rule(0.0)
    assert rule.judge(0.0).safe
    rule.reading("station", 1.0, {"humidity_pct": 90.0})
    assert not rule.judge(1.0).safe
    for at, humidity in ((2.0, 80.0), (30.0, 80.0)):
        rule.reading("roof", at, {"is_safe": True})
        rule.reading("station", at, {"humidity_pct": humidity})
        assert not rule.judge(at).safe  # safe for 28 s of the 60 needed
    rule.reading("station", 31.0, {"humidity_pct": 86.0})  # a gust of humidity: again
    rule.reading("roof", 31.0, {"is_safe": True})
    assert not rule.judge(31.0).safe
    for at in (32.0, 70.0, 92.0):
        rule.reading("roof", at, {"is_safe": True})
        rule.reading("station", at, CLEAR)
        verdict = rule.judge(at)
    assert verdict.safe  # 60 s after 32


def test_a_config_that_could_never_be_fresh_is_refused() -> None:
    with pytest.raises(ValueError, match=r"max_age_s \(1\) must exceed poll_s \(2\)"):
        WeatherSafety(monitors=["roof"], poll_s=2, max_age_s=1)
