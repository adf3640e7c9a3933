"""The benchmark's rows: which methods and settings are compared, and how each is named and grouped.

A row is one method on one track (:data:`TRACKS`): MaskGIT with some
:class:`~maskgit_lib.inpaint.InpaintSettings`, a classical baseline
(:mod:`maskgit_lib.evaluation.baselines`) or the VQGAN tokenizer ceiling. :func:`plan_rows`
lists the rows of a profile (``quick``, ``headline``, ``full``, ``complete``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..errors import ConfigError
from ..inpaint import InpaintSettings
from ..masking import SCHEDULES
from . import baselines


CACHE_VERSION = "benchmark-v1"


TRACKS = ("freeform", "box", "border")


PROFILES = ("quick", "headline", "full", "complete")


LAB_SCHEDULES = ("cosine", "linear", "square")


BOX_FRAC, KEEP_FRAC = 0.5, 0.5


QUICK_LIMIT, GALLERY_IMAGES = 64, 8


FULL_GRID = {"cosine": (1, 4, 8, 12, 16), "linear": (4, 8, 12), "square": (4, 8, 12)}  # full profile: T per schedule


FULL_OTHER_SCHEDULES = ("arccos",)  # the full profile's other schedules (T = 8)


# The reference rules of the headline (results/sampler_study/README.md): the paper's, the paper's with the argmax
# token, and the course lab's (the library's default).
PAPER_RULE = {"confidence": "official", "sampling_temperature": 1.0, "choice_temperature": 4.5}
ARGMAX_PAPER_RULE = {**PAPER_RULE, "sampling_temperature": 0.0}
LAB_RULE = {"confidence": "lab", "sampling_temperature": 1.0, "choice_temperature": 4.5}


NOTE_DETERMINISM = (
    "Fixed masks and per-batch seeds: the same command with the same checkpoints, torch version, device type and "
    "batch size gives bitwise identical outputs and FIDs on this CPU (checked by re-running rows). On another CPU "
    "model or on CUDA, float rounding in the transformer can flip a sampled token now and then, so FIDs may move "
    "slightly; Inception features also differ in the last digits between BLAS builds.")


@dataclass(frozen=True)
class Row:
    """One benchmark row: a method on a track.

    Attributes:
        track: one of :data:`TRACKS`.
        method: ``"maskgit"``, a :data:`maskgit_lib.baselines.BASELINES` name,
            ``"vqgan_composite"`` or ``"vqgan_raw"`` (the tokenizer ceiling).
        settings: MaskGIT sampler settings (``method == "maskgit"`` only).
    """

    track: str
    method: str
    settings: InpaintSettings | None = None

    @property
    def label(self) -> str:
        """Readable name, e.g. ``maskgit cosine T=12 s=8 raw``."""
        if self.method != "maskgit":
            return {"vqgan_composite": "VQGAN ceiling (GT recon, composited)",
                    "vqgan_raw": "VQGAN ceiling (GT recon, raw)"}.get(self.method, f"baseline {self.method}")
        s = self.settings
        text = f"maskgit {s.schedule} T={s.steps}" + (f" s={s.sweet_spot}" if s.sweet_spot is not None else "")
        d = InpaintSettings  # only what differs from the library's defaults is named
        return (text + ("" if s.composite else " raw") + (f" {s.confidence}-conf" if s.confidence != d.confidence else "")
                + (f" {s.prefill}-fill" if s.prefill != d.prefill else "")
                + (f" {s.blend}-blend" if s.composite and s.blend != d.blend else "")
                + (f" temp={s.sampling_temperature:g}" if s.sampling_temperature != d.sampling_temperature else "")
                + (f" noise={s.choice_temperature:g}" if s.choice_temperature != d.choice_temperature else ""))

    @property
    def kind(self) -> str:
        """``maskgit``, ``baseline`` or ``ceiling``."""
        return self.method if self.method == "maskgit" else "ceiling" if self.method.startswith("vqgan") else "baseline"

    def spec(self) -> dict:
        """JSON-friendly description (the cache key and the JSON record)."""
        return {"track": self.track, "method": self.method,
                "settings": dataclasses.asdict(self.settings) if self.settings else None}

    def group(self) -> tuple:
        """Rows with equal groups share one computation (sweet spots and raw/composite of one decoding)."""
        if self.method == "maskgit":
            return (self.track, "maskgit", dataclasses.replace(self.settings, sweet_spot=None, composite=True,
                                                               blend=InpaintSettings.blend))
        return (self.track, "vqgan" if self.kind == "ceiling" else self.method)


def plan_rows(profile: str = "full", tracks: tuple[str, ...] = TRACKS, seed: int = 0) -> list[Row]:
    """The rows of a profile, track by track: ``quick``, ``headline``, ``full`` or ``complete``.

    ``complete`` is the whole grid: the lab's schedules x T in 1, 4, 8, 12, 16, the
    other schedules at T = 8, sweet spots (12, 8), (16, 8), (16, 12), raw, the
    paper's rule (a GPU job). ``full`` prunes it to fit about an hour on a shared
    2-core CPU at 64 images (:data:`FULL_GRID`, :data:`FULL_OTHER_SCHEDULES`);
    ``quick`` is a few free-form rows; ``headline`` is what the README's table needs
    on the whole test set: cosine T = 8 with the library's default rule (harmonic fill,
    Poisson-blended and pasted), the paper's rule (:data:`PAPER_RULE`) and the paper's
    rule with argmax tokens (:data:`ARGMAX_PAPER_RULE`), defaults otherwise, and the
    lab's rule (:data:`LAB_RULE`: blended, pasted, and the lab's whole pipeline, gray
    fill pasted); duplicates dropped. Box and border tracks get
    cosine T = 8 blended and pasted (and the paper's rule in ``headline``) and the
    references. T = 1 is listed once (cosine): with one step the schedule is
    never evaluated, so every schedule gives the same output.
    """
    if profile not in PROFILES:
        raise ConfigError(f"unknown benchmark profile {profile!r}; expected one of {', '.join(PROFILES)}")

    def mg(track: str, schedule: str = "cosine", steps: int = 8, **kw) -> Row:
        return Row(track, "maskgit", InpaintSettings(steps=steps, schedule=schedule, seed=seed, **kw))

    rows = []
    for t in tracks:
        if t != "freeform":
            rows += [mg(t), mg(t, blend="paste")] + ([mg(t, composite=False)] if profile == "complete" else [])
            rows += [mg(t, **PAPER_RULE)] if profile in ("headline", "complete") else []
        elif profile == "quick":
            rows += [mg(t), mg(t, "linear"), mg(t, "square"), mg(t, **PAPER_RULE), mg(t, blend="paste"),
                     mg(t, blend="paste", **PAPER_RULE), mg(t, prefill="gray", blend="paste"),
                     mg(t, steps=1), mg(t, steps=12, sweet_spot=8), mg(t, composite=False)]
        elif profile == "headline":
            fills = (("harmonic", "poisson"), ("harmonic", "paste"), ("gray", "paste"))
            candidates = ([mg(t, prefill=p, blend=b) for p, b in fills[:2]]  # the library's defaults
                          + [mg(t, **PAPER_RULE), mg(t, **ARGMAX_PAPER_RULE)]
                          + [mg(t, prefill=p, blend=b, **LAB_RULE) for p, b in fills])
            rows += list(dict.fromkeys(candidates))  # a rule equal to the defaults is listed once
        else:
            grid = FULL_GRID if profile == "full" else {s: (1, 4, 8, 12, 16) for s in LAB_SCHEDULES}
            others = FULL_OTHER_SCHEDULES if profile == "full" else [s for s in SCHEDULES if s not in LAB_SCHEDULES]
            rows += [mg(t, s, n) for s in LAB_SCHEDULES for n in grid[s] if n > 1 or s == "cosine"]
            rows += [mg(t, steps=n, sweet_spot=k) for n, k in ((12, 8), (16, 8), (16, 12)) if n in grid["cosine"]]
            rows += [mg(t, composite=False), mg(t, **PAPER_RULE), mg(t, blend="paste"),
                     mg(t, blend="paste", **PAPER_RULE), mg(t, prefill="gray", blend="paste"),
                     mg(t, prefill="gray", blend="paste", **PAPER_RULE)] + [mg(t, s) for s in others]
        rows += [Row(t, m) for m in (*baselines.BASELINES, "vqgan_composite", "vqgan_raw")]
    return rows
