"""The cards of one CCD's header: standard cards, provenance, and configured cards.

Values come from the exposure, the instrument config, the CCD's processed image and
the telemetry snapshots; configured cards name their source (see schemas/header.py)
and are resolved here by lookup. A source that is missing (telemetry that did not
answer) gives a card with an undefined value and a comment that says so.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from importlib.metadata import PackageNotFoundError, version

from devices.base import ExposureTimes
from devices.telemetry import Reading
from schemas.exposure import ExposureSpec
from schemas.header import HeaderCard, Snapshot, device_source
from schemas.instrument import CcdConfig, InstrumentConfig
from schemas.site import Site
from tasks.files.fits_cards import Card
from tasks.headers.time_cards import TimeSummary, summarize, time_cards
from tasks.observing.pointing import sky_position
from tasks.post_process import CcdImage
from tasks.processing.raw_frames import RawCcd, amplifier_cards


def software_version() -> str:
    try:
        return version("ccdflow")
    except PackageNotFoundError:
        return "unknown"


@dataclass(frozen=True, slots=True)
class ExposureFacts:
    """What happened during one exposure: the same for every CCD."""

    spec: ExposureSpec
    expnum: int
    date_obs: datetime
    darktime: float
    flow_run_id: str | None
    ncombine: int = 1
    status_start: Mapping[str, Mapping[str, Reading]] = field(default_factory=dict)
    status_end: Mapping[str, Mapping[str, Reading]] = field(default_factory=dict)
    missing: Mapping[str, str] = field(default_factory=dict)
    system: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    missing_controllers: Mapping[str, str] = field(default_factory=dict)
    times: tuple[ExposureTimes, ...] = ()
    """Each frame's measured integration (tasks/headers/time_cards.py); empty: only the host's
    DATE-OBS is known (then the requested time stands for the integration)."""

    def time_summary(self, tolerance_s: float) -> TimeSummary:
        """The exposure's times; without measured frame times, the host's start plus
        the requested integration, said so in TIMESRC."""
        if self.times:
            return summarize(self.times, tolerance_s)
        assumed = ExposureTimes(
            start=self.date_obs,
            end=self.date_obs + timedelta(seconds=self.spec.exptime),
            source="host clock (end assumed)",
            uncertainty_s=None,
            requested_s=self.spec.exptime,
        )
        return summarize([assumed], tolerance_s)


def exposure_cards(facts: ExposureFacts, instrument: InstrumentConfig) -> list[Card]:
    """Cards about the exposure as a whole (also the primary header of a MEF file)."""
    spec = facts.spec
    tolerance = instrument.exptime_tolerance_s
    cards: list[Card] = [
        *time_cards(facts.time_summary(tolerance), tolerance),
        ("DARKTIME", round(facts.darktime, 6), "[s] integration start to readout start"),
        ("IMAGETYP", spec.image_type.value, "bias, dark, flat, object, arc or test"),
        ("SHUTTER", "open" if spec.opens_shutter else "closed", "shutter during integration"),
        ("EXPNUM", facts.expnum, "exposure number"),
        ("OBSERVAT", instrument.observatory, "observatory"),
        ("TELESCOP", instrument.telescope, "telescope"),
        ("INSTRUME", instrument.name, "instrument"),
        ("FILTER", spec.filter or "none", "filter"),
    ]
    cards.append(("OBJECT", spec.object_name or "", "object name"))
    if spec.coordinates is not None:
        cards += [
            ("RA", spec.coordinates.ra_deg, "[deg] right ascension (requested)"),
            ("DEC", spec.coordinates.dec_deg, "[deg] declination (requested)"),
            ("RADESYS", "ICRS", "reference frame of RA and DEC"),
            ("EQUINOX", 2000.0, "[yr] equinox of RA and DEC (ICRS: J2000)"),
        ]
        if instrument.site is not None and spec.opens_shutter:
            cards += _sky_cards(spec, facts, instrument.site)
    if spec.lamp is not None:
        cards.append(("LAMP", spec.lamp.device, "flat-field lamp lit (a dome flat)"))
        if spec.lamp.brightness is not None:
            cards.append(("LAMPBRT", spec.lamp.brightness, "lamp brightness asked for"))
    if spec.stacking is not None:
        cards += [
            ("NCOMBINE", facts.ncombine, "frames combined into this image"),
            ("COMBMETH", spec.stacking.method.value, "how the frames were combined"),
        ]
    if facts.flow_run_id:
        cards.append(("RUNID", facts.flow_run_id, "Prefect flow-run id"))
    cards += [
        ("SPECHASH", spec.spec_hash(), "sha256 (16 hex) of the exposure spec"),
        ("ORIGIN", "ccdflow", "software that wrote this file"),
        ("SWVERS", software_version(), "ccdflow version"),
    ]
    if facts.missing_controllers:
        names = ",".join(sorted(facts.missing_controllers))
        cards.append(("CTRLMISS", names, "controllers missing from this exposure"))
        cards += [
            ("COMMENT", f"MISSING controller {name}: {why}"[:72], "")
            for name, why in sorted(facts.missing_controllers.items())
        ]
    cards += [(keyword, value, "from the exposure spec") for keyword, value in spec.header.items()]
    return cards


def _sky_cards(spec: ExposureSpec, facts: ExposureFacts, site: Site) -> list[Card]:
    """Where the requested position was from the site at mid-exposure."""
    assert spec.coordinates is not None
    middle = facts.date_obs + timedelta(seconds=spec.exptime / 2)
    at = sky_position(spec.coordinates.ra_deg, spec.coordinates.dec_deg, site, middle)
    cards: list[Card] = [
        ("ALT", round(at.alt_deg, 4), "[deg] altitude of RA/DEC, mid-exposure"),
        ("AZ", round(at.az_deg, 4), "[deg] azimuth (N through E), mid-exposure"),
    ]
    if at.airmass is not None:
        cards.append(("AIRMASS", round(at.airmass, 4), "sec(z), mid-exposure"))
    cards += [
        ("HA", round(at.hour_angle_h, 5), "[h] hour angle, mid-exposure"),
        ("LST", round(at.lst_h, 5), "[h] local sidereal time, mid-exposure"),
    ]
    return cards


def _identity_cards(
    ccd: CcdConfig, controller: str, buffer: int, facts: ExposureFacts
) -> list[Card]:
    """Which CCD this is and how it was read (PRODUCT is in the file's primary header)."""
    binning = facts.spec.binning
    return [
        ("DETECTOR", ccd.name, "detector"),
        ("CCDNAME", ccd.name, "CCD name"),
        ("CONTRLR", controller, "camera (controller) that read this CCD"),
        ("FRAMEBUF", buffer, "controller frame buffer read"),
        ("GAIN", ccd.gain, "[e-/ADU] gain"),
        ("RDNOISE", ccd.read_noise, "[e-] read noise"),
        ("CCDSUM", f"{binning.x} {binning.y}", "binning: columns, lines"),
    ]


def _amplifier_noise_cards(ccd: CcdConfig, names: list[str]) -> list[Card]:
    gains = {amp.name: amp for amp in ccd.amplifiers}
    cards: list[Card] = []
    for name in names:
        if name in gains:
            cards.append((f"GAIN{name}", gains[name].gain, f"[e-/ADU] gain of amp {name}"))
            cards.append((f"RDNOISE{name}", gains[name].read_noise, f"[e-] read noise, amp {name}"))
    return cards


def _temperature_cards(ccd: CcdConfig, controller: str, facts: ExposureFacts) -> list[Card]:
    if not ccd.temperature_key:
        return []
    status = facts.status_start.get(controller)
    temperature = status.get(ccd.temperature_key) if status else None
    if temperature is None:
        reason = facts.missing.get(controller, f"{ccd.temperature_key} not in STATUS")
        return [missing_card("CCDTEMP", reason)]
    return [("CCDTEMP", temperature, f"[degC] {ccd.temperature_key} at integration start")]


def _stat_cards(stats: Mapping[str, float], unit: str) -> list[Card]:
    cards: list[Card] = []
    for stat, value in stats.items():
        if stat == "saturated":
            cards.append(("NSATURAT", int(value), "science pixels at saturation (raw)"))
        else:
            cards.append((f"Q{stat.upper()[:7]}", round(value, 4), f"[{unit}] quick-look {stat}"))
    return cards


def raw_ccd_cards(
    raw: RawCcd, ccd: CcdConfig, controller: str, buffer: int, facts: ExposureFacts
) -> list[Card]:
    """Cards of one CCD's raw frame: identity, the amplifier map, temperature, stats."""
    return [
        *_identity_cards(ccd, controller, buffer, facts),
        ("BUNIT", "adu", "counts as digitized, bias level included"),
        *amplifier_cards(raw),
        *_amplifier_noise_cards(ccd, [amp.name for amp in raw.amplifiers]),
        *_temperature_cards(ccd, controller, facts),
        *_stat_cards(raw.stats, "adu raw"),
    ]


def ccd_cards(
    image: CcdImage, ccd: CcdConfig, controller: str, buffer: int, facts: ExposureFacts
) -> list[Card]:
    """Cards about one CCD's processed image: identity, geometry, overscan levels,
    temperature, what the chain did, quick-look statistics."""
    binning = facts.spec.binning
    cards: list[Card] = [
        *_identity_cards(ccd, controller, buffer, facts),
        ("BUNIT", image.bunit, "unit of the pixel values"),
    ]
    if image.datasec is not None:
        cards.append(("DATASEC", image.datasec.fits(), "science pixels"))
        if not image.trimmed:
            cards.append(("TRIMSEC", image.datasec.fits(), "section to keep after trimming"))
        if facts.spec.window is None:
            x0, y0 = ccd.mosaic_origin
            width = (image.datasec.c1 - image.datasec.c0) * binning.x
            height = (image.datasec.r1 - image.datasec.r0) * binning.y
            detsec = f"[{x0 + 1}:{x0 + width},{y0 + 1}:{y0 + height}]"
            cards.append(("DETSEC", detsec, "unbinned mosaic pixels of DATASEC"))
    if image.biassec is not None:
        cards.append(("BIASSEC", image.biassec.fits(), "overscan pixels"))
    cards.append(("NAMPS", len(image.amplifiers), "amplifiers read"))
    for amp in image.amplifiers:
        cards.append((f"DATASEC{amp.name}", amp.data.fits(), f"science pixels of amp {amp.name}"))
        if amp.bias is not None:
            cards.append((f"BIASSEC{amp.name}", amp.bias.fits(), f"overscan of amp {amp.name}"))
        cards.append(
            (
                f"OVRSCN{amp.name}",
                round(amp.overscan_level, 3),
                f"[adu] overscan level, amp {amp.name}",
            )
        )
    cards += _amplifier_noise_cards(ccd, [amp.name for amp in image.amplifiers])
    cards += _temperature_cards(ccd, controller, facts)
    cards += image.cards
    cards += _stat_cards(image.stats, image.bunit)
    return cards


def missing_card(keyword: str, reason: str) -> Card:
    """A COMMENT that stands where a card whose source did not answer would be."""
    return ("COMMENT", f"MISSING {keyword.removeprefix('HIERARCH ')}: {reason}"[:72], "")


def configured_cards(
    cards: list[HeaderCard],
    facts: ExposureFacts,
    instrument: InstrumentConfig,
    ccd: CcdConfig,
    controller: str,
) -> tuple[list[Card], list[str]]:
    """Resolve the instrument's configured cards; also return warnings for missing ones."""
    resolved: list[Card] = []
    warnings: list[str] = []
    for card in cards:
        if card.source is None:
            assert card.value is not None  # the model holds exactly one of them
            resolved.append((card.keyword, card.value, card.full_comment))
            continue
        when = [(card.keyword, facts.status_start)]
        if card.snapshot is Snapshot.END:
            when = [(card.keyword, facts.status_end)]
        elif card.snapshot is Snapshot.BOTH:
            assert card.end_keyword is not None
            when = [(card.keyword, facts.status_start), (card.end_keyword, facts.status_end)]
        for keyword, status in when:
            raw = _lookup(card.source, facts, instrument, ccd, controller, status)
            if raw is None:
                named = device_source(card.source)
                key = f"device.{named[0]}" if named else controller
                reason = facts.missing.get(key, f"{card.source} not available")
                warnings.append(f"{keyword}: {card.source} missing ({reason})")
                resolved.append(missing_card(keyword, reason))
            else:
                resolved.append((keyword, card.convert(raw), card.full_comment))
    return resolved, warnings


def _lookup(
    source: str,
    facts: ExposureFacts,
    instrument: InstrumentConfig,
    ccd: CcdConfig,
    controller: str,
    status: Mapping[str, Mapping[str, Reading]],
) -> object | None:
    parts = source.split(".")
    if parts[0] == "exposure":
        value: object = getattr(facts.spec, parts[1])
        return value.value if isinstance(value, StrEnum) else value
    if parts[0] == "instrument":
        identity: object = getattr(instrument, parts[1])
        return identity
    if parts[0] == "ccd":
        field_value: object = getattr(ccd, parts[1])
        return field_value
    if parts[0] == "device":
        return status.get(f"device.{parts[1]}", {}).get(parts[2])
    if parts[1] == "status":
        return status.get(controller, {}).get(parts[2])
    return facts.system.get(controller, {}).get(parts[2])
