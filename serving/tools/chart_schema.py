"""The JSON Schema of the Helm chart's values, written to ``helm/slimgate/values.schema.json``.

:func:`gateway_schema` derives the ``gateway`` part from :func:`serving.config.json_schema` and adds
the chart's own rules; :func:`chart_values_schema` describes every other value the chart reads.
:mod:`serving.tools.chart` assembles the two into the file and checks it is current.
"""

from __future__ import annotations

import copy
from typing import Any

from serving.config import json_schema

# Where the chart mounts the registry volume: a plain absolute path (no '.', '..' or trailing '/'),
# so that the path pydantic normalises (str(Path(...))) is the string the chart mounts.
REGISTRY_PATH_PATTERN = r"^(/[A-Za-z0-9_][A-Za-z0-9._-]*)+$"


# -- the gateway part ------------------------------------------------------------------------------
def _close_pattern_maps(node: Any) -> None:
    """A map whose keys pydantic constrains rejects other keys; JSON Schema needs saying so."""
    if isinstance(node, dict):
        if "patternProperties" in node and "additionalProperties" not in node:
            node["additionalProperties"] = False
        for value in node.values():
            _close_pattern_maps(value)
    elif isinstance(node, list):
        for value in node:
            _close_pattern_maps(value)


def gateway_schema() -> tuple[dict[str, Any], dict[str, Any]]:
    """(schema of ``values.gateway``, its ``$defs``): GatewayConfig's JSON Schema plus the chart's rules."""
    schema = copy.deepcopy(json_schema())
    defs = schema.pop("$defs", {})
    _close_pattern_maps(schema)
    _close_pattern_maps(defs)
    schema["properties"]["registry"] = {
        "type": "string",
        "pattern": REGISTRY_PATH_PATTERN,
        "description": "Registry root inside every Ray pod: the chart mounts the registry volume here "
        "(read-only). An absolute path such as /registry.",
    }
    schema["required"] = sorted({*schema.get("required", []), "registry"})
    schema["description"] = (
        "The gateway config (serving/configs/default.yaml, serving.config.GatewayConfig). "
        "The chart turns it into the RayService's serveConfigV2."
    )
    return schema, defs


# -- the chart's own values ------------------------------------------------------------------------
def _obj(props: dict[str, Any], description: str, required: tuple[str, ...] = ()) -> dict[str, Any]:
    out: dict[str, Any] = {
        "type": "object",
        "description": description,
        "additionalProperties": False,
        "properties": props,
    }
    if required:
        out["required"] = list(required)
    return out


def _str(description: str, **extra: Any) -> dict[str, Any]:
    return {"type": "string", "description": description, **extra}


def _bool(description: str) -> dict[str, Any]:
    return {"type": "boolean", "description": description}


def _int(description: str, minimum: int = 0, **extra: Any) -> dict[str, Any]:
    return {"type": "integer", "minimum": minimum, "description": description, **extra}


def _strmap(description: str) -> dict[str, Any]:
    return {"type": "object", "additionalProperties": {"type": "string"}, "description": description}


def _k8s(description: str, kind: str = "object") -> dict[str, Any]:
    """A value passed to Kubernetes as is (its own API server validates it)."""
    return {"type": kind, "description": description}


def _resources(description: str) -> dict[str, Any]:
    quantities = {"type": "object", "additionalProperties": {"type": ["string", "number"]}}
    return _obj({"requests": quantities, "limits": quantities}, description)


def _scheduling() -> dict[str, Any]:
    return {
        "nodeSelector": _strmap("Node labels the pods must match."),
        "tolerations": _k8s("Kubernetes tolerations.", "array"),
        "affinity": _k8s("Kubernetes affinity."),
        "podAnnotations": _strmap("Extra pod annotations."),
        "podLabels": _strmap("Extra pod labels."),
    }


_ACCESS_MODES = {
    "type": "array",
    "minItems": 1,
    "items": {"enum": ["ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany", "ReadWriteOncePod"]},
}
_RAY_START_PARAMS = {
    "type": "object",
    "additionalProperties": {"type": ["string", "number", "boolean"]},
    "description": "Extra `ray start` parameters (the chart passes them to KubeRay as strings).",
}


def _peers(description: str) -> dict[str, Any]:
    """A list of NetworkPolicy peers (or rules), passed to Kubernetes as they are."""
    return {"type": "array", "items": {"type": "object"}, "description": description}


