"""The committed checkpoints load into the current code and reproduce their recorded metrics.

The metrics were recorded on the validation split at the end of training (see
checkpoints/README.md); the default dataset is rebuilt bit-identically by
``maskgit prepare-data`` (seed 0), so the numbers must come back.
"""

from __future__ import annotations

import json

import pytest
import torch

from maskgit_lib import paths
from maskgit_lib.checkpoint import read_weights
from maskgit_lib.cli import main
from maskgit_lib.training.data import load_images_uint8
from maskgit_lib.training.vqgan import reconstruction_metrics
from maskgit_lib.data import list_images
from maskgit_lib.vqgan import load_vqgan

pytestmark = pytest.mark.slow


def _need(path):
    if not path.exists():
        pytest.fail(f"{path} is missing: the shipped checkpoints and `maskgit prepare-data` are part of the project")


def test_vqgan_reconstructs_val_with_recorded_psnr():
    ckpt = paths.default_vqgan_checkpoint()
    val_dir = paths.default_dataset_dir() / "val"
    _need(ckpt)
    _need(val_dir)
    recorded = read_weights(ckpt)[1]["metrics"]
    model = load_vqgan(ckpt)
    images = load_images_uint8(list_images(val_dir))
    assert images.shape[0] == int(recorded["val_num_images"])
    with torch.no_grad():
        metrics, _ = reconstruction_metrics(model, images, batch_size=50)
    assert abs(metrics["psnr"] - recorded["val_psnr"]) < 0.5, (metrics, recorded)
    assert metrics["psnr"] >= 26.0
    assert metrics["usage"] >= 0.5


def test_transformer_reproduces_recorded_val_metrics(tmp_path, capsys):
    ckpt = paths.default_transformer_checkpoint()
    _need(ckpt)
    out = tmp_path / "eval.json"
    assert main(["eval-transformer", "--device", "cpu", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    recorded = result["recorded"]
    assert result["val_num_masked"] == recorded["num_masked"]
    assert abs(result["val_ce"] - recorded["ce"]) < 1e-3, result
    assert abs(result["val_masked_acc"] - recorded["masked_acc"]) < 1e-3, result
