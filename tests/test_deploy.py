"""Static checks of the deployment files in deploy/ (no Docker engine or cluster needed)."""

from __future__ import annotations

import importlib.util
import re
import shutil
import urllib.request
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from synthmed.client.cli import generate
from synthmed.contract import ENSEMBLE, FUSED, STAGE1, STAGE2
from synthmed.errors import UserInputError
from synthmed.serving.repository import parse_pbtxt
from synthmed.serving.server import (
    GRPC_PORT,
    HTTP_PORT,
    METRICS_PORT,
    TritonServer,
    free_ports,
)

# The contract with the repository writer and the server launcher: taken from them, so the
# deployment files are checked against what synthmed actually writes and serves.
STAGE1_MODEL, STAGE2_MODEL, ENSEMBLE_MODEL, FUSED_MODEL = STAGE1, STAGE2, ENSEMBLE, FUSED
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
K8S_HPA = DEPLOY / "kubernetes" / "autoscaling.yaml"
K8S_MONITOR = DEPLOY / "kubernetes" / "servicemonitor.yaml"
K8S_JOB = DEPLOY / "kubernetes" / "synthesis-job.yaml"
ADAPTER_VALUES = DEPLOY / "kubernetes" / "prometheus-adapter-values.yaml"
CLIENT_DOCKERFILE = DEPLOY / "client.Dockerfile"
CLIENT_DOCKERIGNORE = DEPLOY / "client.Dockerfile.dockerignore"

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


# --- autoscaling on queue time per request -------------------------------------------------


@pytest.fixture(scope="module")
def deployment(k8s_docs: list[dict]) -> dict:
    return _one(k8s_docs, "Deployment")


@pytest.fixture(scope="module")
def k8s_service(k8s_docs: list[dict]) -> dict:
    return _one(k8s_docs, "Service")


@pytest.fixture(scope="module")
def adapter_rule() -> dict:
    rules = _load(ADAPTER_VALUES)["rules"]["custom"]
    assert len(rules) == 1
    return rules[0]


def _triton_metric_names(text: str) -> set[str]:
    return set(re.findall(r"\bnv_inference_\w+", text))


