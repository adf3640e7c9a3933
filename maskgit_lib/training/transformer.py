"""Stage 2: training the transformer with MVTM (``train_transformer``, behind ``maskgit train-transformer``).

Masked Visual Token Modeling (MaskGIT, Chang et al. 2022, section 3.2): for
each training image's tokens ``Y`` (L of them), draw r ~ U(0, 1), hide
``ceil(gamma(r) * L)`` random positions (:func:`maskgit_lib.masking.mvtm_mask`),
replace them by ``[MASK]`` = K and minimise the cross-entropy on the hidden
positions only::

    L_mask = - E_Y [ sum_{i: m_i = 1} log p(y_i | Y_masked) ] / sum_i m_i

with label smoothing (0.1 in the official code), AdamW (0.9, 0.96), warmup +
cosine decay, gradient accumulation and clipping. Derived in
notebooks/03_mvtm_training.ipynb, sections 2 (the mask) and 5 (the loss).

The frozen VQGAN tokenizes the training images in each of the run's views
(``TrainConfig.token_views``, :mod:`maskgit_lib.views`; default: the images and
their mirror images, 2x data) and the validation images once; the token grids are
cached (:mod:`maskgit_lib.training.tokens`).

Validation uses a FIXED set of masks (seed 0, drawn on the CPU) over the
validation tokens, so its masked-token cross-entropy (no label smoothing) and
accuracy compare across runs; ``maskgit eval-transformer``
(:func:`maskgit_lib.evaluation.models.evaluate_transformer`) recomputes exactly
these numbers from a shipped checkpoint.

From Python (notebooks/03_mvtm_training.ipynb, section 6)::

    run = TransformerRun.default(preset="tiny", data_dir=Path("data/twemoji64"), out_dir=Path("runs/t"))
    summary = train_transformer(run)
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

from .. import paths
from ..config import TransformerConfig, config_to_dict
from ..errors import CheckpointError
from ..masking import get_schedule, mvtm_mask
from ..runtime import cleanup_distributed, derive_seed, process_start_time, setup_distributed
from ..transformer import MaskGITTransformer, load_transformer, save_transformer
from .data import resolve_splits
from .hole_examples import HOLE_PREFILL, HoleExamples, mix_hole_examples
from .loop import Trainer, TrainTask
from .optim import check_train_config
from .run import RunConfig, preset_train_config, run_and_export
from .tokens import cached_hole_examples, cached_tokens, file_sha256, load_tokenizer, token_cache_key

log = logging.getLogger(__name__)

#: TrainConfig values per preset (the fields of a TransformerRun override them).
TRANSFORMER_TRAIN_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(batch_size=8, lr=1e-3, weight_decay=0.01, warmup_steps=5, max_steps=30, val_every=10,
                 ckpt_every=10, log_every=5),
    "cpu": dict(batch_size=64, lr=5e-4, weight_decay=0.05, warmup_steps=300, max_steps=6000, val_every=250,
                ckpt_every=250, log_every=10),
    "lab": dict(batch_size=128, lr=2e-4, weight_decay=0.05, warmup_steps=1000, max_steps=30000,
                val_every=1000, ckpt_every=1000, log_every=20),
}
VAL_MASK_SEED = 0
VAL_HOLE_SEED = 1
LOSS_NAMES = ("loss", "masked_acc", "mask_ratio")
VAL_NAMES = ("ce", "masked_acc", "num_masked", "hole_ce", "hole_acc")


def fixed_val_masks(num: int, num_tokens: int, schedule: str, seed: int = VAL_MASK_SEED,
                    min_ratio: float = 0.0) -> torch.Tensor:
    """The validation masks: bool (num, L), drawn on the CPU from ``seed`` (same on every machine)."""
    return mvtm_mask(num, num_tokens, schedule, torch.Generator().manual_seed(seed), min_ratio=min_ratio)


@torch.no_grad()
def masked_token_metrics(model: torch.nn.Module, tokens: torch.Tensor, is_masked: torch.Tensor,
                         batch_size: int = 128, context: torch.Tensor | None = None) -> dict[str, float]:
    """Cross-entropy (no smoothing) and accuracy of the argmax on the hidden positions.

    Used in notebooks/03_mvtm_training.ipynb, section 8 (accuracy vs mask ratio).

    Args:
        model: a :class:`~maskgit_lib.transformer.MaskGITTransformer` (plain module).
        tokens: int64 (N, L) ground-truth ids.
        is_masked: bool (N, L), True = hidden from the model.
        batch_size: images per forward pass.
        context: int64 (N, L) ids the model sees at the visible positions (default: ``tokens``;
            hole examples pass the tokens of the prefilled image).

    Returns:
        ``ce`` (nats per masked token), ``masked_acc`` (in [0, 1]), ``num_masked``.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    k = model.cfg.codebook_size
    ce_sum = correct = count = 0.0
    context = tokens if context is None else context
    for tok, hid, seen in zip(tokens.split(batch_size), is_masked.split(batch_size), context.split(batch_size)):
        tok, hid, seen = tok.to(device), hid.to(device), seen.to(device)
        logits = model(seen.masked_fill(hid, k)).float()  # (B, L, K)
        ce = F.cross_entropy(logits.reshape(-1, k), tok.reshape(-1), reduction="none").view_as(tok)  # (B, L)
        ce_sum += float(ce[hid].double().sum())
        correct += float((logits.argmax(-1) == tok)[hid].sum())
        count += float(hid.sum())
    model.train(was_training)
    return {"ce": ce_sum / max(count, 1.0), "masked_acc": correct / max(count, 1.0), "num_masked": int(count)}


