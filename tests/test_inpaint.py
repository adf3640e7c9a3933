"""Tests for maskgit_lib.inpaint with tiny random-init models (seconds on a CPU)."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from maskgit_lib.config import TransformerConfig, VQGANConfig
from maskgit_lib.data import to_uint8
from maskgit_lib.errors import CheckpointError, ConfigError, DataError
from maskgit_lib.blend import poisson_blend
from maskgit_lib.outputs import prepare_output_dir
from maskgit_lib.folders import generate_folder, inpaint_folder, outpaint_folder
from maskgit_lib.inpaint import Inpainter, InpaintSettings, batch_seed, composite
from maskgit_lib.transformer import MaskGITTransformer, save_transformer
from maskgit_lib.vqgan import VQGAN, save_vqgan

S = 64


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_models(seed: int = 0) -> tuple[VQGAN, MaskGITTransformer]:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return VQGAN(VQGANConfig.preset("tiny")), MaskGITTransformer(TransformerConfig.preset("tiny"))


def test_tiny_presets_fit_together():
    vq, tf = VQGANConfig.preset("tiny"), TransformerConfig.preset("tiny")
    assert tf.codebook_size == vq.codebook_size and tf.num_tokens == vq.grid_size ** 2


@pytest.fixture(scope="module")
def inpainter() -> Inpainter:
    return Inpainter(*tiny_models(), device="cpu")


def sample_batch(b: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """Smooth colour images (float (b, 3, S, S)) with a box hole (bool (b, S, S)) filled gray."""
    g = torch.Generator().manual_seed(1)
    ramp = torch.linspace(-1, 1, S)
    images = (torch.rand(b, 3, 1, 1, generator=g) * ramp[None, None, :, None] * ramp[None, None, None, :])
    pixel_missing = torch.zeros(b, S, S, dtype=torch.bool)
    pixel_missing[:, 18:41, 10:37] = True
    return images.where(~pixel_missing[:, None], torch.tensor(128 / 127.5 - 1)), pixel_missing


def test_composite_keeps_known_pixels_byte_identical(inpainter):
    images, pixel_missing = sample_batch()
    result = inpainter.inpaint(images, pixel_missing, InpaintSettings(steps=4))
    known = ~pixel_missing[:, None].expand(-1, 3, -1, -1)
    assert torch.equal(to_uint8(result.images)[known], to_uint8(images)[known])
    assert not torch.equal(to_uint8(result.images)[~known], to_uint8(images)[~known])  # the hole was filled
    assert result.images.dtype == torch.float32 and result.images.shape == images.shape
    assert result.is_masked0.shape == (3, 256) and result.trace is None
    assert torch.equal(poisson_blend(result.raw, images, pixel_missing), result.images)  # the default blend
    pasted = inpainter.inpaint(images, pixel_missing, InpaintSettings(steps=4, blend="paste"))
    assert torch.equal(pasted.raw, result.raw) and torch.equal(composite(result.raw, images, pixel_missing),
                                                                pasted.images)


def test_no_composite_returns_the_raw_decoding(inpainter):
    images, pixel_missing = sample_batch()
    settings = InpaintSettings(steps=4)
    pasted = inpainter.inpaint(images, pixel_missing, settings)
    raw = inpainter.inpaint(images, pixel_missing, InpaintSettings(steps=4, composite=False))
    assert torch.equal(to_uint8(raw.images), to_uint8(raw.raw))
    assert torch.equal(raw.raw, pasted.raw)
    assert not torch.equal(raw.images, pasted.images)


def test_same_seed_same_output_and_another_seed_differs(inpainter):
    images, pixel_missing = sample_batch()
    a = inpainter.inpaint(images, pixel_missing, InpaintSettings(steps=4, seed=3))
    b = inpainter.inpaint(images, pixel_missing, InpaintSettings(steps=4, seed=3))
    c = inpainter.inpaint(images, pixel_missing, InpaintSettings(steps=4, seed=4))
    d = inpainter.inpaint(images, pixel_missing, InpaintSettings(steps=4), generator=torch.Generator().manual_seed(3))
    assert torch.equal(a.images, b.images) and torch.equal(a.images, d.images)
    assert not torch.equal(a.raw, c.raw)


def test_sweet_spot_returns_that_steps_prediction(inpainter):
    images, pixel_missing = sample_batch()
    sampled = InpaintSettings(steps=8, confidence="official")  # sampled tokens: step 3 and the end differ
    full = inpainter.inpaint(images, pixel_missing, sampled, keep_trace=True)
    early = inpainter.inpaint(images, pixel_missing, dataclasses.replace(sampled, sweet_spot=3), keep_trace=True)
    assert torch.equal(early.trace.tokens, full.trace.tokens)  # same random stream, same decoding
    assert torch.equal(early.raw, inpainter.decode(full.trace.tokens_at(3)))
    assert torch.equal(full.raw, inpainter.decode(full.trace.final))
    assert not torch.equal(early.raw, full.raw)


def test_decode_trace_images_matches_the_output(inpainter):
    images, pixel_missing = sample_batch(2)
    result = inpainter.inpaint(images, pixel_missing, InpaintSettings(steps=4), keep_trace=True)
    frames = inpainter.decode_trace_images(result.trace, [1, 4], images, pixel_missing)
    assert frames.shape == (2, 2, 3, S, S)
    assert (to_uint8(frames[-1]).int() - to_uint8(result.images).int()).abs().max() <= 1  # batch-size rounding
    assert inpainter.decode_trace_images(result.trace).shape == (4, 2, 3, S, S)


def test_all_missing_mask_is_generation(inpainter):
    images, _ = sample_batch(2)
    result = inpainter.inpaint(images, torch.ones(2, S, S, dtype=torch.bool), InpaintSettings(steps=3))
    assert result.is_masked0.all() and result.decoded.all()
    assert torch.isfinite(result.images).all()


def test_empty_mask_is_copied_through(inpainter, caplog):
    images, pixel_missing = sample_batch(3)
    pixel_missing[1] = False
    with caplog.at_level("INFO", logger="maskgit_lib.inpaint"):
        result = inpainter.inpaint(images, pixel_missing, InpaintSettings(steps=3), keep_trace=True)
    assert "copied through" in caplog.text
    assert result.decoded.tolist() == [True, False, True]
    assert torch.equal(to_uint8(result.images[1]), to_uint8(images[1]))
    assert result.trace.tokens.shape == (3, 3, 256) and not result.trace.is_masked[:, 1].any()
    nothing = inpainter.inpaint(images[:1], torch.zeros(1, S, S, dtype=torch.bool), keep_trace=True)
    assert torch.equal(to_uint8(nothing.images), to_uint8(images[:1])) and nothing.trace.tokens.shape[0] == 8


def test_dilate_grows_the_token_mask(inpainter):
    images, pixel_missing = sample_batch(1)
    plain = inpainter.inpaint(images, pixel_missing, InpaintSettings(steps=2))
    grown = inpainter.inpaint(images, pixel_missing, InpaintSettings(steps=2, dilate=1))
    assert grown.is_masked0.sum() > plain.is_masked0.sum() and (grown.is_masked0 >= plain.is_masked0).all()


def test_generate_and_outpaint(inpainter):
    samples = inpainter.generate(2, InpaintSettings(steps=3), keep_trace=True)
    assert samples.images.shape == (2, 3, S, S) and samples.trace.is_masked[0].any()
    images, _ = sample_batch(2)
    out = inpainter.outpaint(images, InpaintSettings(steps=3), keep=0.5)
    centre = (slice(None), slice(None), slice(16, 48), slice(16, 48))
    assert torch.equal(to_uint8(out.images)[centre], to_uint8(images)[centre])
    assert out.pixel_missing[0].float().mean() == 0.75


def test_tokens_to_logits_is_float32_without_the_mask_class(inpainter):
    tokens = torch.full((2, 256), 64, dtype=torch.long)
    assert inpainter.tokens_to_logits(tokens).dtype == torch.float32
    bf16 = Inpainter(inpainter.vqgan, inpainter.transformer, bf16=True)
    logits = bf16.tokens_to_logits(tokens)
    assert logits.shape == (2, 256, 64) and logits.dtype == torch.float32


@pytest.mark.parametrize("kwargs, message", [
    ({"steps": 0}, "steps must be an integer >= 1"),
    ({"steps": 8, "sweet_spot": 9}, "sweet spot must be an integer in 1..steps"),
    ({"sweet_spot": 0}, "sweet spot"),
    ({"schedule": "zigzag"}, "unknown mask schedule"),
    ({"confidence": "max"}, "confidence"),
    ({"dilate": -1}, "dilate"),
])
def test_settings_are_validated(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        InpaintSettings(**kwargs)


def test_models_that_do_not_fit_are_refused():
    vq, _ = tiny_models()
    other = MaskGITTransformer(TransformerConfig(codebook_size=32, dim=32, depth=1, heads=2, mlp_dim=32))
    with pytest.raises(CheckpointError, match="does not fit"):
        Inpainter(vq, other)


def test_from_checkpoints(tmp_path, monkeypatch):
    monkeypatch.setenv("MASKGIT_CHECKPOINTS", str(tmp_path))
    with pytest.raises(CheckpointError, match="train-vqgan"):
        Inpainter.from_checkpoints(device="cpu")
    vq, tf = tiny_models()
    save_vqgan(vq, tmp_path / "vq.safetensors")
    with pytest.raises(CheckpointError, match="train-transformer"):
        Inpainter.from_checkpoints(tmp_path / "vq.safetensors", device="cpu")
    save_transformer(tf, tmp_path / "tf.safetensors")
    loaded = Inpainter.from_checkpoints(tmp_path / "vq.safetensors", tmp_path / "tf.safetensors", device="cpu")
    assert loaded.mask_token_id == 64 and loaded.device == torch.device("cpu")


def write_lab_folder(root: Path, n: int = 3) -> tuple[Path, Path]:
    """image_NNN.png (gray holes) + mask_NNN.png (0 = missing) in root/masked_image and root/mask64."""
    images, pixel_missing = sample_batch(n)
    (root / "masked_image").mkdir(parents=True)
    (root / "mask64").mkdir()
    for i in range(n):
        Image.fromarray(to_uint8(images[i]).permute(1, 2, 0).numpy()).save(root / "masked_image" / f"image_{i:03d}.png")
        Image.fromarray(np.where(pixel_missing[i].numpy(), 0, 255).astype(np.uint8), "L").save(
            root / "mask64" / f"mask_{i:03d}.png")
    return root / "masked_image", root / "mask64"


def test_inpaint_folder_writes_outputs_and_trace(inpainter, tmp_path):
    images_dir, masks_dir = write_lab_folder(tmp_path / "lab")
    summary = inpaint_folder(inpainter, images_dir, masks_dir, tmp_path / "out", InpaintSettings(steps=3),
                                       batch_size=2, save_trace=True, progress=False)
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == [f"image_{i:03d}.png" for i in range(3)]
    trace = tmp_path / "out" / "trace"
    assert (trace / "image_002_step03.png").is_file() and (trace / "image_000_latent00.png").is_file()
    latent = np.asarray(Image.open(trace / "image_000_latent00.png"))  # (S, S) uint8, 0 = hidden token
    assert latent.shape == (S, S) and latent[30, 20] == 0 and latent[2, 2] == 255
    assert (np.asarray(Image.open(trace / "image_000_latent03.png")) == 255).all()  # nothing hidden at the end
    assert summary["images"] == 3 and summary["copied"] == [] and 0 < summary["masked_token_fraction"] < 1
    again = inpaint_folder(inpainter, images_dir, masks_dir, tmp_path / "again", InpaintSettings(steps=3),
                                     batch_size=2, progress=False)
    for i in range(3):
        name = f"image_{i:03d}.png"
        assert (tmp_path / "out" / name).read_bytes() == (tmp_path / "again" / name).read_bytes()
    assert batch_seed(0, 0) == 0 and batch_seed(0, 1) != batch_seed(1, 0)


def test_output_folder_may_not_be_or_contain_an_input(tmp_path):
    (tmp_path / "data" / "images").mkdir(parents=True)
    for out in (tmp_path / "data" / "images", tmp_path / "data", tmp_path):
        with pytest.raises(DataError, match="refusing to write there"):
            prepare_output_dir(out, tmp_path / "data" / "images", command="inpaint", overwrite=True)
    assert prepare_output_dir(tmp_path / "out", tmp_path / "data" / "images", command="inpaint") == \
        (tmp_path / "out").resolve()


def test_generate_and_outpaint_folders(inpainter, tmp_path):
    summary = generate_folder(inpainter, tmp_path / "gen", 3, InpaintSettings(steps=2), batch_size=2,
                              progress=False)
    assert len(list((tmp_path / "gen").glob("sample_*.png"))) == 3 and Path(summary["grid"]).is_file()
    images_dir, _ = write_lab_folder(tmp_path / "lab", 2)
    outpaint_folder(inpainter, images_dir, tmp_path / "outp", InpaintSettings(steps=2), progress=False)
    assert len(list((tmp_path / "outp").glob("image_*.png"))) == 2
