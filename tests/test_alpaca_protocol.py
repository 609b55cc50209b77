"""The sans-IO Alpaca core against recorded answers (alpaca-simulators 1.3.2 and the spec).

The bodies below were recorded from the simulator on 127.0.0.1 (its deviations from
shared/design/alpaca.md included) or written from the spec; nothing here opens a
socket.
"""

from __future__ import annotations

import pickle
from datetime import UTC, datetime

import pytest

from devices.alpaca import errors
from devices.alpaca.errors import (
    AlpacaActionNotImplementedError,
    AlpacaDeviceError,
    AlpacaDriverError,
    AlpacaError,
    AlpacaHttpError,
    AlpacaInvalidOperationError,
    AlpacaInvalidValueError,
    AlpacaInvalidWhileParkedError,
    AlpacaInvalidWhileSlavedError,
    AlpacaNotConnectedError,
    AlpacaNotImplementedError,
    AlpacaOperationCancelledError,
    AlpacaProtocolError,
    AlpacaTimeoutError,
    AlpacaValueNotSetError,
    DeviceProtocolError,
    DeviceRefusedError,
    DeviceUnsupportedError,
    error_for_number,
)
from devices.alpaca.protocol import (
    UINT32_MAX,
    AlpacaRequest,
    DeviceAddress,
    RequestBuilder,
    as_bool,
    as_datetime,
    as_float,
    as_int,
    as_str_list,
    encode_value,
    parse_reply,
)
from devices.base import DeviceError, DeviceStateError, DeviceTimeoutError

CAMERA = DeviceAddress("127.0.0.1", 11111, "camera", 0)
JSON = "application/json"


def _get(member: str = "ccdtemperature", tid: int = 19) -> AlpacaRequest:
    builder = RequestBuilder(client_id=5)
    builder._last_transaction = tid - 1
    return builder.get(CAMERA, member)


def _put(member: str = "binx", tid: int = 13, **params: bool | int | float | str) -> AlpacaRequest:
    builder = RequestBuilder(client_id=5)
    builder._last_transaction = tid - 1
    return builder.put(CAMERA, member, params)


# --- requests -----------------------------------------------------------------------------


def test_get_puts_pascal_case_keys_and_ids_in_the_query() -> None:
    builder = RequestBuilder(client_id=77)
    request = builder.get(CAMERA, "ccdtemperature")
    assert request.method == "GET"
    assert request.path == "/api/v1/camera/0/ccdtemperature"
    assert request.params == {"ClientID": "77", "ClientTransactionID": "1"}
    assert request.form == {}
    assert request.headers["Accept"] == JSON
    assert request.idempotent


def test_put_sends_a_form_body_and_is_never_idempotent() -> None:
    builder = RequestBuilder(client_id=77)
    request = builder.put(CAMERA, "startexposure", {"Duration": 1.5, "Light": False})
    assert request.method == "PUT"
    assert request.params == {}
    assert request.form == {
        "Duration": "1.5",
        "Light": "False",
        "ClientID": "77",
        "ClientTransactionID": "1",
    }
    assert not request.idempotent


def test_transaction_ids_rise_from_one_per_client_and_wrap_past_uint32() -> None:
    first, second = RequestBuilder(client_id=1), RequestBuilder(client_id=2)
    ids = [first.get(CAMERA, "name").client_transaction_id for _ in range(3)]
    assert ids == [1, 2, 3]
    assert second.get(CAMERA, "name").client_transaction_id == 1
    first._last_transaction = UINT32_MAX - 1
    assert first.next_transaction_id() == UINT32_MAX
    assert first.next_transaction_id() == 1


def test_client_id_is_a_random_non_zero_uint32_unless_given() -> None:
    ids = {RequestBuilder().client_id for _ in range(50)}
    assert all(1 <= i <= UINT32_MAX for i in ids)
    assert len(ids) > 40
    with pytest.raises(ValueError, match="non-zero uint32"):
        RequestBuilder(client_id=0)
    with pytest.raises(ValueError, match="non-zero uint32"):
        RequestBuilder(client_id=UINT32_MAX + 1)


@pytest.mark.parametrize("key", ["binx", "BINX_", "Bin X", "ClientTransactionID", "ClientID", ""])
def test_keys_that_are_not_pascal_case_are_refused_before_sending(key: str) -> None:
    with pytest.raises(ValueError, match="PascalCase"):
        RequestBuilder().put(CAMERA, "binx", {key: 2})


@pytest.mark.parametrize("member", ["BinX", "bin-x", "", "../name", "name?x=1"])
def test_members_must_be_lower_case_words(member: str) -> None:
    with pytest.raises(ValueError, match="lower case"):
        RequestBuilder().get(CAMERA, member)