def make_train_step(cfg, tokens: torch.Tensor, codebook_size: int,
                    holes: HoleExamples | None = None) -> Callable[..., dict[str, torch.Tensor]]:
    """The MVTM training step for :class:`~maskgit_lib.training.loop.Trainer`.

    Derived in notebooks/03_mvtm_training.ipynb, section 5 (by hand, on a tiny model).

    Args:
        cfg: TrainConfig (``schedule``, ``min_mask_ratio``, ``label_smoothing``, ``hole_fraction``).
        tokens: int64 (N, L) training tokens on the training device.
        codebook_size: K (= the mask token id).
        holes: hole examples of the same N rows (on the device); used when ``cfg.hole_fraction > 0``.

    Returns:
        ``train_step(model, indices (B,), generator, step) -> {"loss", "masked_acc", "mask_ratio"}``
        (scalars; the loss is the label-smoothed CE averaged over the hidden positions).
    """

    def train_step(model, indices: torch.Tensor, generator: torch.Generator, step: int) -> dict[str, torch.Tensor]:
        target = tokens[indices]  # (B, L)
        batch, length = target.shape
        is_masked = mvtm_mask(batch, length, cfg.schedule, generator, target.device,
                              min_ratio=cfg.min_mask_ratio)  # (B, L) r ~ U(0,1), ceil(gamma(r) L) hidden
        if holes is not None and cfg.hole_fraction > 0:
            inputs, is_masked = mix_hole_examples(target, is_masked, holes, indices, cfg.hole_fraction,
                                                  codebook_size, generator)
        else:
            inputs = target.masked_fill(is_masked, codebook_size)
        logits = model(inputs)  # (B, L, K)
        ce = F.cross_entropy(logits.float().reshape(-1, codebook_size), target.reshape(-1),
                             label_smoothing=cfg.label_smoothing, reduction="none").view(batch, length)
        weight = is_masked.float()  # (B, L): loss on hidden positions only
        count = weight.sum().clamp_min(1.0)
        correct = (logits.detach().argmax(-1) == target).float()
        return {"loss": (ce * weight).sum() / count, "masked_acc": (correct * weight).sum() / count,
                "mask_ratio": weight.mean()}

    return train_step


def validation_metrics(model: torch.nn.Module, tokens: torch.Tensor, masks: torch.Tensor, holes: HoleExamples,
                       batch_size: int) -> dict[str, float]:
    """MVTM metrics on fixed random masks + ``hole_ce``/``hole_acc`` on fixed brush holes (prefilled context).

    Args:
        model: the transformer. tokens: int64 (N, L) validation tokens.
        masks: bool (N, L) from :func:`fixed_val_masks`. holes: one hole example per image (N, 1, L).
        batch_size: images per forward pass.
    """
    plain = masked_token_metrics(model, tokens, masks, batch_size)
    hole = masked_token_metrics(model, tokens, holes.is_masked[:, 0], batch_size, context=holes.context[:, 0])
    return {**plain, "hole_ce": hole["ce"], "hole_acc": hole["masked_acc"]}


def init_from_weights(model: torch.nn.Module, path: Path, device: torch.device) -> None:
    """Copy the weights of ``path`` into ``model`` (fine-tuning; CheckpointError if its config differs)."""
    source = load_transformer(path, device)
    training_only = {"attention": model.cfg.attention, "dropout": model.cfg.dropout,
                     "attention_dropout": model.cfg.attention_dropout}  # the architecture must match
    if dataclasses.replace(source.cfg, **training_only) != model.cfg:
        raise CheckpointError(f"--init-weights {path} has another transformer config ({source.cfg}) than this "
                              f"run ({model.cfg}); pass the same --preset")
    model.load_state_dict(source.state_dict())
    log.info("initialised from %s", path)


