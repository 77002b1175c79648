"""The inference protocol over gRPC, with the messages tritonclient.grpc builds and reads."""

from __future__ import annotations

import asyncio
import json
import random

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from support import INTERNALS, LABELS, FakeVariant, MemorySink
from tritonclient.grpc import service_pb2
from tritonclient.grpc._utils import _get_inference_request

from serving.admission import AdmissionControl
from serving.config import parse_config
from serving.dataplane import Dataplane, RouteTable
from serving.metrics_recording import GatewayMetrics
from serving.oip_grpc import GrpcApi


class Context:
    """What Ray Serve passes as grpc_context, as far as the API uses it."""

    def __init__(self, metadata=()):
        self.metadata = list(metadata)
        self.code, self.details = None, None

    def invocation_metadata(self):
        return self.metadata

    def set_code(self, code):
        self.code = code

    def set_details(self, details):
        self.details = details


@pytest.fixture
def api():
    cfg = parse_config(
        {
            "variants": {"stable": {"ref": "a@1"}, "canary": {"ref": "b@1"}},
            "routing": {
                "stable": "stable",
                "weights": {"stable": 50, "canary": 50},
                "sticky_key": {"header": "x-user-id"},
            },
            "limits": {"max_inputs": 3},
            "admission": {"max_in_flight": 4},
        }
    )
    metrics = GatewayMetrics(MemorySink())
    dp = Dataplane(metrics, rng=random.Random(0))
    dp.configure(
        RouteTable.build(cfg, "rev1", dp.rng),
        {"stable": FakeVariant("stable", 0), "canary": FakeVariant("canary", 1)},
    )
    return GrpcApi(dp, AdmissionControl(cfg.admission), metrics)


def _infer_request(model, texts, outputs=None):
    inp = grpcclient.InferInput("text", [len(texts)], "BYTES")
    inp.set_data_from_numpy(np.array(texts, dtype=np.object_))  # raw_input_contents, the default
    outs = [grpcclient.InferRequestedOutput(o) for o in outputs] if outputs else None
    return _get_inference_request(model, [inp], "", "", outs, 0, False, False, 0, None, None)


def _call(api, method, request, context=None):
    return asyncio.run(api.call(method, request, context or Context()))


def test_infer_with_the_clients_defaults(api):
    reply = _call(api, "ModelInfer", _infer_request("canary", ["a tree", "a cat"]))
    result = grpcclient.InferResult(reply)
    assert list(result.as_numpy("label")) == [LABELS[1].encode()] * 2
    assert result.as_numpy("probabilities").shape == (2, 3)
    assert reply.model_version == "1"


def test_routed_model_honours_pin_and_sticky_metadata(api):
    ctx = Context([("x-slimgate-variant", "canary")])
    reply = _call(api, "ModelInfer", _infer_request("slimgate", ["a"], outputs=["label"]), ctx)
    assert grpcclient.InferResult(reply).as_numpy("label").tolist() == [LABELS[1].encode()]
    assert reply.model_version == "rev1" and len(reply.outputs) == 1


def test_health_and_metadata(api):
    from importlib.metadata import version

    server = _call(api, "ServerMetadata", service_pb2.ServerMetadataRequest())
    assert (server.name, server.version, list(server.extensions)) == (
        "slimgate",
        version("slimgate"),
        ["model_configuration"],  # binary tensor data is HTTP's extension; gRPC carries raw bytes anyway
    )
    assert _call(api, "ServerLive", service_pb2.ServerLiveRequest()).live
    assert _call(api, "ServerReady", service_pb2.ServerReadyRequest()).ready
    assert _call(api, "ModelReady", service_pb2.ModelReadyRequest(name="canary")).ready
    meta = _call(api, "ModelMetadata", service_pb2.ModelMetadataRequest(name="stable"))
    assert meta.inputs[0].name == "text" and list(meta.outputs[1].shape) == [-1, 3]
    config = _call(api, "ModelConfig", service_pb2.ModelConfigRequest(name="stable")).config
    assert config.name == "stable" and config.max_batch_size == 0 and list(config.output[1].dims) == [-1, 3]
    assert config.input[0].name == "text" and "coalesced_batch_size" in config.parameters
    # gRPC's model metadata has no field for the label table; the config carries it.
    assert json.loads(config.parameters["labels"].string_value) == list(LABELS)


@pytest.mark.parametrize(
    ("request_", "code", "fragment"),
    [
        (_infer_request("ghost", ["a"]), grpc.StatusCode.NOT_FOUND, "model 'ghost' not found"),
        (_infer_request("stable", ["a", "b", "c", "d"]), grpc.StatusCode.INVALID_ARGUMENT, "limit is 3"),
        (_infer_request("stable", [" "]), grpc.StatusCode.INVALID_ARGUMENT, "empty or blank"),
        (
            _infer_request("stable", ["a"], outputs=["logits"]),
            grpc.StatusCode.INVALID_ARGUMENT,
            "unknown outputs",
        ),
        (
            service_pb2.ModelInferRequest(model_name="stable"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "named 'text'",
        ),
    ],
)
def test_bad_calls_get_a_status_and_a_message(api, request_, code, fragment):
    ctx = Context()
    _call(api, "ModelInfer", request_, ctx)
    assert ctx.code == code and fragment in ctx.details
    assert not INTERNALS.search(ctx.details), ctx.details  # no class, module or private name


def test_every_method_of_the_service_is_answered_and_the_unserved_ones_are_unimplemented(api):
    """The router has a method per RPC of the service (Ray Serve calls it by name); those slimgate
    does not serve say so plainly, naming no Python class, module or private method."""
    from serving.oip_grpc import UNIMPLEMENTED
    from serving.router import Router

    service = service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    unary = [m.name for m in service.methods if not m.client_streaming and not m.server_streaming]
    assert all(callable(getattr(Router, name, None)) for name in unary)
    for name in UNIMPLEMENTED:
        ctx = Context()
        reply = _call(api, name, getattr(service_pb2, f"{name}Request")(), ctx)
        assert (
            ctx.code == grpc.StatusCode.UNIMPLEMENTED and ctx.details == f"slimgate does not implement {name}"
        )
        assert isinstance(reply, getattr(service_pb2, f"{name}Response"))


def test_malformed_raw_contents_are_invalid_arguments(api):
    req = _infer_request("stable", ["a"])
    req.raw_input_contents[0] = b"\x09\x00\x00\x00ab"  # claims 9 bytes, has 2
    ctx = Context()
    _call(api, "ModelInfer", req, ctx)
    assert ctx.code == grpc.StatusCode.INVALID_ARGUMENT and "overruns" in ctx.details


def test_overload_is_unavailable(api):
    for _ in range(4):
        api.admission.try_admit()
    ctx = Context()
    _call(api, "ModelInfer", _infer_request("stable", ["a"]), ctx)
    assert ctx.code == grpc.StatusCode.UNAVAILABLE and "capacity" in ctx.details


def test_messages_survive_pickling_as_rays_proxy_forwards_them(api):
    import pickle

    req = _infer_request("stable", ["a"])
    _call(api, "ServerLive", service_pb2.ServerLiveRequest())  # the API makes the names importable
    assert pickle.loads(pickle.dumps(req)) == req
