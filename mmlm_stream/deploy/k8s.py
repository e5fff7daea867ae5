"""KubeRay manifests and Serve config variants generated from ``deployments/gpu.yaml``.

The RayService's ``serveConfigV2`` is rendered from the same Serve config that ``serve deploy``
and ``describe --serve-config`` use, so the cluster and the laptop cannot drift apart; a test
compares the committed ``k8s/rayservice.yaml`` and ``deployments/examples/*.yaml`` with a fresh
render. ``python -m mmlm_stream.deploy.k8s`` (from the repository root) regenerates all of them.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from fractions import Fraction
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any, Self

import yaml

from mmlm_stream.config import Config
from mmlm_stream.deploy.serve_config import read_serve_config
from mmlm_stream.models.registry import enabled_modalities
from mmlm_stream.util.errors import ConfigError

logger = logging.getLogger(__name__)

NAME = "mmlm-stream"
DEFAULT_NAMESPACE = "mmlm"
IMAGE_REPOSITORY = "ghcr.io/mmlm-stream/mmlm-stream"
# Must equal the ray pin of constraints.txt (a test checks): KubeRay starts this version.
RAY_VERSION = "2.60.0"
REDIS_SECRET = "mmlm-redis"
REDIS_URL_KEY = "redis-url"
API_SECRET = "mmlm-api"
API_TOKEN_KEY = "token"
# Where POST /jobs writes its files inside the pods (results also go to Redis).
JOBS_DIR = "/home/ray/jobs"
INGRESS_CPUS = 0.1  # as deployments/ingress.py asks; a Serve config's ray_actor_options replace
# A custom resource only CPU worker pods advertise: CPU-only deployments ask for a sliver of it
# so Ray never spends a GPU node's CPUs on them. It exists only on the rendered cluster, never
# in the Serve configs a local Ray runs (a missing resource would leave replicas unscheduled).
CPU_NODE_RESOURCE = "cpu_node"
CPU_NODE_PER_REPLICA = 0.001
# CPU batch caps: fastest measured on CPU for frames/audio/speech/text (benchmarks/encoders.py,
# docs/deployment.md), local-cpu.yaml's for the detector and OCR; gpu.yaml's batches suit GPUs only.
CPU_MAX_BATCH = {
    "VisualEncoder": 4,
    "AudioEncoder": 8,
    "SpeechEncoder": 4,
    "TextEncoder": 32,
    "ObjectsEncoder": 8,
    "OcrEncoder": 2,
}
EXAMPLE_GPUS = {"cpu-only": 0, "1-gpu": 1, "8-gpu": 8}


@dataclass(frozen=True)
class WorkerGroup:
    """One KubeRay worker group: pod size and autoscaling bounds."""

    name: str
    min_replicas: int
    max_replicas: int
    cpus: int
    memory: str
    gpus: int = 0
    node_selector: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ClusterShape:
    """Pod sizes and bounds; requests equal limits so Ray sees exactly what it may use."""

    head_cpus: int = 2
    head_memory: str = "8Gi"
    cpu_workers: WorkerGroup = WorkerGroup("cpu-workers", 1, 8, cpus=8, memory="16Gi")
    gpu_workers: WorkerGroup = WorkerGroup("gpu-workers", 0, 4, cpus=8, memory="48Gi", gpus=1)

    def with_max(self, cpu_workers: int | None = None, gpu_workers: int | None = None) -> Self:
        """The same shape with other autoscaling upper bounds (None keeps one)."""
        groups = {}
        for key, most in (("cpu_workers", cpu_workers), ("gpu_workers", gpu_workers)):
            group: WorkerGroup = getattr(self, key)
            if most is not None:
                if most < group.min_replicas:
                    raise ConfigError(f"{group.name}: max {most} < min {group.min_replicas}")
                groups[key] = replace(group, max_replicas=most)
        return replace(self, **groups)


def default_gpu_yaml() -> Path:
    """gpu.yaml next to the deployments (installed or in the checkout)."""
    from mmlm_stream import deployments

    return Path(deployments.__file__).resolve().parent / "gpu.yaml"


def default_image() -> str:
    return f"{IMAGE_REPOSITORY}:{package_version('mmlm-stream')}"


def app_deployment_names(
    config: Config | None = None, *, publish: bool = True, service: bool = False
) -> set[str]:
    """The deployments ``build_app`` binds: Serve refuses a config naming any other one."""
    from mmlm_stream.deployments.encoder import DEPLOYMENT_NAMES

    models = (config or Config()).models
    names = {"Decoder", *(DEPLOYMENT_NAMES[modality] for modality in enabled_modalities(models))}
    extra = {"Publisher": publish, "Ingress": service}
    return names | {name for name, wanted in extra.items() if wanted}


def _application(data: dict[str, Any], origin: Path | str) -> dict[str, Any]:
    apps = data.get("applications") or []
    if len(apps) != 1:
        raise ConfigError(f"{origin}: expected exactly one application, found {len(apps)}")
    return apps[0]


def _only_built(data: dict[str, Any], origin: Path | str, service: bool) -> dict[str, Any]:
    """Drop deployments the default application does not build (OCR is off by default)."""
    app = _application(data, origin)
    built = app_deployment_names(service=service)
    dropped = [d["name"] for d in app.get("deployments") or [] if d["name"] not in built]
    if dropped:
        logger.info("%s: leaving out %s (not built by the default config)", origin, dropped)
    app["deployments"] = [d for d in app.get("deployments") or [] if d["name"] in built]
    return data


def _num_gpus(deployment: dict[str, Any]) -> Fraction:
    return Fraction(str((deployment.get("ray_actor_options") or {}).get("num_gpus") or 0))


def _bounds(deployment: dict[str, Any]) -> tuple[int, int]:
    """(min, max) replicas, whether autoscaled or fixed."""
    scaling = deployment.get("autoscaling_config")
    if scaling:
        return int(scaling.get("min_replicas", 1)), int(scaling.get("max_replicas", 1))
    fixed = int(deployment.get("num_replicas", 1))
    return fixed, fixed


def _set_max(deployment: dict[str, Any], value: int) -> None:
    if deployment.get("autoscaling_config"):
        deployment["autoscaling_config"]["max_replicas"] = value


def _fit_gpus(deployments: list[dict[str, Any]], gpus: int) -> None:
    """Scale the GPU deployments' max_replicas so that all of them at max fit ``gpus``."""
    on_gpu = [d for d in deployments if _num_gpus(d)]
    demand = sum((_bounds(d)[1] * _num_gpus(d) for d in on_gpu), Fraction(0))
    factor = Fraction(gpus) / demand if demand else Fraction(1)
    scaled = [d for d in on_gpu if d.get("autoscaling_config")]
    caps = {}
    for d in scaled:
        least, most = _bounds(d)
        caps[d["name"]] = max(least, 1, math.ceil(most * max(factor, Fraction(1))))
        _set_max(d, max(least, 1, math.floor(most * factor)))
    used = sum((_bounds(d)[1] * _num_gpus(d) for d in on_gpu), Fraction(0))
    if used > gpus:
        raise ConfigError(f"the GPU deployments' min_replicas need {float(used)} GPUs, not {gpus}")
    grown = True
    while grown:  # spend what rounding down left over, one replica at a time, in config order
        grown = False
        for d in scaled:
            most = _bounds(d)[1]
            if most < caps[d["name"]] and used + _num_gpus(d) <= gpus:
                _set_max(d, most + 1)
                used += _num_gpus(d)
                grown = True
    if factor > 1:  # more GPUs take more streams: the CPU stages grow with them
        for d in deployments:
            if not _num_gpus(d):
                _set_max(d, math.ceil(_bounds(d)[1] * factor))


