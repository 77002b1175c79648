import numpy as np
import pytest

from serving import oip
from serving.config import LimitsConfig
from serving.requests import ApiError, decode_json, parse_predict

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


def _infer(data, shape=None, datatype="BYTES", name="text", outputs=None):
    body = {"inputs": [{"name": name, "datatype": datatype, "shape": shape or [len(data)], "data": data}]}
    if outputs is not None:
        body["outputs"] = [{"name": o} for o in outputs]
    return body


def test_oip_decode_round_trip():
    texts, wanted, rid = oip.decode_infer({**_infer(["a", "b"]), "id": "r1"}, LIMITS)
    assert texts == ["a", "b"] and wanted == ["label", "probabilities"] and rid == "r1"
    texts, wanted, _ = oip.decode_infer(_infer([["a"], ["b"]], shape=[2, 1], outputs=["label"]), LIMITS)
    assert texts == ["a", "b"] and wanted == ["label"]
    out = oip.encode_infer(
        "m", "1", "r1", ["x", "y"], np.array([[0.25, 0.75], [1.0, 0.0]]), ["label", "probabilities"]
    )
    assert out["outputs"][0] == {"name": "label", "datatype": "BYTES", "shape": [2], "data": ["x", "y"]}
    assert out["outputs"][1]["shape"] == [2, 2] and out["outputs"][1]["data"] == [0.25, 0.75, 1.0, 0.0]


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"inputs": []}, "missing_field"),
        (_infer(["a"], name="txt"), "unknown_input"),
        (_infer(["a"], datatype="FP32"), "invalid_datatype"),
        (_infer(["a", "b"], shape=[3]), "invalid_shape"),
        (_infer(["a"], outputs=["logits"]), "unknown_output"),
        (_infer([1]), "invalid_field"),
        ("nope", "invalid_body"),
    ],
)
def test_oip_decode_errors(body, code):
    assert _err(oip.decode_infer, body, LIMITS).code == code
