"""``maskgit train-transformer`` / ``eval-transformer`` with a tiny random VQGAN (CPU, tiny preset).

Covers: a short MVTM run whose recorded validation CE / masked accuracy
eval-transformer reproduces from the shipped file, token-cache keys that change
with the tokenizer's bytes and the images, the loss counting masked positions
only, and the fixed validation masks.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from maskgit_lib.checkpoint import load_training_state, read_weights
from maskgit_lib.cli import main
from maskgit_lib.config import TrainConfig, TransformerConfig, VQGANConfig
from maskgit_lib.errors import ConfigError
from maskgit_lib.training import TransformerRun, train_transformer
from maskgit_lib.training.tokens import cached_tokens, file_sha256
from maskgit_lib.training.transformer import fixed_val_masks, make_train_step
from maskgit_lib.vqgan import VQGAN, save_vqgan


pytestmark = pytest.mark.usefixtures("one_thread")


def make_dataset(root: Path, n_train: int = 12, n_val: int = 4) -> Path:
    rng = np.random.default_rng(1)
    for split, count in (("train", n_train), ("val", n_val)):
        (root / split).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            pixels = np.full((64, 64, 3), 255, np.uint8)
            x, y = rng.integers(0, 40, 2)
            pixels[y:y + 20, x:x + 24] = rng.integers(0, 255, 3)
            Image.fromarray(pixels).save(root / split / f"image_{i:03d}.png")
    return root


def tiny_vqgan(path: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    return save_vqgan(VQGAN(VQGANConfig.preset("tiny")), path)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("tf")
    old = os.environ.get("MASKGIT_CACHE")
    os.environ["MASKGIT_CACHE"] = str(root / "cache")
    yield {"data": make_dataset(root / "data"), "vqgan": tiny_vqgan(root / "vqgan.safetensors", 0), "root": root}
    if old is None:
        os.environ.pop("MASKGIT_CACHE", None)
    else:
        os.environ["MASKGIT_CACHE"] = old


def test_train_then_eval_reproduces_recorded_val_metrics(env, tmp_path):
    out = tmp_path / "run"
    assert main(["train-transformer", "--preset", "tiny", "--data", str(env["data"]), "--vqgan-checkpoint",
                 str(env["vqgan"]), "--out", str(out), "--device", "cpu", "--batch-size", "4", "--max-steps", "4",
                 "--val-every", "2", "--ckpt-every", "2", "--log-every", "1", "--no-progress",
                 "--weights-dtype", "float16", "--export", str(tmp_path / "shipped.safetensors")]) == 0
    shipped, meta = read_weights(tmp_path / "shipped.safetensors", expected_type="transformer")
    assert all(t.dtype == torch.float16 for t in shipped.values() if t.is_floating_point())
    full, _ = read_weights(out / "final.safetensors")
    assert all(torch.equal(full[k], shipped[k].to(full[k].dtype)) for k in full)  # rounded before validation
    recorded = meta["metrics"]
    assert recorded["steps"] == 4 and recorded["wall_time_s"] > 0
    assert recorded["val_num_masked"] > 0 and 0 <= recorded["val_masked_acc"] <= 1
    assert math.isfinite(recorded["val_ce"]) and recorded["vqgan_sha256"] == file_sha256(env["vqgan"])
    assert meta["config"]["codebook_size"] == 64 and meta["config"]["num_tokens"] == 256
    assert 0 <= recorded["val_hole_acc"] <= 1 and math.isfinite(recorded["val_hole_ce"])
    assert len(list((env["root"] / "cache" / "tokens").glob("*.pt"))) == 4  # train, mirrored, val, val holes
    report = tmp_path / "eval.json"
    assert main(["eval-transformer", "--checkpoint", str(tmp_path / "shipped.safetensors"), "--vqgan-checkpoint",
                 str(env["vqgan"]), "--data", str(env["data"]), "--device", "cpu", "--json", str(report)]) == 0
    result = json.loads(report.read_text())
    assert result["val_num_masked"] == recorded["val_num_masked"]
    assert result["val_ce"] == pytest.approx(recorded["val_ce"], abs=1e-5)
    assert result["val_masked_acc"] == pytest.approx(recorded["val_masked_acc"], abs=1e-9)
    assert result["val_hole_ce"] == pytest.approx(recorded["val_hole_ce"], abs=1e-5)
    assert result["val_hole_acc"] == pytest.approx(recorded["val_hole_acc"], abs=1e-9)


def test_hole_training_fine_tunes_from_init_weights(env, tmp_path, capsys):
    common = ["train-transformer", "--data", str(env["data"]), "--vqgan-checkpoint", str(env["vqgan"]),
              "--device", "cpu", "--batch-size", "4", "--val-every", "2", "--ckpt-every", "2", "--no-progress"]
    assert main([*common, "--preset", "tiny", "--out", str(tmp_path / "a"), "--max-steps", "2"]) == 0
    start, _ = read_weights(tmp_path / "a" / "final.safetensors")
    before = len(list((env["root"] / "cache" / "tokens").glob("*.pt")))
    assert main([*common, "--preset", "tiny", "--out", str(tmp_path / "b"), "--max-steps", "2", "--hole-fraction",
                 "1", "--hole-variants", "2", "--init-weights", str(tmp_path / "a" / "final.safetensors"),
                 "--lr", "1e-12", "--warmup-steps", "0"]) == 0
    assert len(list((env["root"] / "cache" / "tokens").glob("*.pt"))) == before + 2  # holes of train + mirrored
    tuned, meta = read_weights(tmp_path / "b" / "final.safetensors")
    assert all(torch.allclose(tuned[k], start[k], atol=1e-6) for k in start)  # started from a's weights
    summary = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert summary["train_config"]["hole_fraction"] == 1.0 and summary["train_config"]["hole_variants"] == 2
    capsys.readouterr()
    assert main([*common, "--preset", "cpu", "--out", str(tmp_path / "c"), "--max-steps", "1",
                 "--init-weights", str(tmp_path / "a" / "final.safetensors")]) != 0
    assert "has another transformer config" in capsys.readouterr().err


def test_views_and_dropout_flags(env, tmp_path, capsys):
    common = ["train-transformer", "--data", str(env["data"]), "--vqgan-checkpoint", str(env["vqgan"]),
              "--device", "cpu", "--batch-size", "4", "--val-every", "2", "--ckpt-every", "2", "--no-progress",
              "--preset", "tiny", "--max-steps", "2"]
    assert main([*common, "--out", str(tmp_path / "a"), "--views", "id,small+flip", "--hole-fraction", "0.5",
                 "--hole-variants", "1", "--dropout", "0.3"]) == 0
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["train_config"]["token_views"] == ["id", "small+flip"]
    state = load_training_state(tmp_path / "a" / "state.pt")
    assert state["data_order"]["num_items"] == 2 * 12  # two views of the 12 training images
    _, meta = read_weights(tmp_path / "a" / "final.safetensors")
    assert meta["config"]["dropout"] == 0.3
    for flag, value, message in (("--views", "id,twirl", "bad view 'twirl'"), ("--views", "id,id", "repeat"),
                                 ("--dropout", "1.5", "dropout rate in [0, 1)")):
        capsys.readouterr()
        with pytest.raises(SystemExit):
            main([*common, "--out", str(tmp_path / "b"), flag, value])
        assert message in capsys.readouterr().err


def test_view_tokens_are_the_tokens_of_the_viewed_images(env, tmp_path):
    from maskgit_lib.training.data import load_images_uint8
    from maskgit_lib.training.tokens import token_cache_key
    from maskgit_lib.views import apply_view
    from maskgit_lib.vqgan import load_vqgan

    files = sorted((env["data"] / "val").glob("*.png"))
    vq = load_vqgan(env["vqgan"])
    sha = file_sha256(env["vqgan"])
    keys = {view: token_cache_key(sha, files, view) for view in ("id", "flip", "small", "small+flip")}
    assert len(set(keys.values())) == 4
    tokens, key = cached_tokens(env["vqgan"], vq, sha, files, "small+flip")
    assert key == keys["small+flip"]
    images = apply_view(load_images_uint8(files, 64), "small+flip").float() / 127.5 - 1
    assert torch.equal(tokens, vq.encode_to_tokens(images).flatten(1))


def test_token_cache_is_keyed_by_tokenizer_bytes_and_images(env, tmp_path):
    from maskgit_lib.vqgan import load_vqgan

    files = sorted((env["data"] / "val").glob("*.png"))
    path = tmp_path / "vq.safetensors"
    tiny_vqgan(path, 0)
    vq = load_vqgan(path)
    tokens, key = cached_tokens(path, vq, file_sha256(path), files)
    assert tokens.shape == (4, 256) and tokens.dtype == torch.int64
    cache = env["root"] / "cache" / "tokens" / f"{key[:24]}.pt"
    stamp = cache.stat().st_mtime_ns
    again, key_again = cached_tokens(path, vq, file_sha256(path), files)  # a hit: not rewritten
    assert key_again == key and torch.equal(again, tokens) and cache.stat().st_mtime_ns == stamp
    tiny_vqgan(path, 1)  # another tokenizer at the same path
    vq = load_vqgan(path)
    new, new_key = cached_tokens(path, vq, file_sha256(path), files)
    assert new_key != key and not torch.equal(new, tokens)
    assert torch.equal(new, vq.encode_to_tokens(torch.stack([
        torch.from_numpy(np.array(Image.open(f).convert("RGB"))).permute(2, 0, 1) for f in files]).float()
        / 127.5 - 1).flatten(1))
    copy = tmp_path / "imgs"
    copy.mkdir()
    for f in files:
        (copy / f.name).write_bytes(f.read_bytes())
    Image.new("RGB", (64, 64), (0, 0, 0)).save(copy / files[0].name)  # one image changed
    _, changed_key = cached_tokens(path, vq, file_sha256(path), sorted(copy.glob("*.png")))
    assert changed_key != new_key


class _Oracle(nn.Module):
    """Logits that are right on visible positions and uniform on [MASK] inputs."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.k = k
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, tokens):
        visible = tokens < self.k
        logits = torch.zeros(*tokens.shape, self.k) + self.dummy
        onehot = nn.functional.one_hot(tokens.clamp(max=self.k - 1), self.k).float() * 50
        return torch.where(visible[..., None], onehot, logits)


