"""The frozen tokenizer's output, computed once: token grids and hole examples, cached on disk.

The transformer never sees pixels during training: the frozen VQGAN tokenizes
each training image in each view (:mod:`maskgit_lib.views`) and the validation
images once, and the token grids are cached under
``paths.cache_dir()/tokens/<key>.pt``. The key hashes the VQGAN file's bytes and
the split's file names and bytes, so a new tokenizer or new images give a new
key. Hole examples (:mod:`maskgit_lib.training.hole_examples`) are cached the
same way.
"""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from .. import paths
from ..checkpoint import load_training_state, save_training_state
from ..data import from_uint8
from ..errors import CheckpointError
from ..runtime import DistContext, barrier, exact_fp32
from ..views import apply_view
from ..vqgan import load_vqgan
from .data import load_images_uint8
from .hole_examples import HOLE_PREFILL, HoleExamples, hole_examples_key, make_hole_examples

log = logging.getLogger(__name__)

TOKEN_CACHE_FORMAT = 1


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_tokenizer(vqgan_path: Path, device: torch.device) -> tuple[torch.nn.Module, str]:
    """The frozen VQGAN of ``vqgan_path`` (no gradients) and the SHA-256 of its file."""
    vqgan = load_vqgan(vqgan_path, device)
    for p in vqgan.parameters():
        p.requires_grad_(False)
    return vqgan, file_sha256(vqgan_path)


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
            images = from_uint8(chunk.to(device))  # (B, 3, S, S) in [-1, 1]
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


def cached_hole_examples(vqgan: torch.nn.Module, files: Sequence[Path], token_key: str, view: str,
                         variants: int, seed: int, ctx: DistContext | None = None) -> HoleExamples:
    """:func:`~maskgit_lib.training.hole_examples.make_hole_examples` of ``files`` in ``view``, cached like the tokens.

    ``token_key`` is the key of the same files' tokens in the same view.

    Returns:
        :class:`HoleExamples` on the CPU: context int64 (N, V, L), is_masked bool (N, V, L).
    """
    key = hole_examples_key(f"{token_key}:view={view}", variants, seed, HOLE_PREFILL)

    def compute() -> dict[str, Any]:
        images = apply_view(load_images_uint8(files, vqgan.cfg.image_size), view)
        ex = make_hole_examples(vqgan, images, variants, seed, HOLE_PREFILL)
        return {"context": _small_ids(ex.context, vqgan.cfg.codebook_size), "is_masked": ex.is_masked}

    cache = _cached(key, compute, f"built {variants} hole example(s) for each of {len(files)} images "
                    f"(view {view})", ctx)
    return HoleExamples(cache["context"].long(), cache["is_masked"])


def _small_ids(tokens: torch.Tensor, codebook_size: int) -> torch.Tensor:
    return tokens.to(torch.int16 if codebook_size <= 32767 else torch.int32)


def _cached(key: str, compute: Callable[[], dict[str, Any]], what: str, ctx: DistContext | None) -> dict[str, Any]:
    """``paths.cache_dir()/tokens/<key>.pt``: computed by rank 0 if missing (atomic write), then read by all."""
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
