"""A guide exposure planned against the instrument, before any camera is contacted.

Every problem (unknown or too many cameras, a camera that is not one CCD or cannot
open a shutter, a stamp off its detector or larger than it) is reported at once in
one ConfigError naming each field, as for science exposures.
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas.guide import FindBrightest, GuideSpec, RoiCentre, check_guide_spec
from schemas.instrument import InstrumentConfig
from tasks.control.instrument import ControllerPlan
from tasks.guide.detector import Detector, detector_of


@dataclass(frozen=True, slots=True)
class GuidePlan:
    """The guide cameras (in the spec's order), their plans and detectors, and the
    stamp centres when the spec gives them (None: found on the first frame)."""

    cameras: list[str]
    plans: list[ControllerPlan]
    detectors: dict[str, Detector]
    rois: dict[str, list[RoiCentre]] | None


def plan_guide(
    spec: GuideSpec, instrument: InstrumentConfig, plans: list[ControllerPlan]
) -> GuidePlan:
    """Check ``spec`` against ``instrument`` and its planned cameras (ConfigError)."""
    by_name = {plan.config.name: plan for plan in plans}
    wanted = spec.guide_cameras(instrument)
    problems: list[str] = []
    detectors: dict[str, Detector] = {}
    for index, name in enumerate(wanted):
        plan = by_name.get(name)
        if plan is None:
            continue  # named by check_guide_spec
        where = f"cameras.{index}" if spec.cameras is not None else "cameras"
        try:
            detectors[name] = detector_of(plan)
        except ValueError as exc:
            problems.append(f"{where}: {name} {exc}")
        if not plan.capabilities.opens_shutter:
            problems.append(
                f"{where}: {name} cannot open a shutter "
                f"({plan.capabilities.reason('opens_shutter')}); guide frames need light"
            )
    shapes = {name: detector.shape for name, detector in detectors.items()}
    cameras = check_guide_spec(spec, instrument, shapes, problems)
    rois = None if isinstance(spec.regions, FindBrightest) else dict(spec.regions)
    return GuidePlan(cameras, [by_name[name] for name in cameras], detectors, rois)
