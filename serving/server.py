"""Run a local tritonserver on a model repository: find it, start it, wait for it, stop it.

The binary comes from PATH (NVIDIA's tritonserver container) or from the `nvidia-pytriton`
wheel (`pip install synthmed[serve]`), which ships tritonserver and the python backend but
keeps the backend's stub per Python version in a separate folder: the stub for the running
Python is copied next to the backend library, the layout tritonserver expects.
Start-up either ends with the server and every model ready or with a one-line ServerError
that quotes Triton's own reason, and never leaves a server process behind.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import errno
import hashlib
import importlib.util
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from synthmed.errors import SynthmedError, UserInputError

LOG_PREFIX = "[tritonserver] "
# Triton's own default ports (HTTP/REST, gRPC, Prometheus /metrics): `synthmed serve`, the
# deploy/ files and their tests take them from here.
HTTP_PORT, GRPC_PORT, METRICS_PORT = 8000, 8001, 8002
_POLL_S = 0.2
# Lines Triton logs on every CPU-only start; they are never the reason a start failed.
_NOISE = re.compile(r"CudaDriverHelper|NVML|DCGM|pinned memory|CUDA memory pool|^[|+]")
_TRITON_LINE = re.compile(r"^[IWEF]\d{4} [\d:.]+\s+\d+ \S+\]\s*(.*)$")
_MODEL_FAILED = re.compile(r"failed to load '(?P<model>[^']+)' version \d+: (?P<reason>.+)")
_MODEL_UNREADABLE = re.compile(
    r"Poll failed for model directory '(?P<model>[^']+)': (?P<reason>.+)"
)
_PROTOBUF_ERROR = re.compile(r"\[libprotobuf ERROR [^\]]*\]\s*(.*)")
_ERROR_WORDS = re.compile(r"error|failed|cannot|unable", re.IGNORECASE)


class ServerError(SynthmedError):
    """tritonserver is missing, failed to start, or exited; the message quotes Triton's reason."""


@dataclass(frozen=True)
class TritonBinary:
    """A runnable tritonserver: the binary, the backend directory to pass (None: its own
    default), and environment variables to set (already combined with the current ones)."""

    path: Path
    backend_directory: Path | None = None
    env: dict[str, str] = field(default_factory=dict)


def find_tritonserver() -> TritonBinary:
    """Prefer tritonserver on PATH (its own backends), else the one in the nvidia-pytriton wheel."""
    on_path = shutil.which("tritonserver")
    if on_path:
        return TritonBinary(Path(on_path))
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise ServerError(
            "tritonserver not found: install synthmed[serve] "
            "or run in NVIDIA's tritonserver container"
        )
    package = Path(next(iter(spec.submodule_search_locations)))
    dist = package / "tritonserver"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = dist / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise ServerError(
            f"nvidia-pytriton at {package} has no python backend stub for Python {version}"
        )
    # Same places pytriton's own get_libs_path() uses: auditwheel's folder, or an editable tree.
    libs = [
        p for p in (package.parent / "nvidia_pytriton.libs", dist / "external_libs") if p.is_dir()
    ]
    env = {
        # The stub resolves libcudart & co through its RPATH relative to the wheel; in the
        # copied backend folder it needs them on the library path, as pytriton sets it.
        "LD_LIBRARY_PATH": os.pathsep.join(
            [p for p in (os.environ.get("LD_LIBRARY_PATH", ""), *map(str, libs)) if p]
        ),
        # The stub's embedded interpreter finds its prefix (and so this environment's
        # site-packages) from the first `python3` on PATH.
        "PATH": os.pathsep.join([str(Path(sys.exec_prefix) / "bin"), os.environ.get("PATH", "")]),
    }
    return TritonBinary(dist / "bin" / "tritonserver", _python_backend_dir(dist, stub), env)


