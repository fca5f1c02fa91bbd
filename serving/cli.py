"""`synthmed serve`: run tritonserver on a model repository until Ctrl-C or SIGTERM."""

from __future__ import annotations

from pathlib import Path

import click

from synthmed.serving.server import GRPC_PORT, HTTP_PORT, METRICS_PORT


def _bundled_repository() -> Path:
    """The model_repository/ folder of a source checkout, beside the serving/ package."""
    import synthmed.serving

    return Path(synthmed.serving.__file__).resolve().parents[1] / "model_repository"


@click.command("serve")
@click.option(
    "--model-repository",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Triton model repository to serve.  [default: the checkout's model_repository/]",
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address for the HTTP, gRPC and metrics endpoints; 0.0.0.0 exposes them to the network.",
)
@click.option("--http-port", type=click.IntRange(1, 65535), default=HTTP_PORT, show_default=True)
@click.option("--grpc-port", type=click.IntRange(1, 65535), default=GRPC_PORT, show_default=True)
@click.option(
    "--metrics-port", type=click.IntRange(1, 65535), default=METRICS_PORT, show_default=True
)
@click.option(
    "--log-verbose",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="tritonserver's --log-verbose level (0: info, warnings and errors only).",
)
@click.option(
    "--startup-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=120,
    show_default=True,
    help="Seconds to wait for the server and every model to be ready.",
)
@click.pass_context
def serve(
    ctx: click.Context,
    model_repository: Path | None,
    host: str,
    http_port: int,
    grpc_port: int,
    metrics_port: int,
    log_verbose: int,
    startup_timeout: float,
) -> None:
    """Serve a model repository with a local tritonserver until Ctrl-C or SIGTERM.

    Uses tritonserver from PATH (NVIDIA's container) or the one in the nvidia-pytriton wheel
    (`pip install synthmed[serve]`); no GPU is needed for CPU models. Once the server and
    every model in the repository are ready it prints one line with the URLs; Ctrl-C or
    SIGTERM stops Triton cleanly (exit 0). Triton's log goes to stderr. Endpoints bind to
    127.0.0.1 unless --host says otherwise. A model that fails to load stops start-up with
    Triton's reason.
    """
    from synthmed.errors import UserInputError
    from synthmed.serving.server import TritonServer, serve_forever

    if model_repository is None:
        model_repository = _bundled_repository()
        if not model_repository.is_dir():
            raise UserInputError(
                f"no bundled model repository at {model_repository} (it exists only in a source "
                "checkout): pass --model-repository"
            )
    server = TritonServer(
        model_repository,
        host=host,
        http_port=http_port,
        grpc_port=grpc_port,
        metrics_port=metrics_port,
        log_verbose=log_verbose,
    )
    code = serve_forever(server, startup_timeout_s=startup_timeout)
    if code:
        ctx.exit(code)