@dataclasses.dataclass(frozen=True)
class TransformerRun(RunConfig):
    """Everything one MVTM training run needs (what ``maskgit train-transformer`` takes).

    Build one with :meth:`default` and change fields with ``dataclasses.replace``.

    Attributes:
        out_dir: the run folder (default ``runs/transformer``).
        model: the transformer's architecture and dropout; ``codebook_size`` and
            ``num_tokens`` are taken from the tokenizer.
        vqgan_checkpoint: the frozen tokenizer (None: :func:`maskgit_lib.paths.default_vqgan_checkpoint`).
        init_weights: start from these transformer weights (fine-tuning, same
            architecture); ignored when resuming from ``out_dir/state.pt``.
        (the other fields: :class:`~maskgit_lib.training.run.RunConfig`)
    """

    out_dir: Path = dataclasses.field(default_factory=lambda: paths.project_root() / "runs" / "transformer")
    model: TransformerConfig = dataclasses.field(default_factory=TransformerConfig)
    vqgan_checkpoint: Path | None = None
    init_weights: Path | None = None

    @classmethod
    def default(cls, preset: str = "cpu", device: str = "auto", **fields: Any) -> "TransformerRun":
        """The ``preset``'s model and training settings (``maskgit train-transformer --preset``), then ``fields``."""
        return cls(model=TransformerConfig.preset(preset),
                   train=preset_train_config(TRANSFORMER_TRAIN_PRESETS, preset, device), device=device, **fields)


def train_transformer(run: TransformerRun) -> dict[str, Any]:
    """Tokenize (cached), train with MVTM, write ``run.out_dir/final.safetensors`` with val metrics.

    Under torchrun every rank calls this; rank 0 writes the files.

    Returns:
        The run's summary (``summary.json``): ``steps``, ``stop_reason``, ``wall_time_s``,
        ``device``, ``metrics`` (val ``ce``, ``masked_acc``, ``num_masked``, ``hole_ce``,
        ``hole_acc``; ``{}`` on ranks other than 0), the configs and file paths.

    Raises:
        ConfigError: invalid settings (before any data is loaded), or a resume with other settings.
        CheckpointError: a tokenizer or ``init_weights`` file that does not fit.
    """
    start = process_start_time()
    cfg = run.train
    check_train_config(cfg)  # fail before loading data; Trainer checks again with the world size
    get_schedule(cfg.schedule)  # fail early on a bad name
    session = run.session(start)
    ctx = setup_distributed(run.device)
    try:
        vqgan_path = Path(run.vqgan_checkpoint or paths.default_vqgan_checkpoint())
        vqgan, vqgan_sha = load_tokenizer(vqgan_path, ctx.device)
        data_dir = run.data_dir if run.data_dir is not None else paths.default_dataset_dir()
        train_files, val_files = resolve_splits(data_dir)
        views = [cached_tokens(vqgan_path, vqgan, vqgan_sha, train_files, view, ctx) for view in cfg.token_views]
        train_key = token_cache_key(vqgan_sha, train_files, "id")
        val, val_key = cached_tokens(vqgan_path, vqgan, vqgan_sha, val_files, "id", ctx)
        k = vqgan.cfg.codebook_size
        val_holes = cached_hole_examples(vqgan, val_files, val_key, "id", 1, VAL_HOLE_SEED, ctx)
        holes = None
        if cfg.hole_fraction > 0:  # rows in the order of train_tokens: view after view
            parts = [cached_hole_examples(vqgan, train_files, key, view, cfg.hole_variants, cfg.seed, ctx)
                     for view, (_, key) in zip(cfg.token_views, views)]
            holes = HoleExamples(torch.cat([p.context for p in parts]),
                                 torch.cat([p.is_masked for p in parts])).to(ctx.device)
        del vqgan
        train_tokens = torch.cat([tokens for tokens, _ in views]).to(ctx.device)  # (views x N, L)
        val_masks = fixed_val_masks(val.shape[0], val.shape[1], cfg.schedule, VAL_MASK_SEED, cfg.min_mask_ratio)
        model_cfg = dataclasses.replace(run.model, codebook_size=k, num_tokens=train_tokens.shape[1])
        torch.manual_seed(derive_seed(cfg.seed, "init"))
        model = MaskGITTransformer(model_cfg).to(ctx.device)
        if run.init_weights is not None:
            init_from_weights(model, run.init_weights, ctx.device)
        model.validate_inputs = False  # inputs are built here; skips a host sync per step
        extra = {"vqgan_sha256": vqgan_sha, "train_tokens_key": train_key, "val_mask_seed": VAL_MASK_SEED,
                 "val_mask_schedule": cfg.schedule, "val_min_mask_ratio": cfg.min_mask_ratio,
                 "val_hole_seed": VAL_HOLE_SEED, "hole_prefill": HOLE_PREFILL,
                 "init_weights": None if run.init_weights is None else file_sha256(run.init_weights)}
        task = TrainTask(
            kind="transformer", model=model, model_config=config_to_dict(model_cfg),
            train_step=make_train_step(cfg, train_tokens, k, holes),
            validate=lambda: validation_metrics(model, val, val_masks, val_holes, max(64, cfg.batch_size)),
            save_final=lambda path, metrics: save_transformer(model, path, metrics),
            num_train=train_tokens.shape[0], loss_names=LOSS_NAMES, val_names=VAL_NAMES, extra_config=extra,
        )
        return run_and_export(run, Trainer(task, cfg, ctx, session))
    finally:
        cleanup_distributed()