def serve_config_for(
    gpus: int, base: Path | None = None, *, accelerator_type: str | None = None
) -> dict[str, Any]:
    """A Serve config for ``gpus`` GPUs in all, derived from gpu.yaml.

    0: every deployment on CPU with CPU-sized batches. N: fractional GPUs kept, max_replicas
    scaled so every GPU deployment at its max fits N GPUs together (more GPUs also raise the
    CPU stages' bounds). ``accelerator_type`` (e.g. "H100") pins the GPU deployments to it.
    """
    if gpus < 0:
        raise ConfigError(f"gpus must be >= 0, not {gpus}")
    origin = base or default_gpu_yaml()
    data = _only_built(copy.deepcopy(read_serve_config(origin)), origin, service=False)
    deployments = _application(data, origin).get("deployments") or []
    if gpus == 0:
        for d in deployments:
            d.setdefault("ray_actor_options", {})["num_gpus"] = 0
            d["ray_actor_options"].pop("accelerator_type", None)
            batch = (d.get("user_config") or {}).get("max_batch_size")
            if batch is not None and d["name"] in CPU_MAX_BATCH:
                d["user_config"]["max_batch_size"] = min(batch, CPU_MAX_BATCH[d["name"]])
        return data
    _fit_gpus(deployments, gpus)
    if accelerator_type:
        for d in deployments:
            if _num_gpus(d):
                d["ray_actor_options"]["accelerator_type"] = accelerator_type
    return data


