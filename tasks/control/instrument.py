"""Opening an instrument: plan every camera from its config, connect, make ready.

The plans are made before any connection (devices.registry picks each camera's
vendor by its ``kind``), so a config that does not match a camera's geometry (wrong
number of CCDs for its taps, a bad ACF, a sensor the binning does not fit) is refused
before anything moves. On the way out every camera is stood down (an Archon reset, an
Alpaca abort), which closes the shutter whatever happened inside.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace

from devices.base import CameraCapabilities, DeviceError
from devices.camera import (
    Camera,
    CameraConfigError,
    CameraModel,
    FrameGeometry,
    ReadoutRequest,
    ReadoutSetup,
)
from devices.geometry import CcdRegion
from devices.registry import camera_model
from schemas.errors import ConfigError
from schemas.instrument import ControllerConfig, InstrumentConfig
from schemas.processing import OverscanMethod
from schemas.products import Product
from tasks.processing.raw_frames import DetectorPlacement
from tasks.processing.sections import amp_boxes, trimmed_boxes


@dataclass(frozen=True, slots=True)
class ControllerPlan:
    """A camera's config, its model and the readout setup (with the frame geometry it
    produces) that processing and raw files follow."""

    config: ControllerConfig
    model: CameraModel
    setup: ReadoutSetup
    placements: tuple[DetectorPlacement, ...] = ()
    """Per CCD, where its amplifiers' science pixels sit on the detector, from the
    full unbinned readout (a window keeps it: raw headers map windows onto it)."""

    @property
    def geometry(self) -> FrameGeometry:
        return self.setup.geometry

    @property
    def buffer_shape(self) -> tuple[int, int]:
        return self.setup.geometry.buffer_shape

    @property
    def layout(self) -> tuple[CcdRegion, ...]:
        return self.setup.geometry.layout

    @property
    def pixels(self) -> int:
        return self.setup.geometry.pixels

    @property
    def overscan_pixels(self) -> int:
        return self.setup.geometry.overscan_pixels

    @property
    def lines(self) -> int:
        return self.setup.geometry.lines

    @property
    def capabilities(self) -> CameraCapabilities:
        """What the camera can do, so a spec it cannot take is refused before contact."""
        return self.model.capabilities

    def for_readout(self, request: ReadoutRequest) -> ControllerPlan:
        """The plan with the setup that reads ``request`` (CameraConfigError)."""
        return replace(self, setup=self.model.setup_for(request))


@dataclass(slots=True)
class ReadoutMark:
    """When the camera's last complete readout ended (``time.monotonic()``), if no
    integration has begun since: that readout left the CCDs as clear as a flush."""

    ended: float | None = None


@dataclass(frozen=True, slots=True)
class ControllerSession:
    """A connected camera and its plan."""

    plan: ControllerPlan
    controller: Camera
    last_readout: ReadoutMark = field(default_factory=ReadoutMark)


def plan_instrument(instrument: InstrumentConfig) -> list[ControllerPlan]:
    """Plan every camera and check it against the config; all problems in one error."""
    problems: list[str] = []
    plans: list[ControllerPlan] = []
    for index, config in enumerate(instrument.controllers):
        where = f"controllers.{index}"
        try:
            model = camera_model(config)
        except CameraConfigError as exc:
            problems.append(f"{where}.{exc}")
            continue
        geometry = model.full.geometry
        try:
            placements = tuple(
                _placement(region, ccd.mosaic_origin, geometry)
                for region, ccd in zip(geometry.layout, config.ccds, strict=True)
            )
        except ValueError as exc:
            problems.append(f"{where}.ccds: {exc}")
            continue
        problems += _processing_problems(
            instrument, where, config, geometry.layout, geometry.overscan_pixels
        )
        plans.append(ControllerPlan(config, model, model.full, placements))
    if problems:
        raise ConfigError(f"instrument {instrument.name}", problems)
    return plans


def _placement(
    region: CcdRegion, origin: tuple[int, int], geometry: FrameGeometry
) -> DetectorPlacement:
    """Each amplifier's science pixels on the physically oriented, trimmed CCD."""
    boxes = [
        amp_boxes(amp, geometry.pixels, geometry.overscan_pixels, geometry.lines)[0]
        for amp in region.amplifiers
    ]
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
            f"({config.name}) reads none; use overscan: none"
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


def camera_for(plan: ControllerPlan) -> Camera:
    """A new, unconnected adapter for the plan's camera, with its configured timeouts.

    Every caller (a run, the make-safe action) builds it here, so they all talk to the
    camera with the same address and timeouts.
    """
    return plan.model.camera()


@contextlib.asynccontextmanager
async def open_instrument(plans: list[ControllerPlan]) -> AsyncIterator[list[ControllerSession]]:
    """Connect to every camera and prepare it; stand each down again on the way out.

    A camera that refuses a configured value (a set point, a gain) is a ConfigError
    naming the field, like a config problem found before contact.
    """
    sessions = [ControllerSession(plan, camera_for(plan)) for plan in plans]
    try:
        for index, session in enumerate(sessions):
            await session.controller.connect()
            try:
                await session.controller.prepare()
            except CameraConfigError as exc:
                name = session.plan.config.name
                raise ConfigError(f"camera {name}", [f"controllers.{index}.{exc}"]) from exc
        yield sessions
    finally:
        for session in sessions:
            # Whatever happened, leave the camera idle with its shutter closed.
            with contextlib.suppress(DeviceError):
                await session.controller.stand_down()
            await session.controller.close()
