"""The repository writer: configs that parse and round-trip, safe versioning, same pixels."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from tritonclient.grpc import model_config_pb2 as mc

from synthmed.contract import CONDITIONAL, ENSEMBLE, FUSED, STAGE1, STAGE2
from synthmed.errors import UserInputError
from synthmed.export.cli import export_repository_cmd
from synthmed.latents import latents
from synthmed.serving.repository import (
    BACKENDS,
    INSTANCE_KINDS,
    PYTHON_MODEL,
    RepositoryOptions,
    parse_pbtxt,
    repository_models,
    to_pbtxt,
    write_repository,
)
from synthmed.serving.runtime import InProcessRuntime
from synthmed.training.sample import DEMO_STAGE1, DEMO_STAGE2, TwoStagePipeline
from tests.conftest import assert_one_line_error, run_cli
from tests.tolerance import assert_same_samples


@pytest.fixture(scope="module")
def demo_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("repo") / "onnx"
    assert run_cli("export", "onnx", "--demo", "--out", out).exit_code == 0
    return out


@pytest.fixture(scope="module")
def fake_engines(demo_onnx: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Stand-in plan files: the writer copies them, it never reads them."""
    engines = tmp_path_factory.mktemp("engines")
    for name in (STAGE1, STAGE2, FUSED):
        (engines / f"{name}.plan").write_bytes(b"plan")
        (engines / f"{name}.plan.json").write_text("{}")
    return engines


