"""Tests of the VQGAN tokenizer, its vector quantizer and the optional discriminator."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from maskgit_lib.checkpoint import save_weights
from maskgit_lib.config import VQGANConfig, config_to_dict
from maskgit_lib.discriminator import PatchDiscriminator, adaptive_gan_weight, d_hinge_loss, g_hinge_loss
from maskgit_lib.errors import CheckpointError, ConfigError, DataError
from maskgit_lib.quantizer import VectorQuantizer, codebook_usage
from maskgit_lib.vqgan import VQGAN, load_vqgan, save_vqgan

TINY = VQGANConfig.preset("tiny")
# 16x16 images, 4x4 token grid: the same code paths at a fraction of the cost (training tests).
MICRO = VQGANConfig(image_size=16, channels=(8, 16, 16), num_res_blocks=1, attn_at_bottom=True,
                    codebook_size=32, code_dim=8)


def _images(n: int, size: int = 64, seed: int = 0) -> torch.Tensor:
    """Smooth, structured test images: coloured discs on a gradient, float (n, 3, size, size) in [-1, 1]."""
    gen = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    out = []
    for i in range(n):
        colour = torch.rand(3, 1, 1, generator=gen) * 2 - 1
        radius = 0.3 + 0.4 * torch.rand(1, generator=gen)
        disc = (xx - 0.3 * i + 0.3) ** 2 + yy**2 < radius**2  # (size, size)
        out.append(torch.where(disc[None], colour, -0.5 * colour) * 0.9 + 0.1 * xx[None])
    return torch.stack(out).clamp(-1, 1)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny() -> VQGAN:
    torch.manual_seed(0)
    model = VQGAN(TINY).eval()
    with torch.no_grad():  # a trained-looking codebook: init from data without training
        model.train()
        model(_images(2), generator=torch.Generator().manual_seed(0))
        model.eval()
    return model


def test_forward_shapes_and_dtypes(tiny: VQGAN) -> None:
    images = _images(2)
    recon, vq_loss, info = tiny(images)
    assert recon.shape == (2, 3, 64, 64) and recon.dtype == torch.float32
    assert vq_loss.ndim == 0 and torch.isfinite(vq_loss)
    tokens = info["tokens"]
    assert tokens.shape == (2, 16, 16) and tokens.dtype == torch.int64
    assert 0 <= int(tokens.min()) and int(tokens.max()) < TINY.codebook_size
    for key in ("perplexity", "usage", "commitment"):
        assert info[key].ndim == 0 and not info[key].requires_grad
    assert 0.0 < float(info["usage"]) <= 1.0
    assert torch.equal(tiny.encode_to_tokens(images), tokens)
    z_q = tiny.encode(images)
    assert z_q.shape == (2, TINY.code_dim, 16, 16) and z_q.dtype == torch.float32


def test_decode_tokens_shape_and_range(tiny: VQGAN) -> None:
    tokens = tiny.encode_to_tokens(_images(2))  # (2, 16, 16)
    images = tiny.decode_tokens(tokens)
    assert images.shape == (2, 3, 64, 64) and images.dtype == torch.float32
    assert float(images.min()) >= -1.0 and float(images.max()) <= 1.0
    assert torch.equal(tiny.decode_tokens(tokens.reshape(2, 256)), images)


def test_bf16_autocast_keeps_quantizer_in_fp32(tiny: VQGAN) -> None:
    with torch.autocast("cpu", dtype=torch.bfloat16):
        recon, vq_loss, info = tiny(_images(1))
    assert info["tokens"].dtype == torch.int64 and vq_loss.dtype == torch.float32
    assert recon.shape == (1, 3, 64, 64)


def test_straight_through_gradient_reaches_encoder() -> None:
    torch.manual_seed(0)
    model = VQGAN(MICRO).train()
    images = _images(2, size=16)
    recon, _, _ = model(images)
    (recon - images).pow(2).mean().backward()  # reconstruction loss only, no vq_loss
    first = model.encoder.layers[0].weight.grad
    assert first is not None and float(first.abs().sum()) > 0
    assert model.quant_conv.weight.grad is not None and float(model.quant_conv.weight.grad.abs().sum()) > 0


def test_commitment_loss_reaches_encoder_without_ema_codebook_gets_grad() -> None:
    torch.manual_seed(0)
    model = VQGAN(dataclasses.replace(MICRO, use_ema=False)).train()
    model.quantizer.initialized.fill_(True)  # keep the random codebook (data init would give z == e)
    _, vq_loss, _ = model(_images(2, size=16))
    vq_loss.backward()
    assert float(model.quant_conv.weight.grad.abs().sum()) > 0
    assert float(model.quantizer.codebook.grad.abs().sum()) > 0


def test_micro_model_overfits_a_tiny_batch() -> None:
    torch.manual_seed(0)
    model = VQGAN(MICRO).train()
    images = _images(4, size=16)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(30):
        recon, vq_loss, _ = model(images, generator=gen)
        mse = (recon - images).pow(2).mean()
        (mse + vq_loss).backward()
        opt.step()
        opt.zero_grad()
        losses.append(float(mse.detach()))
    assert min(losses[-5:]) < 0.25 * losses[0], (losses[0], losses[-5:])


def test_ema_and_restarts_keep_codebook_usage_high() -> None:
    quantizer = VectorQuantizer(64, 4, dead_code_threshold=1.0).train()
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        z = torch.randn(8, 4, 8, 8, generator=gen)  # 512 vectors per batch
        _, _, _, stats = quantizer(z, generator=gen)
    assert float(stats["usage"]) > 0.9


def _quantizer_with_far_codes(threshold: float) -> VectorQuantizer:
    quantizer = VectorQuantizer(16, 4, dead_code_threshold=threshold).train()
    with torch.no_grad():
        quantizer.codebook.copy_(torch.randn(16, 4, generator=torch.Generator().manual_seed(1)))
        quantizer.codebook[8:] += 100.0  # codes 8..15 are far from the data
        quantizer.ema_weight.copy_(quantizer.codebook)
        quantizer.ema_count.fill_(5.0)
        quantizer.ema_count[8:] = 0.0  # ... and unused
        quantizer.initialized.fill_(True)
    return quantizer


def test_dead_code_restart_moves_unused_codes_to_the_data() -> None:
    z = torch.randn(2, 4, 4, 4, generator=torch.Generator().manual_seed(2))  # (B, C, h, w)
    data = z.permute(0, 2, 3, 1).reshape(-1, 4)  # (32, 4)
    quantizer = _quantizer_with_far_codes(threshold=1.0)
    quantizer(z, generator=torch.Generator().manual_seed(3))
    moved = quantizer.codebook[8:]  # (8, 4)
    nearest = (moved[:, None, :] - data[None, :, :]).norm(dim=-1).min(dim=1).values  # (8,)
    assert float(nearest.max()) < 1e-5  # each restarted code is an encoder output of the batch
    assert bool((quantizer.ema_count[8:] >= 1.0).all())
    again = _quantizer_with_far_codes(threshold=1.0)
    again(z, generator=torch.Generator().manual_seed(3))
    assert torch.equal(again.codebook, quantizer.codebook)  # deterministic given the generator
    off = _quantizer_with_far_codes(threshold=0.0)
    off(z, generator=torch.Generator().manual_seed(3))
    assert float(off.codebook[8:].norm(dim=1).min()) > 50.0  # restarts disabled: codes stay put


def test_eval_mode_and_encode_never_update_the_codebook(tiny: VQGAN) -> None:
    before = tiny.quantizer.codebook.clone()
    tiny(_images(2))
    tiny.train()
    try:
        tiny.encode(_images(1))
        tiny.encode_to_tokens(_images(1))
    finally:
        tiny.eval()
    assert torch.equal(before, tiny.quantizer.codebook)


def test_codebook_usage_helper() -> None:
    used, perplexity = codebook_usage(torch.tensor([[0, 0, 1, 1]]), 4)
    assert used == pytest.approx(0.5) and perplexity == pytest.approx(2.0)
    used, perplexity = codebook_usage(torch.arange(8), 8)
    assert used == pytest.approx(1.0) and perplexity == pytest.approx(8.0)


def test_save_load_round_trip(tiny: VQGAN, tmp_path) -> None:
    path = save_vqgan(tiny, tmp_path / "vq.safetensors", metrics={"psnr": 12.5})
    loaded = load_vqgan(path, device="cpu", expected_config=TINY)
    assert not loaded.training and loaded.cfg == TINY
    images = _images(2)
    assert torch.equal(loaded.encode_to_tokens(images), tiny.encode_to_tokens(images))
    for key, value in tiny.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key


def test_checkpoint_of_another_config_is_refused(tiny: VQGAN, tmp_path) -> None:
    path = save_vqgan(tiny, tmp_path / "vq.safetensors")
    other = dataclasses.replace(TINY, codebook_size=128)
    with pytest.raises(CheckpointError, match="another VQGAN config.*codebook_size"):
        load_vqgan(path, expected_config=other)
    lying = tmp_path / "lying.safetensors"  # tiny weights labelled with the MICRO config
    save_weights(lying, tiny.state_dict(), model_type="vqgan", config=config_to_dict(MICRO))
    with pytest.raises(CheckpointError, match="does not fit"):
        load_vqgan(lying)
    wrong_type = tmp_path / "transformer.safetensors"
    save_weights(wrong_type, tiny.state_dict(), model_type="transformer", config={})
    with pytest.raises(CheckpointError, match="'transformer' checkpoint"):
        load_vqgan(wrong_type)
    unknown = tmp_path / "future.safetensors"
    save_weights(unknown, tiny.state_dict(), model_type="vqgan",
                 config={**config_to_dict(TINY), "new_field": 1})
    with pytest.raises(CheckpointError, match="cannot build"):
        load_vqgan(unknown)


def test_truncated_checkpoint_is_refused(tiny: VQGAN, tmp_path) -> None:
    path = save_vqgan(tiny, tmp_path / "vq.safetensors")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_vqgan(path)


@pytest.mark.parametrize(
    "images, message",
    [
        (torch.zeros(2, 3, 32, 32), r"shape \(B, 3, 64, 64\)"),
        (torch.zeros(2, 1, 64, 64), r"shape \(B, 3, 64, 64\)"),
        (torch.zeros(3, 64, 64), r"shape \(B, 3, 64, 64\)"),
        (torch.zeros(2, 3, 64, 64, dtype=torch.uint8), "float tensor"),
        ([[0.0]], "torch.Tensor"),
    ],
)
def test_bad_images_are_rejected(tiny: VQGAN, images, message: str) -> None:
    with pytest.raises(DataError, match=message):
        tiny.encode_to_tokens(images)
    with pytest.raises(DataError, match=message):
        tiny(images)


@pytest.mark.parametrize(
    "tokens, message",
    [
        (torch.full((1, 16, 16), 64), "mask token id 64"),
        (torch.full((1, 16, 16), -1), r"in \[0, 64\)"),
        (torch.full((1, 16, 16), 70), r"in \[0, 64\)"),
        (torch.zeros(1, 8, 8, dtype=torch.long), r"shape \(B, 16, 16\) or \(B, 256\)"),
        (torch.zeros(1, 16, 16), "integer tensor"),
    ],
)
def test_bad_tokens_are_rejected(tiny: VQGAN, tokens: torch.Tensor, message: str) -> None:
    with pytest.raises(DataError, match=message):
        tiny.decode_tokens(tokens)


def test_config_validation_and_presets() -> None:
    with pytest.raises(ConfigError, match="downsample_after"):
        VQGANConfig(channels=(8, 16), downsample_after=(1,))
    with pytest.raises(ConfigError, match="not divisible"):
        VQGANConfig(image_size=66)
    for name in ("tiny", "cpu", "lab"):
        cfg = VQGANConfig.preset(name)
        assert cfg.grid_size == 16 and cfg.downsample_factor == 4
    lab = VQGANConfig.preset("lab")
    assert (lab.codebook_size, lab.code_dim, lab.beta) == (1024, 256, 0.25)
    cpu = VQGAN(VQGANConfig.preset("cpu"))
    assert sum(p.numel() for p in cpu.parameters()) * 4 < 25e6  # checkpoint under ~25 MB in fp32


def test_discriminator_and_gan_losses() -> None:
    torch.manual_seed(0)
    disc = PatchDiscriminator(channels=8, layers=3)
    logits = disc(_images(2))
    assert logits.shape == (2, 1, 6, 6)
    real, fake = torch.full((2, 1, 6, 6), 2.0), torch.full((2, 1, 6, 6), -2.0)
    assert float(d_hinge_loss(real, fake)) == 0.0
    assert float(d_hinge_loss(fake, real)) == pytest.approx(3.0)
    assert float(g_hinge_loss(real)) == pytest.approx(-2.0)
    model = VQGAN(MICRO)
    images = _images(2, size=16)
    recon, _, _ = model(images)
    rec_loss = (recon - images).abs().mean()
    small = PatchDiscriminator(channels=8, layers=1)  # 16x16 input -> 6x6 logits
    weight = adaptive_gan_weight(rec_loss, g_hinge_loss(small(recon)), model.last_layer)
    assert weight.ndim == 0 and float(weight) > 0 and not weight.requires_grad
