"""Iterative (parallel) MaskGIT decoding with a full per-step trace.

Derived step by step in ``notebooks/04_iterative_decoding.ipynb``, section 1; the
algorithm and its sources are written out in ``docs/maskgit_algorithm.md``.

Per image, with N0 = number of hidden tokens at the start and T = ``steps``
(the official MaskGIT ``decode``), each line one named function below::

    for t in start_step .. T-1:
        logits  = tokens_to_logits(tokens)[..., :K]        # never sample the mask class
        sampled ~ Categorical(softmax(logits / tau))       # sample_tokens: sampling, not argmax
        predicted = where(unknown, sampled, tokens)
        r = (t+1)/T;  n = floor(N0 * gamma(r))             # mask_len
        n = min(max(n, 1), #unknown - 1)                   #   last step: n = 0
        confidence = log p(sampled) + c (1 - r) Gumbel     # mask_by_random_topk; known tokens:
        re-mask the n lowest-confidence positions          #   CONFIDENCE_OF_KNOWN_TOKENS = +inf

Three ``confidence`` variants, chosen once before the loop (the loop itself is the
reference):

* ``"official"``: the above (:func:`sample_tokens`).
* ``"p"``: the same sampled token, ranked by its probability p instead of log p
  (:func:`sample_tokens_prob`); at tau = 0 (argmax) it is the lab's rule. It
  separates the two things the lab changes: the token choice and the scale the
  choice noise is added to.
* ``"lab"``: the course lab's rule (:func:`lab_argmax_tokens`), the default of
  :class:`~maskgit_lib.inpaint.InpaintSettings` since the sampler study measured it
  best (``results/sampler_study/README.md``: its argmax token is what wins). The lab
  writes the argmax token (no sampling) and ranks by its probability,
  confidence = max_k softmax(logits / tau)_k + c (1 - r) Gumbel. Probabilities
  live in [0, 1], so with c = 4.5 the Gumbel noise (scale ~1) dominates early
  steps and the ranking is close to random. Everything else (the count n, the
  clamp, the annealing) is the official rule, so comparisons isolate the
  confidence definition.

When only one token is unknown before the last step, ``min(max(n, 1), 0)`` is
0: it is revealed (every step makes progress). The official JAX code writes
``max(1, min(#unknown - 1, n))`` there and keeps it hidden until the last step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Literal

import torch
import torch.nn.functional as F

from .errors import ConfigError
from .masking import Schedule, get_schedule, schedule_name, uniform

TokensToLogits = Callable[[torch.Tensor], torch.Tensor]
CONFIDENCE_OF_KNOWN_TOKENS = math.inf  # known tokens are never re-masked (official: _CONFIDENCE_OF_KNOWN_TOKENS)


def gumbel_noise(
    shape: tuple[int, ...],
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Standard Gumbel(0, 1) noise, float32 of ``shape``: g = -log(-log(u)), u ~ U(0, 1)."""
    u = uniform(shape, generator, device).clamp_(1e-20, 1.0)
    return -torch.log(-torch.log(u))  # g = -log(-log u)


@dataclass(frozen=True)
class DecodeStep:
    """One decoding step of a :class:`DecodeTrace` (``step`` = steps done, 1-based)."""

    step: int
    tokens: torch.Tensor  # (B, L) int64, hidden positions = mask_token_id
    is_masked: torch.Tensor  # (B, L) bool, hidden after this step
    predicted: torch.Tensor  # (B, L) int64, full prediction of this step
    confidence: torch.Tensor  # (B, L) float32, +inf where known before this step


