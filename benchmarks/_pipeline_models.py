"""The models the pipeline benchmark runs, and the machine's yardsticks (FLOPs, GEMM rate).

Two configurations:
- `default`: the paper-scale pair at 256x256 with random weights (stage I a DCGAN with 32 base
  filters, stage II a pix2pix U-Net with 64), what a user training at full size would serve;
- `demo`: the bundled demo pair (128x128), what the README's quick start serves.
Each is exported with the product's own `export_onnx` and, for the int8 variant, quantized with
`synthmed export int8`'s `quantize_stage2`, so the benchmark measures the files users get.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch.utils.flop_counter import FlopCounterMode

from synthmed.export.graphs import FusedGraph
from synthmed.export.torch2onnx import export_onnx
from synthmed.training.checkpoint import load_generator, save_generator
from synthmed.training.demo import DEMO_DATA
from synthmed.training.models import create_model
from synthmed.training.models.dcgan import DCGANConfig
from synthmed.training.models.pix2pix import UNetGeneratorConfig
from synthmed.training.sample import DEMO_STAGE1, DEMO_STAGE2

CONFIGS = ("default", "demo")


@dataclass
class BenchModels:
    """One configuration's run folders and exports."""

    name: str
    description: str
    stage1: Path
    stage2: Path
    onnx: Path  # `synthmed export onnx` folder (stage I, stage II, fused)
    int8: Path | None  # `synthmed export int8` folder, when quantization succeeded
    int8_error: str | None = None


def _random_runs(work: Path, seed: int = 0) -> tuple[Path, Path]:
    """Stage I and stage II run folders holding freshly initialised paper-scale generators."""
    torch.manual_seed(seed)
    runs = []
    for role, name, config in (
        ("stage1", "dcgan_generator", DCGANConfig(size=256, ngf=32)),
        ("stage2", "unet_generator", UNetGeneratorConfig(size=256, ngf=64)),
    ):
        run = work / role
        run.mkdir(parents=True)
        model = create_model(name, config).eval()
        save_generator(
            run, model, role=role, model_name=name, model_config=config, step=0, metadata={}
        )
        runs.append(run)
    return runs[0], runs[1]


def prepare(name: str, work: Path, *, int8: bool, calibration_count: int) -> BenchModels:
    """Build (default) or locate (demo) the runs, export them, and quantize stage II."""
    work.mkdir(parents=True, exist_ok=True)
    if name == "default":
        stage1, stage2 = _random_runs(work / "runs")
        description = "DCGAN ngf 32 + pix2pix U-Net ngf 64, 256x256, random weights"
    else:
        stage1, stage2 = DEMO_STAGE1, DEMO_STAGE2
        description = f"bundled demo models, {DEMO_DATA['size']}x{DEMO_DATA['size']}"
    onnx_dir = work / "onnx"
    # Parity at two batch sizes is enough here; the export tests cover more.
    export_onnx(onnx_dir, stage1=stage1, stage2=stage2, batch_sizes=(1, 2), force=True)
    models = BenchModels(name, description, stage1, stage2, onnx_dir, None)
    if int8:
        from synthmed.export.quantize import quantize_stage2

        try:
            quantize_stage2(
                onnx_dir,
                work / "int8",
                calibration_count=calibration_count,
                check_count=calibration_count,
                force=True,
            )
            models.int8 = work / "int8"
        except Exception as e:  # recorded in the results rather than ending the benchmark
            models.int8_error = f"{type(e).__name__}: {e}"
    return models


def pytorch_pipeline(models: BenchModels) -> torch.nn.Module:
    """Stage I + stage II as one eval-mode PyTorch module (the fused graph before export)."""
    stage1, _ = load_generator(models.stage1, role="stage1")
    stage2, _ = load_generator(models.stage2, role="stage2")
    return FusedGraph(stage1, stage2).eval()


def flops(module: torch.nn.Module, *inputs: torch.Tensor) -> int:
    """FLOPs of one call, counted by torch.utils.flop_counter (a multiply-add counts as 2;
    pixel conversions and activations are not counted)."""
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        module(*inputs)
    return int(counter.get_total_flops())


def flops_per_image(pipeline: torch.nn.Module, nz: int) -> int:
    """FLOPs of one image through both stages."""
    return flops(pipeline, torch.zeros(1, nz))


def _matmul_session(n: int, threads: int) -> ort.InferenceSession:
    a = onnx.helper.make_tensor_value_info("A", onnx.TensorProto.FLOAT, [n, n])
    b = onnx.helper.make_tensor_value_info("B", onnx.TensorProto.FLOAT, [n, n])
    c = onnx.helper.make_tensor_value_info("C", onnx.TensorProto.FLOAT, [n, n])
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("MatMul", ["A", "B"], ["C"])], "gemm", [a, b], [c]
    )
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    return ort.InferenceSession(model.SerializeToString(), options, ["CPUExecutionProvider"])


def _rate(run: callable, flops: float, seconds: float = 1.5) -> float:
    """Best GFLOP/s of `run` over repeated calls for about `seconds`."""
    run()  # warm-up
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        run()
        best = max(best, flops / (time.perf_counter() - start) / 1e9)
    return best


def gemm_rate(threads: int, n: int = 2048) -> dict[str, float]:
    """The machine's fp32 GEMM rate (GFLOP/s) with all `threads`: the faster of onnxruntime's
    MLAS and PyTorch's BLAS on square n x n matrices; the limit every path is compared with."""
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((n, n), dtype=np.float32) for _ in range(2))
    session = _matmul_session(n, threads)
    torch.set_num_threads(threads)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    rates = {
        "onnxruntime_matmul": _rate(lambda: session.run(None, {"A": a, "B": b}), 2 * n**3),
        "torch_mm": _rate(lambda: torch.mm(ta, tb), 2 * n**3),
    }
    return {**rates, "best": max(rates.values()), "n": n}