def _python_backend_dir(dist: Path, stub: Path) -> Path:
    """A backend directory whose python/ holds the wheel's backend plus this Python's stub.

    Built once per wheel and Python version in a temporary folder and renamed into place, so
    a concurrent process sees either nothing or a complete folder; the loser of a race
    deletes its copy and uses the winner's.
    """
    source = dist / "backends" / "python"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stamp = [str(source.resolve()), version]
    stamp += [
        f"{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in (source / "libtriton_python.so", stub)
    ]
    name = f"py{version}-{hashlib.sha256(' '.join(stamp).encode()).hexdigest()[:12]}"
    cache_home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    roots = [cache_home / "synthmed" / "triton_backends"]
    roots.append(Path(tempfile.gettempdir()) / f"synthmed-{os.getuid()}" / "triton_backends")
    error: OSError | None = None
    for root in roots:  # a read-only home falls back to the temp folder
        final = root / name
        if (final / "python" / "triton_python_backend_stub").is_file():
            return final
        try:
            root.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=root))
        except OSError as e:
            error = e
            continue
        try:
            shutil.copytree(source, tmp / "python", ignore=shutil.ignore_patterns("__pycache__"))
            shutil.copy2(stub, tmp / "python" / "triton_python_backend_stub")
            os.rename(tmp, final)
        except OSError as e:
            if e.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return final
    raise ServerError(f"cannot create the python backend folder for tritonserver: {error}")


