"""``maskgit train-transformer`` and ``maskgit eval-transformer``: MVTM training (stage 2).

Masked Visual Token Modeling (MaskGIT, Chang et al. 2022, section 3.2): for
each training image's tokens ``Y`` (L of them), draw r ~ U(0, 1), hide
``ceil(gamma(r) * L)`` random positions (:func:`maskgit_lib.masking.mvtm_mask`),
replace them by ``[MASK]`` = K and minimise the cross-entropy on the hidden
positions only::

    L_mask = - E_Y [ sum_{i: m_i = 1} log p(y_i | Y_masked) ] / sum_i m_i

with label smoothing (0.1 in the official code), AdamW (0.9, 0.96), warmup +
cosine decay, gradient accumulation and clipping.

The frozen VQGAN tokenizes the training images in each of the run's views
(``--views``, :mod:`maskgit_lib.views`; default: the images and their mirror
images, 2x data) and the validation images once; the token grids are cached under
``paths.cache_dir()/tokens/<key>.pt`` where the key hashes the VQGAN file's
bytes and the split's file names and bytes (a new tokenizer or new images give
a new key).

Validation uses a FIXED set of masks (seed 0, drawn on the CPU) over the
validation tokens, so its masked-token cross-entropy (no label smoothing) and
accuracy compare across runs; ``eval-transformer`` recomputes exactly these
numbers from a shipped checkpoint.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import logging
import time
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from . import paths
from .argtypes import dropout_rate, positive_int, seed_int
from .config import TransformerConfig, config_to_dict
from .errors import CheckpointError, ConfigError
from .hole_examples import HoleExamples, hole_examples_key, make_hole_examples, mix_hole_examples
from .training import (
    FINAL_NAME, WEIGHT_DTYPES, DistContext, Trainer, add_train_arguments, barrier, cleanup_distributed, derive_seed,
    exact_fp32, export_weights, images_to_float, load_images_uint8, process_start_time, resolve_device,
    resolve_splits, setup_distributed, train_config_from_args, write_json,
)
from .views import apply_view, parse_views

log = logging.getLogger(__name__)

#: TrainConfig values per preset (flags override them).
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
HOLE_PREFILL = "harmonic"  # hole examples encode what Inpainter encodes with its default prefill
TOKEN_CACHE_FORMAT = 1
LOSS_NAMES = ("loss", "masked_acc", "mask_ratio")
VAL_NAMES = ("ce", "masked_acc", "num_masked", "hole_ce", "hole_acc")


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def token_cache_key(vqgan_sha256: str, files: Sequence[Path], view: str = "id") -> str:
    """Cache key of one split's tokens in one view: the tokenizer's bytes + each file's name and bytes."""
    tag = {"id": "0", "flip": "1"}.get(view, view)  # the first two views keep their pre-views keys
    digest = hashlib.sha256(f"maskgit-tokens:{TOKEN_CACHE_FORMAT}:{vqgan_sha256}:{tag}".encode())
    for path in files:
        digest.update(Path(path).name.encode() + b"\0" + hashlib.sha256(Path(path).read_bytes()).digest())
    return digest.hexdigest()


