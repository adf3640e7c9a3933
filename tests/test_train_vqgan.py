"""``maskgit train-vqgan`` / ``eval-vqgan`` on a tiny temporary dataset (CPU, tiny preset).

Covers: the files a run writes, bitwise-equal weights after a resume, SIGKILL at
random moments (restart continues, the state file is always loadable, the final
weights equal an uninterrupted run) and eval-vqgan's report.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from maskgit_lib.checkpoint import load_training_state, read_weights
from maskgit_lib.cli import main
from maskgit_lib.training.logs import read_csv

ARGS = ["--preset", "tiny", "--device", "cpu", "--batch-size", "4", "--max-steps", "6", "--val-every", "3",
        "--ckpt-every", "2", "--log-every", "1", "--no-progress"]


pytestmark = pytest.mark.usefixtures("one_thread")


def make_dataset(root: Path, n_train: int = 12, n_val: int = 4, n_test: int = 4) -> Path:
    """Flat-colour boxes on white, 64x64 PNGs in train/, val/ and test/gt/."""
    rng = np.random.default_rng(0)
    for split, count in (("train", n_train), ("val", n_val), ("test/gt", n_test)):
        (root / split).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            pixels = np.full((64, 64, 3), 255, np.uint8)
            x, y = rng.integers(0, 40, 2)
            pixels[y:y + 20, x:x + 24] = rng.integers(0, 255, 3)
            Image.fromarray(pixels).save(root / split / f"image_{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("vq_data"))


@pytest.fixture(scope="module")
def straight_run(dataset, tmp_path_factory) -> Path:
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("vq_straight")
    assert main(["train-vqgan", "--data", str(dataset), "--out", str(out), *ARGS]) == 0
    return out


def same_weights(a: Path, b: Path) -> bool:
    wa, _ = read_weights(a)
    wb, _ = read_weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_tiny_run_writes_weights_log_plot_and_summary(straight_run, tmp_path):
    from maskgit_lib.vqgan import load_vqgan

    model = load_vqgan(straight_run / "final.safetensors")
    assert model.cfg.codebook_size == 64
    _, meta = read_weights(straight_run / "final.safetensors")
    assert meta["metrics"]["steps"] == 6 and 0 < meta["metrics"]["val_psnr"] < 60
    assert 0 < meta["metrics"]["val_usage"] <= 1
    header, rows = read_csv(straight_run / "log.csv")
    assert {"step", "lr", "loss", "l1", "mse", "vq", "val_psnr", "val_usage", "val_perplexity"} <= set(header)
    assert [int(r["step"]) for r in rows if r["loss"]] == [1, 2, 3, 4, 5, 6]
    assert [int(r["step"]) for r in rows if r["val_psnr"]] == [3, 6]
    assert (straight_run / "curves.png").read_bytes()[:4] == b"\x89PNG"
    summary = json.loads((straight_run / "summary.json").read_text())
    assert summary["stop_reason"] == "max_steps" and summary["step_time_s"] > 0
    assert load_training_state(straight_run / "state.pt")["step"] == 6


def test_resume_after_stop_gives_bitwise_the_same_weights(dataset, straight_run, tmp_path):
    out = tmp_path / "run"
    assert main(["train-vqgan", "--data", str(dataset), "--out", str(out), *ARGS, "--stop-at-step", "3"]) == 0
    assert load_training_state(out / "state.pt")["step"] == 3
    export = tmp_path / "exported.safetensors"
    assert main(["train-vqgan", "--data", str(dataset), "--out", str(out), *ARGS, "--export", str(export)]) == 0
    assert json.loads((out / "summary.json").read_text())["resumed_from_step"] == 3
    assert same_weights(out / "final.safetensors", straight_run / "final.safetensors")
    assert export.read_bytes() == (out / "final.safetensors").read_bytes()


@pytest.mark.slow
def test_sigkill_at_random_moments_then_restart_matches_uninterrupted(dataset, straight_run, tmp_path):
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "maskgit_lib.cli", "train-vqgan", "--data", str(dataset), "--out", str(out), *ARGS]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    state = out / "state.pt"
    rng = random.Random(1234)
    kills, steps_seen = 0, []
    for _ in range(2):
        before = state.stat().st_mtime_ns if state.exists() else None
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 180
        while proc.poll() is None and time.monotonic() < deadline:  # wait for a new checkpoint ...
            if state.exists() and state.stat().st_mtime_ns != before:
                break
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.8))  # ... then kill at a random moment
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
        steps_seen.append(load_training_state(state)["step"])  # never half-written
    assert kills >= 1, "the run finished before it could be killed"
    assert steps_seen == sorted(steps_seen) and steps_seen[0] >= 2
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert same_weights(out / "final.safetensors", straight_run / "final.safetensors")
    _, rows = read_csv(out / "log.csv")
    assert [int(r["step"]) for r in rows if r["loss"]] == [1, 2, 3, 4, 5, 6]  # no duplicated rows
    assert not list(out.glob(".*.tmp"))


def test_eval_vqgan_reports_psnr_usage_and_writes_json(straight_run, dataset, tmp_path, capsys):
    out = tmp_path / "eval.json"
    assert main(["eval-vqgan", "--checkpoint", str(straight_run / "final.safetensors"), "--data", str(dataset),
                 "--no-fid", "--device", "cpu", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["num_images"] == 4 and result["rfid"] is None
    assert 0 < result["usage"] <= 1 and result["perplexity"] >= 1 and result["psnr"] > 0
    assert "PSNR" in capsys.readouterr().out


def test_bad_flags_give_one_sentence_errors(dataset, tmp_path, capsys):
    assert main(["train-vqgan", "--data", str(dataset), "--out", str(tmp_path), "--preset", "tiny",
                 "--device", "cpu", "--max-steps", "0"]) == 2
    assert "--max-minutes" in capsys.readouterr().err
    assert main(["train-vqgan", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path), "--preset", "tiny",
                 "--device", "cpu"]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.slow
def test_training_import_path_is_light():
    code = ("import sys, maskgit_lib.training, maskgit_lib.cli.train; "
            "heavy = [m for m in ('pytorch_fid', 'maskgit_lib.evaluation.fid', 'matplotlib', 'scipy') if m in sys.modules]; "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_python_api_trains_what_the_cli_trains(dataset, straight_run, tmp_path):
    from maskgit_lib.training import VQGANRun, train_vqgan

    run = VQGANRun.default(preset="tiny", device="cpu", data_dir=dataset, out_dir=tmp_path / "py", progress=False,
                           export=tmp_path / "exported.safetensors")
    run = dataclasses.replace(run, train=dataclasses.replace(run.train, batch_size=4, max_steps=6, val_every=3,
                                                             ckpt_every=2, log_every=1))
    summary = train_vqgan(run)
    assert summary["steps"] == 6 and summary["metrics"]["psnr"] > 0
    assert same_weights(tmp_path / "py" / "final.safetensors", straight_run / "final.safetensors")
    assert same_weights(tmp_path / "exported.safetensors", straight_run / "final.safetensors")