def free_ports(n: int = 3, host: str = "127.0.0.1") -> list[int]:
    """`n` distinct ports the kernel reports free on `host` (all held open while chosen)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for sock in socks:
            sock.bind((host, 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


class TritonServer:
    """One tritonserver process serving a model repository; a context manager (start/stop)."""

    def __init__(
        self,
        model_repository: Path,
        *,
        host: str = "127.0.0.1",
        http_port: int = HTTP_PORT,
        grpc_port: int = GRPC_PORT,
        metrics_port: int = METRICS_PORT,
        log_verbose: int = 0,
        extra_args: Sequence[str] = (),
        echo_log: bool = True,
    ) -> None:
        self.model_repository = Path(model_repository)
        # Off for a server that only backs one command (generate --serve): its log is kept for
        # error messages but not shown.
        self.echo_log = echo_log
        self.host = host
        self.ports = {"http": http_port, "grpc": grpc_port, "metrics": metrics_port}
        self.log_verbose = log_verbose
        self.extra_args = tuple(extra_args)
        self._proc: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None
        # Only error lines are kept: verbose logs and Triton's tables must not push them out.
        self._errors: collections.deque[str] = collections.deque(maxlen=200)

    def __enter__(self) -> TritonServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def returncode(self) -> int | None:
        """The exit code once the process has ended; None before start and while running."""
        return None if self._proc is None else self._proc.poll()

    @property
    def pid(self) -> int | None:
        """The server's process id (also its process group's), once started."""
        return None if self._proc is None else self._proc.pid

    def url(self, protocol: Literal["http", "grpc", "metrics"] = "http") -> str:
        """`host:port` to connect to, the form tritonclient's InferenceServerClient(url=) takes.

        A wildcard bind address is not connectable everywhere, so it becomes loopback.
        """
        host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(self.host, self.host)
        return (
            f"[{host}]:{self.ports[protocol]}" if ":" in host else f"{host}:{self.ports[protocol]}"
        )

    def start(self, timeout_s: float = 120) -> None:
        """Launch tritonserver and return once it and every model in the repository are ready."""
        if self._proc is not None and self._proc.poll() is None:
            raise ServerError(f"tritonserver is already running (pid {self._proc.pid})")
        repo = self.model_repository
        if not repo.is_dir():
            raise UserInputError(f"model repository {repo} does not exist or is not a folder")
        models = sorted(p.name for p in repo.iterdir() if (p / "config.pbtxt").is_file())
        self._check_ports()
        binary = find_tritonserver()
        cmd = [str(binary.path), f"--model-repository={repo.resolve()}"]
        for name, port in self.ports.items():
            cmd += [f"--{name}-address={self.host}", f"--{name}-port={port}"]
        # A 5 s exit timeout: Triton otherwise waits 30 s for idle keep-alive clients on stop.
        cmd += [
            f"--log-verbose={self.log_verbose}",
            "--exit-on-error=true",
            "--exit-timeout-secs=5",
        ]
        # The repository's configs are complete: a missing field is an error, not a guess.
        cmd.append("--disable-auto-complete-config")
        if binary.backend_directory is not None:
            cmd.append(f"--backend-directory={binary.backend_directory}")
        self._errors.clear()
        self._proc = subprocess.Popen(
            [*cmd, *self.extra_args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            env={**os.environ, **binary.env},
            # Own process group: the terminal's Ctrl-C reaches us, and we stop Triton in order.
            start_new_session=True,
            preexec_fn=_die_with_parent(),
        )
        self._reader = threading.Thread(target=self._pump_log, args=(self._proc,), daemon=True)
        self._reader.start()
        try:
            self._wait_ready(models, timeout_s)
        except BaseException:
            self.stop()
            raise

    def _check_ports(self) -> None:
        """Refuse ports that are repeated or already taken, before Triton half-starts on them."""
        seen: dict[int, str] = {}
        for name, port in self.ports.items():
            if port in seen:
                raise UserInputError(f"the {seen[port]} and {name} ports are both {port}")
            seen[port] = name
            try:
                family, kind, proto, _, address = socket.getaddrinfo(
                    self.host, port, type=socket.SOCK_STREAM
                )[0]
                with socket.socket(family, kind, proto) as probe:
                    # As servers bind: a port in TIME_WAIT after a previous server is free.
                    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    probe.bind(address)
            except OSError as e:
                if e.errno == errno.EADDRINUSE:
                    raise UserInputError(
                        f"{name} port {port} on {self.host} is already in use "
                        f"(choose another with --{name}-port)"
                    ) from None
                raise UserInputError(
                    f"cannot bind {name} port {port} on {self.host}: {e}"
                ) from None

    def _wait_ready(self, models: list[str], timeout_s: float) -> None:
        """Poll the server and each model's readiness; fail on exit or timeout with the reason."""
        assert self._proc is not None
        deadline = time.monotonic() + timeout_s
        while True:
            code = self._proc.poll()
            if code is not None:
                if self._reader is not None:
                    self._reader.join(timeout=5)
                raise ServerError(self.exit_reason(code, during="start-up"))
            base = f"http://{self.url('http')}/v2"
            pending = models
            if _http_status(f"{base}/health/ready") == 200:
                pending = [
                    m for m in models if _http_status(f"{base}/models/{_quote(m)}/ready") != 200
                ]
                if not pending and self._metrics_answer():
                    return
            if time.monotonic() > deadline:
                waiting = f" (models not ready: {', '.join(pending)})" if pending else ""
                last = _message(self._errors[-1]) if self._errors else ""
                raise ServerError(
                    f"tritonserver was not ready after {timeout_s:g} s{waiting}"
                    + (f"; last error: {last}" if last else "")
                )
            time.sleep(_POLL_S)

    def _metrics_answer(self) -> bool:
        """Whether /metrics answers (or metrics are off). On a loaded machine Triton's metrics
        port was seen refusing connections after every model was ready, so a scrape right
        after start-up (or a test reading it) failed."""
        if "--allow-metrics=false" in self.extra_args:
            return True
        return _http_status(f"http://{self.url('metrics')}/metrics") == 200

    def exit_reason(self, code: int, *, during: str) -> str:
        """One line for an exited server: the models that failed to load and why, else Triton's
        last error line."""
        how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
        failures = _model_failures(list(self._errors))
        if failures:
            named = "; ".join(f"model '{m}' failed to load: {r}" for m, r in failures.items())
            return f"{named} (tritonserver {how} during {during})"
        reason = _message(self._errors[-1]) if self._errors else "no error in its log"
        return f"tritonserver {how} during {during}: {reason}"

    def stop(self, timeout_s: float = 30) -> None:
        """SIGTERM (Triton unloads its models and exits), SIGKILL after `timeout_s`; idempotent."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        # Python-backend stubs share the process group and can outlive a crashed server.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        if self._reader is not None:
            self._reader.join(timeout=5)

    def _pump_log(self, proc: subprocess.Popen[str]) -> None:
        """Copy Triton's output to our stderr with a prefix; keep its error lines for messages."""
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip("\n")
            if _is_error(line):
                self._errors.append(line)
            if self.echo_log:
                print(LOG_PREFIX + line, file=sys.stderr, flush=True)