@torch.no_grad()
def tokenize_images(vqgan: torch.nn.Module, images_u8: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Token ids of uint8 images (N, 3, S, S) -> int64 (N, L) on the CPU (fp32, no TF32)."""
    device = next(vqgan.parameters()).device
    out = []
    with exact_fp32():
        for chunk in images_u8.split(batch_size):
            images = images_to_float(chunk.to(device))  # (B, 3, S, S)
            out.append(vqgan.encode_to_tokens(images).flatten(1).cpu())  # (B, L)
    return torch.cat(out)


def cached_tokens(vqgan_path: Path, vqgan: torch.nn.Module, vqgan_sha256: str, files: Sequence[Path],
                  view: str = "id", ctx: DistContext | None = None) -> tuple[torch.Tensor, str]:
    """Tokens of ``files`` in ``view`` from the cache, computing and writing them (atomically, rank 0) if missing.

    Returns:
        ``(tokens, key)``: int64 (N, L) on the CPU and the cache key.
    """
    key = token_cache_key(vqgan_sha256, files, view)

    def compute() -> dict[str, Any]:
        images = apply_view(load_images_uint8(files, vqgan.cfg.image_size), view)
        return {"vqgan": str(vqgan_path), "view": view, "files": [Path(f).name for f in files],
                "tokens": _small_ids(tokenize_images(vqgan, images), vqgan.cfg.codebook_size)}

    cache = _cached(key, compute, f"tokenized {len(files)} images (view {view})", ctx)
    return cache["tokens"].long(), key


def _small_ids(tokens: torch.Tensor, codebook_size: int) -> torch.Tensor:
    return tokens.to(torch.int16 if codebook_size <= 32767 else torch.int32)


def _cached(key: str, compute, what: str, ctx: DistContext | None) -> dict[str, Any]:
    """``paths.cache_dir()/tokens/<key>.pt``: computed by rank 0 if missing (atomic write), then read by all."""
    from .checkpoint import load_training_state, save_training_state

    path = paths.cache_dir() / "tokens" / f"{key[:24]}.pt"
    if (ctx is None or ctx.is_main) and not path.exists():
        t0 = time.monotonic()
        save_training_state(path, {"format": TOKEN_CACHE_FORMAT, "key": key, **compute()})
        log.info("%s in %.1f s -> %s", what, time.monotonic() - t0, path)
    if ctx is not None:
        barrier(ctx)
    cache = load_training_state(path)
    if cache.get("key") != key:
        raise CheckpointError(f"token cache {path} holds another key; delete it and run again")
    return cache


def cached_hole_examples(vqgan: torch.nn.Module, files: Sequence[Path], token_key: str, view: str,
                         variants: int, seed: int, ctx: DistContext | None = None) -> HoleExamples:
    """:func:`~maskgit_lib.hole_examples.make_hole_examples` of ``files`` in ``view``, cached like the tokens.

    ``token_key`` is the key of the same files' tokens in the same view.
    """
    key = hole_examples_key(f"{token_key}:view={view}", variants, seed, HOLE_PREFILL)

    def compute() -> dict[str, Any]:
        images = apply_view(load_images_uint8(files, vqgan.cfg.image_size), view)
        ex = make_hole_examples(vqgan, images, variants, seed, HOLE_PREFILL)
        return {"context": _small_ids(ex.context, vqgan.cfg.codebook_size), "is_masked": ex.is_masked}

    cache = _cached(key, compute, f"built {variants} hole example(s) for each of {len(files)} images "
                    f"(view {view})", ctx)
    return HoleExamples(cache["context"].long(), cache["is_masked"])


def fixed_val_masks(num: int, num_tokens: int, schedule: str, seed: int = VAL_MASK_SEED,
                    min_ratio: float = 0.0) -> torch.Tensor:
    """The validation masks: bool (num, L), drawn on the CPU from ``seed`` (same on every machine)."""
    from .masking import mvtm_mask

    return mvtm_mask(num, num_tokens, schedule, torch.Generator().manual_seed(seed), min_ratio=min_ratio)


@torch.no_grad()
def masked_token_metrics(model: torch.nn.Module, tokens: torch.Tensor, is_masked: torch.Tensor,
                         batch_size: int = 128, context: torch.Tensor | None = None) -> dict[str, float]:
    """Cross-entropy (no smoothing) and accuracy of the argmax on the hidden positions.

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


def make_train_step(cfg, tokens: torch.Tensor, codebook_size: int, holes: HoleExamples | None = None):
    """The MVTM training step for :class:`~maskgit_lib.training.Trainer`.

    Args:
        cfg: TrainConfig (``schedule``, ``min_mask_ratio``, ``label_smoothing``, ``hole_fraction``).
        tokens: int64 (N, L) training tokens on the training device.
        codebook_size: K (= the mask token id).
        holes: hole examples of the same N rows (on the device); used when ``cfg.hole_fraction > 0``.
    """
    from .masking import mvtm_mask

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
    """MVTM metrics on fixed random masks + ``hole_ce``/``hole_acc`` on fixed brush holes (prefilled context)."""
    plain = masked_token_metrics(model, tokens, masks, batch_size)
    hole = masked_token_metrics(model, tokens, holes.is_masked[:, 0], batch_size, context=holes.context[:, 0])
    return {**plain, "hole_ce": hole["ce"], "hole_acc": hole["masked_acc"]}


def _init_from(model: torch.nn.Module, path: Path, device: torch.device) -> None:
    """Copy the weights of ``path`` into ``model`` (CheckpointError if its config differs)."""
    from .transformer import load_transformer

    source = load_transformer(path, device)
    training_only = {"attention": model.cfg.attention, "dropout": model.cfg.dropout,
                     "attention_dropout": model.cfg.attention_dropout}  # the architecture must match
    if dataclasses.replace(source.cfg, **training_only) != model.cfg:
        raise CheckpointError(f"--init-weights {path} has another transformer config ({source.cfg}) than this "
                              f"run ({model.cfg}); pass the same --preset")
    model.load_state_dict(source.state_dict())
    log.info("initialised from %s", path)


def _views_arg(text: str) -> tuple[str, ...]:
    try:
        return parse_views(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def add_train_transformer_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the options of ``maskgit train-transformer``."""
    add_train_arguments(parser, paths.project_root() / "runs" / "transformer")
    parser.add_argument("--vqgan-checkpoint", type=Path, default=None,
                        help=f"frozen tokenizer (default: {paths.default_vqgan_checkpoint()})")
    parser.add_argument("--label-smoothing", type=float, default=None, help="cross-entropy label smoothing (0.1)")
    parser.add_argument("--schedule", default=None, help="MVTM mask schedule gamma (default: cosine)")
    parser.add_argument("--min-mask-ratio", type=float, default=None, help="minimum masking rate (default 0)")
    parser.add_argument("--hole-fraction", type=float, default=None, metavar="P",
                        help="share of training examples that are brush-stroke holes with prefilled context "
                             "(see maskgit_lib.hole_examples; default 0 = plain MVTM)")
    parser.add_argument("--hole-variants", type=positive_int, default=None, metavar="V",
                        help="hole examples built per training image (default 4)")
    parser.add_argument("--init-weights", type=Path, default=None, metavar="PATH",
                        help="start from these transformer weights (fine-tuning; same config); "
                             "ignored when resuming from OUT/state.pt")
    parser.add_argument("--views", type=_views_arg, default=None, metavar="V1,V2,...",
                        help="views of each training image to tokenize (maskgit_lib.views; default id,flip; "
                             "e.g. id,flip,small,small+flip,large,large+flip)")
    parser.add_argument("--dropout", type=dropout_rate, default=None,
                        help="transformer dropout (default: the preset's, 0.1; attention dropout keeps the preset's)")
    parser.add_argument("--attention", choices=["sdpa", "scratch"], default=None,
                        help="attention implementation (default: the preset's, sdpa)")


def _load_tokenizer(vqgan_path: Path, device: torch.device):
    from .vqgan import load_vqgan

    vqgan = load_vqgan(vqgan_path, device)
    for p in vqgan.parameters():
        p.requires_grad_(False)
    return vqgan, file_sha256(vqgan_path)


def run_train_transformer(args: argparse.Namespace) -> int:
    """Tokenize (cached), train with MVTM, write OUT/final.safetensors with val metrics; print a summary."""
    start = process_start_time()
    ctx = setup_distributed(args.device)
    try:
        from .masking import get_schedule
        from .transformer import MaskGITTransformer, save_transformer

        cfg = train_config_from_args(args, TRANSFORMER_TRAIN_PRESETS[args.preset], ctx.device)
        get_schedule(cfg.schedule)  # fail early on a bad name
        vqgan_path = Path(args.vqgan_checkpoint or paths.default_vqgan_checkpoint())
        vqgan, vqgan_sha = _load_tokenizer(vqgan_path, ctx.device)
        data_dir = args.data if args.data is not None else paths.default_dataset_dir()
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
        num_tokens = train_tokens.shape[1]
        val_masks = fixed_val_masks(val.shape[0], val.shape[1], cfg.schedule, VAL_MASK_SEED, cfg.min_mask_ratio)
        model_cfg = dataclasses.replace(TransformerConfig.preset(args.preset), codebook_size=k,
                                        num_tokens=num_tokens)
        if args.attention:
            model_cfg = dataclasses.replace(model_cfg, attention=args.attention)
        if args.dropout is not None:
            model_cfg = dataclasses.replace(model_cfg, dropout=args.dropout)
        torch.manual_seed(derive_seed(cfg.seed, "init"))
        model = MaskGITTransformer(model_cfg).to(ctx.device)
        if args.init_weights is not None:
            _init_from(model, args.init_weights, ctx.device)
        model.validate_inputs = False  # inputs are built here; skips a host sync per step
        extra = {"vqgan_sha256": vqgan_sha, "train_tokens_key": train_key, "val_mask_seed": VAL_MASK_SEED,
                 "val_mask_schedule": cfg.schedule, "val_min_mask_ratio": cfg.min_mask_ratio,
                 "val_hole_seed": VAL_HOLE_SEED, "hole_prefill": HOLE_PREFILL,
                 "init_weights": None if args.init_weights is None else file_sha256(args.init_weights)}
        trainer = Trainer(
            kind="transformer", run_dir=args.out, cfg=cfg, ctx=ctx, model=model,
            model_config=config_to_dict(model_cfg), train_step=make_train_step(cfg, train_tokens, k, holes),
            validate=lambda: validation_metrics(model, val, val_masks, val_holes, max(64, cfg.batch_size)),
            save_final=lambda path, metrics: save_transformer(model, path, metrics),
            num_train=train_tokens.shape[0], loss_names=LOSS_NAMES, val_names=VAL_NAMES, extra_config=extra,
            stop_at_step=args.stop_at_step, resume=args.resume, start_time=start, show_progress=args.progress,
            weights_dtype=WEIGHT_DTYPES[args.weights_dtype],
        )
        summary = trainer.run()
        if ctx.is_main:
            if args.export is not None:
                export_weights(args.out / FINAL_NAME, args.export, WEIGHT_DTYPES[args.weights_dtype])
            m = summary["metrics"]
            print(f"train-transformer: {summary['steps']} steps ({summary['stop_reason']}) in "
                  f"{summary['wall_time_s']:.0f} s on {summary['device']}; val masked CE {m['ce']:.4f}, "
                  f"val masked-token accuracy {m['masked_acc']:.2%} ({int(m['num_masked'])} tokens); "
                  f"val holes CE {m['hole_ce']:.4f}, accuracy {m['hole_acc']:.2%}")
            print(f"weights: {args.out / FINAL_NAME}" + (f" (exported to {args.export})" if args.export else ""))
        return 0
    finally:
        cleanup_distributed()


def add_eval_transformer_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the options of ``maskgit eval-transformer``."""
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help=f"transformer weights (default: {paths.default_transformer_checkpoint()})")
    parser.add_argument("--vqgan-checkpoint", type=Path, default=None,
                        help=f"tokenizer (default: {paths.default_vqgan_checkpoint()})")
    parser.add_argument("--data", type=Path, default=None,
                        help=f"dataset folder; uses its val/ split (default: {paths.default_dataset_dir()})")
    parser.add_argument("--seed", type=seed_int, default=None,
                        help="seed of the fixed validation masks (default: the one recorded, 0)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    parser.add_argument("--batch-size", type=positive_int, default=128, help="images per forward pass")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers to this JSON file")


def run_eval_transformer(args: argparse.Namespace) -> int:
    """Recompute the validation masked-token CE and accuracy of a checkpoint; compare with its metadata."""
    from .checkpoint import read_weights
    from .transformer import load_transformer

    device = resolve_device(args.device)
    checkpoint = Path(args.checkpoint or paths.default_transformer_checkpoint())
    vqgan_path = Path(args.vqgan_checkpoint or paths.default_vqgan_checkpoint())
    _, meta = read_weights(checkpoint, expected_type="transformer")
    recorded = meta.get("metrics", {})
    model = load_transformer(checkpoint, device)
    vqgan, vqgan_sha = _load_tokenizer(vqgan_path, device)
    if recorded.get("vqgan_sha256") not in (None, vqgan_sha):
        log.warning("%s was trained on tokens of another VQGAN file than %s; the numbers will differ",
                    checkpoint, vqgan_path)
    if vqgan.cfg.codebook_size != model.cfg.codebook_size:
        raise CheckpointError(f"{vqgan_path} has {vqgan.cfg.codebook_size} codes but {checkpoint} expects "
                              f"{model.cfg.codebook_size}; pass the VQGAN it was trained with")
    data_dir = args.data if args.data is not None else paths.default_dataset_dir()
    _, val_files = resolve_splits(data_dir)
    val, val_key = cached_tokens(vqgan_path, vqgan, vqgan_sha, val_files, "id")
    holes = cached_hole_examples(vqgan, val_files, val_key, "id", 1, VAL_HOLE_SEED)
    seed = args.seed if args.seed is not None else int(recorded.get("val_mask_seed", VAL_MASK_SEED))
    schedule = recorded.get("val_mask_schedule", "cosine")
    masks = fixed_val_masks(val.shape[0], val.shape[1], schedule, seed, float(recorded.get("val_min_mask_ratio", 0)))
    with exact_fp32():
        metrics = validation_metrics(model, val, masks, holes, args.batch_size)
    result = {"checkpoint": str(checkpoint), "vqgan_checkpoint": str(vqgan_path), "val_images": len(val_files),
              "mask_seed": seed, "mask_schedule": schedule, **{f"val_{k}": v for k, v in metrics.items()},
              "recorded": {k: recorded.get(f"val_{k}") for k in VAL_NAMES},
              "steps": recorded.get("steps")}
    print(f"eval-transformer: {checkpoint} ({result['steps']} steps) on {result['val_images']} val images, "
          f"mask seed {seed}, schedule {schedule}")
    print(f"  {'metric':<18} {'recomputed':>12} {'recorded':>12}")
    for key, fmt in (("ce", "{:.5f}"), ("masked_acc", "{:.5f}"), ("num_masked", "{}"), ("hole_ce", "{:.5f}"),
                     ("hole_acc", "{:.5f}")):
        old = result["recorded"][key]
        print(f"  {'val_' + key:<18} {fmt.format(metrics[key]):>12} {('-' if old is None else fmt.format(old)):>12}")
    if args.json is not None:
        write_json(args.json, result)
    return 0
