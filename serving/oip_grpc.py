"""The Open Inference Protocol over gRPC (``inference.GRPCInferenceService``), as tritonclient speaks it.

Ray Serve's gRPC ingress hands each call to the router replica's method of the same name
(``ModelInfer``, ``ModelMetadata``, ...) with the decoded request message; :class:`GrpcApi` turns
those messages into the same dataplane calls as ``/v2`` over HTTP, with the same limits,
admission control, pin header and sticky key (read from the call's metadata). Tensors are read
from ``raw_input_contents`` (what clients send by default) or from typed ``contents``; answers
go out as ``raw_output_contents``.

The protocol's messages are the generated protobuf modules that ship with NVIDIA's
``tritonclient`` (the protocol's reference client), so client and server agree by construction.
Errors become gRPC status codes (:data:`STATUS`) with the same message as over HTTP.
"""

from __future__ import annotations

import logging
import sys
import uuid
from collections.abc import Callable
from typing import Any

import grpc
import numpy as np

from serving.admission import AdmissionControl
from serving.dataplane import Dataplane, RouteTable, model_key
from serving.errors_and_auth import ApiError, as_api_error
from serving.metrics import SHED
from serving.metrics_recording import GatewayMetrics
from serving.names import GATEWAY_MODEL
from serving.oip import (
    INPUT_NAME,
    OUTPUTS,
    decode_bytes_elements,
    encode_bytes_elements,
    model_config,
    server_metadata,
)
from serving.requests import check_texts

STATUS = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    404: grpc.StatusCode.NOT_FOUND,
    409: grpc.StatusCode.ALREADY_EXISTS,
    413: grpc.StatusCode.INVALID_ARGUMENT,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    501: grpc.StatusCode.UNIMPLEMENTED,
    503: grpc.StatusCode.UNAVAILABLE,
}
# The service's unary methods slimgate does not serve: each answers UNIMPLEMENTED with a plain
# message (left to Ray Serve, a missing method was UNKNOWN with the router's private method names).
UNIMPLEMENTED = (
    "ModelStatistics",
    "RepositoryIndex",
    "RepositoryModelLoad",
    "RepositoryModelUnload",
    "SystemSharedMemoryStatus",
    "SystemSharedMemoryRegister",
    "SystemSharedMemoryUnregister",
    "CudaSharedMemoryStatus",
    "CudaSharedMemoryRegister",
    "CudaSharedMemoryUnregister",
    "TraceSetting",
    "LogSettings",
)


def add_servicer(servicer: Any, server: Any) -> None:
    """Register the protocol's service on a gRPC server (called by Ray Serve at start-up)."""
    from tritonclient.grpc import service_pb2_grpc

    _pb()
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)


def _pb():
    """The protocol's messages, importable under the module name their classes carry.

    tritonclient's generated classes say they live in ``grpc_service_pb2``; Ray Serve's proxy
    pickles a request when it forwards one through a handle (its fallback when HAProxy has no
    direct server up), and pickle finds a class by that name.
    """
    from tritonclient.grpc import model_config_pb2, service_pb2

    sys.modules.setdefault("grpc_service_pb2", service_pb2)
    sys.modules.setdefault("model_config_pb2", model_config_pb2)
    return service_pb2


def _texts(req: Any, limits: Any) -> list[str]:
    for i, tensor in enumerate(req.inputs):
        if tensor.name != INPUT_NAME:
            continue
        if tensor.datatype != "BYTES":
            raise ApiError(400, "invalid_datatype", f"input {INPUT_NAME!r} must have datatype BYTES")
        where = f"input {INPUT_NAME!r}"
        if i < len(req.raw_input_contents):
            texts = decode_bytes_elements(req.raw_input_contents[i], where)
        else:
            try:
                texts = [d.decode("utf-8") for d in tensor.contents.bytes_contents]
            except UnicodeDecodeError:
                raise ApiError(400, "invalid_encoding", f"{where} is not valid UTF-8") from None
        shape = list(tensor.shape)
        if int(np.prod(shape)) != len(texts):
            raise ApiError(400, "invalid_shape", f"{where} has shape {shape} but {len(texts)} elements")
        try:
            return check_texts(texts, f"inputs[{INPUT_NAME}]", limits)
        except ApiError as err:
            raise ApiError(400, err.code, err.message) from None
    names = [t.name for t in req.inputs]
    raise ApiError(400, "unknown_input", f"expected an input tensor named {INPUT_NAME!r}, got {names}")


