"""``torchrun --nproc_per_node=2`` (gloo, CPU): replicas stay bitwise in sync and the run resumes.

Launches ``python -m torch.distributed.run`` twice on a tiny VQGAN run (whose
quantizer all-reduces its EMA statistics): a first session stops after step 2,
a second resumes from rank 0's checkpoint to step 4. After each, the trainer
all-gathers a SHA-256 of every rank's state dict (``summary.json``'s
``replicas_in_sync``).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from maskgit_lib.checkpoint import load_training_state, read_weights


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _dataset(root):
    rng = np.random.default_rng(2)
    for split, count in (("train", 8), ("val", 2)):
        (root / split).mkdir(parents=True)
        for i in range(count):
            pixels = np.full((64, 64, 3), 255, np.uint8)
            pixels[8:30, 10:40] = rng.integers(0, 255, 3)
            Image.fromarray(pixels).save(root / split / f"image_{i}.png")
    return root


def _torchrun(args, tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={_free_port()}", "-m", "maskgit_lib.cli", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.slow
def test_two_ranks_stay_in_sync_and_resume(tmp_path):
    data, out = _dataset(tmp_path / "data"), tmp_path / "run"
    args = ["train-vqgan", "--preset", "tiny", "--device", "cpu", "--data", str(data), "--out", str(out),
            "--batch-size", "4", "--max-steps", "4", "--val-every", "2", "--ckpt-every", "2", "--log-every", "1",
            "--no-progress"]
    _torchrun([*args, "--stop-at-step", "2"], tmp_path)
    first = json.loads((out / "summary.json").read_text())
    assert first["world_size"] == 2 and first["replicas_in_sync"] and first["steps"] == 2
    assert load_training_state(out / "state.pt")["step"] == 2
    _torchrun(args, tmp_path)
    second = json.loads((out / "summary.json").read_text())
    assert second["resumed_from_step"] == 2 and second["steps"] == 4 and second["replicas_in_sync"]
    weights, meta = read_weights(out / "final.safetensors", expected_type="vqgan")
    assert meta["metrics"]["steps"] == 4 and all(np.isfinite(t.numpy()).all() for t in weights.values())
    assert len([line for line in (out / "log.csv").read_text().splitlines()[1:] if line.split(",")[4]]) == 4