def test_loss_counts_masked_positions_only():
    k = 16
    tokens = torch.randint(0, k, (6, 256))
    step = make_train_step(TrainConfig(label_smoothing=0.0), tokens, k)
    out = step(_Oracle(k), torch.arange(6), torch.Generator().manual_seed(0), 0)
    assert out["loss"].item() == pytest.approx(math.log(k), rel=1e-5)  # uniform on hidden, ignored elsewhere
    assert 0 < out["mask_ratio"].item() <= 1


def test_fixed_val_masks_are_deterministic():
    a, b = fixed_val_masks(5, 256, "cosine"), fixed_val_masks(5, 256, "cosine")
    assert torch.equal(a, b) and a.dtype == torch.bool and a.any(1).all()
    assert not torch.equal(a, fixed_val_masks(5, 256, "cosine", seed=1))


def test_python_api_and_cli_write_bitwise_the_same_weights(env, tmp_path):
    assert main(["train-transformer", "--preset", "tiny", "--data", str(env["data"]), "--vqgan-checkpoint",
                 str(env["vqgan"]), "--out", str(tmp_path / "cli"), "--device", "cpu", "--batch-size", "4",
                 "--max-steps", "3", "--val-every", "2", "--ckpt-every", "2", "--no-progress"]) == 0
    run = TransformerRun.default(preset="tiny", device="cpu", data_dir=env["data"], vqgan_checkpoint=env["vqgan"],
                                 out_dir=tmp_path / "py", progress=False)
    run = dataclasses.replace(run, train=dataclasses.replace(run.train, batch_size=4, max_steps=3, val_every=2,
                                                             ckpt_every=2))
    summary = train_transformer(run)
    assert summary["steps"] == 3 and summary["metrics"]["num_masked"] > 0
    cli_summary = json.loads((tmp_path / "cli" / "summary.json").read_text())
    assert summary["train_config"] == cli_summary["train_config"] and summary["metrics"] == cli_summary["metrics"]
    by_cli, _ = read_weights(tmp_path / "cli" / "final.safetensors")
    by_python, _ = read_weights(tmp_path / "py" / "final.safetensors")
    assert by_cli.keys() == by_python.keys() and all(torch.equal(by_cli[k], by_python[k]) for k in by_cli)


def test_python_api_refuses_bad_settings_before_loading_anything(tmp_path):
    run = TransformerRun.default(preset="tiny", device="cpu", data_dir=tmp_path / "nowhere", out_dir=tmp_path / "r")
    assert run.model == TransformerConfig.preset("tiny") and run.train.batch_size == 8 and not run.train.bf16
    with pytest.raises(ConfigError, match="max-minutes"):
        train_transformer(dataclasses.replace(run, train=dataclasses.replace(run.train, max_steps=0)))
    with pytest.raises(ConfigError, match="weights_dtype"):
        train_transformer(dataclasses.replace(run, weights_dtype="int8"))
    assert not (tmp_path / "r").exists()
