"""Where clients meet the gateway: its listener (address, ports, ingress, what a slow or idle client
may hold) and admission (what is refused at once rather than queued)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from serving.config.base import LISTENER, LIVE, Section, StrictFloat, StrictPositiveInt, changes, rule


@changes(
    host=LISTENER,
    port=LISTENER,
    grpc_port=LISTENER,
    ingress=LISTENER,
    request_read_timeout_s=LISTENER,
    idle_timeout_s=LISTENER,
    max_connections=LISTENER,
    max_connections_per_client=LISTENER,
)
class HttpConfig(Section):
    host: str = Field(
        "127.0.0.1",
        min_length=1,
        description="Address clients reach the gateway on. On one host (`slimgate serve`) everything else "
        "(Ray, replicas, HAProxy's own ports) stays on loopback whatever this says.",
    )
    port: Annotated[StrictPositiveInt, Field(le=65535)] = Field(
        8000, description="TCP port of the gateway's HTTP endpoint."
    )
    grpc_port: Annotated[StrictPositiveInt, Field(le=65535)] | None = Field(
        9000,
        description="TCP port of the Open Inference Protocol's gRPC service "
        "(inference.GRPCInferenceService); null = no gRPC endpoint.",
    )
    ingress: Literal["haproxy", "proxy"] = Field(
        "haproxy",
        description="How requests reach the router replicas. haproxy: Ray Serve's HAProxy ingress straight "
        "to each router replica's own HTTP server (direct ingress; several times the throughput). proxy: "
        "Ray Serve's Python HTTP proxy, for platforms without an HAProxy binary.",
    )

    # What a slow or idle client may hold (HAProxy ingress; read when the gateway starts). Without
    # them a few hundred slowloris clients, or requests that never finish their bodies, locked
    # everyone else out.
    request_read_timeout_s: Annotated[StrictPositiveInt, Field(le=300)] = Field(
        10,
        description="Seconds a client has to send a whole request, headers and body, once it starts; a "
        "slower one (a header a minute, a body shorter than it declared) gets 408 and is closed. Bodies "
        "are read whole by HAProxy before a request reaches a router, so a slow body never holds a slot.",
    )
    idle_timeout_s: Annotated[StrictPositiveInt, Field(le=3600)] = Field(
        15, description="Seconds an idle keep-alive connection is kept open between requests."
    )
    max_connections: Annotated[StrictPositiveInt, Field(ge=256, le=1_000_000)] = Field(
        4096,
        description="Client connections HAProxy holds at once (its maxconn); beyond it new connections "
        "wait in the kernel's queue. Each costs about 2.5 file descriptors (its own, its server's, a "
        "share of splice pipes) and, while a request is being read, a 16 KiB buffer. Where the hard "
        "`ulimit -n` allows fewer, HAProxy is started with what it allows and says so in its log.",
    )
    max_connections_per_client: Annotated[StrictPositiveInt, Field(le=1_000_000)] | None = Field(
        512,
        description="Connections one client address may hold at once; more are refused when they open, "
        "so one abusive source cannot take every connection. null = no limit: needed when every client "
        "arrives through one proxy or NAT address (a load balancer that does not preserve addresses).",
    )

    @model_validator(mode="after")
    def _ports(self) -> HttpConfig:
        if self.grpc_port is not None and self.grpc_port == self.port:
            raise rule(("grpc_port", f"must differ from port ({self.port})"))
        return self


@changes(latency_objective_s=LIVE, max_in_flight=LIVE, retry_after_s=LIVE)
class AdmissionConfig(Section):
    """Load shedding in each router replica: what cannot be served in time is refused at once."""

    latency_objective_s: Annotated[StrictFloat, Field(gt=0, le=60)] | None = Field(
        0.5,
        description="Latency the router keeps admitted requests within (its p99, measured from arrival to "
        "answer): the number of requests admitted at once adapts to it. null = only max_in_flight.",
    )
    max_in_flight: Annotated[StrictPositiveInt, Field(le=100_000)] = Field(
        64,
        description="Most requests one router replica works on at once; beyond it requests are shed. "
        "With the HAProxy ingress, HAProxy itself enforces it (read when the gateway starts).",
    )
    retry_after_s: Annotated[StrictPositiveInt, Field(le=3600)] = Field(
        1, description="Seconds a shed client is told to wait (the Retry-After header of its 503)."
    )
