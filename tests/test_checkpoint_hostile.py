"""Hostile checkpoint files: metadata that is not JSON, lies about sizes, NaN weights, a truncated state.pt.

Each case is refused with a ``CheckpointError`` naming the file and what is expected; at the
CLI (in-process ``maskgit_lib.cli.main``) that is exit status 2, the sentence on stderr and no
traceback. Metadata that claims a huge model over a small file is refused before anything is
built (checked in a subprocess: bounded time and memory). Tiny random models only.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from maskgit_lib import paths
from maskgit_lib.checkpoint import read_weights, save_training_state
from maskgit_lib.cli import main
from maskgit_lib.config import TransformerConfig, VQGANConfig, config_to_dict
from maskgit_lib.errors import CheckpointError
from maskgit_lib.transformer import load_transformer
from maskgit_lib.vqgan import load_vqgan

S = 64
pytestmark = pytest.mark.usefixtures("one_thread")



@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Caches go to a temporary folder; never the shipped models."""
    monkeypatch.setenv("MASKGIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MASKGIT_CHECKPOINTS", str(tmp_path / "no-checkpoints"))


def vq(ckpts: Path) -> Path:
    return ckpts / paths.VQGAN_CHECKPOINT_NAME


def tf(ckpts: Path) -> Path:
    return ckpts / paths.TRANSFORMER_CHECKPOINT_NAME


def stored_meta(path: Path) -> dict[str, str]:
    """The raw string metadata of a safetensors file."""
    with safe_open(str(path), framework="pt") as fh:
        return dict(fh.metadata())


def rewrite(src: Path, dst: Path, *, tensors: dict[str, torch.Tensor] | None = None, **meta: str) -> Path:
    """Copy the checkpoint ``src`` to ``dst`` with some metadata fields (raw strings) or tensors replaced."""
    tensors = tensors if tensors is not None else load_file(str(src))
    save_file(tensors, str(dst), metadata={**stored_meta(src), **meta})
    return dst


