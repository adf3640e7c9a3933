"""Offline FID: weight conversion, pytorch-fid agreement, caching, errors.

Everything runs on CPU with 8 tiny 64x64 images per folder. The network is blocked
(torch.hub downloads raise; subprocesses get a dead proxy), and the converted weights
live in a temporary ``TORCH_HOME`` so the user's cache is never touched. Torch uses one
thread here: on 2 shared cores that costs far less CPU than two spinning threads.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from maskgit_lib import cli
from maskgit_lib.evaluation import fid, inception
from maskgit_lib.errors import DataError

DEAD_PROXY = "http://127.0.0.1:9"  # nothing listens there: any download fails at once


def _write_pngs(folder: Path, n: int, seed: int, smooth: bool) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        if smooth:  # colour gradients plus a little noise: a distribution unlike pure noise
            ramp = np.linspace(0, 1, 64)[None, :, None] * rng.uniform(0, 255, size=(1, 1, 3))
            img = np.clip(ramp + rng.normal(0, 10, size=(64, 64, 3)), 0, 255)
        else:
            img = rng.integers(0, 256, size=(64, 64, 3))
        Image.fromarray(img.astype(np.uint8)).save(folder / f"image_{i:03d}.png")
    return folder


def _load_uint8(folder: Path) -> torch.Tensor:
    arrays = [np.asarray(Image.open(p).convert("RGB")) for p in sorted(folder.glob("*.png"))]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()  # (N,3,64,64) uint8


def _no_download(*args, **kwargs):
    raise RuntimeError("network access attempted in a test (weights should be local)")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """Temporary TORCH_HOME + cache, network blocked, weights converted once, two folders."""
    root = tmp_path_factory.mktemp("fid")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TORCH_HOME", str(root / "torch"))
        mp.setenv("MASKGIT_CACHE", str(root / "cache"))
        for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
            mp.setenv(var, DEAD_PROXY)
        for var in ("no_proxy", "NO_PROXY"):
            mp.delenv(var, raising=False)
        mp.setenv("OMP_NUM_THREADS", "1")  # for the pytorch-fid subprocesses
        mp.setattr(torch.hub, "download_url_to_file", _no_download)
        inception._shared_inception.cache_clear()
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        weights = inception.ensure_inception_weights()  # the conversion, once per test session
        a = _write_pngs(root / "a", 8, seed=0, smooth=False)
        b = _write_pngs(root / "b", 8, seed=1, smooth=True)
        yield {"root": root, "weights": weights, "a": a, "b": b}
        torch.set_num_threads(threads)
        inception._shared_inception.cache_clear()


def test_weights_file_is_where_pytorch_fid_looks(env):
    from pytorch_fid.inception import FID_WEIGHTS_URL

    assert inception.WEIGHTS_FILE_NAME == FID_WEIGHTS_URL.rsplit("/", 1)[1]
    assert env["weights"] == env["root"] / "torch" / "hub" / "checkpoints" / inception.WEIGHTS_FILE_NAME
    assert env["weights"].stat().st_mode & 0o044 == 0o044  # readable by others (shared hub cache)
    state = torch.load(env["weights"], map_location="cpu", weights_only=True)
    assert len(state) == 566
    assert torch.all(state["fc.weight"] == 0) and torch.all(state["Conv2d_1a_3x3.bn.weight"] == 1)


def test_ensure_is_idempotent_and_fast(env):
    mtime = env["weights"].stat().st_mtime_ns
    start = time.perf_counter()
    assert inception.ensure_inception_weights() == env["weights"]
    assert time.perf_counter() - start < 0.5
    assert env["weights"].stat().st_mtime_ns == mtime


def test_converted_model_matches_torchscript(env):
    ts = inception._load_torchscript(inception.torchscript_path())
    model = inception.build_inception("cpu")
    x = torch.rand(2, 3, 299, 299, generator=torch.Generator().manual_seed(1)) * 2 - 1  # [-1,1], TF range
    with torch.no_grad():
        ours = model((x + 1) / 2)[0].reshape(2, 2048)  # pytorch-fid: [0,1] in, 2x-1 inside, 299 -> 299
        ref = ts(x)  # (2,2048)
    assert (ours - ref).abs().max().item() < 1e-4


def test_fid_of_a_folder_with_itself_is_zero(env):
    assert abs(fid.fid_folders(env["a"], env["a"], device="cpu", cache_pred=True)) < 1e-3


def test_fid_of_different_folders_is_positive_and_symmetric(env):
    ab = fid.fid_folders(env["a"], env["b"], device="cpu", cache_pred=True)
    ba = fid.fid_folders(env["b"], env["a"], device="cpu", cache_pred=True)
    assert ab > 1.0
    assert ab == pytest.approx(ba, rel=1e-6)


def test_cache_hit_and_invalidation(env, tmp_path, monkeypatch):
    folder = tmp_path / "copy"
    folder.mkdir()
    for name in ("image_000.png", "image_001.png"):
        shutil.copy(env["a"] / name, folder / name)
    first = fid.folder_features(folder, device="cpu")  # (2,2048)
    calls = []
    real = fid.inception_features
    monkeypatch.setattr(fid, "inception_features", lambda *a, **k: calls.append(1) or real(*a, **k))
    start = time.perf_counter()
    mu, sigma = fid.folder_statistics(folder, device="cpu")
    assert time.perf_counter() - start < 2.0 and calls == []
    assert mu.shape == (2048,) and sigma.shape == (2048, 2048) and mu.dtype == np.float64
    np.testing.assert_allclose(mu, first.mean(axis=0))
    img = np.asarray(Image.open(folder / "image_000.png")).copy()
    img[0, 0] ^= 255
    Image.fromarray(img).save(folder / "image_000.png")
    changed = fid.folder_features(folder, device="cpu")
    assert calls == [1]
    assert not np.allclose(changed[0], first[0]) and np.allclose(changed[1], first[1], atol=1e-5)


def test_in_memory_images_match_folder(env, monkeypatch, caplog):
    images = _load_uint8(env["a"])  # (8,3,64,64) uint8
    from_folder = fid.folder_features(env["a"], device="cpu")
    as_float = images[:1].float() / 127.5 - 1  # library convention [-1,1]
    np.testing.assert_allclose(fid.inception_features(as_float, device="cpu"), from_folder[:1], atol=1e-4)
    value = fid.fid_from_images(images[:4], env["b"], device="cpu")
    expected = fid.frechet_distance_from_features(from_folder[:4], fid.folder_features(env["b"], device="cpu"))
    assert value == pytest.approx(expected, rel=1e-6)
    monkeypatch.setattr(fid, "inception_features", lambda imgs, *a, **k: from_folder[: len(imgs)])
    fid.fid_from_images(images[:6], env["b"])
    assert "compares fairly only" in caplog.text


def test_folder_with_mixed_sizes(env, tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    odd = torch.randint(0, 256, (3, 40, 48), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    shutil.copy(env["a"] / "image_000.png", folder / "0.png")
    Image.fromarray(odd.permute(1, 2, 0).numpy()).save(folder / "1.png")
    feats = fid.inception_features(folder, device="cpu")  # (2,2048): a 64x64 and a 40x48 image
    np.testing.assert_allclose(feats[0], fid.folder_features(env["a"], device="cpu")[0], atol=1e-5)
    np.testing.assert_allclose(feats[1], fid.inception_features(odd[None], device="cpu")[0], atol=1e-5)


def test_frechet_distance_matches_pytorch_fid():
    from pytorch_fid.fid_score import calculate_frechet_distance

    rng = np.random.default_rng(0)
    for n1, n2 in [(200, 150), (10, 12)]:  # full-rank and low-rank covariances, D=64
        f1 = rng.normal(size=(n1, 64))
        f2 = rng.normal(0.3, 1.2, size=(n2, 64))
        s1, s2 = fid.feature_statistics(f1), fid.feature_statistics(f2)
        with pytest.warns(DeprecationWarning):  # pytorch-fid passes sqrtm's deprecated disp=
            ref = calculate_frechet_distance(*s1, *s2)
        assert fid.frechet_distance(*s1, *s2) == pytest.approx(ref, rel=1e-6)
        assert fid.frechet_distance(*s1, *s2, method="sqrtm") == pytest.approx(ref, rel=1e-12)
        assert fid.frechet_distance_from_features(f1, f2) == pytest.approx(ref, rel=1e-6)
        assert abs(fid.frechet_distance_from_features(f1, f1)) < 1e-9
    with pytest.raises(DataError):
        fid.frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


PYTORCH_FID_OPTIONS = ["--device", "cpu", "--batch-size", "8", "--num-workers", "0"]


def _pytorch_fid(*runs: list[str]) -> str:
    """Run ``python -m pytorch_fid ARGS`` once per ARGS in one interpreter; return its stdout.

    ``runpy.run_module(..., run_name="__main__", alter_sys=True)`` is what ``-m`` does;
    sharing the interpreter pays torch's import (tens of seconds on busy cores) once.
    """
    script = (
        "import runpy, sys\n"
        f"for args in {[PYTORCH_FID_OPTIONS + list(r) for r in runs]!r}:\n"
        "    sys.argv = ['pytorch_fid'] + args\n"
        "    runpy.run_module('pytorch_fid', run_name='__main__', alter_sys=True)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], env=dict(os.environ), capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_pytorch_fid_command_runs_offline(env, tmp_path):
    """pytorch-fid's command loads the converted weights offline, and its statistics equal ours.

    ``A B`` runs with ``--dims 64`` (a 64x64 sqrtm instead of minutes for 2048x2048);
    ``--save-stats`` on 2 images of a gives pool3 mu/sigma to compare with ours.
    """
    for name in ("image_000.png", "image_001.png"):
        shutil.copy(env["a"] / name, tmp_path / name)
    out = env["root"] / "a2_stats.npz"
    printed = _pytorch_fid(["--dims", "64", str(env["a"]), str(env["b"])], ["--save-stats", str(tmp_path), str(out)])
    assert float(re.search(r"FID:\s+(\S+)", printed).group(1)) > 0
    mu, sigma = fid.feature_statistics(fid.folder_features(env["a"], device="cpu")[:2])
    with np.load(out) as z:
        np.testing.assert_allclose(z["mu"], mu, atol=1e-5)
        np.testing.assert_allclose(z["sigma"], sigma, atol=1e-5)


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("MASKGIT_FID_FULL"), reason="set MASKGIT_FID_FULL=1 (minutes on 2 cores)")
def test_pytorch_fid_fid_equals_ours(env):
    """Full ``python -m pytorch_fid A B``: its 2048x2048 scipy sqrtm takes minutes on 2 busy cores."""
    theirs = float(re.search(r"FID:\s+(\S+)", _pytorch_fid([str(env["a"]), str(env["b"])])).group(1))
    ours = fid.fid_folders(env["a"], env["b"], device="cpu", cache_pred=True)
    assert ours == pytest.approx(theirs, rel=1e-3)


def test_folder_errors(env, tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        fid.fid_folders(tmp_path / "missing", env["a"])
    with pytest.raises(DataError, match="holds no images"):
        fid.folder_statistics(tmp_path)
    (tmp_path / "file.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="is a file"):
        fid.list_fid_images(tmp_path / "file.png")
    with pytest.raises(DataError, match="at least 2"):
        fid.fid_folders(tmp_path, env["a"])
    (tmp_path / "zz.png").write_bytes(b"also not a png")
    with pytest.raises(DataError, match="not a readable image"):
        fid.folder_features(tmp_path, device="cpu", cache=False)


def test_cli(env, tmp_path, capsys):
    assert cli.main(["prepare-fid"]) == 0
    pred = tmp_path / "pred"
    pred.mkdir()
    for name in ("image_002.png", "image_003.png"):
        shutil.copy(env["b"] / name, pred / name)
    assert cli.main(["fid", str(pred), str(env["a"]), "--device", "cpu", "--batch-size", "4"]) == 0
    value = float(re.search(r"FID: (\S+)", capsys.readouterr().out).group(1))
    feats_b = fid.folder_features(env["b"], device="cpu")[2:4]
    expected = fid.frechet_distance_from_features(feats_b, fid.folder_features(env["a"], device="cpu"))
    assert value == pytest.approx(expected, rel=1e-5)
    assert cli.main(["fid", str(tmp_path / "nope"), str(env["a"])]) == 2
    assert "does not exist" in capsys.readouterr().err