@dataclass(frozen=True)
class DecodeTrace:
    """Everything :func:`iterative_decode` did, one entry per executed step.

    Entry i is absolute step s = start_step + i + 1 (s steps of T done).

    Attributes:
        tokens: int64 (S, B, L), S = steps - start_step: tokens after each step,
            hidden positions set to ``mask_token_id``.
        is_masked: bool (S, B, L), hidden after each step.
        predicted: int64 (S, B, L), the step's full prediction: input tokens
            where known before the step, the step's sample elsewhere.
        confidence: float32 (S, B, L), the ranking score; +inf where known
            before the step.
        initial_tokens: int64 (B, L), the input (hidden positions = mask id).
        initial_is_masked: bool (B, L), the input mask.
        steps: T, total steps of the schedule.
        start_step: steps skipped at the start.
        schedule: schedule name.
        mask_token_id: K.
        confidence_kind: "official" or "lab".
        logits: float32 (S, B, L, K) when ``record_logits`` was set, else None.
    """

    tokens: torch.Tensor
    is_masked: torch.Tensor
    predicted: torch.Tensor
    confidence: torch.Tensor
    initial_tokens: torch.Tensor
    initial_is_masked: torch.Tensor
    steps: int
    start_step: int
    schedule: str
    mask_token_id: int
    confidence_kind: str
    logits: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.tokens.shape[0]

    @property
    def final(self) -> torch.Tensor:
        """int64 (B, L): tokens after the last step; nothing is hidden."""
        return self.tokens[-1]

    @property
    def num_masked(self) -> torch.Tensor:
        """int64 (S, B): hidden tokens per image after each step."""
        return self.is_masked.sum(-1)

    def _index(self, step: int) -> int:
        if not self.start_step < step <= self.steps:
            raise ConfigError(
                f"step {step} is outside this trace; choose {self.start_step + 1}..{self.steps}"
            )
        return step - self.start_step - 1

    def at(self, step: int) -> DecodeStep:
        """Return the state after ``step`` of T steps (start_step < step <= T)."""
        i = self._index(step)
        return DecodeStep(step, self.tokens[i], self.is_masked[i], self.predicted[i], self.confidence[i])

    def tokens_at(self, step: int) -> torch.Tensor:
        """The "sweet spot" image tokens: stop after ``step`` of T steps.

        Returns the step's full prediction, int64 (B, L): tokens fixed so far
        plus that step's sample at every still-hidden position (the official
        ``final_seqs[:, step - 1]``). ``tokens_at(T)`` equals :attr:`final`.
        """
        return self.predicted[self._index(step)]


def check_steps_fit(steps: int, num_tokens: int) -> None:
    """Refuse more decoding steps than tokens: with L tokens at most L steps can each unmask one.

    :func:`iterative_decode` itself runs any T (the extra steps unmask nothing);
    callers that know the model's token count (the :class:`~maskgit_lib.inpaint.Inpainter`)
    call this so that ``--steps 10000`` is refused instead of running 10000 forward passes.

    Raises:
        ConfigError: ``steps > num_tokens``, naming the bound.
    """
    if isinstance(steps, int) and steps > num_tokens:
        side = math.isqrt(num_tokens)
        grid = f" of a {side}x{side} grid" if side * side == num_tokens else ""
        raise ConfigError(f"--steps {steps} exceeds the {num_tokens} tokens{grid}; each step must unmask at least "
                          f"one token: use --steps <= {num_tokens}")


def _check_inputs(tokens: torch.Tensor, is_masked: torch.Tensor, steps: int, start_step: int,
                  choice_temperature: float, sampling_temperature: float, confidence: str) -> None:
    if tokens.dim() != 2:
        raise ValueError(f"tokens must be (B, L), got shape {tuple(tokens.shape)}")
    if tokens.dtype.is_floating_point or tokens.dtype.is_complex or tokens.dtype == torch.bool:
        raise ValueError(f"tokens must be an integer tensor (int64), got {tokens.dtype}")
    if is_masked.shape != tokens.shape or is_masked.dtype != torch.bool:
        raise ValueError(
            f"is_masked must be bool {tuple(tokens.shape)}, got {is_masked.dtype} {tuple(is_masked.shape)}"
        )
    if not isinstance(steps, int) or steps < 1:
        raise ConfigError(f"steps must be an integer >= 1, got {steps!r}")
    if not isinstance(start_step, int) or not 0 <= start_step < steps:
        raise ConfigError(f"start_step must be in 0..{steps - 1}, got {start_step!r}")
    if choice_temperature < 0 or sampling_temperature < 0:
        raise ConfigError("choice_temperature and sampling_temperature must be >= 0")
    if confidence not in TOKEN_CHOICES:
        raise ConfigError(f"confidence must be one of {', '.join(CONFIDENCE_KINDS)}, got {confidence!r}")


def _resolve_mask_token_id(tokens_to_logits: TokensToLogits, mask_token_id: int | None) -> int:
    if mask_token_id is None:
        mask_token_id = getattr(tokens_to_logits, "mask_token_id", None)
    if mask_token_id is None:
        raise ConfigError(
            "mask_token_id is needed: pass mask_token_id=K (the codebook size), or give "
            "tokens_to_logits a mask_token_id attribute"
        )
    return int(mask_token_id)


