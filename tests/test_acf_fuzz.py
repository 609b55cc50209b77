"""Fuzzing the ACF parser: any text gives an AcfConfig or an AcfError, never another error.

An ACF comes from a user's disk or a controller's memory, so the parser is an input
boundary: whatever it is fed, callers must be able to catch one exception type, and
an error about a line must say which line.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devices.archon.acf import AcfConfig, AcfError, parse_acf, parse_wire_lines

SIM_ACF = Path(__file__).resolve().parents[1] / "deploy" / "instruments" / "sim.acf"
SIM_LINES = SIM_ACF.read_text().splitlines()
FUZZ = settings(max_examples=150, deadline=2000, suppress_health_check=[HealthCheck.too_slow])

_KEYS = ("LINECOUNT", "PIXELCOUNT", "FRAMEMODE", "SAMPLEMODE", "BIGBUF", "TAPLINE3", "TAPLINE7")
_KEYS += ("PARAMETER1", "PARAMETER40", "MOD2\\XVN_V1", "[CONFIG]", "[SYSTEM]", "")
_VALUES = ("0", "1", "2", "3", "-1", "99999999999999999999", "1e3", '"AD1L, 1, 1000"', "")
_VALUES += ('"AD9R,-3,1e999"', '"Lines=5"', '"lines=x"', '"9x=1"', "=", '"', "\\x00")


def _parse(text: str) -> AcfConfig | AcfError:
    try:
        return parse_acf(text, source="fuzz")
    except AcfError as exc:
        return exc


def _check_error(result: AcfConfig | AcfError, n_lines: int) -> None:
    if isinstance(result, AcfError) and result.line is not None:
        assert 1 <= result.line <= n_lines, result
        assert re.search(rf"\bline {result.line}\b", str(result)), result


_line = st.one_of(
    st.text(max_size=60),
    st.tuples(st.sampled_from(_KEYS), st.sampled_from(_VALUES)).map(lambda kv: "=".join(kv)),
    st.tuples(st.text(max_size=12), st.text(max_size=20)).map(lambda kv: "=".join(kv)),
)


@st.composite
def _mutated_sim_acf(draw: st.DrawFn) -> list[str]:
    """sim.acf with lines deleted, duplicated, garbled or replaced by random KEY=VALUE."""
    lines = list(SIM_LINES)
    for _ in range(draw(st.integers(1, 6))):
        i = draw(st.integers(0, len(lines) - 1))
        op = draw(st.sampled_from(["delete", "duplicate", "garble", "replace", "insert"]))
        if op == "delete":
            del lines[i]
        elif op == "duplicate":
            lines.insert(i, lines[i])
        elif op == "garble":
            pos = draw(st.integers(0, len(lines[i])))
            lines[i] = lines[i][:pos] + draw(st.text(max_size=8)) + lines[i][pos + 1 :]
        else:
            new = draw(_line)
            if op == "replace":
                lines[i] = new
            else:
                lines.insert(i, new)
        if not lines:
            lines = [""]
    return lines


@FUZZ
@given(text=st.text(max_size=400))
def test_random_text(text: str) -> None:
    _check_error(_parse(text), len(text.splitlines()))


@FUZZ
@given(lines=st.lists(_line, max_size=30))
def test_random_sections_of_key_values(lines: list[str]) -> None:
    text = "\n".join(["[CONFIG]", *lines])
    _check_error(_parse(text), len(text.splitlines()))


@FUZZ
@given(lines=_mutated_sim_acf())
def test_mutated_sim_acf(lines: list[str]) -> None:
    text = "\n".join(lines)
    _check_error(_parse(text), len(text.splitlines()))


@FUZZ
@given(lines=st.lists(_line, max_size=30))
def test_random_wire_lines(lines: list[str]) -> None:
    try:
        result: AcfConfig | AcfError = parse_wire_lines(lines, source="fuzz")
    except AcfError as exc:
        result = exc
    _check_error(result, len(lines))


@FUZZ
@given(data=st.data())
def test_a_broken_config_line_is_named(data: st.DataObject) -> None:
    start = SIM_LINES.index("[CONFIG]") + 1
    stop = SIM_LINES.index("", start)
    i = data.draw(st.integers(start, stop - 1))
    if not SIM_LINES[i].strip() or SIM_LINES[i].lstrip()[0] in ";#":
        return
    junk = data.draw(st.from_regex(r"[A-Za-z_][A-Za-z _-]{0,11}", fullmatch=True))
    lines = [*SIM_LINES[:i], junk, *SIM_LINES[i + 1 :]]
    with pytest.raises(AcfError, match=rf"line {i + 1}\b") as raised:
        parse_acf("\n".join(lines), source="fuzz")
    assert raised.value.line == i + 1


def test_a_duplicated_key_names_both_lines() -> None:
    i = next(n for n, line in enumerate(SIM_LINES) if line.startswith("PIXELCOUNT="))
    lines = [*SIM_LINES[: i + 1], SIM_LINES[i], *SIM_LINES[i + 1 :]]
    with pytest.raises(AcfError, match=rf"line {i + 2}\b.*first on line {i + 1}\b") as raised:
        parse_acf("\n".join(lines), source="fuzz")
    assert raised.value.line == i + 2
    assert isinstance(raised.value, ValueError)
