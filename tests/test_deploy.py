"""Static checks of the deployment files in deploy/ (no Docker engine or cluster needed)."""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from synthmed.contract import ENSEMBLE, FUSED, STAGE1, STAGE2
from synthmed.serving.server import TritonServer

# The contract with the repository writer and the server launcher: taken from them, so the
# deployment files are checked against what synthmed actually writes and serves.
STAGE1_MODEL, STAGE2_MODEL, ENSEMBLE_MODEL, FUSED_MODEL = STAGE1, STAGE2, ENSEMBLE, FUSED
_DEFAULTS = inspect.signature(TritonServer).parameters
HTTP_PORT = _DEFAULTS["http_port"].default
GRPC_PORT = _DEFAULTS["grpc_port"].default
METRICS_PORT = _DEFAULTS["metrics_port"].default
PORTS = {"http": HTTP_PORT, "grpc": GRPC_PORT, "metrics": METRICS_PORT}
MODEL_REPOSITORY_MOUNT = "/models"
DEMO_REPOSITORY_DIR = "model_repository"

IMAGE_REPO = "nvcr.io/nvidia/tritonserver"
APP_LABEL = "synthmed-triton"
MODELS_CLAIM = "synthmed-models"

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "docker-compose.yml"
COMPOSE_ORT = DEPLOY / "docker-compose.onnxruntime.yml"
K8S = DEPLOY / "kubernetes" / "triton.yaml"
K8S_LOADER = DEPLOY / "kubernetes" / "models-loader.yaml"

TAG_RE = re.compile(r"^\d{2}\.\d{2}-py3$")


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _load_all(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]


def _split_image(image: str) -> tuple[str, str]:
    repo, _, tag = image.rpartition(":")
    return repo, tag


def _one(docs: list[dict], kind: str) -> dict:
    found = [d for d in docs if d.get("kind") == kind]
    assert len(found) == 1, f"expected one {kind} in {K8S.name}, found {len(found)}"
    return found[0]


@pytest.fixture(scope="module")
def service() -> dict:
    return _load(COMPOSE)["services"]["triton"]


@pytest.fixture(scope="module")
def k8s_docs() -> list[dict]:
    return _load_all(K8S)