def serve_forever(server: TritonServer, *, startup_timeout_s: float = 120) -> int:
    """Start `server`, print where it serves, block until Ctrl-C/SIGTERM, then stop it.

    Returns 0 after a requested stop, or the server's own exit code if it died by itself.
    Signal handlers need the main thread, as a command line has.
    """

    class _Stop(BaseException):
        pass

    def _raise_stop(signum: int, frame: object) -> None:
        raise _Stop

    previous = {s: signal.signal(s, _raise_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.start(timeout_s=startup_timeout_s)
        print(
            f"serving {server.model_repository} on http://{server.url('http')} "
            f"(grpc {server.url('grpc')}, metrics http://{server.url('metrics')}/metrics)",
            flush=True,
        )
        while (code := server.returncode) is None:
            time.sleep(_POLL_S)
        print(f"Error: {server.exit_reason(code, during='serving')}", file=sys.stderr, flush=True)
        return code if code > 0 else 1
    except _Stop:
        return 0
    finally:
        # A second Ctrl-C must not abandon a half-stopped server; stop() is bounded anyway.
        for s in previous:
            signal.signal(s, signal.SIG_IGN)
        server.stop()
        for s, handler in previous.items():
            signal.signal(s, handler)


def _die_with_parent() -> Callable[[], object] | None:
    """A preexec_fn asking Linux to SIGTERM the server if we die without stopping it.

    Linux ties this to the thread that started the server: start it from a thread that
    lives as long as the server (the main thread, in the command line).
    """
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)  # loaded before fork: the child only calls it
    return lambda: libc.prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def _quote(name: str) -> str:
    """A model name as one URL path segment."""
    return urllib.parse.quote(name, safe="")


def _http_status(url: str) -> int | None:
    """The HTTP status of GET `url`, or None while nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None


def _message(line: str) -> str:
    """The text of a Triton log line on one line, without its severity/time/source prefix."""
    match = _TRITON_LINE.match(line)
    text = match.group(1) if match else line
    if len(text) >= 2 and text[0] == text[-1] == '"':
        text = text[1:-1].replace('\\"', '"')
    return " ".join(text.replace("\\n", " ").split())


def _model_failures(lines: list[str]) -> dict[str, str]:
    """Model name -> Triton's reason, for each model Triton failed to read or load."""
    failures: dict[str, str] = {}
    parse_error = ""
    for line in lines:
        text = _message(line)
        if found := _PROTOBUF_ERROR.search(text):
            parse_error = found.group(1)  # protobuf says where a config.pbtxt is broken
        elif found := _MODEL_UNREADABLE.search(text) or _MODEL_FAILED.search(text):
            reason = found["reason"] + (f" ({parse_error})" if parse_error else "")
            failures.setdefault(found["model"], reason)
            parse_error = ""
    return failures


def _is_error(line: str) -> bool:
    """An error-severity or error-sounding line, not the noise of every CPU-only start."""
    if _NOISE.search(line):
        return False
    return bool(line[:1] in "EF" and _TRITON_LINE.match(line) or _ERROR_WORDS.search(line))