def k8s_serve_config(data: dict[str, Any], *, cpu_node_resource: bool = True) -> dict[str, Any]:
    """The Serve config as the cluster runs it: gpu.yaml plus the k8s-only overrides.

    - the HTTP ingress (``args.service``, contract §7) at ``/``, with a proxy on every node:
      the API is how a cluster is used, and KubeRay counts a RayService ready only when a
      Serve proxy answers on port 8000;
    - ``args.redis_url`` stays null: the pods' ``$REDIS_URL`` (from the Secret) is used;
    - only deployments the application builds (Serve rejects options for any other);
    - with ``cpu_node_resource``, GPU-free deployments (and the ingress) need the CPU
      workers' custom resource, so they never take a GPU node's CPUs.
    Applying it to a config that already has these settings changes nothing.
    """
    out = _only_built(copy.deepcopy(data), "serve config", service=True)
    out["proxy_location"] = "EveryNode"
    app = _application(out, "serve config")
    app["route_prefix"] = "/"
    args = app.setdefault("args", {})
    args.update(redis_url=None, service=True)
    args.setdefault("jobs_dir", JOBS_DIR)
    deployments = app.setdefault("deployments", [])
    if cpu_node_resource:
        if not any(d["name"] == "Ingress" for d in deployments):
            deployments.append({"name": "Ingress", "ray_actor_options": {"num_cpus": INGRESS_CPUS}})
        for d in deployments:
            if _num_gpus(d):
                continue
            options = d.get("ray_actor_options") or {}
            if "num_cpus" not in options:
                # Serve replaces the code's ray_actor_options with the config's whole dict.
                raise ConfigError(
                    f"deployment {d['name']}: give ray_actor_options.num_cpus explicitly "
                    "(adding the cpu_node resource would otherwise drop the code's num_cpus)"
                )
            options.setdefault("resources", {})[CPU_NODE_RESOURCE] = CPU_NODE_PER_REPLICA
    return out


def _env() -> list[dict[str, Any]]:
    return [
        {
            "name": "REDIS_URL",
            "valueFrom": {"secretKeyRef": {"name": REDIS_SECRET, "key": REDIS_URL_KEY}},
        },
        {
            # Not optional: a cluster's API is never open by accident. The app's build task
            # reads it (config_file: null is overlaid by MMLM_*); an empty value is a config
            # error and no token at all makes build_app refuse the ingress (no http_host arg:
            # the proxies listen beyond loopback).
            "name": "MMLM_API__API_TOKEN",
            "valueFrom": {"secretKeyRef": {"name": API_SECRET, "key": API_TOKEN_KEY}},
        },
        {"name": "RAY_USAGE_STATS_ENABLED", "value": "0"},
        {"name": "HF_HUB_OFFLINE", "value": "1"},
        {"name": "TRANSFORMERS_OFFLINE", "value": "1"},
    ]


def _resources(cpus: int, memory: str, gpus: int = 0) -> dict[str, Any]:
    amounts: dict[str, Any] = {"cpu": str(cpus), "memory": memory}
    if gpus:
        amounts["nvidia.com/gpu"] = str(gpus)
    return {"requests": dict(amounts), "limits": dict(amounts)}


def _pod(
    container: str, image: str, resources: dict[str, Any], ports: Sequence[tuple[str, int]]
) -> dict[str, Any]:
    return {
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 1000,
            "runAsGroup": 1000,
            "fsGroup": 1000,
        },
        "containers": [
            {
                "name": container,
                "image": image,
                "imagePullPolicy": "IfNotPresent",
                "env": _env(),
                "resources": resources,
                **(
                    {"ports": [{"name": n, "containerPort": port} for n, port in ports]}
                    if ports
                    else {}
                ),
                "volumeMounts": [{"name": "ray-logs", "mountPath": "/tmp/ray"}],
            }
        ],
        "volumes": [{"name": "ray-logs", "emptyDir": {}}],
    }


def _worker_group(group: WorkerGroup, image: str, start: dict[str, str]) -> dict[str, Any]:
    pod = _pod("ray-worker", image, _resources(group.cpus, group.memory, group.gpus), [])
    if group.gpus:
        pod["tolerations"] = [
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
        ]
    if group.node_selector:
        pod["nodeSelector"] = dict(group.node_selector)
    return {
        "groupName": group.name,
        "replicas": group.min_replicas,
        "minReplicas": group.min_replicas,
        "maxReplicas": group.max_replicas,
        "rayStartParams": start,
        "template": {"spec": pod},
    }


class _Literal(str):
    """A string YAML writes as a ``|`` block, so serveConfigV2 reads like gpu.yaml."""


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(
    _Literal, lambda dumper, text: dumper.represent_scalar("tag:yaml.org,2002:str", text, "|")
)


def _dump(data: Any) -> str:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=100)