class GrpcApi:
    def __init__(
        self,
        dataplane: Dataplane,
        admission: AdmissionControl,
        metrics: GatewayMetrics,
        request_id: Callable[[], str] | None = None,
    ) -> None:
        self.dp = dataplane
        self.admission = admission
        self.metrics = metrics
        self._request_id = request_id or (lambda: uuid.uuid4().hex)

    async def call(self, method: str, request: Any, context: Any) -> Any:
        """Run one RPC; a failure sets the call's status and details and returns an empty reply."""
        pb = _pb()
        empty = getattr(pb, f"{method}Response")
        if method in UNIMPLEMENTED:
            missing = ApiError(501, "unimplemented", f"slimgate does not implement {method}")
            return self._fail(context, missing, empty())
        handler = getattr(self, method)
        shed = self.admission.try_admit()
        if shed is not None:
            self.metrics.inc(SHED, reason=shed)
            overloaded = ApiError(503, "overloaded", "the gateway is at capacity; retry later")
            return self._fail(context, overloaded, empty())
        started = self.admission.now()
        try:
            return await handler(request, self.dp.current(), _metadata(context))
        except Exception as err:  # noqa: BLE001 - internals stay in the log (errors_and_auth)
            return self._fail(
                context, as_api_error(err, f"gRPC {method}", logging.getLogger("ray.serve")), empty()
            )
        finally:
            self.admission.done(started)

    @staticmethod
    def _fail(context: Any, err: ApiError, empty: Any) -> Any:
        if context is not None:
            context.set_code(STATUS.get(err.status, grpc.StatusCode.INTERNAL))
            context.set_details(err.message)
        return empty

    # -- the service's methods ---------------------------------------------------------------
    async def ServerLive(self, _req: Any, _table: RouteTable, _md: dict[str, str]) -> Any:  # noqa: N802
        return _pb().ServerLiveResponse(live=True)

    async def ServerReady(self, _req: Any, table: RouteTable, _md: dict[str, str]) -> Any:  # noqa: N802
        return _pb().ServerReadyResponse(ready=self.dp.is_ready(table.stable))

    async def ModelReady(self, req: Any, table: RouteTable, _md: dict[str, str]) -> Any:  # noqa: N802
        key = model_key(table, req.name) or table.stable
        return _pb().ModelReadyResponse(ready=self.dp.is_ready(key))

    async def ServerMetadata(self, _req: Any, _table: RouteTable, _md: dict[str, str]) -> Any:  # noqa: N802
        return _pb().ServerMetadataResponse(**server_metadata(["model_configuration"]))

    async def ModelMetadata(self, req: Any, table: RouteTable, _md: dict[str, str]) -> Any:  # noqa: N802
        pb = _pb()
        v = self.dp.model_view(table, req.name)
        t = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=req.name or GATEWAY_MODEL,
            versions=v.versions,
            platform=v.platform,
            inputs=[t(name=INPUT_NAME, datatype="BYTES", shape=[-1])],
            outputs=[
                t(name="label", datatype="BYTES", shape=[-1]),
                t(name="probabilities", datatype="FP32", shape=[-1, len(v.info.labels)]),
            ],
        )

    async def ModelConfig(self, req: Any, table: RouteTable, _md: dict[str, str]) -> Any:  # noqa: N802
        from google.protobuf import json_format
        from tritonclient.grpc import model_config_pb2

        v = self.dp.model_view(table, req.name)
        config = model_config(v.name, v.platform, v.info.labels, table.cfg.limits.max_inputs, v.batching)
        # The same content as over HTTP, in the protocol's message.
        return _pb().ModelConfigResponse(config=json_format.ParseDict(config, model_config_pb2.ModelConfig()))

    async def ModelInfer(self, req: Any, table: RouteTable, md: dict[str, str]) -> Any:  # noqa: N802
        pb = _pb()
        key = model_key(table, req.model_name)
        texts = _texts(req, table.cfg.limits)
        wanted = [o.name for o in req.outputs] or list(OUTPUTS)
        unknown = [w for w in wanted if w not in OUTPUTS]
        if unknown:
            msg = f"unknown outputs {unknown}; this model has {list(OUTPUTS)}"
            raise ApiError(400, "unknown_output", msg)
        routing = table.cfg.routing
        pinned = key or (md.get(routing.pin_header) if routing.pin_header else None)
        sticky_header = routing.sticky_key.header if routing.sticky_key else None
        sticky = md.get(sticky_header) if sticky_header else None
        request_id = req.id or md.get("x-request-id") or self._request_id()
        served = await self.dp.serve(table, texts, request_id, pinned=pinned, sticky=sticky)
        labels = served.label_names()
        probs = np.ascontiguousarray(served.answer.probabilities, dtype="<f4")
        out = pb.ModelInferResponse(
            model_name=req.model_name,
            model_version=table.revision if key is None else str(served.answer.version),
            id=request_id,
        )
        for name in wanted:
            tensor = out.outputs.add()
            tensor.name = name
            if name == "label":
                tensor.datatype = "BYTES"
                tensor.shape.extend([len(labels)])
                out.raw_output_contents.append(encode_bytes_elements(labels))
            else:
                tensor.datatype = "FP32"
                tensor.shape.extend(list(probs.shape))
                out.raw_output_contents.append(probs.tobytes())
        return out


def _metadata(context: Any) -> dict[str, str]:
    if context is None:
        return {}
    return {k.lower(): v for k, v in context.invocation_metadata() if isinstance(v, str)}
