"""The class-conditional StyleGAN2 served: repository configs, the real tritonserver, the client
and `synthmed generate --model cstylegan2`, all equal to onnxruntime run in-process."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image
from tritonclient.grpc import model_config_pb2 as mc

from synthmed.client import InvalidRequestError, SynthMedClient
from synthmed.contract import CONDITIONAL, ENSEMBLE, PARAM_PROVENANCE, STAGE1, STAGE2
from synthmed.errors import UserInputError
from synthmed.latents import latents
from synthmed.serving.repository import (
    RepositoryOptions,
    parse_pbtxt,
    to_pbtxt,
    write_repository,
)
from synthmed.serving.runtime import ConditionalRuntime, InProcessRuntime
from synthmed.serving.server import TritonServer, free_ports
from tests.conftest import assert_one_line_error, run_cli
from tests.serving.conftest import REPO_ROOT

BUNDLED = REPO_ROOT / "model_repository"
CLASSES = ("retina", "cells")


def _tensors(config_tensors) -> dict:  # noqa: ANN001 (protobuf repeated field)
    dtypes = {"TYPE_FP32": "float32", "TYPE_UINT8": "uint8"}
    return {
        t.name: {"dtype": dtypes[mc.DataType.Name(t.data_type)], "shape": [-1, *t.dims]}
        for t in config_tensors
    }


@pytest.fixture(scope="module")
def combined_onnx(cstylegan2_onnx: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One export folder with both families: the conditional model and the bundled demo's two
    stages (their graphs and I/O taken from model_repository/, so no second export is run)."""
    out = tmp_path_factory.mktemp("combined") / "onnx"
    shutil.copytree(cstylegan2_onnx, out)
    manifest = json.loads((out / "export_manifest.json").read_text())
    for name in (STAGE1, STAGE2):
        shutil.copy2(BUNDLED / name / "1" / "model.onnx", out / f"{name}.onnx")
        config = parse_pbtxt((BUNDLED / name / "config.pbtxt").read_text())
        manifest["models"][name] = {
            "file": f"{name}.onnx",
            "inputs": _tensors(config.input),
            "outputs": _tensors(config.output),
            # The export manifest and the config parameter hold provenance in one shape.
            "provenance": json.loads(config.parameters[PARAM_PROVENANCE].string_value),
        }
    (out / "export_manifest.json").write_text(json.dumps(manifest))
    return out