def _worker_group(name: str, gpu: bool) -> dict[str, Any]:
    props: dict[str, Any] = {
        "replicas": _int("Worker pods to start with."),
        "minReplicas": _int("Fewest worker pods (Ray autoscaler)."),
        "maxReplicas": _int("Most worker pods (Ray autoscaler).", 1),
        "resources": _resources("Container resources of each worker pod."),
        "rayStartParams": _RAY_START_PARAMS,
        **_scheduling(),
    }
    if gpu:
        props["enabled"] = _bool("Add the GPU worker group (needed by any variant with resources.num_gpus).")
        props["gpusPerPod"] = _int("nvidia.com/gpu limit of each GPU worker pod.", 1)
        props["image"] = _obj(
            {
                "repository": _str("Image of the GPU workers; empty = image.repository."),
                "tag": _str(
                    "Tag of the GPU workers' image (built with --build-arg GPU=true); empty = image.tag."
                ),
            },
            "Image override for the GPU workers.",
        )
    return _obj(props, f"The {name} worker group.")


def chart_values_schema(gateway: dict[str, Any]) -> dict[str, Any]:
    """The schema of the chart's values, ``gateway`` included."""
    persistence = {
        "existingClaim": _str("Use this PersistentVolumeClaim instead of creating one."),
        "size": _str("Size of the claim the chart creates.", pattern=r"^[0-9]+(\.[0-9]+)?([EPTGMK]i?)?$"),
        "storageClass": _str("Storage class of the claim the chart creates; empty = the cluster default."),
        "accessModes": _ACCESS_MODES,
    }
    monitor = {
        "enabled": _bool("Render it (needs the Prometheus Operator's CRDs)."),
        "labels": _strmap("Extra labels, e.g. the one your Prometheus selects monitors by."),
        "interval": _str("Scrape interval.", pattern=r"^[0-9]+(ms|s|m|h)$"),
    }
    props = {
        "nameOverride": _str("Replaces the chart name in object names."),
        "fullnameOverride": _str(
            "Replaces the whole object name prefix (at most 40 characters).", maxLength=40
        ),
        "image": _obj(
            {
                "repository": _str("Image with slimgate installed (helm/Dockerfile).", minLength=1),
                "tag": _str("Image tag; empty = the chart's appVersion."),
                "pullPolicy": {"enum": ["Always", "IfNotPresent", "Never"]},
            },
            "The image every Ray pod and the controller run.",
            ("repository",),
        ),
        "imagePullSecrets": _k8s("Kubernetes imagePullSecrets.", "array"),
        "rayVersion": _str(
            "Ray version installed in the image (KubeRay's rayClusterConfig.rayVersion).", minLength=1
        ),
        "gateway": gateway,
        "admin": _obj(
            {
                "existingSecret": _str("Secret holding the admin token; empty = the chart creates one."),
                "secretKey": _str("Key of the token in the Secret.", minLength=1),
                "token": _str(
                    "Token for the Secret the chart creates; empty = random, kept across upgrades."
                ),
            },
            "The admin token, passed to Ray pods and the controller as $<gateway.admin.token_env>.",
        ),
        "registry": _obj(
            {
                **persistence,
                "subPath": _str("Sub-directory of the volume that holds the registry."),
                "volume": _k8s(
                    "A volume source used instead of a claim "
                    "(e.g. emptyDir: {} filled by ray.initContainers)."
                ),
            },
            "The variant registry, mounted read-only at gateway.registry in every Ray pod.",
        ),
        "ray": _obj(
            {
                "upgradeStrategy": {
                    "enum": ["", "NewCluster", "None"],
                    "description": "RayService upgradeStrategy.type; empty = KubeRay's default.",
                },
                "autoscaler": _bool("KubeRay's in-tree Ray autoscaler (worker pods follow replica demand)."),
                "podSecurityContext": _k8s("Pod securityContext of the Ray pods."),
                "securityContext": _k8s("Container securityContext of the Ray containers."),
                "extraEnv": _k8s("Extra environment variables of the Ray containers.", "array"),
                "initContainers": _k8s("Init containers of every Ray pod (e.g. a registry sync).", "array"),
                "auth": _obj(
                    {
                        "enabled": _bool(
                            "Ray token authentication (RAY_AUTH_MODE=token; KubeRay authOptions, "
                            "KubeRay 1.6+, Ray 2.52+)."
                        ),
                        "existingSecret": _str(
                            "Secret holding the Ray token under the key auth_token; empty = the chart "
                            "creates one (random, kept across upgrades)."
                        ),
                    },
                    "Ray's own authentication: the token every Ray process, KubeRay and the "
                    "controller present.",
                ),
            },
            "Settings common to every Ray pod.",
        ),
        "head": _obj(
            {
                "numCpus": {
                    "type": ["string", "integer", "null"],
                    "pattern": r"^[0-9]+$",
                    "minimum": 0,
                    "description": '`ray start --num-cpus` of the head; "0" keeps variant replicas off it.',
                },
                "resources": _resources("Container resources of the head pod."),
                "rayStartParams": _RAY_START_PARAMS,
                **_scheduling(),
            },
            "The Ray head pod (Ray's GCS, the dashboard and Serve's HTTP proxy).",
        ),
        "cpuWorkers": _worker_group("CPU", gpu=False),
        "gpuWorkers": _worker_group("GPU", gpu=True),
        "service": _obj(
            {
                "type": {"enum": ["ClusterIP", "NodePort", "LoadBalancer"]},
                "annotations": _strmap("Annotations of the gateway Service."),
            },
            "The gateway Service (KubeRay's serve service, named <fullname>-gateway).",
        ),
        "ingress": _obj(
            {
                "enabled": _bool("Render an Ingress to the gateway Service."),
                "className": _str("ingressClassName; empty = the cluster default."),
                "annotations": _strmap("Annotations of the Ingress."),
                "hosts": {
                    "type": "array",
                    "items": _obj(
                        {
                            "host": _str("Host name."),
                            "paths": {
                                "type": "array",
                                "items": _obj(
                                    {
                                        "path": _str("URL path.", pattern="^/"),
                                        "pathType": {"enum": ["Prefix", "Exact", "ImplementationSpecific"]},
                                    },
                                    "One path.",
                                    ("path",),
                                ),
                            },
                        },
                        "One host.",
                        ("host",),
                    ),
                },
                "tls": _k8s("Ingress TLS entries.", "array"),
            },
            "An optional Ingress in front of the gateway Service.",
        ),
        "controller": _obj(
            {
                "enabled": _bool("Run the rollout controller (slimgate controller run)."),
                "prometheusUrl": _str(
                    "Base URL of the Prometheus server the controller reads.", pattern="^https?://"
                ),
                "extraArgs": {
                    "type": "array",
                    "items": {"type": "string"},
                    "description": "Extra arguments.",
                },
                "extraEnv": _k8s("Extra environment variables of the controller.", "array"),
                "resources": _resources("Container resources of the controller."),
                "persistence": _obj(persistence, "The controller's state volume (/state)."),
                "podSecurityContext": _k8s("Pod securityContext of the controller."),
                "securityContext": _k8s("Container securityContext of the controller."),
                **_scheduling(),
            },
            "The rollout controller, a Deployment of one replica with its state on a volume.",
        ),
        "networkPolicy": _obj(
            {
                "enabled": _bool("Render the NetworkPolicies of the Ray pods and the controller."),
                "prometheusFrom": _peers(
                    "NetworkPolicy peers of Prometheus: admitted to Ray's metrics (8080), HAProxy's "
                    "exporter (9101) and the controller's port (9102)."
                ),
                "kuberayOperatorFrom": _peers(
                    "NetworkPolicy peers of the KubeRay operator: admitted to the dashboard (8265), "
                    "through which it deploys serveConfigV2."
                ),
                "gatewayFrom": _peers(
                    "NetworkPolicy peers admitted to the gateway ports (HTTP, gRPC); empty = from anywhere."
                ),
                "dashboardFrom": _peers(
                    "More NetworkPolicy peers admitted to the dashboard (8265) besides the controller "
                    "and the operator."
                ),
                "controllerFrom": _peers(
                    "NetworkPolicy peers admitted to the controller's port 9102 (admin API, /metrics) "
                    "besides Prometheus."
                ),
                "extraIngress": _peers("Extra NetworkPolicy ingress rules of the Ray pods, as they are."),
            },
            "What may reach the Ray pods and the controller (ingress; egress is not restricted).",
        ),
        "monitoring": _obj(
            {
                "scrapeAnnotations": _bool("prometheus.io/scrape annotations for a plain Prometheus."),
                "podMonitor": _obj(monitor, "PodMonitor for Ray's metrics port (8080) on every Ray pod."),
                "serviceMonitor": _obj(monitor, "ServiceMonitor for the controller's metrics port (9102)."),
                "prometheusRule": _obj(
                    {k: v for k, v in monitor.items() if k != "interval"},
                    "PrometheusRule holding serving/ops/alerts.yml.",
                ),
                "grafanaDashboard": _obj(
                    {
                        "enabled": _bool("Render the dashboard ConfigMap for Grafana's sidecar."),
                        "label": _str("Label the Grafana sidecar looks for.", minLength=1),
                        "labelValue": _str("Its value."),
                        "namespace": _str("Namespace of the ConfigMap; empty = the release's."),
                        "annotations": _strmap("Annotations, e.g. the sidecar's folder annotation."),
                    },
                    "serving/ops/grafana-dashboard.json as a ConfigMap.",
                ),
            },
            "Prometheus and Grafana integration; each part is optional.",
        ),
    }
    return _obj(props, "Values of the slimgate chart (helm/slimgate).", ("image", "gateway"))
