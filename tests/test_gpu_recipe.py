"""tools/gpu_recipe.sh end to end at tiny scale on the CPU: pack, run (tiny), resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from maskgit_lib.transformer import load_transformer

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "tools" / "gpu_recipe.sh"


def _dataset(folder: Path) -> None:
    rng = np.random.default_rng(0)
    for split, count in (("train", 10), ("val", 4)):
        (folder / split).mkdir(parents=True)
        for i in range(count):
            rgba = np.full((64, 64, 4), 255, np.uint8)
            rgba[..., 3] = 0  # transparent background: composited on white like the emoji
            y, x = rng.integers(4, 40, 2)
            rgba[y:y + 20, x:x + 20] = [*rng.integers(0, 255, 3), 255]
            Image.fromarray(rgba, "RGBA").save(folder / split / f"e{i:02d}.png")


def _recipe(*args: str) -> str:
    env = {**os.environ, "PY": sys.executable}
    proc = subprocess.run([str(SCRIPT), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.slow
def test_pack_tiny_run_and_resume(tmp_path: Path) -> None:
    _dataset(tmp_path / "data")
    pack = tmp_path / "pack.tar"
    out_pack = _recipe("pack", str(pack), "--data", str(tmp_path / "data"))
    assert "packed" in out_pack and "carry budget" in out_pack and pack.exists()
    out, work = tmp_path / "out", tmp_path / "work"
    common = ["tiny", str(out), "--pack", str(pack), "--work", str(work), "--budget", "0.15"]
    first = _recipe(*common, "--chunk", "0.01")  # stops after the calibration segment
    assert "calibration" in first and "run the same command again" in first
    s1 = json.loads((out / "summary.json").read_text())
    assert s1["stop_reason"] == "stop_at_step" and s1["steps"] == 3
    second = _recipe(*common, "--chunk", "3")
    assert "data already unpacked" in second
    s2 = json.loads((out / "summary.json").read_text())
    assert s2["resumed_from_step"] == 3 and s2["steps"] > 3 and s2["stop_reason"] == "max_minutes"
    log = (out / "recipe.log").read_text()
    assert log.count("throughput:") == 2 and "TFLOP/s, MFU" in log
    model = load_transformer(out / "transformer.safetensors", "cpu")
    assert model.cfg.dim == 64 and model.cfg.codebook_size == 1024
    assert (out / "logs.tgz").exists() and (out / "state.pt").exists()
    assert len(list(out.iterdir())) <= 8  # the device tool brings back at most 8 files
