"""The real tritonserver on free ports: start, infer, stop, and one-line errors when it cannot."""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from synthmed.errors import UserInputError
from synthmed.serving import server as server_mod
from synthmed.serving.cli import serve
from synthmed.serving.server import ServerError, TritonServer, find_tritonserver
from tests.serving.conftest import free_ports

pytestmark = pytest.mark.server

if not (shutil.which("tritonserver") or importlib.util.find_spec("pytriton")):
    pytest.skip("no tritonserver: install synthmed[serve]", allow_module_level=True)

CONFIG = """\
name: "{name}"
backend: "python"
max_batch_size: 8
input [ {{ name: "x" data_type: TYPE_FP32 dims: [ -1, 4 ] }} ]
output [ {{ name: "y" data_type: TYPE_FP32 dims: [ -1, 4 ] }} ]
instance_group [ {{ kind: KIND_CPU count: 1 }} ]
"""

ADD_ONE = """\
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "x").as_numpy()
            y = pb_utils.Tensor("y", (x + 1).astype(np.float32))
            responses.append(pb_utils.InferenceResponse(output_tensors=[y]))
        return responses
"""

RAISES = """\
class TritonPythonModel:
    def initialize(self, args):
        raise RuntimeError("weights.bin is missing")
"""


def write_model(repo: Path, name: str, config: str, model_py: str) -> None:
    (repo / name / "1").mkdir(parents=True)
    (repo / name / "config.pbtxt").write_text(config)
    (repo / name / "1" / "model.py").write_text(model_py)


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def make_server(repo: Path) -> TritonServer:
    http, grpc, metrics = free_ports()
    return TritonServer(repo, http_port=http, grpc_port=grpc, metrics_port=metrics)


def assert_group_gone(pid: int) -> None:
    """Neither the server nor a python-backend stub (same process group) is left."""
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)


@pytest.fixture(scope="module")
def add_one_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("repo")
    write_model(repo, "add_one", CONFIG.format(name="add_one"), ADD_ONE)
    return repo


def test_serves_inference_and_stops(add_one_repo: Path) -> None:
    httpclient = pytest.importorskip("tritonclient.http")
    started = time.monotonic()
    with make_server(add_one_repo) as server:
        assert time.monotonic() - started < 60
        client = httpclient.InferenceServerClient(url=server.url("http"))
        assert client.is_server_ready() and client.is_model_ready("add_one")
        x = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
        inp = httpclient.InferInput("x", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        result = client.infer("add_one", [inp], outputs=[httpclient.InferRequestedOutput("y")])
        np.testing.assert_array_equal(result.as_numpy("y"), x + 1)
        client.close()  # Triton waits up to its --exit-timeout-secs for open connections
        pid = server.pid
        assert pid is not None
    assert server.returncode == 0
    assert_group_gone(pid)
    assert all(port_is_free(p) for p in server.ports.values())


def test_missing_repository_is_one_line_user_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(UserInputError, match="nope") as info:
        TritonServer(missing).start()
    assert "\n" not in str(info.value)
    result = CliRunner().invoke(serve, ["--model-repository", str(missing)])
    assert isinstance(result.exception, UserInputError)


def test_taken_port_is_named(add_one_repo: Path) -> None:
    http, grpc, metrics = free_ports()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", grpc))
        taken.listen()
        server = TritonServer(add_one_repo, http_port=http, grpc_port=grpc, metrics_port=metrics)
        with pytest.raises(UserInputError) as info:
            server.start()
    message = str(info.value)
    assert f"grpc port {grpc}" in message and "in use" in message and "\n" not in message
    assert server.pid is None  # refused before launching anything
    with pytest.raises(UserInputError, match=f"http and grpc ports are both {http}"):
        TritonServer(add_one_repo, http_port=http, grpc_port=http, metrics_port=metrics).start()


@pytest.mark.parametrize(
    ("config", "model_py", "reason"),
    [
        (CONFIG, RAISES, "RuntimeError: weights.bin is missing"),
        ('name: "{name}"\nbackend: "python"\nmax_batch_size: 8 input [ {{\n', ADD_ONE, "4:1"),
    ],
    ids=["initialize-raises", "config-syntax-error"],
)
def test_broken_model_names_model_and_reason(
    tmp_path: Path, config: str, model_py: str, reason: str
) -> None:
    write_model(tmp_path, "broken", config.format(name="broken"), model_py)
    server = make_server(tmp_path)
    with pytest.raises(ServerError) as info:
        server.start(timeout_s=60)
    message = str(info.value)
    assert "model 'broken' failed to load" in message and reason in message, message
    assert "\n" not in message
    assert server.returncode is not None and server.pid is not None
    assert_group_gone(server.pid)


def test_serve_command_stops_cleanly_on_sigterm(add_one_repo: Path, tmp_path: Path) -> None:
    http, grpc, metrics = free_ports()
    ports = ["--http-port", str(http), "--grpc-port", str(grpc), "--metrics-port", str(metrics)]
    command = "from synthmed.serving.cli import serve; serve()"
    with (tmp_path / "stderr.txt").open("w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-c", command, "--model-repository", str(add_one_repo), *ports],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
        try:
            timer = threading.Timer(60, proc.kill)  # a hung start fails the test, not the run
            timer.start()
            line = proc.stdout.readline() if proc.stdout else ""
            timer.cancel()
            assert line.startswith(f"serving {add_one_repo} on http://127.0.0.1:{http} "), line
            assert f"grpc 127.0.0.1:{grpc}" in line
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=40) == 0
        finally:
            proc.kill()
            proc.wait()
    assert "[tritonserver] " in (tmp_path / "stderr.txt").read_text()
    assert port_is_free(http) and port_is_free(grpc) and port_is_free(metrics)


def test_url_never_points_at_a_wildcard_address() -> None:
    assert TritonServer(Path("r"), host="0.0.0.0").url("grpc") == "127.0.0.1:8001"
    assert TritonServer(Path("r"), host="::", http_port=9000).url() == "[::1]:9000"


def test_python_backend_folder_is_built_once_even_when_raced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if shutil.which("tritonserver"):
        pytest.skip("tritonserver on PATH brings its own backends")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    found: list[Path | None] = []
    threads = [
        threading.Thread(target=lambda: found.append(find_tritonserver().backend_directory))
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(found)) == 1 and found[0] is not None
    backend = found[0] / "python"
    assert {p.name for p in backend.iterdir()} >= {
        "libtriton_python.so",
        "triton_python_backend_utils.py",
        "triton_python_backend_stub",
    }
    assert os.access(backend / "triton_python_backend_stub", os.X_OK)
    assert [p.name for p in found[0].parent.iterdir()] == [found[0].name]  # no leftover temp dirs


def test_no_tritonserver_is_one_line_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server_mod.shutil, "which", lambda name: None)
    monkeypatch.setattr(server_mod.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ServerError, match=r"^tritonserver not found: install synthmed\[serve\]"):
        find_tritonserver()