@pytest.fixture(scope="module")
def repo(combined_onnx: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cstylegan2_repo") / "models"
    names = write_repository(combined_onnx, out, RepositoryOptions(max_queue_delay_us=500))
    assert sorted(names) == sorted([STAGE1, STAGE2, ENSEMBLE, CONDITIONAL])
    return out


@pytest.fixture(scope="module")
def server(repo: Path) -> Iterator[TritonServer]:
    """One server for the module, serving the dual GAN and the conditional model together."""
    http, grpc, metrics = free_ports()
    with TritonServer(repo, http_port=http, grpc_port=grpc, metrics_port=metrics) as running:
        yield running


@pytest.fixture(scope="module")
def session(cstylegan2_onnx: Path) -> ort.InferenceSession:
    """The exported graph itself, run with onnxruntime: the reference for every path."""
    path = cstylegan2_onnx / "synthmed_cstylegan2.onnx"
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def reference(session: ort.InferenceSession, seed: int, indices, label: int, psi: float = 1.0):
    z = latents(seed, list(indices), session.get_inputs()[0].shape[1])
    feeds = {
        "z": z,
        "class": np.full(len(z), label, np.int64),
        "truncation": np.full(len(z), psi, np.float32),
    }
    return session.run(["image", "mask"], feeds)


def stacked(samples: list) -> tuple[np.ndarray, np.ndarray]:
    return np.stack([s[1] for s in samples]), np.stack([s[2] for s in samples])


# --- the repository writer (no server) ---------------------------------------------------


@pytest.mark.parametrize("backend", ["python", "onnxruntime", "tensorrt"])
def test_config_for_every_backend(backend: str, cstylegan2_onnx: Path, tmp_path: Path) -> None:
    engines = tmp_path / "engines"
    engines.mkdir()
    (engines / f"{CONDITIONAL}.plan").write_bytes(b"plan")
    out = tmp_path / "repo"
    names = write_repository(
        cstylegan2_onnx, out, RepositoryOptions(backend=backend), engines_dir=engines
    )
    assert names == [CONDITIONAL]  # no stage I/II in the export: no dual GAN, no ensemble
    text = (out / CONDITIONAL / "config.pbtxt").read_text()
    config = parse_pbtxt(text)
    assert to_pbtxt(config) == text
    inputs = {t.name: t for t in config.input}
    assert list(inputs) == ["z", "class", "truncation"]
    assert list(inputs["z"].dims) == [16] and not inputs["z"].HasField("reshape")
    for name in ("class", "truncation"):  # per-sample scalars: [B, 1] on the wire, [B] inside
        assert list(inputs[name].dims) == [1]
        assert inputs[name].HasField("reshape") and list(inputs[name].reshape.shape) == []
    assert inputs["class"].data_type == mc.TYPE_INT64
    assert not inputs["class"].optional
    assert inputs["truncation"].optional == (backend == "python")
    assert [list(o.dims) for o in config.output] == [[64, 64, 3], [64, 64]]
    params = {k: v.string_value for k, v in config.parameters.items()}
    assert json.loads(params["synthmed_classes"]) == list(CLASSES)
    assert json.loads(params["synthmed_grayscale_classes"]) == [1]
    assert float(params["default_truncation"]) == 1.0
    assert json.loads(params[PARAM_PROVENANCE])[0]["role"] == "cstylegan2"
    model_file = {"python": "model.py", "onnxruntime": "model.onnx", "tensorrt": "model.plan"}
    assert (out / CONDITIONAL / "1" / model_file[backend]).is_file()


def test_export_without_a_servable_model_is_refused(cstylegan2_onnx: Path, tmp_path: Path):
    export = tmp_path / "onnx"
    shutil.copytree(cstylegan2_onnx, export)
    manifest = json.loads((export / "export_manifest.json").read_text())
    manifest["models"] = {"synthmed_single": manifest["models"][CONDITIONAL]}
    (export / "export_manifest.json").write_text(json.dumps(manifest))
    result = run_cli("export", "repository", "--onnx", export, "--out", tmp_path / "r")
    assert_one_line_error(result, "nothing to serve", CONDITIONAL, "synthmed_single")


def test_in_process_runtime_equals_the_exported_graph(repo: Path, session) -> None:
    runtime = ConditionalRuntime(repo, threads=1)
    assert runtime.classes == CLASSES and runtime.contract.default_truncation == 1.0
    z = latents(4, range(5), runtime.nz)
    images, masks = runtime.run(z, np.full(5, 1))
    ref_images, ref_masks = reference(session, 4, range(5), 1)
    assert np.array_equal(images, ref_images) and np.array_equal(masks, ref_masks)
    with pytest.raises(UserInputError, match=r"0..1 \(0=retina, 1=cells\), got \[2\]"):
        runtime.run(z, np.full(5, 2))


# --- served by the real tritonserver ---------------------------------------------------------


@pytest.mark.server
@pytest.mark.parametrize("label", ["retina", "cells", 1])
def test_client_equals_onnxruntime(server, session, label) -> None:
    with SynthMedClient(server.url("grpc"), model=CONDITIONAL) as client:
        assert client.classes == CLASSES and client.contract.nz == 16
        images, masks = stacked(list(client.generate(9, seed=11, label=label, batch_size=4)))
    k = CLASSES.index(label) if isinstance(label, str) else label
    ref_images, ref_masks = reference(session, 11, range(9), k)
    assert np.array_equal(images, ref_images)  # bit for bit: same graph, same runtime
    assert np.array_equal(masks, ref_masks)
    assert set(np.unique(masks)) <= {0, 255}
    gray = (images[..., 0] == images[..., 1]).all() and (images[..., 1] == images[..., 2]).all()
    assert gray == (k == 1)  # cells are a grayscale class: R == G == B


@pytest.mark.server
def test_truncation_default_and_effect(server, session) -> None:
    import tritonclient.grpc as grpcclient

    z = latents(2, range(6), 16)
    raw = grpcclient.InferenceServerClient(server.url("grpc"))
    tensors = []
    for name, array, dtype in (("z", z, "FP32"), ("class", np.zeros((6, 1), np.int64), "INT64")):
        tensor = grpcclient.InferInput(name, list(array.shape), dtype)
        tensor.set_data_from_numpy(array)
        tensors.append(tensor)
    omitted = raw.infer(CONDITIONAL, tensors).as_numpy("image")  # no truncation input at all
    raw.close()
    with SynthMedClient(server.url("grpc"), model=CONDITIONAL) as client:
        default = stacked(list(client.generate(6, seed=2, label=0)))[0]
        one = stacked(list(client.generate(6, seed=2, label=0, truncation=1.0)))[0]
        half = stacked(list(client.generate(6, seed=2, label=0, truncation=0.5)))[0]
    assert np.array_equal(omitted, one) and np.array_equal(default, one)
    assert not np.array_equal(half, one)
    assert np.array_equal(half, reference(session, 2, range(6), 0, 0.5)[0])


@pytest.mark.server
def test_samples_do_not_depend_on_batching_protocol_or_start(server, session) -> None:
    ref_images, ref_masks = reference(session, 5, range(24), 1)
    for batch_size, in_flight, protocol in ((1, 4, "grpc"), (7, 2, "http"), (24, 1, "grpc")):
        url = server.url(protocol)
        with SynthMedClient(
            url, protocol=protocol, model=CONDITIONAL, max_in_flight=in_flight
        ) as c:
            samples = list(c.generate(24, seed=5, label="cells", batch_size=batch_size))
        assert [i for i, _, _ in samples] == list(range(24))
        images, masks = stacked(samples)
        assert np.array_equal(images, ref_images) and np.array_equal(masks, ref_masks)
    with SynthMedClient(server.url("grpc"), model=CONDITIONAL) as client:
        tail = list(client.generate(4, seed=5, label=1, start=20, batch_size=3))
    assert np.array_equal(stacked(tail)[0], ref_images[20:])


@pytest.mark.server
def test_async_client_and_the_dual_gan_beside_it(server, session) -> None:
    from synthmed.client import AsyncSynthMedClient

    async def collect() -> list:
        async with AsyncSynthMedClient(server.url("grpc"), model=CONDITIONAL) as client:
            return [s async for s in client.generate(10, seed=7, label="retina", batch_size=3)]

    assert np.array_equal(
        stacked(asyncio.run(collect()))[0], reference(session, 7, range(10), 0)[0]
    )
    with SynthMedClient(server.url("grpc")) as dual:  # the ensemble, from the same repository
        assert not dual.contract.conditional and dual.classes == ()
        images, masks = stacked(list(dual.generate(4, seed=7)))
    runtime = InProcessRuntime(BUNDLED, threads=1)
    ref_images, ref_masks = runtime.run(latents(7, range(4), runtime.nz))
    assert np.array_equal(images, ref_images) and np.array_equal(masks, ref_masks)


@pytest.mark.server
def test_client_refuses_bad_labels(server) -> None:
    with SynthMedClient(server.url("grpc"), model=CONDITIONAL) as client:
        with pytest.raises(InvalidRequestError, match=r"give a label, one of 0=retina, 1=cells"):
            client.generate(2)
        with pytest.raises(InvalidRequestError, match=r"unknown class 'bones'.*0=retina, 1=cells"):
            client.generate(2, label="bones")
        with pytest.raises(InvalidRequestError, match=r"label 2 is out of range.*expected 0..1"):
            client.generate(2, label=2)
        with pytest.raises(InvalidRequestError, match="label -1 is out of range"):
            client.generate(2, label=-1)
        with pytest.raises(InvalidRequestError, match="finite number"):
            client.generate(2, label=0, truncation=float("nan"))
    with SynthMedClient(server.url("grpc")) as dual:
        with pytest.raises(InvalidRequestError, match="not class-conditional and takes no label"):
            dual.generate(2, label=0)


# --- `synthmed generate --model cstylegan2` -------------------------------------------------


def _files(out: Path) -> dict[str, np.ndarray]:
    return {
        f"{kind}/{name}": np.asarray(Image.open(out / kind / name))
        for kind in ("images", "masks")
        for name in sorted(os.listdir(out / kind))
    }


@pytest.mark.server
def test_generate_through_triton_equals_in_process(server, repo: Path, session, tmp_path) -> None:
    served, local = tmp_path / "served", tmp_path / "local"
    common = ["generate", "--count", 10, "--seed", 3, "--model", "cstylegan2", "--label", "cells"]
    result = run_cli(*common, "--out", served, "--url", server.url("grpc"), "--batch-size", 4)
    assert result.exit_code == 0, result.output
    assert run_cli(*common, "--out", local, "--model-repository", repo).exit_code == 0
    files, local_files = _files(served), _files(local)
    assert sorted(files) == sorted(local_files) and len(files) == 20
    assert all(np.array_equal(files[k], local_files[k]) for k in files)
    ref_images, ref_masks = reference(session, 3, range(10), 1)
    assert np.array_equal(files["images/000009.png"], ref_images[9])
    assert np.array_equal(files["masks/000000.png"], ref_masks[0])
    entry = json.loads((served / "manifest.jsonl").read_text().splitlines()[0])
    assert entry["model"] == CONDITIONAL
    assert (entry["label"], entry["class_name"], entry["truncation"]) == (1, "cells", 1.0)
    assert entry["weights_sha256"]["cstylegan2"]
    card = (served / "DATASET_CARD.md").read_text()
    assert f"`{CONDITIONAL}`" in card and "Class: `cells` (label 1)" in card
    assert "Truncation psi: 1.0 (1.0: none)" in card
    # A resumed run must make the same class with the same psi.
    other = run_cli(
        *common[:-1], "retina", "--out", served, "--url", server.url("grpc"), "--resume"
    )
    assert_one_line_error(other, "label 0 differs from the run being resumed (label 1)")
    psi = run_cli(
        *common, "--truncation", 0.5, "--out", served, "--model-repository", repo, "--resume"
    )
    assert_one_line_error(psi, "truncation 0.5 differs", "(truncation 1.0)")
    same = run_cli(
        *common[:2], 12, *common[3:], "--out", served, "--model-repository", repo, "--resume"
    )
    assert same.exit_code == 0, same.output
    assert len((served / "manifest.jsonl").read_text().splitlines()) == 12


@pytest.mark.server
def test_generate_bad_input_is_one_line(server, repo: Path, tmp_path: Path) -> None:
    url = ("--url", server.url("grpc"))
    base = ["generate", "--count", 2, "--out", tmp_path / "out", "--model", "cstylegan2"]
    assert_one_line_error(
        run_cli(*base, "--label", "bones", *url), "unknown class 'bones'", "0=retina, 1=cells"
    )
    assert_one_line_error(run_cli(*base, "--label", 7, *url), "label 7 is out of range", "0..1")
    assert_one_line_error(run_cli(*base, "--label", "cells", "--truncation", "nan", *url), "finite")
    bundled = run_cli(*base, "--label", "cells", "--model-repository", BUNDLED)
    assert_one_line_error(bundled, f"no model {CONDITIONAL}")
    assert not (tmp_path / "out").exists()  # refused before anything was written
