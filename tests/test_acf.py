"""ACF parsing, wire form and frame-buffer geometry."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from devices.archon.acf import (
    AcfConfig,
    AcfError,
    Tap,
    amplifier_data,
    assemble_ccd,
    ccd_layout,
    load_acf,
    parse_acf,
    parse_wire_lines,
    tap_regions,
)

REPO = Path(__file__).resolve().parents[1]
SIM_ACF = REPO / "deploy" / "instruments" / "sim.acf"
LVM_ACF = Path(__file__).resolve().parents[2] / "shared/reference/lvm-100khz.acf"


@pytest.fixture(scope="module")
def sim() -> AcfConfig:
    return load_acf(SIM_ACF)


@pytest.fixture(scope="module")
def lvm() -> AcfConfig:
    if not LVM_ACF.exists():
        pytest.skip(f"reference ACF {LVM_ACF} not available")
    return load_acf(LVM_ACF)


def minimal(**overrides: str) -> str:
    """A small valid ACF; keyword overrides replace or add [CONFIG] lines."""
    lines = {
        "LINECOUNT": "10",
        "PIXELCOUNT": "8",
        "FRAMEMODE": "2",
        "SAMPLEMODE": "0",
        "TAPLINE0": '"AD1L, 1, 1000"',
        "TAPLINE1": '"AD2R, -2.5, 900"',
    }
    lines.update(overrides)
    return "[CONFIG]\n" + "".join(f"{k}={v}\n" for k, v in lines.items())


# --------------------------------------------------------------------- sim.acf


def test_sim_acf_geometry(sim: AcfConfig) -> None:
    assert sim.line_count == 512
    assert sim.pixel_count == 544
    assert sim.frame_mode == 2
    assert sim.sample_mode == 0
    assert sim.bigbuf is False
    assert sim.buffer_shape == (1024, 1088)
    assert sim.bytes_per_pixel == 2
    assert sim.buffer_bytes == 1024 * 1088 * 2
    assert [(t.index, t.channel, t.direction) for t in sim.taps] == [
        (0, "AD1", "L"),
        (1, "AD2", "L"),
        (2, "AD3", "L"),
        (3, "AD4", "L"),
    ]


def test_sim_acf_has_every_timing_parameter(sim: AcfConfig) -> None:
    for name in (
        "Exposures",
        "IntCS",
        "IntMS",
        "NoIntMS",
        "ReadOut",
        "AbortExposure",
        "DoFlush",
        "FlushCount",
        "AutoFlush",
        "OpenShutter",
        "WaitCount",
        "Lines",
        "Pixels",
        "OverscanPixels",
        "OverscanLines",
        "PreSkipLines",
        "PostSkipLines",
    ):
        sim.parameter_int(name)
    assert sim.parameter_int("AutoFlush") == 1
    assert sim.parameter_int("FlushCount") == 2
    assert sim.parameter_int("OpenShutter") == 0
    assert sim.parameter_int("Pixels") + sim.parameter_int("OverscanPixels") == sim.pixel_count
    assert sim.parameter_int("Lines") + sim.parameter_int("OverscanLines") == sim.line_count


def test_sim_acf_system_section(sim: AcfConfig) -> None:
    assert sim.system["MOD_PRESENT"] == "117"
    types = {k: v for k, v in sim.system.items() if k.endswith("_TYPE")}
    assert "6" not in types.values()
    assert types["MOD5_TYPE"] == "2"


def test_sim_layout_two_ccds(sim: AcfConfig) -> None:
    ccds = ccd_layout(sim, 2)
    assert [c.shape for c in ccds] == [(1024, 544), (1024, 544)]
    for i, ccd in enumerate(ccds):
        a, b = ccd.amplifiers
        assert (a.name, b.name) == ("A", "B")
        assert ccd.buffer_cols == slice(544 * i, 544 * (i + 1))
        assert a.tap.index == i
        assert b.tap.index == i + 2
        assert (a.flip_rows, a.flip_cols) == (False, False)
        assert (b.flip_rows, b.flip_cols) == (True, False)
        assert a.ccd_rows == slice(0, 512)
        assert b.ccd_rows == slice(512, 1024)
        assert a.ccd_cols == b.ccd_cols == slice(0, 544)


# ---------------------------------------------------------------------- LVM


def test_lvm_geometry(lvm: AcfConfig) -> None:
    assert (lvm.line_count, lvm.pixel_count, lvm.frame_mode) == (2040, 2060, 2)
    assert len(lvm.taps) == 12
    assert lvm.buffer_shape == (4080, 12360)
    assert lvm.buffer_bytes == 100_857_600
    assert lvm.taps[0] == Tap(0, "AD4", "L", -3.0, 1000.0)
    assert lvm.taps[1] == Tap(1, "AD3", "R", -3.0, 1000.0)
    assert lvm.taps[11] == Tap(11, "AD10", "R", 3.0, 1000.0)
    assert [t.index for t in lvm.taps] == list(range(12))


def test_lvm_parameters(lvm: AcfConfig) -> None:
    # PARAMETER19/25 are empty and PARAMETER20/26 are '# ...' labels: not parameters.
    assert len(lvm.parameters) == 26
    assert lvm.parameter("exposures") == "0"
    assert lvm.parameter_int("PIXELS") == 2040
    assert lvm.parameter_int("OverscanPixels") == 20
    assert lvm.parameter_int("overscanlines") == 0  # spelled OverScanLines in the file
    assert lvm.parameter_int("IntMS", default=7) == 7
    with pytest.raises(KeyError, match="IntMS"):
        lvm.parameter("IntMS")


def test_lvm_wire_form(lvm: AcfConfig) -> None:
    config = dict(lvm.config)
    assert config["TAPLINE0"] == "AD4L, -3, 1000"
    assert config["LINE1"] == "RESET; IF ContinuousExposures GOTO Continuous"
    assert config["MOD1/XVN_ENABLE1"] == "1"
    assert config["PARAMETER19"] == ""
    assert not any("\\" in key for key, _ in lvm.config)
    assert lvm.system["MOD_PRESENT"] == "FFF"
    lines = lvm.wire_lines()
    assert lines[0] == "ADXCDS=0"
    assert "TAPLINE0=AD4L, -3, 1000" in lines
    assert len(lines) == len(lvm.config)


def test_lvm_layout(lvm: AcfConfig) -> None:
    ccds = ccd_layout(lvm, 3)
    assert [c.shape for c in ccds] == [(4080, 4120)] * 3
    ccd0 = ccds[0]
    assert [a.tap.index for a in ccd0.amplifiers] == [0, 1, 6, 7]
    assert [a.name for a in ccd0.amplifiers] == ["A", "B", "C", "D"]
    assert [(a.flip_rows, a.flip_cols) for a in ccd0.amplifiers] == [
        (False, False),
        (False, True),
        (True, False),
        (True, True),
    ]
    assert [a.tap.index for a in ccds[2].amplifiers] == [4, 5, 10, 11]
    assert ccds[2].buffer_cols == slice(8240, 12360)
    assert ccds[2].amplifiers[1].ccd_cols == slice(2060, 4120)


def test_wire_round_trip(lvm: AcfConfig) -> None:
    again = parse_wire_lines(lvm.wire_lines(), system=lvm.system)
    assert again.config == lvm.config
    assert again.taps == lvm.taps
    assert again.parameters == lvm.parameters
    assert again.buffer_shape == lvm.buffer_shape


def test_wire_round_trip_sim(sim: AcfConfig) -> None:
    again = parse_wire_lines(sim.wire_lines())
    assert again.config == sim.config
    assert again.parameters == sim.parameters
    text = "[CONFIG]\n" + "\n".join(sim.wire_lines())
    assert parse_acf(text).config == sim.config


# ------------------------------------------------------------------ parsing


def test_parse_comments_sections_and_odd_values() -> None:
    text = (
        "; a comment\n"
        "[CONFIG]\n"
        "# another\n"
        "\n"
        "LINECOUNT=4\n"
        "PIXELCOUNT=3\n"
        'TAPLINE0="ad1l, 2, 500"\n'
        "TAPLINE1=\n"
        'TAPLINE2="AD7R, 1e0, -5.5"\n'
        "MOD2\\XVN_V=-3.5\n"
        'PARAMETER0="IntCS=5"\n'
        "PARAMETER1=\n"
        "PARAMETER2=# Switches\n"
        'PARAMETER3="intms = 17"\n'
        "[OTHER]\n"
        "whatever=1\n"
        "[SYSTEM]\n"
        "MOD1_TYPE=2\n"
    )
    acf = parse_acf(text)
    assert acf.frame_mode == 0
    assert acf.sample_mode == 0
    assert acf.bigbuf is False
    assert acf.taps == (Tap(0, "AD1", "L", 2.0, 500.0), Tap(2, "AD7", "R", 1.0, -5.5))
    assert acf.buffer_shape == (4, 6)
    assert ("MOD2/XVN_V", "-3.5") in acf.config
    assert acf.parameters == {"IntCS": "5", "intms": "17"}
    assert acf.parameter_int("INTMS") == 17
    assert acf.system == {"MOD1_TYPE": "2"}
    assert acf.wire_lines()[2] == "TAPLINE0=ad1l, 2, 500"


def test_thirty_two_bit_and_bigbuf() -> None:
    acf = parse_acf(minimal(SAMPLEMODE="1", BIGBUF="1", FRAMEMODE="0"))
    assert acf.bytes_per_pixel == 4
    assert acf.bigbuf is True
    assert acf.buffer_shape == (10, 16)


def line_of(text: str, key: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if line.startswith(key))


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ({"LINECOUNT": "ten"}, "LINECOUNT"),
        ({"PIXELCOUNT": "0"}, "PIXELCOUNT"),
        ({"FRAMEMODE": "3"}, "FRAMEMODE"),
        ({"SAMPLEMODE": "2"}, "SAMPLEMODE"),
        ({"BIGBUF": "x"}, "BIGBUF"),
        ({"TAPLINE1": '"AD4X, a, b"'}, "TAPLINE1"),
        ({"TAPLINE0": '"AD4L, 1"'}, "TAPLINE0"),
        ({"PARAMETER3": '"bad name=1"'}, "PARAMETER3"),
        ({"TAPLINE2": '"AD3L, 1, 0"'}, "FRAMEMODE"),  # three taps in split mode
    ],
)
def test_errors_name_line_and_key(override: dict[str, str], key: str) -> None:
    text = minimal(**override)
    with pytest.raises(AcfError) as info:
        parse_acf(text, source="x.acf")
    assert info.value.line == line_of(text, key)
    assert f"line {info.value.line}" in str(info.value)
    assert key in str(info.value)
    assert "x.acf" in str(info.value)


def test_error_line_without_equals() -> None:
    text = minimal() + "NOT A KEY VALUE LINE\n"
    with pytest.raises(AcfError, match="line 8") as info:
        parse_acf(text)
    assert info.value.line == 8


def test_error_duplicate_key_and_parameter() -> None:
    text = minimal() + "linecount=12\n"
    with pytest.raises(AcfError, match="duplicate") as info:
        parse_acf(text)
    assert info.value.line == 8
    text = minimal(PARAMETER0='"Lines=1"', PARAMETER1='"LINES=2"')
    with pytest.raises(AcfError, match="already defined") as info:
        parse_acf(text)
    assert info.value.line == line_of(text, "PARAMETER1")


@pytest.mark.parametrize("missing", ["LINECOUNT", "PIXELCOUNT"])
def test_error_missing_required(missing: str) -> None:
    text = "\n".join(line for line in minimal().splitlines() if not line.startswith(missing))
    with pytest.raises(AcfError, match=missing):
        parse_acf(text)


def test_error_no_config_no_taps_content_before_section() -> None:
    with pytest.raises(AcfError, match=r"\[CONFIG\]"):
        parse_acf("[SYSTEM]\nA=1\n")
    with pytest.raises(AcfError, match="TAPLINE"):
        parse_acf("[CONFIG]\nLINECOUNT=1\nPIXELCOUNT=1\nTAPLINE0=\n")
    with pytest.raises(AcfError, match="line 1"):
        parse_acf("LINECOUNT=1\n[CONFIG]\n")


def test_parameter_int_not_an_integer() -> None:
    acf = parse_acf(minimal(PARAMETER0='"Speed=fast"'))
    with pytest.raises(AcfError, match="Speed"):
        acf.parameter_int("speed")


# ----------------------------------------------------------------- geometry


def ramp_buffer(acf: AcfConfig) -> np.ndarray:
    """Each tap block holds 100000*(tap+1) + 1000*row + col (readout coordinates)."""
    buf = np.zeros(acf.buffer_shape, dtype=np.int64)
    for j, (rows, cols) in enumerate(tap_regions(acf)):
        r = np.arange(rows.stop - rows.start)[:, None]
        c = np.arange(cols.stop - cols.start)[None, :]
        buf[rows, cols] = 100_000 * (j + 1) + 1000 * r + c
    return buf


def test_tap_regions_split_and_not() -> None:
    split = parse_acf(minimal(TAPLINE2='"AD3L, 1, 0"', TAPLINE3='"AD4R, 1, 0"'))
    assert tap_regions(split) == (
        (slice(0, 10), slice(0, 8)),
        (slice(0, 10), slice(8, 16)),
        (slice(10, 20), slice(0, 8)),
        (slice(10, 20), slice(8, 16)),
    )
    top = parse_acf(minimal(FRAMEMODE="1"))
    assert tap_regions(top) == ((slice(0, 10), slice(0, 8)), (slice(0, 10), slice(8, 16)))


def test_assemble_split_four_amps() -> None:
    # One CCD, four amplifiers: A (L, bottom left), B (R, bottom right),
    # C (L, top left), D (R, top right).
    acf = parse_acf(minimal(TAPLINE2='"AD3L, 1, 0"', TAPLINE3='"AD4R, 1, 0"'))
    buf = ramp_buffer(acf)
    (ccd,) = ccd_layout(acf, 1)
    assert ccd.shape == (20, 16)
    image = assemble_ccd(buf, ccd)
    # The first pixel each amplifier read lands in its physical corner.
    assert image[0, 0] == 100_000  # A: bottom-left corner
    assert image[0, 15] == 200_000  # B reads from the right
    assert image[19, 0] == 300_000  # C reads from the top
    assert image[19, 15] == 400_000  # D: top right
    # Moving away from the amplifier increases the pixel (column) and line (row) index.
    assert image[0, 1] == 100_001
    assert image[0, 14] == 200_001
    assert image[1, 0] == 101_000
    assert image[18, 0] == 301_000
    assert image[18, 14] == 401_001
    # Overscan (the last readout columns) sits far from each amplifier.
    assert image[0, 7] == 100_007
    assert image[0, 8] == 200_007
    a = amplifier_data(buf, ccd.amplifiers[3])
    assert a.shape == (10, 8)
    assert a[0, 0] == 400_000
    assert np.shares_memory(a, buf)
    assert not np.shares_memory(image, buf)


def test_assemble_two_ccds_non_split() -> None:
    acf = parse_acf(minimal(FRAMEMODE="0", TAPLINE2='"AD3L, 1, 0"', TAPLINE3='"AD4R, 1, 0"'))
    buf = ramp_buffer(acf)
    ccds = ccd_layout(acf, 2)
    assert [c.shape for c in ccds] == [(10, 16), (10, 16)]
    assert not any(a.flip_rows for c in ccds for a in c.amplifiers)
    second = assemble_ccd(buf, ccds[1])
    assert second[0, 0] == 300_000
    assert second[0, 15] == 400_000
    assert second[9, 0] == 309_000


def test_assemble_sim_acf(sim: AcfConfig) -> None:
    buf = ramp_buffer(sim).astype(np.int64)
    ccd1 = assemble_ccd(buf, ccd_layout(sim, 2)[1])
    assert ccd1[0, 0] == 200_000  # tap 1, first pixel read
    assert ccd1[1023, 0] == 400_000  # tap 3 read from the top
    assert ccd1[512, 543] == 400_000 + 511 * 1000 + 543


def test_layout_errors() -> None:
    four = parse_acf(minimal(TAPLINE2='"AD3L, 1, 0"', TAPLINE3='"AD4R, 1, 0"'))
    with pytest.raises(AcfError, match="3 CCDs"):
        ccd_layout(four, 3)
    with pytest.raises(AcfError, match="even number of taps per CCD"):
        ccd_layout(four, 4)
    with pytest.raises(ValueError, match="n_ccds"):
        ccd_layout(four, 0)
    (ccd,) = ccd_layout(four, 1)
    with pytest.raises(ValueError, match="does not cover"):
        assemble_ccd(np.zeros((20, 15)), ccd)