def test_addresses_refuse_unknown_types_and_name_themselves() -> None:
    with pytest.raises(ValueError, match="unknown Alpaca device type"):
        DeviceAddress("127.0.0.1", 1, "Camera", 0)
    with pytest.raises(ValueError, match="uint32"):
        DeviceAddress("127.0.0.1", 1, "camera", -1)
    assert str(CAMERA) == "camera 0 at 127.0.0.1:11111"
    assert str(DeviceAddress("::1", 80, "focuser", 2)) == "focuser 2 at [::1]:80"


@pytest.mark.parametrize(
    ("value", "text"),
    [(True, "True"), (False, "False"), (3, "3"), (0.1, "0.1"), (1e-7, "1e-07"), ("Red", "Red")],
)
def test_values_are_encoded_without_losing_precision(value: bool | float | str, text: str) -> None:
    assert encode_value(value) == text
    if isinstance(value, float):
        assert float(encode_value(value)) == value


def test_non_finite_numbers_are_refused() -> None:
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="non-finite"):
            encode_value(bad)


# --- answers: the order of the checks --------------------------------------------------------


def test_a_good_read_returns_its_value_and_transaction_ids() -> None:
    body = (
        b'{"ClientTransactionID":19,"ServerTransactionID":7,"ErrorNumber":0,'
        b'"ErrorMessage":"","Value":-20.0}'
    )
    reply = parse_reply(_get(), 200, "application/json; charset=utf-8", body)
    assert reply.value == -20.0
    assert reply.has_value
    assert (reply.client_transaction_id, reply.server_transaction_id) == (19, 7)


def test_a_put_answer_without_value_is_fine() -> None:
    body = b'{"ClientTransactionID":16,"ServerTransactionID":4,"ErrorNumber":0,"ErrorMessage":""}'
    reply = parse_reply(_put("startexposure", 16), 200, JSON, body)
    assert reply.value is None
    assert not reply.has_value


def test_a_read_without_value_is_a_protocol_error() -> None:
    body = b'{"ClientTransactionID":19,"ServerTransactionID":7,"ErrorNumber":0,"ErrorMessage":""}'
    with pytest.raises(AlpacaProtocolError, match="without Value") as info:
        parse_reply(_get(), 200, JSON, body)
    assert info.value.member == "ccdtemperature"
    assert "camera 0 at 127.0.0.1:11111" in str(info.value)


def test_http_400_keeps_its_text_body() -> None:
    body = b"Invalid parameters: BinX must be an integer"
    with pytest.raises(AlpacaHttpError) as info:
        parse_reply(_put(), 400, "text/plain", body)
    assert info.value.status == 400
    assert info.value.body == body.decode()
    assert "HTTP 400: Invalid parameters" in str(info.value)
    assert str(info.value).startswith("camera 0 at 127.0.0.1:11111: binx:")


def test_http_500_is_checked_before_the_content_type() -> None:
    with pytest.raises(AlpacaHttpError, match="HTTP 500: driver crashed") as info:
        parse_reply(_get(), 500, "text/html", b"driver crashed")
    assert isinstance(info.value, DeviceError)


def test_simulator_422_for_a_bad_value_is_an_http_error() -> None:
    # alpaca-simulators (FastAPI) answers PUT binx BinX=abc like this, not with 400.
    body = (
        b'{"detail":[{"type":"int_parsing","loc":["body","BinX"],"msg":"Input should be a '
        b'valid integer, unable to parse string as an integer","input":"abc"}]}'
    )
    with pytest.raises(AlpacaHttpError) as info:
        parse_reply(_put(BinX="abc"), 422, JSON, body)
    assert info.value.status == 422
    assert "int_parsing" in info.value.body


def test_simulator_422_for_a_mis_cased_key() -> None:
    body = (
        b'{"detail":[{"type":"missing","loc":["body","BinX"],"msg":"Field required","input":null}]}'
    )
    with pytest.raises(AlpacaHttpError, match="Field required"):
        parse_reply(_put(tid=14), 422, JSON, body)


