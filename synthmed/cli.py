"""The `synthmed` command line: the root group, its error handling, and the entry point.

Each lifecycle package defines its own commands (training/cli.py, ...) and they are added
here. Every command imports its heavy dependencies (torch) only when it runs, so
`synthmed --help` works on a client-only install. Errors that synthmed raises on purpose
become one line on stderr and a non-zero exit; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from typing import Any

import click

from synthmed.client.cli import dataset, generate
from synthmed.errors import SynthmedError
from synthmed.evaluation.cli import evaluate
from synthmed.export.cli import export
from synthmed.serving.cli import serve
from synthmed.training import cli as training_cli
from synthmed.training.stylegan2_cli import stylegan2_cmd


class _Group(click.Group):
    """A group whose commands turn SynthmedError into `Error: ...` and its exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SynthmedError as e:
            click.echo(f"Error: {e}", err=True)
            ctx.exit(e.exit_code)


@click.group(
    cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100}
)
@click.version_option(package_name="synthmed")
def cli() -> None:
    """Train two-stage GANs on medical images and synthesize labelled datasets from them.

    Stage I learns the geometry (noise -> vessel mask), stage II the photorealism
    (mask -> fundus photograph), so every synthetic image comes with an exact label.
    """


cli.add_command(training_cli.data)
training_cli.train_group.add_command(stylegan2_cmd)
cli.add_command(training_cli.train_group)
cli.add_command(training_cli.train_demo_cmd)
cli.add_command(training_cli.sample_cmd)
cli.add_command(export)
cli.add_command(serve)
cli.add_command(generate)
cli.add_command(dataset)
cli.add_command(evaluate)


def main() -> None:
    """Console entry point."""
    cli(prog_name="synthmed")
