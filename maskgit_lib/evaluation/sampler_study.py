"""The sampler study: which token choice, confidence and choice noise decode best, and best-of-K sampling.

A :class:`SamplerRule` is one point of the grid: the token written at a hidden
position (sampled at temperature tau, or the argmax at tau = 0), the score it is
ranked by (``logp`` = log p, the official rule; ``p`` = the probability), the
choice noise c and the number of steps T. The paper's rule is tau = 1, log p,
c = 4.5; the course lab's is tau = 0 (argmax), p, c = 4.5
(:data:`PAPER_RULE`, :data:`LAB_RULE`).

Rules are scored on a **selection track** that is not the test set: the
validation images with the test set's free-form masks (:func:`selection_track`),
so that choosing the best rule never looks at the test images; the chosen rules
are then confirmed on the test set by the benchmark's own code.

Best-of-K (the paper's rejection sampling, done per image): decode K samples of
each image with different seeds and keep the one a score prefers:

* ``seam``: how well the raw decoding meets the known pixels, the mean absolute
  difference between the raw VQGAN decoding and the input on the known pixels
  within ``SEAM_WIDTH`` pixels of a hole (lower is better; no model call);
* ``likelihood``: the transformer's log-likelihood of the completed hidden tokens
  given the known ones, each hidden token scored by the first-step logits (all
  hidden positions masked), i.e. the model's factorised likelihood, averaged over the
  hidden tokens: ``mean_i log p(token_i | known tokens)`` (one forward per batch,
  shared by the K samples; harmonic prefill, no dilation, like the default settings).

Used by ``tools/sampler_study.py`` (the full study, ``results/sampler_study/``)
and notebook 04 (a small version).
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..data import ImageFolder, from_uint8, split_dir, test_set, to_uint8
from ..errors import ConfigError
from ..inpaint import Inpainter, InpaintSettings, batch_seed
from ..masking import pixel_to_token_mask
from ..prefill import get_prefill
from . import baselines
from .benchmark import run_maskgit_group
from .fid import frechet_distance_from_features
from .kid import kid_from_features
from .rows import Row
from .tracks import TrackData, features, hole_metrics

SCORES = {"logp": "official", "p": "p"}  # rule score -> InpaintSettings.confidence
SEAM_WIDTH = 2  # pixels of known context next to a hole that the seam score looks at
PICK_SCORES = ("seam", "likelihood")


@dataclass(frozen=True)
class SamplerRule:
    """One decoding rule: token choice (tau, 0 = argmax), score (``logp`` or ``p``), choice noise c, steps T."""

    tau: float = 1.0
    score: str = "logp"
    noise: float = 4.5
    steps: int = 8

    def __post_init__(self) -> None:
        if self.score not in SCORES:
            raise ConfigError(f"score must be one of {', '.join(SCORES)}, got {self.score!r}")

    def settings(self, seed: int = 0) -> InpaintSettings:
        """The :class:`InpaintSettings` of this rule (cosine, harmonic prefill, Poisson blend: the defaults)."""
        return InpaintSettings(steps=self.steps, sampling_temperature=self.tau, confidence=SCORES[self.score],
                               choice_temperature=self.noise, seed=seed)

    def canonical(self) -> "SamplerRule":
        """The rule itself, or at T = 1 the one rule per tau (score log p, no noise): one step reveals everything,
        so score and noise change nothing."""
        return dataclasses.replace(self, score="logp", noise=0.0) if self.steps == 1 else self

    @property
    def deterministic(self) -> bool:
        """True when no random number is drawn: argmax tokens and no choice noise (or a single step)."""
        return self.tau == 0 and (self.noise == 0 or self.steps == 1)

    @property
    def label(self) -> str:
        token = "argmax" if self.tau == 0 else f"sample tau={self.tau:g}"
        return f"T={self.steps}, {token}, score {self.score}, noise {self.noise:g}"


PAPER_RULE = SamplerRule(1.0, "logp", 4.5, 8)
LAB_RULE = SamplerRule(0.0, "p", 4.5, 8)


def rule_grid(taus=(1.0, 0.5, 0.0), scores=("logp", "p"), noises=(4.5, 1.0, 0.0), steps=(8,)) -> list[SamplerRule]:
    """Every combination; at T = 1 score and noise change nothing (one step reveals all), so one rule per tau."""
    rules = [SamplerRule(tau, s, c, t).canonical() for t in steps for tau in taus for s in scores for c in noises]
    return list(dict.fromkeys(rules))


def selection_track(dataset_dir: str | os.PathLike | None = None, n: int = 128) -> TrackData:
    """The first ``n`` validation images with the first ``n`` test-set masks, holes painted gray 128.

    The masks are the benchmark's free-form masks; the images are not test images, so rules
    can be ranked here and confirmed on the test set.
    """
    val = ImageFolder(split_dir("val", dataset_dir), size=64)
    masks = test_set(dataset_dir)
    if n > min(len(val), len(masks)):
        raise ConfigError(f"selection track: n={n} exceeds the {len(val)} validation images or {len(masks)} masks")
    gt = torch.stack([to_uint8(val[i]) for i in range(n)])  # (n, 3, S, S) uint8
    missing = torch.stack([masks[i][2] for i in range(n)])  # (n, S, S) bool
    names = [p.stem for p in val.files[:n]]
    return TrackData(names, baselines.gray_fill(gt, missing), missing, gt, gt_dir=None)


def _seam(raw: torch.Tensor, images: torch.Tensor, pixel_missing: torch.Tensor) -> torch.Tensor:
    """float (B,): mean |raw - input| over known pixels within SEAM_WIDTH of a hole (0 if there are none)."""
    k = 2 * SEAM_WIDTH + 1
    near = F.max_pool2d(pixel_missing[:, None].float(), k, stride=1, padding=SEAM_WIDTH)[:, 0] > 0  # (B, S, S)
    ring = (near & ~pixel_missing)[:, None].expand_as(raw).float()  # (B, 3, S, S)
    return ((raw - images).abs() * ring).flatten(1).sum(1) / ring.flatten(1).sum(1).clamp_min(1)  # (B,)


def _likelihood(inpainter: Inpainter, images: torch.Tensor, pixel_missing: torch.Tensor,
                completions: list[torch.Tensor], settings: InpaintSettings | None = None) -> list[torch.Tensor]:
    """Per completion, float (B,): mean over hidden tokens of log p(token | known tokens), first-step logits.

    The context is what ``settings`` (default :class:`InpaintSettings`) gives the decoder: its prefill and dilation.
    """
    settings = settings or InpaintSettings()
    is_masked = pixel_to_token_mask(pixel_missing, factor=inpainter.factor, dilate=settings.dilate)  # (B, L)
    tokens = inpainter.encode(get_prefill(settings.prefill)(images, pixel_missing))  # (B, L)
    logits = inpainter.tokens_to_logits(torch.where(is_masked, inpainter.mask_token_id, tokens))  # (B, L, K+)
    log_p = F.log_softmax(logits[..., :inpainter.mask_token_id].float(), dim=-1)  # (B, L, K)
    count = is_masked.sum(1).clamp_min(1)  # (B,)
    return [(log_p.gather(-1, c[..., None])[..., 0] * is_masked).sum(1) / count for c in completions]


def decode_rule(inpainter: Inpainter, data: TrackData, rule: SamplerRule, seed: int = 0,
                batch_size: int = 64) -> tuple[torch.Tensor, float]:
    """uint8 (N, 3, S, S) outputs of one rule and its wall time in seconds; batch k uses ``batch_seed(seed, k)``.

    The benchmark's own row computation (:func:`~maskgit_lib.evaluation.benchmark.run_maskgit_group`), so it is
    exactly what ``maskgit inpaint`` and the benchmark compute for the same settings, seed and batches.
    """
    row = Row("freeform", "maskgit", rule.settings(seed))
    return run_maskgit_group(inpainter, data, [row], batch_size, seed)[row]


def best_of_k(inpainter: Inpainter, data: TrackData, rule: SamplerRule, k: int, seed: int = 0,
              batch_size: int = 64) -> tuple[dict[str, torch.Tensor], float, float]:
    """Decode K samples per image (seeds ``seed .. seed+k-1``) and keep, per image, the best by each score.

    Returns:
        ``(outputs, decode_seconds, score_seconds)``: uint8 (N, 3, S, S) per entry of
        :data:`PICK_SCORES`, the wall time of the K decodings, and of scoring them.
    """
    if k < 1:
        raise ConfigError(f"best-of-K needs k >= 1, got {k}")
    picked = {s: [] for s in PICK_SCORES}
    decode_s = score_s = 0.0
    for b, lo in enumerate(range(0, len(data.names), batch_size)):
        images, pm = from_uint8(data.inputs[lo:lo + batch_size]), data.pixel_missing[lo:lo + batch_size]
        samples = []
        t0 = time.perf_counter()
        for j in range(k):
            gen = torch.Generator(inpainter.device).manual_seed(batch_seed(seed + j, b))
            samples.append(inpainter.inpaint(images, pm, rule.settings(seed + j), gen, keep_trace=True))
        t1 = time.perf_counter()
        finals = [r.trace.final for r in samples]
        scores = {"seam": torch.stack([-_seam(r.raw, images, pm) for r in samples]),  # (K, B) higher = better
                  "likelihood": torch.stack(_likelihood(inpainter, images, pm, finals, rule.settings()))}
        score_s += time.perf_counter() - t1
        decode_s += t1 - t0
        stacked = torch.stack([to_uint8(r.images) for r in samples])  # (K, B, 3, S, S)
        for name, sc in scores.items():
            picked[name].append(stacked[sc.argmax(0), torch.arange(stacked.shape[1])])  # (B, 3, S, S)
    return {s: torch.cat(v) for s, v in picked.items()}, decode_s, score_s


def score_outputs(outputs: torch.Tensor, data: TrackData, gt_feats: np.ndarray) -> dict:
    """FID, KID (x1000, mean and std over subsets) and the hole metrics of uint8 outputs (N, 3, S, S)."""
    feats = features(outputs, torch.device("cpu"))
    kid, kid_std = kid_from_features(feats, gt_feats)
    return {"fid": frechet_distance_from_features(feats, gt_feats), "kid": 1000 * kid, "kid_std": 1000 * kid_std,
            **hole_metrics(outputs, data.gt, data.pixel_missing)}