@pytest.fixture(scope="module")
def all_models_repository(
    demo_onnx: Path, cstylegan2_onnx: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """Every composing model (stage I, stage II, fused, the conditional StyleGAN2) and the
    ensemble, written by the command line with CPU instances asked for explicitly."""
    repo = tmp_path_factory.mktemp("all_models") / "repo"
    for onnx in (demo_onnx, cstylegan2_onnx):
        result = run_cli(
            "export", "repository", "--onnx", onnx, "--out", repo, "--instance-kind", "cpu"
        )
        assert result.exit_code == 0, result.output
    return repo


def composing_configs(repo: Path) -> dict[str, mc.ModelConfig]:
    """Config of every model in `repo` but the ensemble."""
    configs = {
        name: parse_pbtxt((repo / name / "config.pbtxt").read_text())
        for name in repository_models(repo)
    }
    return {name: c for name, c in configs.items() if c.platform != "ensemble"}


def assert_zero_warmup(config: mc.ModelConfig, batch_sizes: list[int]) -> None:
    """One zero-filled warm-up sample per batch size, with exactly the model's inputs."""
    assert [w.batch_size for w in config.model_warmup] == batch_sizes, config.name
    for sample in config.model_warmup:
        assert sorted(sample.inputs) == sorted(t.name for t in config.input)
        for tensor in config.input:
            given = sample.inputs[tensor.name]
            assert given.data_type == tensor.data_type and given.dims == tensor.dims
            assert given.WhichOneof("input_data_type") == "zero_data" and given.zero_data


@pytest.mark.parametrize("backend", ["python", "onnxruntime", "tensorrt"])
def test_every_config_parses_and_round_trips(
    backend: str, demo_onnx: Path, fake_engines: Path, tmp_path: Path
) -> None:
    options = RepositoryOptions(backend=backend, tensorrt_accelerator=backend == "onnxruntime")
    names = write_repository(demo_onnx, tmp_path, options, engines_dir=fake_engines)
    assert sorted(names) == sorted([STAGE1, STAGE2, FUSED, ENSEMBLE])
    assert list(repository_models(tmp_path)) == sorted(names)
    for name in names:
        text = (tmp_path / name / "config.pbtxt").read_text()
        config = parse_pbtxt(text)
        assert config.name == name and config.max_batch_size == 32
        assert to_pbtxt(config) == text
        assert all(len(t.dims) >= 1 for t in [*config.input, *config.output])
    stage2 = parse_pbtxt((tmp_path / STAGE2 / "config.pbtxt").read_text())
    assert list(stage2.dynamic_batching.preferred_batch_size) == [8, 16, 32]
    kind = stage2.instance_group[0].kind
    assert (kind == stage2.instance_group[0].KIND_CPU) == (backend == "python")
    expected_file = {"python": "model.py", "onnxruntime": "model.onnx", "tensorrt": "model.plan"}[
        backend
    ]
    assert (tmp_path / STAGE2 / "1" / expected_file).is_file()
    ensemble = parse_pbtxt((tmp_path / ENSEMBLE / "config.pbtxt").read_text())
    assert ensemble.platform == "ensemble"
    assert [s.model_name for s in ensemble.ensemble_scheduling.step] == [STAGE1, STAGE2]
    assert sorted(o.name for o in ensemble.output) == ["image", "mask"]
    assert not ensemble.model_warmup  # Triton refuses warm-up on an ensemble
    for config in composing_configs(tmp_path).values():
        assert_zero_warmup(config, [1, 32])


def test_existing_version_needs_overwrite_or_new_version(demo_onnx: Path, tmp_path: Path) -> None:
    write_repository(demo_onnx, tmp_path, RepositoryOptions())
    with pytest.raises(UserInputError, match="version 1 of synthmed_stage1"):
        write_repository(demo_onnx, tmp_path, RepositoryOptions())
    write_repository(demo_onnx, tmp_path, RepositoryOptions(version=2))
    assert sorted(p.name for p in (tmp_path / STAGE1).iterdir()) == ["1", "2", "config.pbtxt"]
    write_repository(demo_onnx, tmp_path, RepositoryOptions(), overwrite=True)
    assert not [p for p in tmp_path.parent.iterdir() if p.name.startswith(f".{tmp_path.name}.")]


def test_in_process_runtime_matches_pytorch(demo_onnx: Path, tmp_path: Path) -> None:
    write_repository(demo_onnx, tmp_path, RepositoryOptions(fused=False))
    runtime = InProcessRuntime(tmp_path, threads=1)
    z = latents(3, range(7), runtime.nz)
    images, masks = runtime.run(z)
    ref_images, ref_masks = TwoStagePipeline(DEMO_STAGE1, DEMO_STAGE2)(z)
    # onnxruntime against PyTorch: equal up to rounding (see tests/tolerance.py).
    assert_same_samples((images, masks), (ref_images, ref_masks), image_follows_mask=True)
    # Stage II alone, with the noise of the same samples: the same images, in any batching.
    assert np.array_equal(runtime.translate(masks, seed=3), images)
    assert np.array_equal(runtime.translate(masks[4:], seed=3, start=4), images[4:])


def test_every_composing_model_warms_up_with_its_own_inputs(all_models_repository: Path):
    configs = composing_configs(all_models_repository)
    assert sorted(configs) == sorted([STAGE1, STAGE2, FUSED, CONDITIONAL])
    for config in configs.values():
        assert_zero_warmup(config, [1, 32])
    # The conditional model's scalars: the wire shape [1] (Triton reshapes it to []), the
    # optional truncation included, since native backends need every graph input.
    conditional = configs[CONDITIONAL].model_warmup[0].inputs
    assert {k: list(v.dims) for k, v in conditional.items()} == {
        "z": [16],
        "class": [1],
        "truncation": [1],
    }
    assert conditional["class"].data_type == mc.TYPE_INT64  # label 0: a class that exists


def test_warmup_follows_max_batch_size_and_can_be_left_out(demo_onnx: Path, tmp_path: Path):
    write_repository(
        demo_onnx, tmp_path / "one", RepositoryOptions(max_batch_size=1, preferred_batch_sizes=(1,))
    )
    for config in composing_configs(tmp_path / "one").values():
        assert_zero_warmup(config, [1])
    result = run_cli(
        "export", "repository", "--onnx", demo_onnx, "--out", tmp_path / "off", "--no-warmup"
    )
    assert result.exit_code == 0, result.output
    assert not any(c.model_warmup for c in composing_configs(tmp_path / "off").values())


@pytest.mark.parametrize(
    ("backend", "asked", "written"),
    [
        ("python", None, "KIND_CPU"),
        ("python", "cpu", "KIND_CPU"),
        ("onnxruntime", None, "KIND_GPU"),
        ("onnxruntime", "gpu", "KIND_GPU"),
        ("onnxruntime", "cpu", "KIND_CPU"),
        ("tensorrt", None, "KIND_GPU"),
        ("tensorrt", "gpu", "KIND_GPU"),
    ],
)
def test_instance_kind_round_trips_through_the_configs(
    backend: str,
    asked: str | None,
    written: str,
    demo_onnx: Path,
    fake_engines: Path,
    tmp_path: Path,
) -> None:
    args = ["--backend", backend, "--engines", fake_engines, "--no-fused"]
    args += ["--instance-kind", asked] if asked else []
    result = run_cli("export", "repository", "--onnx", demo_onnx, "--out", tmp_path, *args)
    assert result.exit_code == 0, result.output
    assert f"{written.removeprefix('KIND_').lower()} instances" in result.output
    for config in composing_configs(tmp_path).values():
        kinds = [mc.ModelInstanceGroup.Kind.Name(g.kind) for g in config.instance_group]
        assert kinds == [written], config.name


def test_command_line_choices_are_the_writers() -> None:
    """The command line lists backends and kinds without importing the writer (protobuf at
    every start); the writer owns them, so the two lists must stay equal."""
    choices = {p.name: tuple(getattr(p.type, "choices", ())) for p in export_repository_cmd.params}
    assert sorted(choices["backend"]) == sorted(BACKENDS)
    assert sorted(choices["instance_kind"]) == sorted(INSTANCE_KINDS)


def test_bad_input(demo_onnx: Path, tmp_path: Path) -> None:
    no_manifest = tmp_path / "plain"
    no_manifest.mkdir()
    result = run_cli("export", "repository", "--onnx", no_manifest, "--out", tmp_path / "r")
    assert_one_line_error(result, "no export_manifest.json")
    trt = run_cli(
        "export",
        "repository",
        "--onnx",
        demo_onnx,
        "--backend",
        "tensorrt",
        "--out",
        tmp_path / "r",
    )
    assert_one_line_error(trt, "--backend tensorrt needs --engines")
    partial = tmp_path / "partial"
    shutil.copytree(demo_onnx, partial)
    manifest = json.loads((partial / "export_manifest.json").read_text())
    del manifest["models"][STAGE2]
    (partial / "export_manifest.json").write_text(json.dumps(manifest))
    lacks = run_cli("export", "repository", "--onnx", partial, "--out", tmp_path / "r")
    assert_one_line_error(lacks, "needs synthmed_stage2")
    # An export from before stage II took z: the ensemble could not give it the sample's noise.
    manifest = json.loads((demo_onnx / "export_manifest.json").read_text())
    del manifest["models"][STAGE2]["inputs"]["z"]
    (partial / "export_manifest.json").write_text(json.dumps(manifest))
    old = run_cli("export", "repository", "--onnx", partial, "--out", tmp_path / "r")
    assert_one_line_error(old, "synthmed_stage2 takes z of shape None but synthmed_stage1 draws")
    repository = ["export", "repository", "--onnx", demo_onnx, "--out", tmp_path / "r"]
    for args, message in (
        (["--backend", "tensorrt", "--instance-kind", "cpu"], "a TensorRT plan runs on a GPU only"),
        (["--backend", "python", "--instance-kind", "gpu"], "runs onnxruntime on the CPU"),
        (
            ["--backend", "onnxruntime", "--tensorrt-accelerator", "--instance-kind", "cpu"],
            "--tensorrt-accelerator needs GPU instances",
        ),
    ):
        assert_one_line_error(run_cli(*repository, *args), message)
    assert not (tmp_path / "r").exists()
    with pytest.raises(UserInputError, match="model repository does not exist"):
        InProcessRuntime(tmp_path / "nowhere")


def test_bundled_repository_is_what_the_writer_writes_today(demo_onnx: Path, tmp_path: Path):
    """The demo repository in git must not drift from the writer: same configs (tuning
    parameters included) and the same python-backend model file."""
    bundled = Path(__file__).resolve().parents[2] / "model_repository"
    write_repository(demo_onnx, tmp_path, RepositoryOptions(fused=False))
    for name in (STAGE1, STAGE2, ENSEMBLE):
        assert (tmp_path / name / "config.pbtxt").read_text() == (
            bundled / name / "config.pbtxt"
        ).read_text(), name
    for name in (STAGE1, STAGE2):
        assert (bundled / name / "1" / "model.py").read_bytes() == PYTHON_MODEL.read_bytes()


def test_cpu_thread_settings_reach_the_config(demo_onnx: Path, tmp_path: Path):
    write_repository(demo_onnx, tmp_path, RepositoryOptions(cpu_threads=1, cpu_spinning=True))
    params = parse_pbtxt((tmp_path / STAGE2 / "config.pbtxt").read_text()).parameters
    assert params["intra_op_threads"].string_value == "1"
    assert params["allow_spinning"].string_value == "1"


@pytest.mark.server
def test_warmup_runs_on_every_composing_model_before_it_is_ready(
    all_models_repository: Path, tmp_path: Path
) -> None:
    """On the real tritonserver, with CPU instances: right after every model reports ready, and
    before any client request, each composing model has executed its two warm-up batches (1 and
    32 samples), and Triton logged them before it logged the model as loaded."""
    if not (shutil.which("tritonserver") or importlib.util.find_spec("pytriton")):
        pytest.skip("no tritonserver: install synthmed[serve]")
    from synthmed.serving.server import TritonServer, free_ports

    log = tmp_path / "triton.log"
    http, grpc, metrics = free_ports()
    server = TritonServer(
        all_models_repository,
        http_port=http,
        grpc_port=grpc,
        metrics_port=metrics,
        log_verbose=1,  # Triton logs each warm-up sample it runs at verbose level 1
        extra_args=[f"--log-file={log}"],
    )
    with server:
        stats = {}
        for name in repository_models(all_models_repository):
            url = f"http://{server.url('http')}/v2/models/{name}/stats"
            with urllib.request.urlopen(url, timeout=10) as response:
                stats[name] = json.load(response)["model_stats"][0]
    composing = sorted(composing_configs(all_models_repository))
    for name in composing:
        assert stats[name]["execution_count"] == 2, (name, stats[name])
        assert stats[name]["inference_count"] == 1 + 32, name
        assert sorted(int(b["batch_size"]) for b in stats[name]["batch_stats"]) == [1, 32]
    assert stats[ENSEMBLE]["execution_count"] == 0  # nothing was sent to the server
    text = log.read_text()
    for name in composing:
        loaded = text.index(f"successfully loaded '{name}'")
        for sample in ("zeros_batch_1", "zeros_batch_32"):
            ran = re.search(
                rf"model '{name}' instance \S+ is running warmup sample '{sample}'", text
            )
            assert ran and ran.start() < loaded, (name, sample)
