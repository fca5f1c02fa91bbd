"""`synthmed generate` on a client-only install: a clear line instead of an ImportError."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.conftest import assert_one_line_error, run_cli


def test_in_process_generation_without_onnxruntime(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime -> ImportError
    monkeypatch.delitem(sys.modules, "synthmed.serving.runtime", raising=False)
    result = run_cli("generate", "--count", 2, "--out", tmp_path / "out")
    assert_one_line_error(result, "needs onnxruntime", "--url")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "cstylegan2"], "--model cstylegan2 needs --label"),
        (["--label", "cells"], "--label applies to --model cstylegan2 only, got --model dual"),
        (
            ["--label", "0", "--truncation", "0.5"],
            "--label and --truncation apply to --model cstylegan2 only",
        ),
    ],
)
def test_model_options_are_checked_before_anything_runs(
    tmp_path: Path, args: list[str], message: str
) -> None:
    result = run_cli("generate", "--count", 2, "--out", tmp_path / "out", *args)
    assert_one_line_error(result, message)
    assert not (tmp_path / "out").exists()