def render(
    gpu_yaml: Path | None = None,
    *,
    image: str | None = None,
    namespace: str = DEFAULT_NAMESPACE,
    cpu_node_resource: bool = True,
    shape: ClusterShape | None = None,
) -> list[dict[str, Any]]:
    """The KubeRay manifests (one RayService) for the Serve config ``gpu_yaml``."""
    source = gpu_yaml or default_gpu_yaml()
    shape = shape or ClusterShape()
    image = image or default_image()
    serve = k8s_serve_config(read_serve_config(source), cpu_node_resource=cpu_node_resource)
    head = _pod(
        "ray-head",
        image,
        _resources(shape.head_cpus, shape.head_memory),
        [("gcs-server", 6379), ("dashboard", 8265), ("client", 10001), ("serve", 8000)],
    )
    cpu_start = {"num-cpus": str(shape.cpu_workers.cpus)}
    if cpu_node_resource:
        # KubeRay passes it to `ray start --resources`; the autoscaler reads it from here too.
        cpu_start["resources"] = json.dumps(json.dumps({CPU_NODE_RESOURCE: 1}))
    gpu_start = {
        "num-cpus": str(shape.gpu_workers.cpus),
        "num-gpus": str(shape.gpu_workers.gpus),
    }
    service = {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": {
            "name": NAME,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/name": NAME, "app.kubernetes.io/component": "ray"},
        },
        "spec": {
            # A changed rayClusterConfig (e.g. a new image) starts a new cluster and switches
            # traffic once its Serve app runs; a changed serveConfigV2 updates in place.
            "upgradeStrategy": {"type": "NewCluster"},
            "serveConfigV2": _Literal(_dump(serve)),
            "rayClusterConfig": {
                "rayVersion": RAY_VERSION,
                # Ray >= 2.52 with KubeRay >= 1.5.1: the operator makes a token Secret and
                # sets RAY_AUTH_MODE/RAY_AUTH_TOKEN in every Ray container.
                "authOptions": {"mode": "token"},
                "enableInTreeAutoscaling": True,
                "autoscalerOptions": {
                    "upscalingMode": "Default",
                    "idleTimeoutSeconds": 300,
                    "resources": _resources(1, "1Gi"),
                },
                "headGroupSpec": {
                    "rayStartParams": {"dashboard-host": "0.0.0.0", "num-cpus": "0"},
                    "template": {"spec": head},
                },
                "workerGroupSpecs": [
                    _worker_group(shape.cpu_workers, image, cpu_start),
                    _worker_group(shape.gpu_workers, image, gpu_start),
                ],
            },
        },
    }
    return [service]


def render_yaml(
    gpu_yaml: Path | None = None,
    *,
    image: str | None = None,
    namespace: str = DEFAULT_NAMESPACE,
    cpu_node_resource: bool = True,
    shape: ClusterShape | None = None,
) -> str:
    """``render`` as multi-document YAML with a do-not-edit header."""
    source = gpu_yaml or default_gpu_yaml()
    docs = render(
        source,
        image=image,
        namespace=namespace,
        cpu_node_resource=cpu_node_resource,
        shape=shape,
    )
    header = (
        f"# Generated by `mmlm-stream k8s render` from {source.name}; do not edit by hand.\n"
        "# Regenerate: mmlm-stream k8s render --out k8s/rayservice.yaml\n"
    )
    return header + "".join("---\n" + _dump(doc) for doc in docs)


def example_yaml(gpus: int, base: Path | None = None) -> str:
    """One example Serve config with a header saying where it comes from."""
    what = "CPU only" if gpus == 0 else f"{gpus} GPU{'s' if gpus > 1 else ''} in all"
    header = (
        f"# Serve config for {what}: mmlm_stream.deploy.k8s.serve_config_for({gpus}) of gpu.yaml.\n"
        "# Generated; do not edit by hand.\n"
        "# Regenerate: python -m mmlm_stream.deploy.k8s (from the repository root).\n"
        "# OcrEncoder is left out while OCR is off by default (Serve rejects options for a\n"
        "# deployment the app does not build); Publisher needs REDIS_URL in the Ray env.\n"
    )
    return header + _dump(serve_config_for(gpus, base))


def write_generated(root: Path) -> list[Path]:
    """Rewrite k8s/rayservice.yaml and deployments/examples/*.yaml under ``root``."""
    base = root / "deployments" / "gpu.yaml"
    written = [root / "k8s" / "rayservice.yaml"]
    written[0].parent.mkdir(parents=True, exist_ok=True)
    written[0].write_text(render_yaml(base), encoding="utf-8")
    examples = root / "deployments" / "examples"
    examples.mkdir(parents=True, exist_ok=True)
    for name, gpus in EXAMPLE_GPUS.items():
        path = examples / f"{name}.yaml"
        path.write_text(example_yaml(gpus, base), encoding="utf-8")
        written.append(path)
    return written


def main(argv: Iterable[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    root = Path(args[0]) if args else Path.cwd()
    for path in write_generated(root):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