@pytest.fixture(scope="module")
def container(k8s_docs: list[dict]) -> dict:
    containers = _one(k8s_docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def _triton_args(argv: list[str]) -> list[str]:
    assert argv[0] == "tritonserver"
    return argv[1:]


def _check_triton_args(args: list[str]) -> None:
    assert f"--model-repository={MODEL_REPOSITORY_MOUNT}" in args
    assert "--exit-on-error=true" in args
    assert f"--http-port={HTTP_PORT}" in args
    assert f"--grpc-port={GRPC_PORT}" in args
    assert f"--metrics-port={METRICS_PORT}" in args
    assert all(a.startswith("--") and "=" in a for a in args), args


def test_image_is_ngc_tritonserver_py3_with_one_tag(service: dict, container: dict) -> None:
    compose_repo, compose_tag = _split_image(service["image"])
    k8s_repo, k8s_tag = _split_image(container["image"])
    assert compose_repo == k8s_repo == IMAGE_REPO
    assert TAG_RE.match(compose_tag), compose_tag
    assert compose_tag == k8s_tag


def test_tritonserver_arguments(service: dict, container: dict) -> None:
    compose_args = _triton_args(service["command"])
    k8s_args = _triton_args(container["command"] + container["args"])
    _check_triton_args(compose_args)
    _check_triton_args(k8s_args)
    assert compose_args == k8s_args


def test_compose_ports_bind_loopback_only(service: dict) -> None:
    published = {}
    for spec in service["ports"]:
        host_ip, host_port, container_port = str(spec).split(":")
        assert host_ip == "127.0.0.1", spec
        assert host_port == container_port, spec
        published[int(container_port)] = spec
    assert sorted(published) == sorted(PORTS.values())


def test_compose_mounts_the_demo_repository_read_only(service: dict) -> None:
    mounts = [str(v).split(":") for v in service["volumes"]]
    at_models = [m for m in mounts if m[1] == MODEL_REPOSITORY_MOUNT]
    assert len(at_models) == 1, mounts
    source, _, *mode = at_models[0]
    assert mode == ["ro"]
    # Compose resolves a relative bind source against the compose file's folder.
    resolved = (COMPOSE.parent / source).resolve()
    assert resolved == ROOT / DEMO_REPOSITORY_DIR
    assert resolved.is_dir()
    # A Triton repository: one folder per model with config.pbtxt (synthmed_fused is optional).
    for model in (STAGE1_MODEL, STAGE2_MODEL, ENSEMBLE_MODEL):
        assert (resolved / model / "config.pbtxt").is_file(), model


def test_compose_reserves_an_nvidia_gpu(service: dict) -> None:
    devices = service["deploy"]["resources"]["reservations"]["devices"]
    gpus = [d for d in devices if d.get("driver") == "nvidia" and "gpu" in d["capabilities"]]
    assert len(gpus) == 1
    assert gpus[0]["count"] == 1


def test_compose_healthcheck_and_runtime(service: dict) -> None:
    test = service["healthcheck"]["test"]
    assert test[0] == "CMD" and test[1] == "curl"
    assert f"http://localhost:{HTTP_PORT}/v2/health/ready" in test
    assert service["shm_size"] == "1g"
    assert service["restart"] == "unless-stopped"


def test_compose_onnxruntime_override_builds_on_the_same_image(service: dict) -> None:
    override = _load(COMPOSE_ORT)["services"]["triton"]
    dockerfile = override["build"]["dockerfile_inline"].splitlines()
    assert dockerfile[0] == f"FROM {service['image']}"
    assert any("onnxruntime==" in line for line in dockerfile[1:])
    assert not _split_image(override["image"])[0].startswith("nvcr.io/")


def test_k8s_container_ports_are_named(container: dict) -> None:
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == PORTS


def test_k8s_probes(container: dict) -> None:
    ready = container["readinessProbe"]["httpGet"]
    assert ready["path"] == "/v2/health/ready"
    assert ready["port"] in ("http", HTTP_PORT)
    live = container["livenessProbe"]["httpGet"]
    assert live["path"] == "/v2/health/live"
    assert live["port"] in ("http", HTTP_PORT)
    startup = container["startupProbe"]
    assert startup["httpGet"]["path"] == f"/v2/models/{ENSEMBLE_MODEL}/ready"
    # Generous: model loading may take minutes before HTTP opens.
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300


def test_k8s_requests_one_gpu_and_cpu_memory(container: dict) -> None:
    resources = container["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == 1
    assert "cpu" in resources["requests"] and "memory" in resources["requests"]


def test_k8s_volumes(k8s_docs: list[dict], container: dict) -> None:
    pod = _one(k8s_docs, "Deployment")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}

    models = mounts[MODEL_REPOSITORY_MOUNT]
    assert models["readOnly"] is True
    claim = volumes[models["name"]]["persistentVolumeClaim"]
    assert claim["claimName"] == MODELS_CLAIM
    pvc = _one(k8s_docs, "PersistentVolumeClaim")
    assert pvc["metadata"]["name"] == MODELS_CLAIM

    shm = volumes[mounts["/dev/shm"]["name"]]["emptyDir"]
    assert shm["medium"] == "Memory"

    loader = _load(K8S_LOADER)
    claims = [v["persistentVolumeClaim"]["claimName"] for v in loader["spec"]["volumes"]]
    assert claims == [MODELS_CLAIM]


def test_k8s_deployment_labels_and_metrics_annotations(k8s_docs: list[dict]) -> None:
    deployment = _one(k8s_docs, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    template = deployment["spec"]["template"]["metadata"]
    assert template["labels"]["app"] == APP_LABEL
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= template["labels"].items()
    annotations = template["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(METRICS_PORT)
    assert annotations["prometheus.io/path"] == "/metrics"


def test_k8s_service_matches_pods_and_ports(k8s_docs: list[dict], container: dict) -> None:
    svc = _one(k8s_docs, "Service")
    assert svc["spec"]["type"] == "ClusterIP"
    pod_labels = _one(k8s_docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    selector = svc["spec"]["selector"]
    assert selector and selector.items() <= pod_labels.items()
    container_ports = {p["name"] for p in container["ports"]}
    ports = {}
    for p in svc["spec"]["ports"]:
        assert p["targetPort"] in container_ports or p["targetPort"] == p["port"]
        ports[p["name"]] = p["port"]
    assert ports == PORTS


def test_k8s_documents_are_well_formed(k8s_docs: list[dict]) -> None:
    assert {d["kind"] for d in k8s_docs} == {"PersistentVolumeClaim", "Deployment", "Service"}
    for doc in [*k8s_docs, _load(K8S_LOADER)]:
        assert doc["apiVersion"] in ("v1", "apps/v1")
        assert doc["metadata"]["name"]