def _lowest(confidence: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """bool (B, L): the ``count[b]`` (B,) lowest-confidence positions of each row."""
    rank = confidence.argsort(dim=-1).argsort(dim=-1)  # (B, L) 0 = least confident
    return rank < count[:, None]  # (B, L)


def sample_tokens(log_probs: torch.Tensor, sampling_temperature: float,
                  generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The official token choice: sample each position, score it by its log-probability.

    Args:
        log_probs: float32 (B, L, K), ``log_softmax(logits / tau)``.
        sampling_temperature: tau; 0 takes the argmax instead of sampling.
        generator: random stream of the Gumbel-max sample.

    Returns:
        ``(sampled, score)``: int64 (B, L) codebook ids and float32 (B, L) ``log p(sampled)``.
    """
    if sampling_temperature > 0:
        noise = gumbel_noise(tuple(log_probs.shape), generator, log_probs.device)  # (B, L, K)
        sampled = (log_probs + noise).argmax(dim=-1)  # (B, L) sampled ~ Categorical(p) (Gumbel-max)
    else:
        sampled = log_probs.argmax(dim=-1)  # (B, L)
    return sampled, log_probs.gather(-1, sampled[..., None])[..., 0]  # (B, L) log p(sampled)


def lab_argmax_tokens(log_probs: torch.Tensor, sampling_temperature: float,
                      generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The course lab's token choice: the argmax token, scored by its probability (no sampling).

    Same signature as :func:`sample_tokens` (``sampling_temperature`` only enters
    through ``log_probs``; ``generator`` is unused). Returns int64 (B, L) ids and
    float32 (B, L) ``max_k p_k`` in [0, 1].
    """
    score, sampled = log_probs.max(dim=-1)  # (B, L) argmax token
    return sampled, score.exp()  # (B, L) lab: max_k p_k, a probability


def sample_tokens_prob(log_probs: torch.Tensor, sampling_temperature: float,
                       generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The official token choice scored by probability: sample (argmax at tau = 0), score ``p(sampled)``.

    Same signature as :func:`sample_tokens`; returns int64 (B, L) ids and float32
    (B, L) ``p(sampled)`` in [0, 1]. At tau = 0 this is the lab's rule exactly.
    """
    sampled, log_p = sample_tokens(log_probs, sampling_temperature, generator)  # (B, L) x2
    return sampled, log_p.exp()  # (B, L) p(sampled), a probability


TOKEN_CHOICES: dict[str, Callable[..., tuple[torch.Tensor, torch.Tensor]]] = {
    "official": sample_tokens, "p": sample_tokens_prob, "lab": lab_argmax_tokens}
CONFIDENCE_KINDS = tuple(TOKEN_CHOICES)  # ("official", "p", "lab")


def mask_len(n0: torch.Tensor, unknown: torch.Tensor, ratio: float, gamma: Schedule, last: bool) -> torch.Tensor:
    """How many tokens stay hidden after a step: ``clamp(floor(N0 gamma(r)), 1, #unknown - 1)``, 0 at the end.

    Args:
        n0: int64 (B,), hidden tokens at the start. unknown: int64 (B,), hidden before this step.
        ratio: r = (t+1)/T. gamma: the mask schedule. last: this is step T.
    """
    if last:
        return torch.zeros_like(unknown)  # (B,) last step: reveal everything
    n_mask = torch.floor(n0.double() * float(gamma(ratio))).long()  # (B,) n = floor(N0 gamma(r))
    return torch.minimum(n_mask.clamp_min(1), unknown - 1).clamp_min(0)  # n = clamp(n, 1, #unknown-1)


def mask_by_random_topk(n_mask: torch.Tensor, score: torch.Tensor, is_masked: torch.Tensor, temperature: float,
                        generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Re-mask the ``n_mask`` least confident hidden positions, confidence = score + temperature * Gumbel.

    Args:
        n_mask: int64 (B,), positions to keep hidden per image.
        score: float32 (B, L), the token choice's score (log p or p).
        is_masked: bool (B, L), hidden before this step (known positions get
            :data:`CONFIDENCE_OF_KNOWN_TOKENS`).
        temperature: the annealed choice temperature c (1 - r); 0 adds no noise.
        generator: random stream of the Gumbel noise.

    Returns:
        ``(new_is_masked, confidence)``: bool (B, L) and float32 (B, L).
    """
    if temperature > 0:
        score = score + temperature * gumbel_noise(tuple(score.shape), generator, score.device)  # (B, L)
    score = torch.nan_to_num(score, nan=-math.inf)  # (B, L)
    confidence = torch.where(is_masked, score, CONFIDENCE_OF_KNOWN_TOKENS)  # (B, L) known tokens: +inf
    return _lowest(confidence, n_mask), confidence  # (B, L) the n lowest-confidence positions


@torch.no_grad()
def iterative_decode(
    tokens_to_logits: TokensToLogits,
    tokens: torch.Tensor,
    is_masked: torch.Tensor,
    *,
    steps: int,
    schedule: str | Schedule = "cosine",
    choice_temperature: float = 4.5,
    sampling_temperature: float = 1.0,
    generator: torch.Generator | None = None,
    start_step: int = 0,
    confidence: Literal["official", "p", "lab"] = "official",
    mask_token_id: int | None = None,
    record_logits: bool = False,
) -> DecodeTrace:
    """Fill the hidden tokens of each image by iterative MaskGIT decoding.

    Runs under ``torch.no_grad()``; every image of the batch follows its own N0
    and counts (vectorised, no loop over images). An image with nothing hidden
    passes through unchanged.

    Args:
        tokens_to_logits: callable mapping int64 (B, L) tokens (hidden = mask id)
            to float logits (B, L, K) over codebook ids; a (B, L, K+1) output
            has its last (mask-class) column dropped. Called once per step.
        tokens: int64 (B, L) codebook ids; values at hidden positions are ignored.
        is_masked: bool (B, L), True = hidden (to be generated).
        steps: T, total steps of the schedule (>= 1).
        schedule: gamma name or function (see :func:`maskgit_lib.masking.get_schedule`).
        choice_temperature: c, Gumbel noise scale on the confidence, annealed c (1 - r).
        sampling_temperature: tau, logits are divided by it; 0 means argmax.
        generator: optional random generator (sampling and choice noise).
        start_step: run steps start_step..T-1 only (official editing); N0 is the
            hidden count of the input.
        confidence: "official" (log p of a sampled token), "p" (p of a sampled token)
            or "lab" (argmax token, its probability); see the module docstring.
        mask_token_id: K; defaults to ``tokens_to_logits.mask_token_id``.
        record_logits: keep every step's logits in the trace (memory S*B*L*K floats).

    Returns:
        The :class:`DecodeTrace`; ``trace.final`` is int64 (B, L) with nothing hidden.

    Raises:
        ConfigError: bad steps/start_step/temperatures/confidence/schedule or no mask id.
        ValueError: tensors of the wrong shape or dtype, known tokens outside [0, K),
            logits of the wrong shape.
    """
    _check_inputs(tokens, is_masked, steps, start_step, choice_temperature, sampling_temperature, confidence)
    gamma = get_schedule(schedule)
    k = _resolve_mask_token_id(tokens_to_logits, mask_token_id)
    tokens = tokens.long()
    known_values = tokens[~is_masked]
    if known_values.numel() and (int(known_values.min()) < 0 or int(known_values.max()) >= k):
        raise ValueError(f"known tokens must be codebook ids in [0, {k}), got values outside it")

    batch, length = tokens.shape
    cur_masked = is_masked.clone()  # (B, L)
    cur_tokens = torch.where(cur_masked, k, tokens)  # (B, L)
    initial_tokens = cur_tokens.clone()  # (B, L)
    n0 = cur_masked.sum(-1)  # (B,) N0
    choose_tokens = TOKEN_CHOICES[confidence]
    out_tokens, out_masked, out_pred, out_conf, out_logits = [], [], [], [], []

    for t in range(start_step, steps):
        logits = tokens_to_logits(cur_tokens)  # (B, L, K) or (B, L, K+1)
        if logits.dim() != 3 or logits.shape[:2] != (batch, length) or logits.shape[-1] not in (k, k + 1):
            raise ValueError(
                f"tokens_to_logits must return ({batch}, {length}, {k}) or (..., {k + 1}) logits, "
                f"got {tuple(logits.shape)}"
            )
        logits = logits[..., :k].float()  # (B, L, K) never sample the mask class
        scaled = logits / sampling_temperature if sampling_temperature > 0 else logits  # (B, L, K)
        log_probs = F.log_softmax(scaled, dim=-1)  # (B, L, K)
        sampled, score = choose_tokens(log_probs, sampling_temperature, generator)  # (B, L), (B, L)
        predicted = torch.where(cur_masked, sampled, cur_tokens)  # (B, L) tokens_t = where(unknown, sampled, tokens)

        ratio = (t + 1) / steps  # r = (t+1)/T
        n_mask = mask_len(n0, cur_masked.sum(-1), ratio, gamma, last=t == steps - 1)  # (B,)
        temperature = choice_temperature * (1.0 - ratio)  # c (1 - r) annealed choice temperature
        cur_masked, conf = mask_by_random_topk(n_mask, score, cur_masked, temperature, generator)  # (B, L) x2
        cur_tokens = torch.where(cur_masked, k, predicted)  # (B, L)

        out_tokens.append(cur_tokens)
        out_masked.append(cur_masked)
        out_pred.append(predicted)
        out_conf.append(conf)
        if record_logits:
            out_logits.append(logits)

    return DecodeTrace(
        tokens=torch.stack(out_tokens),  # (S, B, L)
        is_masked=torch.stack(out_masked),  # (S, B, L)
        predicted=torch.stack(out_pred),  # (S, B, L)
        confidence=torch.stack(out_conf),  # (S, B, L)
        initial_tokens=initial_tokens,
        initial_is_masked=is_masked.clone(),
        steps=steps,
        start_step=start_step,
        schedule=schedule_name(schedule),
        mask_token_id=k,
        confidence_kind=confidence,
        logits=torch.stack(out_logits) if record_logits else None,
    )
