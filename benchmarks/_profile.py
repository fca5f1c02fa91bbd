"""Where the time goes: per-operator time and achieved GFLOP/s, onnxruntime and PyTorch.

A target missed needs a measured reason. This splits one batch of the pipeline into its
convolutions (encoder, stage I), transposed convolutions (decoder) and everything else, and
sets each against the machine's GEMM rate: it shows which operator holds a path back.
"""

from __future__ import annotations

import collections
import json
import re
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from synthmed.contract import ENSEMBLE

KINDS = {nn.Conv2d: "Conv", nn.ConvTranspose2d: "ConvTranspose"}


def conv_flops(pipeline: nn.Module, nz: int) -> dict[str, int]:
    """FLOPs of one image per operator kind (a multiply-add is 2), from the modules' shapes."""
    flops: collections.Counter[str] = collections.Counter()

    def count(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        # Every weight meets every input pixel (transposed) or output pixel (conv) once.
        if isinstance(module, nn.ConvTranspose2d):
            flops["ConvTranspose"] += 2 * inputs[0][0, 0].numel() * module.weight.numel()
        else:
            flops["Conv"] += 2 * output[0, 0].numel() * module.weight.numel()

    hooks = [m.register_forward_hook(count) for m in pipeline.modules() if type(m) in KINDS]
    with torch.inference_mode():
        pipeline(torch.zeros(1, nz))
    for hook in hooks:
        hook.remove()
    return dict(flops)


def onnxruntime_times(onnx_path: Path, feeds: dict, threads: int, runs: int = 3) -> dict:
    """Milliseconds per run of each operator type, from onnxruntime's own profiler."""
    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "ort")
        session = ort.InferenceSession(str(onnx_path), options, ["CPUExecutionProvider"])
        session.run(None, feeds)  # warm-up, not counted below
        warm_events = len(json.loads(Path(session.end_profiling()).read_text()))
        session = ort.InferenceSession(str(onnx_path), options, ["CPUExecutionProvider"])
        for _ in range(runs + 1):
            session.run(None, feeds)
        events = json.loads(Path(session.end_profiling()).read_text())[warm_events:]
    times: collections.Counter[str] = collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            times[e["args"]["op_name"]] += e["dur"] / 1e3 / runs
    return dict(times)


