"""What makes a run resumable: the global RNG state, the settings a resume must match, a weights digest.

``state.pt`` (written by :class:`~maskgit_lib.training.loop.Trainer` with
:func:`maskgit_lib.checkpoint.save_training_state`) holds the model, the optimizer,
the step, the settings of the run and :func:`rng_state`. A resume is refused when
the stored settings differ from the requested ones (:func:`config_mismatches`),
except for the budget and interval fields of :data:`RESUMABLE_FIELDS`.
"""

from __future__ import annotations

import hashlib
import random
from typing import Any

import numpy as np
import torch
from torch import nn

#: TrainConfig fields that may differ between a run and its resume.
RESUMABLE_FIELDS = frozenset({"max_steps", "max_minutes", "val_every", "ckpt_every", "log_every"})
#: TrainConfig fields of older versions, ignored when an old ``state.pt`` is resumed.
RETIRED_FIELDS = frozenset({"num_workers"})


def rng_state() -> dict[str, Any]:
    """Global RNG states (torch CPU/CUDA, NumPy, Python) as weights-only-loadable objects."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else [],
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned (CUDA states only if the device count matches)."""
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    npst = state["numpy"]
    np.random.set_state(("MT19937", npst["keys"].numpy().astype(np.uint32), npst["pos"],
                         npst["has_gauss"], npst["gauss"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def config_mismatches(stored: dict[str, Any], wanted: dict[str, Any], ignore: frozenset = frozenset()) -> list[str]:
    """Readable ``key: checkpoint X vs requested Y`` lines for the keys whose values differ.

    Args:
        stored: the settings in the checkpoint.
        wanted: the settings of this run.
        ignore: keys not compared (e.g. :data:`RESUMABLE_FIELDS` | :data:`RETIRED_FIELDS`).
    """
    keys = sorted((set(stored) | set(wanted)) - set(ignore))
    return [f"{k}: checkpoint {stored.get(k, '<absent>')!r} vs requested {wanted.get(k, '<absent>')!r}"
            for k in keys if stored.get(k, "<absent>") != wanted.get(k, "<absent>")]


def state_digest(model: nn.Module) -> str:
    """SHA-256 of a model's state dict (names, dtypes, shapes, bytes): equal iff bitwise equal."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()
