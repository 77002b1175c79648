"""The Open Inference Protocol codec, against what NVIDIA's own client sends and reads."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.http._utils import _get_inference_request

from serving import oip
from serving.config import LimitsConfig
from serving.errors_and_auth import ApiError

LIMITS = LimitsConfig(max_inputs=3, max_chars=10)


def _err(*args) -> ApiError:
    with pytest.raises(ApiError) as e:
        oip.decode_infer(*args)
    return e.value


def _json(data, shape=None, datatype="BYTES", name="text", outputs=None, **extra) -> bytes:
    body = {"inputs": [{"name": name, "datatype": datatype, "shape": shape or [len(data)], "data": data}]}
    if outputs is not None:
        body["outputs"] = [{"name": o} for o in outputs]
    return json.dumps({**body, **extra}).encode()


def _client_request(texts, *, binary_in=True, outputs=None, binary_out=True):
    """The body and header length tritonclient.http sends (its defaults: binary both ways)."""
    inp = httpclient.InferInput("text", [len(texts)], "BYTES")
    inp.set_data_from_numpy(np.array(texts, dtype=np.object_), binary_data=binary_in)
    outs = [httpclient.InferRequestedOutput(o, binary_data=binary_out) for o in outputs] if outputs else None
    body, header_length = _get_inference_request([inp], "r1", outs, 0, False, False, 0, None, None)
    return body, None if header_length is None else str(header_length)


def test_json_request_round_trip():
    req = oip.decode_infer(_json(["a", "b"], id="r1"), None, LIMITS)
    assert req.texts == ["a", "b"] and req.request_id == "r1"
    assert req.outputs == (oip.RequestedOutput("label", False), oip.RequestedOutput("probabilities", False))
    req = oip.decode_infer(_json([["a"], ["b"]], shape=[2, 1], outputs=["label"]), None, LIMITS)
    assert req.texts == ["a", "b"] and [o.name for o in req.outputs] == ["label"]
    body, header = oip.encode_infer(
        "m",
        "1",
        "r1",
        ["x", "y"],
        np.array([[0.25, 0.75], [1.0, 0.0]]),
        req.outputs + (oip.RequestedOutput("probabilities", False),),
    )
    assert header is None
    out = json.loads(body)["outputs"]
    assert out[0] == {"name": "label", "datatype": "BYTES", "shape": [2], "data": ["x", "y"]}
    assert out[1]["shape"] == [2, 2] and out[1]["data"] == [0.25, 0.75, 1.0, 0.0]


def test_tritonclient_defaults_binary_in_and_out():
    body, header = _client_request(["a tree", "ünïcode"])
    assert header is not None  # the binary tensor data extension, as the client sends it by default
    req = oip.decode_infer(body, header, LIMITS)
    assert req.texts == ["a tree", "ünïcode"]
    assert all(o.binary for o in req.outputs) and len(req.outputs) == 2  # binary_data_output
    probs = np.array([[0.1, 0.9], [0.8, 0.2]], dtype=np.float32)
    content, length = oip.encode_infer("m", "1", "r1", ["b", "a"], probs, req.outputs)
    result = httpclient.InferResult.from_response_body(content, header_length=length)
    assert list(result.as_numpy("label")) == [b"b", b"a"]
    np.testing.assert_array_equal(result.as_numpy("probabilities"), probs)


def test_binary_and_json_outputs_mix_as_requested():
    body, header = _client_request(["a"], outputs=["label"], binary_out=False)
    req = oip.decode_infer(body, header, LIMITS)
    assert req.outputs == (oip.RequestedOutput("label", False),)
    body, header = _client_request(["a"], binary_in=False, outputs=["probabilities"], binary_out=True)
    assert header is None  # JSON input, binary output requested
    req = oip.decode_infer(body, header, LIMITS)
    content, length = oip.encode_infer("m", "1", "r1", ["x"], np.array([[0.5, 0.5]]), req.outputs)
    assert length is not None and json.loads(content[:length])["outputs"][0]["parameters"] == {
        "binary_data_size": 8
    }


def _binary(elements: list[bytes], declared: int | None = None) -> tuple[bytes, str]:
    raw = b"".join(struct.pack("<I", len(e)) + e for e in elements)
    size = len(raw) if declared is None else declared
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "text",
                    "datatype": "BYTES",
                    "shape": [len(elements)],
                    "parameters": {"binary_data_size": size},
                }
            ]
        }
    ).encode()
    return header + raw, str(len(header))


@pytest.mark.parametrize(
    ("args", "code"),
    [
        ((_json([]), None), "empty_inputs"),
        ((b'{"inputs": []}', None), "missing_field"),
        ((_json(["a"], name="txt"), None), "unknown_input"),
        ((_json(["a"], datatype="FP32"), None), "invalid_datatype"),
        ((_json(["a", "b"], shape=[3]), None), "invalid_shape"),
        ((_json(["a"], shape=[-1]), None), "invalid_shape"),
        # Schemathesis found these accepted: data that is not a list, and a 0-d shape for texts.
        ((b'{"inputs":[{"name":"text","shape":[1],"datatype":"BYTES","data":"AAA"}]}', None), "invalid_data"),
        (
            (b'{"inputs":[{"name":"text","shape":[],"datatype":"BYTES","data":["AAA"]}]}', None),
            "invalid_shape",
        ),
        ((_json(["a"], outputs=["logits"]), None), "unknown_output"),
        ((_json([1]), None), "invalid_field"),
        ((b'"nope"', None), "invalid_body"),
        ((b"{", None), "malformed_json"),
        ((_json(["a"]), "12x"), "invalid_header"),
        ((_json(["a"]), "100000"), "invalid_header"),
        (_binary([b"ok"], declared=50), "invalid_binary"),
        (_binary([b"\xff\xfe"]), "invalid_encoding"),
        ((_binary([b"ok"])[0][:-1], _binary([b"ok"])[1]), "invalid_binary"),
        ((_binary([b"ok"])[0] + b"extra", _binary([b"ok"])[1]), "invalid_binary"),
    ],
)
def test_bad_requests_are_named_400s(args, code):
    err = _err(*args, LIMITS)
    assert (err.status, err.code) == (400, code), err.message


def test_classification_extension_is_refused_clearly():
    body = json.dumps(
        {
            "inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["a"]}],
            "outputs": [{"name": "probabilities", "parameters": {"classification": 2}}],
        }
    ).encode()
    assert "classification" in _err(body, None, LIMITS).message


def test_limits_apply_to_binary_inputs_too():
    body, header = _binary([b"a", b"b", b"c", b"d"])
    assert _err(body, header, LIMITS).code == "too_many_inputs"
