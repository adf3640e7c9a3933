"""Tests for maskgit_lib.transformer: shapes, tied logits without [MASK], paths, checkpoints, learning."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from maskgit_lib.checkpoint import save_weights
from maskgit_lib.config import TransformerConfig, config_to_dict
from maskgit_lib.errors import CheckpointError, ConfigError
from maskgit_lib.transformer import (
    MaskGITTransformer,
    count_parameters,
    flops_per_image,
    load_transformer,
    save_transformer,
    set_attention_impl,
)

TINY = TransformerConfig.preset("tiny")
K, L = TINY.codebook_size, TINY.num_tokens


pytestmark = pytest.mark.usefixtures("one_thread")


def _model(seed: int = 0, **changes) -> MaskGITTransformer:
    torch.manual_seed(seed)
    return MaskGITTransformer(dataclasses.replace(TINY, **changes)).eval()


def _tokens(batch: int = 2, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, K, (batch, L), generator=g)  # (B, L)
    tokens[:, ::3] = TINY.mask_token_id
    return tokens


def test_logits_shape_dtype_and_no_mask_class() -> None:
    model = _model()
    with torch.no_grad():
        logits = model(_tokens())
    assert logits.shape == (2, L, K) and logits.dtype == torch.float32
    assert logits.shape[-1] == TINY.mask_token_id  # classes 0..K-1 only: [MASK] (= K) cannot be predicted
    assert int(logits.argmax(-1).max()) < K
    assert model.tok_emb.num_embeddings == K + 1  # the input side does know [MASK]


def test_return_attention_maps() -> None:
    model = _model()
    with torch.no_grad():
        logits, maps = model(_tokens(), return_attention=True)
        plain = model(_tokens())
    torch.testing.assert_close(logits, plain, atol=1e-5, rtol=1e-4)
    assert len(maps) == TINY.depth
    for attn in maps:
        assert attn.shape == (2, TINY.heads, L, L)
        torch.testing.assert_close(attn.sum(-1), torch.ones(2, TINY.heads, L))


def test_output_layer_is_tied_to_token_embedding() -> None:
    model = _model()
    assert model.output_weight.data_ptr() == model.tok_emb.weight.data_ptr()
    tokens = _tokens()
    tokens[tokens < K] %= K // 2  # codes K/2..K-1 are never fed as input
    unused = K - 5
    with torch.no_grad():
        before = model(tokens)
        model.tok_emb.weight[unused] += 1.0  # touch one embedding row only
        after = model(tokens)
    changed = (after - before).abs().amax(dim=(0, 1)) > 1e-6  # (K,)
    assert changed.nonzero().flatten().tolist() == [unused]  # exactly that output class moved
    model(tokens)[..., unused].sum().backward()
    grad = model.tok_emb.weight.grad
    assert grad[unused].abs().sum() > 0  # reached only through the tied output layer
    assert grad[K].abs().sum() > 0  # the [MASK] row learns from the input side
    assert model.logit_bias.shape == (L, K)


def test_sdpa_and_scratch_give_equal_logits() -> None:
    model = _model(attention="sdpa")
    tokens = _tokens()
    with torch.no_grad():
        fast = model(tokens)
        set_attention_impl(model, "scratch")
        slow = model(tokens)
    assert model.cfg.attention == "scratch"
    assert all(b.attn.impl == "scratch" for b in model.blocks)
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-4)
    with pytest.raises(ConfigError, match="sdpa"):
        set_attention_impl(model, "flash")


def test_eval_is_deterministic_and_train_uses_dropout() -> None:
    model = _model()
    tokens = _tokens()
    with torch.no_grad():
        assert torch.equal(model(tokens), model(tokens))
        model.train()
        assert not torch.allclose(model(tokens), model(tokens))


def test_init_is_bert_like() -> None:
    model = _model()
    std = model.blocks[0].attn.q_proj.weight.std().item()
    assert 0.015 < std < 0.025
    assert model.blocks[0].mlp[0].bias.abs().max() == 0
    assert model.logit_bias.abs().max() == 0


@pytest.mark.parametrize(
    "bad, message",
    [
        (torch.zeros(2, L, dtype=torch.int32), "int64"),
        (torch.zeros(2, L), "int64"),
        (torch.zeros(2, L - 1, dtype=torch.long), r"\(B, 256\)"),
        (torch.zeros(2, 16, 16, dtype=torch.long), "flatten"),
        (torch.full((2, L), K + 1, dtype=torch.long), r"\[0, 64\]"),
        (torch.full((2, L), -1, dtype=torch.long), r"\[0, 64\]"),
        ([[0] * L], "torch.Tensor"),
    ],
)
def test_bad_tokens_rejected(bad, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _model()(bad)


def test_bad_config_rejected() -> None:
    with pytest.raises(ConfigError, match="divisible"):
        MaskGITTransformer(dataclasses.replace(TINY, heads=5))
    with pytest.raises(ConfigError, match="scratch"):
        MaskGITTransformer(dataclasses.replace(TINY, attention="fast"))


def test_save_load_round_trip(tmp_path: Path) -> None:
    model = _model(seed=3)
    path = save_transformer(model, tmp_path / "t.safetensors", metrics={"val_loss": 1.5})
    loaded = load_transformer(path)
    assert not loaded.training and loaded.cfg == model.cfg
    tokens = _tokens()
    with torch.no_grad():
        assert torch.equal(model(tokens), loaded(tokens))
    again = load_transformer(path, cfg=TINY)  # an explicit config that fits
    assert again.cfg == TINY


def test_wrong_config_checkpoint_is_refused(tmp_path: Path) -> None:
    path = save_transformer(_model(), tmp_path / "t.safetensors")
    with pytest.raises(CheckpointError, match="another config"):
        load_transformer(path, cfg=dataclasses.replace(TINY, dim=32))
    lying = tmp_path / "lying.safetensors"  # metadata says another config than the tensors
    save_weights(lying, _model().state_dict(), model_type="transformer",
                 config=config_to_dict(dataclasses.replace(TINY, depth=3)))
    with pytest.raises(CheckpointError, match="missing keys"):
        load_transformer(lying)
    alien = tmp_path / "alien.safetensors"
    save_weights(alien, _model().state_dict(), model_type="transformer", config={"width": 3})
    with pytest.raises(CheckpointError, match="unusable transformer config"):
        load_transformer(alien)
    vq = tmp_path / "vq.safetensors"
    save_weights(vq, {"w": torch.zeros(2)}, model_type="vqgan", config={})
    with pytest.raises(CheckpointError, match="'vqgan'"):
        load_transformer(vq)


def test_truncated_checkpoint_is_refused(tmp_path: Path) -> None:
    path = save_transformer(_model(), tmp_path / "t.safetensors")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_transformer(path)


def test_parameter_count_and_flops() -> None:
    assert count_parameters(_model()) == 108_288
    lab = TransformerConfig.preset("lab")
    # Closed form: embeddings + blocks + predictor + bias (see flops_per_image for the matmul part).
    d, m = lab.dim, lab.mlp_dim
    block = 4 * (d * d + d) + 2 * 2 * d + (d * m + m) + (m * d + d)
    expected = (lab.codebook_size + 1) * d + lab.num_tokens * d + 2 * d + lab.depth * block \
        + (d * d + d) + 2 * d + lab.num_tokens * lab.codebook_size
    assert expected == 72_745_216  # "about 73M", as in the lab
    assert flops_per_image(lab) == pytest.approx(39.963e9, rel=1e-4)
    assert flops_per_image(lab, training=True) == 3 * flops_per_image(lab)


def test_tiny_model_overfits_a_masked_batch() -> None:
    torch.manual_seed(0)
    model = MaskGITTransformer(TINY).train()
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, K, (2, L), generator=g)  # (B, L)
    is_masked = torch.rand(2, L, generator=g) < 0.5  # (B, L)
    inputs = tokens.masked_fill(is_masked, TINY.mask_token_id)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        loss = F.cross_entropy(model(inputs)[is_masked], tokens[is_masked])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(torch.log(torch.tensor(float(K))).item(), abs=0.3)
    assert losses[-1] < 0.25 * losses[0], losses[::10]


def test_attention_dropout_defaults_to_dropout_and_can_be_switched_off():
    from maskgit_lib.config import TransformerConfig as TC
    from maskgit_lib.errors import ConfigError as CE
    from maskgit_lib.transformer import MaskGITTransformer as M

    base = dict(codebook_size=16, num_tokens=16, dim=32, depth=1, heads=4, mlp_dim=64, dropout=0.2)
    assert M(TC(**base)).blocks[0].attn.dropout == 0.2  # None: the lab's single dropout rate
    assert M(TC(**base, attention_dropout=0.0)).blocks[0].attn.dropout == 0.0
    assert TC.preset("cpu").attention_dropout == 0.0 and TC.preset("lab").attention_dropout is None
    with pytest.raises(CE, match="attention_dropout must be None or in"):
        M(TC(**base, attention_dropout=1.5))
