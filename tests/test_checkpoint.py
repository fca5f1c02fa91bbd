"""The checkpoint contract: config.json + safetensors, refused when broken or mismatched."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from synthmed.errors import CheckpointError
from synthmed.training.checkpoint import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    load_generator,
    read_generator_info,
)
from tests.conftest import TINY_TRAIN, run_cli


@pytest.fixture(scope="module")
def stage1_run(retina64: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("stage1")
    args = ["--steps", "2", *TINY_TRAIN]
    assert run_cli("train", "stage1", "--data", retina64, "--out", out, *args).exit_code == 0
    return out


def test_config_records_model_data_and_training(stage1_run: Path, retina64: Path) -> None:
    config = json.loads((stage1_run / CONFIG_FILE).read_text())
    assert config["role"] == "stage1" and config["model"] == "dcgan_generator"
    assert config["model_config"]["size"] == 64 and config["model_config"]["nz"] == 16
    assert config["data"]["count"] == 12 and len(config["data"]["fingerprint"]) == 64
    assert config["train"]["lr"] == 2e-4 and config["train"]["beta1"] == 0.5
    assert "output" in config["normalisation"]
    # what a bit-for-bit repeat of the run needs to match (the tests run in this process)
    trained_on = config["trained_on"]
    assert trained_on["threads"] == torch.get_num_threads() and trained_on["world_size"] == 1
    assert trained_on["torch"] == torch.__version__ and trained_on["device"] == "cpu"
    assert trained_on["cpu"] and "AVX2" in trained_on["vector_extensions"]
    info = read_generator_info(stage1_run)
    assert info.step == 2 and info.image_size == 64


def test_corrupted_weights_are_refused(stage1_run: Path, tmp_path: Path) -> None:
    copy = tmp_path / "run"
    shutil.copytree(stage1_run, copy)
    data = bytearray((copy / WEIGHTS_FILE).read_bytes())
    data[-10] ^= 0xFF
    (copy / WEIGHTS_FILE).write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="sha256 does not match"):
        load_generator(copy)


def test_wrong_role_and_missing_files(stage1_run: Path, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="is a stage1 checkpoint, expected stage2"):
        load_generator(stage1_run, role="stage2")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_generator(tmp_path / "missing")
    with pytest.raises(CheckpointError, match="config.json: missing"):
        load_generator(tmp_path)
    (tmp_path / CONFIG_FILE).write_text("{not json")
    with pytest.raises(CheckpointError, match="not a synthmed checkpoint config"):
        load_generator(tmp_path)