def user_error(capsys, *argv) -> str:
    """Run ``maskgit argv`` in-process; it must exit 2 with ``maskgit CMD: error:`` and no traceback."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    assert code == 2, err
    assert f"maskgit {argv[0]}: error: " in err
    return err


def rgb(seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (S, S, 3), dtype=np.uint8))


@pytest.fixture()
def lab(tmp_path) -> tuple[Path, Path]:
    """One 64x64 image and its mask (a centred hole)."""
    images, masks = tmp_path / "lab" / "masked_image", tmp_path / "lab" / "mask64"
    images.mkdir(parents=True)
    masks.mkdir(parents=True)
    rgb(0).save(images / "image_000.png")
    known = np.full((S, S), 255, np.uint8)
    known[S // 3: 2 * S // 3, S // 3: 2 * S // 3] = 0
    Image.fromarray(known, "L").save(masks / "mask_000.png")
    return images, masks


def dataset(root: Path) -> Path:
    for split, count in (("train", 4), ("val", 2)):
        (root / split).mkdir(parents=True)
        for i in range(count):
            rgb(10 * i + len(split)).save(root / split / f"{i}.png")
    return root


def inpaint(ckpts: Path, lab, out: Path, vqgan: Path | None = None, transformer: Path | None = None) -> list:
    images, masks = lab
    return ["inpaint", "--images", images, "--masks", masks, "--out", out, "--device", "cpu", "--steps", "2",
            "--vqgan-checkpoint", vqgan or vq(ckpts), "--transformer-checkpoint", transformer or tf(ckpts)]


def eval_vqgan(tmp_path: Path, checkpoint: Path) -> list:
    gt = tmp_path / "gt"
    gt.mkdir(exist_ok=True)
    for i in range(2):
        rgb(i).save(gt / f"image_{i:03d}.png")
    return ["eval-vqgan", "--checkpoint", checkpoint, "--data", gt, "--no-fid", "--device", "cpu"]


def init_weights(tmp_path: Path, ckpts: Path, checkpoint: Path) -> list:
    return ["train-transformer", "--data", dataset(tmp_path / "data"), "--out", tmp_path / "run", "--preset",
            "tiny", "--device", "cpu", "--no-progress", "--max-steps", "2", "--batch-size", "2",
            "--vqgan-checkpoint", vq(ckpts), "--init-weights", checkpoint]


# ----------------------------------------------------------------------------- 1. metadata that is not a JSON object

BAD_JSON = [
    ("config", "{not json", "config is not valid JSON (Expecting property name"),
    ("config", "[1, 2, 3]", "config must be a JSON object (the model config written by save_weights), got a list"),
    ("config", "null", "config must be a JSON object (the model config written by save_weights), got null"),
    ("config", '"cpu"', "config must be a JSON object (the model config written by save_weights), got a string"),
    ("config", '{"dim": NaN}', "config is not valid JSON (NaN is not a finite number)"),
    ("config", "[" * 100_000 + "]" * 100_000, "config is not valid JSON"),
    ("metrics", "{oops", "metrics is not valid JSON"),
    ("metrics", "[0.5]", "metrics must be a JSON object (the metrics written by save_weights, name -> number), "
                         "got a list"),
]


@pytest.mark.parametrize("field, text, message", BAD_JSON, ids=lambda v: v[:20] if isinstance(v, str) else v)
@pytest.mark.parametrize("kind", ["vqgan", "transformer"])
def test_read_weights_refuses_metadata_that_is_not_a_json_object(tmp_path, ckpts, kind, field, text, message):
    path = rewrite(vq(ckpts) if kind == "vqgan" else tf(ckpts), tmp_path / "bad.safetensors", **{field: text})
    load = load_vqgan if kind == "vqgan" else load_transformer
    for read in (read_weights, load):
        with pytest.raises(CheckpointError) as exc:
            read(path)
        assert str(path) in str(exc.value) and message in str(exc.value)


def test_metrics_may_hold_nan(tmp_path, ckpts):
    """A metric that was NaN (e.g. not measured) is not a reason to refuse the weights."""
    path = rewrite(tf(ckpts), tmp_path / "nan-metric.safetensors", metrics='{"val_ce": NaN}')
    _, meta = read_weights(path)
    assert np.isnan(meta["metrics"]["val_ce"])


@pytest.mark.parametrize("field, text, message", [BAD_JSON[0], BAD_JSON[1], BAD_JSON[2], BAD_JSON[6]],
                         ids=["config-invalid", "config-list", "config-null", "metrics-invalid"])
@pytest.mark.parametrize("command", ["inpaint-vqgan", "inpaint-transformer", "eval-vqgan", "init-weights"])
def test_cli_refuses_metadata_that_is_not_a_json_object(tmp_path, ckpts, lab, capsys, command, field, text, message):
    if command == "inpaint-vqgan":
        bad = rewrite(vq(ckpts), tmp_path / "bad.safetensors", **{field: text})
        argv = inpaint(ckpts, lab, tmp_path / "out", vqgan=bad)
    elif command == "inpaint-transformer":
        bad = rewrite(tf(ckpts), tmp_path / "bad.safetensors", **{field: text})
        argv = inpaint(ckpts, lab, tmp_path / "out", transformer=bad)
    elif command == "eval-vqgan":
        bad = rewrite(vq(ckpts), tmp_path / "bad.safetensors", **{field: text})
        argv = eval_vqgan(tmp_path, bad)
    else:
        bad = rewrite(tf(ckpts), tmp_path / "bad.safetensors", **{field: text})
        argv = init_weights(tmp_path, ckpts, bad)
    err = user_error(capsys, *argv)
    assert str(bad) in err and message in err
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- 2. metadata that lies about sizes

LYING = {  # model -> config fields that would need gigabytes (or hours to build) over a file of a tiny model
    "transformer-dim": ("transformer", {"dim": 2 ** 20}, "does not fit this model's config (shape mismatches"),
    "transformer-huge-dim": ("transformer", {"dim": 2 ** 62, "heads": 1},
                             "stores an unusable transformer config: Storage size calculation overflowed"),
    "transformer-depth": ("transformer", {"depth": 10 ** 9},
                          "does not fit this model's config (depth=1000000000 needs at least 8000000009 tensors"),
    "vqgan-channels": ("vqgan", {"channels": [8, 16, 2 ** 20]}, "does not fit this model's config (shape mismatches"),
    "vqgan-blocks": ("vqgan", {"num_res_blocks": 10 ** 9}, "levels of num_res_blocks=1000000000 needs at least"),
    "vqgan-codebook": ("vqgan", {"codebook_size": 2 ** 40}, "does not fit this model's config (shape mismatches"),
}


def lying_file(ckpts: Path, folder: Path, name: str) -> tuple[Path, str]:
    kind, fields, message = LYING[name]
    src = vq(ckpts) if kind == "vqgan" else tf(ckpts)
    cfg = (VQGANConfig if kind == "vqgan" else TransformerConfig).preset("tiny")
    return rewrite(src, folder / f"{name}.safetensors", config=json.dumps({**config_to_dict(cfg), **fields})), message


def test_lying_sizes_are_refused_before_anything_is_built(tmp_path, ckpts):
    """In a fresh process: every lying file is refused within seconds, with peak memory growing < 500 MB."""
    files = {name: str(lying_file(ckpts, tmp_path, name)[0]) for name in LYING}
    script = textwrap.dedent(f"""
        import json, resource, sys, time
        import torch
        from maskgit_lib.errors import CheckpointError
        from maskgit_lib.transformer import load_transformer
        from maskgit_lib.vqgan import load_vqgan
        torch.set_num_threads(1)
        files = {files!r}
        results = {{}}
        for name, path in files.items():
            before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            start = time.perf_counter()
            try:
                (load_vqgan if name.startswith("vqgan") else load_transformer)(path)
                outcome = "loaded"
            except CheckpointError as exc:
                outcome = "CheckpointError: " + str(exc)
            except BaseException as exc:
                outcome = type(exc).__name__ + ": " + str(exc)[:300]
            results[name] = dict(outcome=outcome, seconds=time.perf_counter() - start,
                                 grew_mb=(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)
        print(json.dumps(results))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    for name, got in results.items():
        assert got["outcome"].startswith("CheckpointError: "), (name, got)
        assert LYING[name][2] in got["outcome"] and files[name] in got["outcome"], (name, got)
        assert got["seconds"] < 10 and got["grew_mb"] < 500, (name, got)


@pytest.mark.parametrize("name", ["transformer-dim", "transformer-depth", "vqgan-channels"])
def test_cli_refuses_lying_sizes(tmp_path, ckpts, lab, capsys, name):
    bad, message = lying_file(ckpts, tmp_path, name)
    which = {"vqgan": bad} if name.startswith("vqgan") else {"transformer": bad}
    err = user_error(capsys, *inpaint(ckpts, lab, tmp_path / "out", **which))
    assert str(bad) in err and message in err


def test_init_weights_refuses_lying_sizes(tmp_path, ckpts, capsys):
    bad, message = lying_file(ckpts, tmp_path, "transformer-dim")
    err = user_error(capsys, *init_weights(tmp_path, ckpts, bad))
    assert str(bad) in err and message in err


# ----------------------------------------------------------------------------- 3. NaN / inf weights


def poisoned(src: Path, dst: Path, value: float, dtype: torch.dtype | None = None) -> tuple[Path, str]:
    """Copy ``src`` with one value of its first floating tensor set to ``value`` (optionally all cast to dtype)."""
    tensors = load_file(str(src))
    if dtype is not None:
        tensors = {k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()}
    name = next(k for k, v in sorted(tensors.items()) if v.is_floating_point())
    tensors[name].view(-1)[0] = value
    return rewrite(src, dst, tensors=tensors), name


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("dtype", [None, torch.float16, torch.bfloat16], ids=["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("kind", ["vqgan", "transformer"])
def test_non_finite_weights_are_refused(tmp_path, ckpts, kind, dtype, value):
    path, name = poisoned(vq(ckpts) if kind == "vqgan" else tf(ckpts), tmp_path / "bad.safetensors", value, dtype)
    for read in (read_weights, load_vqgan if kind == "vqgan" else load_transformer):
        with pytest.raises(CheckpointError) as exc:
            read(path)
        assert (f"{path} holds non-finite values (NaN/inf) in tensor {name!r} (1 of "
                in str(exc.value)), str(exc.value)
        assert "the training run diverged or the file is corrupt" in str(exc.value)


@pytest.mark.parametrize("command", ["inpaint-vqgan", "inpaint-transformer", "eval-vqgan", "init-weights"])
def test_cli_refuses_non_finite_weights(tmp_path, ckpts, lab, capsys, command):
    src = tf(ckpts) if command in ("inpaint-transformer", "init-weights") else vq(ckpts)
    bad, name = poisoned(src, tmp_path / "nan.safetensors", float("nan"))
    argv = {"inpaint-vqgan": lambda: inpaint(ckpts, lab, tmp_path / "out", vqgan=bad),
            "inpaint-transformer": lambda: inpaint(ckpts, lab, tmp_path / "out", transformer=bad),
            "eval-vqgan": lambda: eval_vqgan(tmp_path, bad),
            "init-weights": lambda: init_weights(tmp_path, ckpts, bad)}[command]()
    err = user_error(capsys, *argv)
    assert f"{bad} holds non-finite values (NaN/inf) in tensor {name!r}" in err
    assert not (tmp_path / "out").exists()


def test_finite_checkpoints_still_load_exactly(tmp_path, ckpts):
    """Control: the untouched files load, float16-stored values included, bit for bit."""
    half = tmp_path / "half.safetensors"
    save_file({k: v.half() if v.is_floating_point() else v for k, v in load_file(str(tf(ckpts))).items()},
              str(half), metadata=stored_meta(tf(ckpts)))
    for path in (tf(ckpts), half):
        model = load_transformer(path)
        stored = load_file(str(path))
        for key, value in model.state_dict().items():
            assert torch.equal(value, stored[key].to(value.dtype)), key
    model = load_vqgan(vq(ckpts))
    for key, value in load_file(str(vq(ckpts))).items():
        assert torch.equal(model.state_dict()[key], value), key
    assert dataclasses.asdict(model.cfg) == dataclasses.asdict(VQGANConfig.preset("tiny"))


# ----------------------------------------------------------------------------- 4. truncated training state


@pytest.mark.parametrize("command", ["train-vqgan", "train-transformer"])
def test_resuming_from_a_truncated_state_says_how_to_start_over(tmp_path, ckpts, capsys, command):
    run_dir = tmp_path / "run"
    state = run_dir / "state.pt"
    save_training_state(state, {"kind": command.split("-")[1], "step": 3, "model": {"w": torch.zeros(1000)}})
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
    argv = [command, "--data", dataset(tmp_path / "data"), "--out", run_dir, "--preset", "tiny", "--device", "cpu",
            "--no-progress", "--max-steps", "2", "--batch-size", "2"]
    err = user_error(capsys, *argv, *(["--vqgan-checkpoint", vq(ckpts)] if command == "train-transformer" else []))
    assert f"{state} is not a readable training state (truncated or corrupt?)" in err
    assert "pass --no-resume to start over, or --out another folder" in err