def pytorch_times(pipeline: nn.Module, z: torch.Tensor, runs: int = 3) -> dict[str, float]:
    """Milliseconds per run spent inside each module kind (wall clock around its forward)."""
    times: collections.Counter[str] = collections.Counter()
    starts: dict[int, float] = {}

    def before(module: nn.Module, inputs: tuple) -> None:
        starts[id(module)] = time.perf_counter()

    def after(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        times[KINDS[type(module)]] += (time.perf_counter() - starts[id(module)]) * 1e3 / runs

    convs = [m for m in pipeline.modules() if type(m) in KINDS]
    with torch.inference_mode():
        pipeline(z)  # warm-up
        hooks = [m.register_forward_pre_hook(before) for m in convs]
        hooks += [m.register_forward_hook(after) for m in convs]
        start = time.perf_counter()
        for _ in range(runs):
            pipeline(z)
        total = (time.perf_counter() - start) * 1e3 / runs
    for hook in hooks:
        hook.remove()
    return {**times, "total": total}


def breakdown(times: dict[str, float], flops: dict[str, int], batch: int, gemm: float) -> list:
    """Rows: operator, ms per batch, share of the run, GFLOP/s reached, % of the GEMM rate."""
    total = times.get("total", sum(v for k, v in times.items() if k != "total"))
    conv_time = {k: times.get(k, 0.0) for k in ("Conv", "ConvTranspose")}
    rows = []
    for kind, ms in [*conv_time.items(), ("other", total - sum(conv_time.values()))]:
        rate = flops.get(kind, 0) * batch / (ms / 1e3) / 1e9 if kind in flops and ms else None
        rows.append({
            "op": kind, "ms": ms, "share": ms / total if total else 0.0, "gflops": rate,
            "fraction_of_gemm": rate / gemm if rate else None,
        })  # fmt: skip
    return rows


def profile(
    pipeline: nn.Module, fused_onnx: Path, nz: int, batch: int, threads: int, gemm: float
) -> dict:
    """Both runtimes' breakdowns of one batch of the fused pipeline."""
    flops = conv_flops(pipeline, nz)
    z = np.random.default_rng(0).standard_normal((batch, nz), dtype=np.float32)
    torch.set_num_threads(threads)
    nhwc = pipeline.to(memory_format=torch.channels_last)
    return {
        "batch": batch,
        "flops_per_image": flops,
        "onnxruntime fused": breakdown(
            onnxruntime_times(fused_onnx, {"z": z}, threads), flops, batch, gemm
        ),
        "pytorch eager channels_last": breakdown(
            pytorch_times(nhwc, torch.from_numpy(z)), flops, batch, gemm
        ),
    }


def profile_table(result: dict) -> str:
    """Markdown table of a `profile` result."""
    lines = [
        f"Per-operator profile, batch {result['batch']}:",
        "",
        "| runtime | operator | ms per batch | share | GFLOP/s | % of GEMM rate |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for runtime in ("onnxruntime fused", "pytorch eager channels_last"):
        for r in result[runtime]:
            rate = f"{r['gflops']:.0f}" if r["gflops"] else "-"
            frac = f"{100 * r['fraction_of_gemm']:.0f}" if r["fraction_of_gemm"] else "-"
            lines.append(
                f"| {runtime} | {r['op']} | {r['ms']:.1f} | {100 * r['share']:.0f} % "
                f"| {rate} | {frac} |"
            )
    return "\n".join(lines)


_METRIC = re.compile(r'^(nv_inference_\w+)\{model="([^"]+)",version="[^"]*"\} ([0-9.e+]+)$')


def server_times(metrics_url: str) -> dict[str, dict[str, float]]:
    """Triton's own accounting per model, from its Prometheus endpoint (cumulative since
    start): images, executions, and where the time of a request went: queue, input and
    output copies, and the model's compute (here the onnxruntime call inside the python
    backend). Set against in-process time per image, it separates serving overhead from
    compute."""
    text = urllib.request.urlopen(f"http://{metrics_url}/metrics", timeout=10).read().decode()
    raw: dict[str, dict[str, float]] = collections.defaultdict(dict)
    for line in text.splitlines():
        match = _METRIC.match(line)
        if match:
            raw[match[2]][match[1].removeprefix("nv_inference_")] = float(match[3])
    out = {}
    for model, m in raw.items():
        images, requests = m.get("count", 0.0), m.get("request_success", 0.0)
        executions = m.get("exec_count", 0.0)
        if not images or not requests:
            continue
        # A batched execution's duration is booked to every request in it: per image, divide
        # the mean per-request figure by the images of one execution.
        per_execution = images / executions if executions else 1.0
        out[model] = {
            "images": images,
            "requests": requests,
            "images_per_execution": per_execution,
            "request_ms": m.get("request_duration_us", 0) / requests / 1e3,
            "queue_ms": m.get("queue_duration_us", 0) / requests / 1e3,
            "input_output_ms": (m.get("compute_input_duration_us", 0)
                                + m.get("compute_output_duration_us", 0)) / requests / 1e3,
            "compute_ms_per_image": m.get("compute_infer_duration_us", 0) / requests / 1e3
            / per_execution,
        }  # fmt: skip
    return out


def server_table(times: dict[str, dict[str, float]], in_process_ms_per_image: float) -> str:
    """Markdown table of `server_times`, with the in-process compute per image beside it."""
    lines = [
        "Server-side time (Triton metrics, all requests of the run); in-process onnxruntime "
        f"(fused, best batch) takes {in_process_ms_per_image:.2f} ms per image:",
        "",
        "| model | requests | images/execution | request ms | queue ms | in+out ms "
        "| compute ms/image |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for model, t in sorted(times.items()):
        if model == ENSEMBLE:  # the ensemble itself runs nothing; its steps are listed
            lines.append(f"| {ENSEMBLE} (ensemble) | {t['requests']:.0f} | - "
                         f"| {t['request_ms']:.1f} | - | - | - |")  # fmt: skip
            continue
        lines.append(
            f"| {model} | {t['requests']:.0f} | {t['images_per_execution']:.1f} "
            f"| {t['request_ms']:.1f} | {t['queue_ms']:.1f} | {t['input_output_ms']:.2f} "
            f"| {t['compute_ms_per_image']:.2f} |"
        )
    return "\n".join(lines)