def test_hpa_scales_the_triton_deployment_on_the_adapter_metric(
    deployment: dict, adapter_rule: dict
) -> None:
    hpa = _load(K8S_HPA)
    assert (hpa["apiVersion"], hpa["kind"]) == ("autoscaling/v2", "HorizontalPodAutoscaler")
    target = hpa["spec"]["scaleTargetRef"]
    assert target == {
        "apiVersion": deployment["apiVersion"],
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    # The Deployment's count is the floor: re-applying triton.yaml never scales below it.
    assert hpa["spec"]["minReplicas"] == deployment["spec"]["replicas"]
    assert hpa["spec"]["maxReplicas"] > hpa["spec"]["minReplicas"]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Pods"
    assert metric["pods"]["metric"]["name"] == adapter_rule["name"]["as"]
    assert metric["pods"]["target"]["type"] == "AverageValue"
    # An idle pod's requests already wait up to max_queue_delay_microseconds in each
    # composing model's batcher: a target near that would scale on batching, not on load.
    delays = [
        parse_pbtxt(p.read_text()).dynamic_batching.max_queue_delay_microseconds
        for p in (ROOT / DEMO_REPOSITORY_DIR).glob("*/config.pbtxt")
    ]
    assert float(metric["pods"]["target"]["averageValue"]) >= 5 * max(delays)
    assert hpa["metadata"]["labels"]["app"] == APP_LABEL


def test_adapter_rule_is_queue_time_over_successful_requests_per_pod(adapter_rule: dict) -> None:
    queue, success = "nv_inference_queue_duration_us", "nv_inference_request_success"
    assert re.fullmatch(rf"{queue}\{{.*\}}", adapter_rule["seriesQuery"])
    assert re.search(adapter_rule["name"]["matches"], queue)
    # Series labels -> Kubernetes resources: the HPA asks per pod, in its namespace.
    overrides = adapter_rule["resources"]["overrides"]
    assert overrides == {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}
    query = " ".join(adapter_rule["metricsQuery"].split())
    assert _triton_metric_names(query) == {queue, success}
    ratio = (
        rf"rate\({queue}\{{<<\.LabelMatchers>>\}}\[1m\]\) / "
        rf"clamp_min\(rate\({success}\{{<<\.LabelMatchers>>\}}\[1m\]\), [0-9.]+\)"
    )
    assert re.search(ratio, query), query
    assert query.startswith("max by (<<.GroupBy>>) (")


@pytest.mark.server
def test_adapter_rule_names_metrics_the_real_server_exports() -> None:
    """Triton's /metrics, from the bundled repository on the real tritonserver, has a series of
    each counter the rule reads for each composing model (warm-up already counted in them)."""
    if not (shutil.which("tritonserver") or importlib.util.find_spec("pytriton")):
        pytest.skip("no tritonserver: install synthmed[serve]")
    http, grpc, metrics = free_ports()
    repository = ROOT / DEMO_REPOSITORY_DIR
    with TritonServer(repository, http_port=http, grpc_port=grpc, metrics_port=metrics) as server:
        url = f"http://{server.url('metrics')}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
    series = re.findall(r'^(nv_inference_\w+)\{model="([^"]+)",version="\d+"\} (\S+)$', text, re.M)
    exported = {(name, model): float(value) for name, model, value in series}
    wanted = _triton_metric_names(_load(ADAPTER_VALUES)["rules"]["custom"][0]["metricsQuery"])
    for name in wanted:
        for model in (STAGE1_MODEL, STAGE2_MODEL, ENSEMBLE_MODEL):
            assert (name, model) in exported, (name, model)
    assert exported[("nv_inference_request_success", STAGE2_MODEL)] > 0  # the warm-up


def test_servicemonitor_scrapes_the_services_metrics_port(
    k8s_service: dict, deployment: dict
) -> None:
    monitor = _load(K8S_MONITOR)
    assert (monitor["apiVersion"], monitor["kind"]) == (
        "monitoring.coreos.com/v1",
        "ServiceMonitor",
    )
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector and selector.items() <= k8s_service["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["endpoints"]
    ports = {p["name"]: p["port"] for p in k8s_service["spec"]["ports"]}
    assert ports[endpoint["port"]] == METRICS_PORT
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert endpoint["path"] == annotations["prometheus.io/path"] == "/metrics"


# --- the Indexed Job that synthesises one dataset over many pods -----------------------------


@pytest.fixture(scope="module")
def job() -> dict:
    return _load(K8S_JOB)


@pytest.fixture(scope="module")
def job_container(job: dict) -> dict:
    (container,) = job["spec"]["template"]["spec"]["containers"]
    return container


def _options(argv: list[str]) -> dict[str, str | None]:
    """`--name value` pairs of a command line (None for a flag)."""
    options: dict[str, str | None] = {}
    for i, token in enumerate(argv):
        if token.startswith("--"):
            following = argv[i + 1] if i + 1 < len(argv) else "--"
            options[token] = None if following.startswith("--") else following
    return options


def test_job_is_indexed_with_a_retry_limit_per_index(job: dict, job_container: dict) -> None:
    assert (job["apiVersion"], job["kind"]) == ("batch/v1", "Job")
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    assert 1 <= spec["parallelism"] <= spec["completions"]
    assert spec["backoffLimitPerIndex"] >= 1
    assert 0 < spec["maxFailedIndexes"] < spec["completions"]
    assert "backoffLimit" not in spec  # with a per-index limit, the Job-wide one stays unset
    # Kubernetes requires Never for backoffLimitPerIndex, and Failed with a podFailurePolicy.
    assert spec["template"]["spec"]["restartPolicy"] == "Never"
    assert spec["podReplacementPolicy"] == "Failed"
    rules = {r["action"]: r for r in spec["podFailurePolicy"]["rules"]}
    # Bad input exits with UserInputError's code: a retry cannot cure it.
    fail_index = rules["FailIndex"]["onExitCodes"]
    assert fail_index["containerName"] == job_container["name"]
    assert (fail_index["operator"], fail_index["values"]) == ("In", [UserInputError.exit_code])
    assert rules["Ignore"]["onPodConditions"] == [{"type": "DisruptionTarget", "status": "True"}]
    assert job["spec"]["template"]["metadata"]["labels"]["app"] == job["metadata"]["labels"]["app"]


def test_job_completions_reach_the_shard_count(job: dict, job_container: dict) -> None:
    env = {e["name"]: e for e in job_container["env"]}
    # Kubernetes sets JOB_COMPLETION_INDEX itself; N must be written out, equal to completions.
    assert env["JOB_COMPLETIONS"]["value"] == str(job["spec"]["completions"])
    assert "JOB_COMPLETION_INDEX" not in env
    options = _options(job_container["command"])
    assert "--shard" not in options  # taken from the two variables
    # Every index writes the same number of whole shards.
    per_index, rest = divmod(int(options["--count"]), job["spec"]["completions"])
    assert rest == 0 and per_index % int(options["--shard-size"]) == 0


def test_job_runs_generate_against_the_triton_service(
    job: dict, job_container: dict, k8s_service: dict
) -> None:
    command = job_container["command"]
    assert command[:2] == ["synthmed", "generate"]
    options = _options(command[2:])
    service_ports = {p["name"]: p["port"] for p in k8s_service["spec"]["ports"]}
    assert service_ports["grpc"] == GRPC_PORT
    assert options["--url"] == f"{k8s_service['metadata']['name']}:{GRPC_PORT}"
    protocol = next(p for p in generate.params if p.name == "protocol")
    assert "--protocol" not in options and protocol.default == "grpc"
    assert options["--count"] == "1000000" and options["--seed"] == "0"
    assert options["--format"] == "webdataset" and options["--shard-size"] == "1000"
    assert str(options["--out"]).startswith("s3://")
    # The init container waits for the ensemble the command uses, through the same Service.
    (wait,) = job["spec"]["template"]["spec"]["initContainers"]
    ready = f"http://{k8s_service['metadata']['name']}:{HTTP_PORT}/v2/models/{ENSEMBLE_MODEL}/ready"
    assert ready in " ".join(wait["command"])


def test_job_command_options_exist_in_synthmed_generate(job_container: dict) -> None:
    params = {opt: p for p in generate.params for opt in p.opts}
    for option, value in _options(job_container["command"][2:]).items():
        assert option in params, f"synthmed generate has no {option}"
        if isinstance(params[option].type, click.Choice):
            assert value in params[option].type.choices, (option, value)


def test_job_reads_s3_credentials_from_one_secret(job_container: dict) -> None:
    env = {e["name"]: e for e in job_container["env"] if e["name"].startswith("AWS_")}
    assert sorted(env) == sorted(
        ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_REGION"]
    )
    refs = {name: e["valueFrom"]["secretKeyRef"] for name, e in env.items()}
    assert all("value" not in e for e in env.values())  # never written in the file
    assert len({r["name"] for r in refs.values()}) == 1
    assert all(r["key"] == name for name, r in refs.items())
    # Keys and secret are required; the endpoint (AWS S3 itself) and region may be absent.
    optional = {name for name, r in refs.items() if r.get("optional")}
    assert optional == {"AWS_ENDPOINT_URL", "AWS_REGION"}


def test_job_image_is_the_one_the_client_dockerfile_builds(job_container: dict) -> None:
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    version = project["project"]["version"]
    repo, tag = _split_image(job_container["image"])
    assert (repo, tag) == ("synthmed-client", version)
    dockerfile = CLIENT_DOCKERFILE.read_text()
    assert f"-f deploy/client.Dockerfile -t REGISTRY/{repo}:{tag} ." in dockerfile
    extra = re.search(r'"/src\[(\w+)\]"', dockerfile)
    assert extra and extra[1] in project["project"]["optional-dependencies"]
    # The pod runs as the image's own numeric, non-root user.
    user = re.search(r"^USER (\d+):(\d+)$", dockerfile, re.M)
    pod = _load(K8S_JOB)["spec"]["template"]["spec"]["securityContext"]
    assert user and (int(user[1]), int(user[2])) == (pod["runAsUser"], pod["runAsGroup"])
    assert pod["runAsNonRoot"] and pod["runAsUser"] != 0
    # The build context is what pip needs: every package folder, pyproject.toml, README.md.
    kept = {
        line[1:] for line in CLIENT_DOCKERIGNORE.read_text().splitlines() if line.startswith("!")
    }
    folders = set(project["tool"]["setuptools"]["package-dir"].values())
    assert kept == folders | {"pyproject.toml", project["project"]["readme"]}


def test_every_kubernetes_file_is_well_formed() -> None:
    for path in sorted((DEPLOY / "kubernetes").glob("*.yaml")):
        for doc in _load_all(path):
            if path == ADAPTER_VALUES:  # Helm values, not an object
                assert "kind" not in doc
                continue
            assert doc["apiVersion"] and doc["kind"], path.name
            assert re.fullmatch(r"[a-z0-9-]+", doc["metadata"]["name"]), path.name