@pytest.mark.parametrize("content_type", ["text/plain", "application/imagebytes", None, ""])
def test_a_200_that_is_not_json_is_a_protocol_error(content_type: str | None) -> None:
    body = b'{"ErrorNumber":0,"ErrorMessage":"","Value":1}'
    with pytest.raises(AlpacaProtocolError, match="content type"):
        parse_reply(_get(), 200, content_type, body)


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b'{"ErrorNumber":0,"Value":', "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[1, 2]", "not an object"),
        (b'{"ErrorMessage":"","Value":1}', "without ErrorNumber"),
        (b'{"ErrorNumber":"0","ErrorMessage":"","Value":1}', "ErrorNumber is not an integer"),
        (b'{"ErrorNumber":true,"ErrorMessage":"","Value":1}', "ErrorNumber is not an integer"),
        (b'{"ErrorNumber":0,"ErrorMessage":5,"Value":1}', "ErrorMessage is not a string"),
        (b'{"ErrorNumber":0,"ClientTransactionID":-1,"Value":1}', "not a uint32"),
    ],
)
def test_broken_json_answers_are_protocol_errors(body: bytes, match: str) -> None:
    with pytest.raises(AlpacaProtocolError, match=match) as info:
        parse_reply(_get(), 200, JSON, body)
    assert info.value.raw == body[:256]
    assert isinstance(info.value, DeviceProtocolError)


def test_a_crossed_answer_is_refused_even_when_it_carries_an_error() -> None:
    body = b'{"ErrorNumber":1025,"ErrorMessage":"bad","ClientTransactionID":18,"Value":0}'
    with pytest.raises(AlpacaProtocolError, match=r"echoes ClientTransactionID 18.*was 19"):
        parse_reply(_get(tid=19), 200, JSON, body)


def test_an_echo_of_zero_is_taken_as_not_echoed() -> None:
    # The simulator answers every refused PUT with ClientTransactionID 0.
    body = (
        b'{"ErrorNumber":1026,"ErrorMessage":"Invalid binning value: 99",'
        b'"ClientTransactionID":0,"ServerTransactionID":3}'
    )
    with pytest.raises(AlpacaValueNotSetError):
        parse_reply(_put(BinX=99, tid=15), 200, JSON, body)
    no_echo = b'{"ErrorNumber":0,"ErrorMessage":"","Value":3}'
    assert parse_reply(_get(), 200, JSON, no_echo).value == 3


# --- answers: ErrorNumber to the typed error -------------------------------------------------


def test_simulator_unknown_device_number_is_200_with_not_implemented() -> None:
    body = (
        b'{"ErrorNumber":1024,"ErrorMessage":"Device camera:7 not found",'
        b'"ClientTransactionID":11,"ServerTransactionID":2}'
    )
    request = RequestBuilder(client_id=5)
    request._last_transaction = 10
    with pytest.raises(AlpacaNotImplementedError) as info:
        parse_reply(
            request.get(DeviceAddress("127.0.0.1", 11111, "camera", 7), "name"), 200, JSON, body
        )
    error = info.value
    assert (error.number, error.message) == (0x400, "Device camera:7 not found")
    assert "camera 7 at 127.0.0.1:11111: name: ASCOM error 0x400 (NotImplemented)" in str(error)
    assert isinstance(error, DeviceUnsupportedError)


def test_simulator_start_exposure_while_busy_is_0x40c() -> None:
    body = (
        b'{"ErrorNumber":1036,"ErrorMessage":"Camera is not idle",'
        b'"ClientTransactionID":0,"ServerTransactionID":5}'
    )
    with pytest.raises(AlpacaActionNotImplementedError, match="Camera is not idle") as info:
        parse_reply(_put("startexposure", 17, Duration=2.0, Light=False), 200, JSON, body)
    assert info.value.number == 0x40C
    assert info.value.member == "startexposure"


def test_simulator_invalid_binx_is_value_not_set() -> None:
    body = (
        b'{"ErrorNumber":1026,"ErrorMessage":"Invalid binning value: 99",'
        b'"ClientTransactionID":0,"ServerTransactionID":3}'
    )
    with pytest.raises(AlpacaValueNotSetError) as info:
        parse_reply(_put(BinX=99), 200, JSON, body)
    assert info.value.number == 0x402
    assert isinstance(info.value, DeviceRefusedError)


@pytest.mark.parametrize(
    ("number", "cls", "kind"),
    [
        (0x400, AlpacaNotImplementedError, DeviceUnsupportedError),
        (0x401, AlpacaInvalidValueError, DeviceRefusedError),
        (0x402, AlpacaValueNotSetError, DeviceRefusedError),
        (0x407, AlpacaNotConnectedError, DeviceStateError),
        (0x408, AlpacaInvalidWhileParkedError, DeviceStateError),
        (0x409, AlpacaInvalidWhileSlavedError, DeviceStateError),
        (0x40B, AlpacaInvalidOperationError, DeviceStateError),
        (0x40C, AlpacaActionNotImplementedError, DeviceUnsupportedError),
        (0x40E, AlpacaOperationCancelledError, DeviceRefusedError),
        (0x500, AlpacaDriverError, DeviceRefusedError),
        (0x7FF, AlpacaDriverError, DeviceRefusedError),
        (0xFFF, AlpacaDriverError, DeviceRefusedError),
    ],
)
def test_every_error_number_has_its_class_and_kind(
    number: int, cls: type[AlpacaDeviceError], kind: type[DeviceError]
) -> None:
    body = b'{"ErrorNumber":%d,"ErrorMessage":"text %d","ClientTransactionID":19}' % (
        number,
        number,
    )
    with pytest.raises(cls) as info:
        parse_reply(_get(), 200, JSON, body)
    error = info.value
    assert type(error) is cls
    assert isinstance(error, AlpacaError)
    assert isinstance(error, kind)
    assert isinstance(error, DeviceError)
    assert error.number == number
    assert error.message == f"text {number}"


