import pytest

from serving.config import LimitsConfig
from serving.errors_and_auth import ApiError
from serving.requests import decode_json, parse_predict

LIMITS = LimitsConfig(max_inputs=3, max_chars=10)


def _err(fn, *args):
    with pytest.raises(ApiError) as e:
        fn(*args)
    return e.value


def test_decode_json_errors_name_the_problem():
    assert _err(decode_json, b"\xff").body() == {
        "error": {"code": "invalid_encoding", "message": "request body is not valid UTF-8 (byte 0)"}
    }
    e = _err(decode_json, b'{"a": ')
    assert (e.status, e.code) == (400, "malformed_json") and "line 1" in e.message
    assert _err(decode_json, b"  ").code == "empty_body"
    assert decode_json(b'{"inputs": ["x"]}') == {"inputs": ["x"]}


@pytest.mark.parametrize(
    ("payload", "code", "fragment"),
    [
        ([], "invalid_body", "got a list"),
        ({}, "missing_field", "inputs is required"),
        ({"inputs": "x"}, "invalid_field", "inputs must be a list of strings, got a string"),
        ({"inputs": []}, "empty_inputs", "inputs is empty"),
        ({"inputs": ["a", None]}, "invalid_field", "inputs[1] must be a string, got null"),
        ({"inputs": ["a", "b", "c", "d"]}, "too_many_inputs", "has 4 texts; the limit is 3"),
        ({"inputs": ["x" * 11]}, "text_too_long", "inputs[0] has 11 characters; the limit is 10"),
        ({"inputs": [" "]}, "empty_text", "inputs[0] is empty or blank"),
        ({"inputs": ["a"], "top_k": True}, "invalid_field", "top_k must be an integer from 1 to 5"),
        ({"inputs": ["a"], "top_k": 6}, "invalid_field", "top_k"),
    ],
)
def test_predict_validation(payload, code, fragment):
    e = _err(parse_predict, payload, LIMITS, 5)
    assert e.code == code and fragment in e.message and 400 <= e.status < 500


def test_predict_accepts_extra_fields_and_defaults_top_k():
    req = parse_predict({"inputs": ["a"], "user": "u1"}, LIMITS, 5)
    assert req.texts == ["a"] and req.top_k == 3 and req.body["user"] == "u1"


def test_a_binary_task_gets_its_two_labels_unasked_and_a_clear_error_for_more():
    assert LIMITS.top_k > 2
    assert parse_predict({"inputs": ["a"]}, LIMITS, 2).top_k == 2
    e = _err(parse_predict, {"inputs": ["a"], "top_k": 3}, LIMITS, 2)
    assert (e.status, e.code) == (422, "invalid_field") and "from 1 to 2" in e.message


def test_json_nested_beyond_the_decoders_limit_is_a_client_error():
    deep = b'{"inputs": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    e = _err(decode_json, deep)
    assert (e.status, e.code) == (400, "malformed_json")
