"""Every command has useful help, and the installed entry point starts without torch work."""

from __future__ import annotations

import subprocess
import sys

import click
import pytest

from synthmed.cli import cli
from tests.conftest import assert_one_line_error, run_cli


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [prefix]
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            found += _commands(command, (*prefix, name))
        else:
            found.append((*prefix, name))
    return found


@pytest.mark.parametrize("path", _commands(cli), ids=lambda p: " ".join(p) or "synthmed")
def test_every_command_has_help(path: tuple[str, ...]) -> None:
    result = run_cli(*path, "--help")
    assert result.exit_code == 0
    assert "Usage:" in result.output
    # A first help line that says what the command does, not an empty docstring.
    summary = result.output.split("\n\n")[1].strip()
    assert len(summary) > 20, result.output


def test_console_entry_point_runs() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "synthmed", "--version"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0 and "0.1.0" in result.stdout


def test_unknown_phantom_kind_is_refused_by_click() -> None:
    result = run_cli("data", "phantom", "--kind", "xray", "--out", "x")
    assert result.exit_code == 2 and "'xray' is not one of" in result.output


def test_data_phantom_writes_pairs_and_refuses_bad_counts(tmp_path) -> None:
    result = run_cli(
        "data", "phantom", "--kind", "cells", "--out", tmp_path, "--count", "3", "--size", "32"
    )
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "masks").iterdir()) == [
        "cells_00000.png",
        "cells_00001.png",
        "cells_00002.png",
    ]
    bad = run_cli("data", "phantom", "--out", tmp_path / "x", "--count", "0")
    assert_one_line_error(bad, "count must be an integer >= 1, got 0")
    assert not (tmp_path / "x").exists()