@pytest.mark.parametrize("number", [0x403, 0x40A, 0x40D, 0x4FF, 0x1000, 7])
def test_unassigned_numbers_keep_the_base_class_and_the_number(number: int) -> None:
    error = error_for_number(number, "odd", device="d", member="m")
    assert type(error) is AlpacaDeviceError
    assert error.number == number


def test_error_number_zero_is_not_an_error() -> None:
    with pytest.raises(ValueError, match="success"):
        error_for_number(0, "")


def test_the_module_docstring_lists_every_error_class() -> None:
    doc = errors.__doc__ or ""
    classes = [name for name in errors.__all__ if name.startswith("Alpaca")]
    assert classes
    missing = [name for name in classes if name not in doc]
    assert not missing


@pytest.mark.parametrize(
    "error",
    [
        error_for_number(0x40C, "Camera is not idle", device="camera 0 at h:1", member="x"),
        AlpacaHttpError(422, "body", device="camera 0 at h:1", member="binx"),
        AlpacaProtocolError("bad", raw=b"\x00\x01", device="camera 0 at h:1", member="imagearray"),
        AlpacaTimeoutError(2.0, device="camera 0 at h:1", member="name", attempts=3, total=6.2),
    ],
)
def test_errors_survive_pickling_whole(error: AlpacaError) -> None:
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is type(error)
    assert str(again) == str(error)
    assert again.__dict__ == error.__dict__


def test_a_timeout_is_also_the_builtin_timeout_error() -> None:
    error = AlpacaTimeoutError(2.0, device="camera 0 at h:1", member="name", attempts=3, total=6.2)
    assert isinstance(error, DeviceTimeoutError)
    assert isinstance(error, TimeoutError)
    assert "2 s per attempt, 6.20 s in all over 3 attempts" in str(error)


# --- typed values ---------------------------------------------------------------------------


def test_typed_values_refuse_what_json_allows_but_the_member_does_not() -> None:
    request = _get()
    assert as_bool(request, True) is True
    with pytest.raises(AlpacaProtocolError, match="a boolean"):
        as_bool(request, 1)
    assert as_int(request, 4) == 4
    assert as_int(request, 4.0) == 4
    for bad in (True, 4.5, "4", None):
        with pytest.raises(AlpacaProtocolError, match="an integer"):
            as_int(request, bad)
    assert as_float(request, 10) == 10.0
    with pytest.raises(AlpacaProtocolError, match="a number"):
        as_float(request, False)
    assert as_str_list(request, ["Fast", "Normal"]) == ["Fast", "Normal"]
    with pytest.raises(AlpacaProtocolError, match="a list of strings"):
        as_str_list(request, ["Fast", 2])


@pytest.mark.parametrize(
    "text",
    [
        "2026-11-30T07:16:25.457766+00:00",  # the simulator
        "2026-11-30T07:16:25.457766",  # the spec's FITS form, UTC implied
        "2026-11-30T07:16:25.4577660Z",
        "2026-11-30T08:16:25.457766+01:00",
    ],
)
def test_exposure_start_times_become_aware_utc(text: str) -> None:
    stamp = as_datetime(_get("lastexposurestarttime"), text)
    assert stamp == datetime(2026, 11, 30, 7, 16, 25, 457766, tzinfo=UTC)


def test_a_date_that_is_not_iso_is_a_protocol_error() -> None:
    with pytest.raises(AlpacaProtocolError, match="ISO 8601"):
        as_datetime(_get("lastexposurestarttime"), "30/11/2026 07:16")


def test_invalid_while_parked_is_both_vendor_and_state() -> None:
    with pytest.raises(DeviceStateError):
        raise AlpacaInvalidWhileParkedError(0x408, "parked", device="telescope 0 at h:1")
    with pytest.raises(AlpacaError):
        raise AlpacaInvalidWhileSlavedError(0x409, "slaved", device="dome 0 at h:1")
