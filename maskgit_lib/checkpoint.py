"""Safe, atomic checkpoint files.

Two kinds of file:

- **Model weights** (``*.safetensors``): tensors plus string metadata holding the
  model type, its config (JSON), the library version and optional metrics. This
  is what ships in ``checkpoints/``; safetensors cannot carry code.
- **Training state** (``*.pt``): model + optimizer + step + RNG state for
  resuming. Written with ``torch.save`` and read back only with
  ``torch.load(weights_only=True)``, which refuses pickled code.

Every write goes to a temporary file in the same folder, is flushed to disk,
then renamed over the target (``os.replace`` is atomic on POSIX), so a crash
or SIGKILL leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch

from . import __version__
from .errors import CheckpointError


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` then atomically move ``tmp_path`` to ``path``.

    Args:
        path: final destination; its folder is created if needed.
        write: function that writes the complete file at the path it is given.

    Returns:
        The destination path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp creates 0600; give the usual mode
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()
    return path


def save_weights(
    path: str | os.PathLike,
    state_dict: dict[str, torch.Tensor],
    *,
    model_type: str,
    config: dict[str, Any],
    metrics: dict[str, Any] | None = None,
) -> Path:
    """Atomically write model weights and metadata as safetensors.

    Args:
        path: destination ``*.safetensors`` file.
        state_dict: parameter name -> tensor (made contiguous, copied to CPU).
        model_type: e.g. ``"vqgan"`` or ``"transformer"``; checked on load.
        config: the model config as a JSON-friendly dict.
        metrics: optional JSON-friendly numbers recorded with the weights.
    """
    from safetensors.torch import save_file

    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state_dict.items()}
    meta = {
        "model_type": model_type,
        "config": json.dumps(config, sort_keys=True),
        "library_version": __version__,
        "metrics": json.dumps(metrics or {}, sort_keys=True),
    }
    return atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))


def _require_file(path: Path, what: str) -> None:
    if not path.exists():
        raise CheckpointError(f"{what} not found: {path}")
    if path.is_dir():
        raise CheckpointError(f"{what} {path} is a folder; expected a file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{what} {path} is empty (0 bytes); it was probably not written completely")


def read_weights(
    path: str | os.PathLike, *, expected_type: str | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a weights file written by :func:`save_weights`.

    Args:
        path: a ``*.safetensors`` file.
        expected_type: if given, the stored ``model_type`` must equal it.

    Returns:
        ``(state_dict, meta)`` where ``meta`` has ``model_type`` (str), ``config``
        (dict), ``library_version`` (str) and ``metrics`` (dict).

    Raises:
        CheckpointError: missing, empty, truncated/corrupt, pickle-based, or of
            another model type.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    path = Path(path)
    _require_file(path, "checkpoint")
    with open(path, "rb") as fh:
        head = fh.read(9)  # safetensors: 8-byte little-endian header length, then "{"
    if head[8:9] != b"{" and (head[:2] == b"PK" or head[:1] == b"\x80"):
        raise CheckpointError(
            f"{path} is a pickle/torch.save file, not safetensors; model weights are only "
            "loaded from .safetensors files (pickles can run code). Convert it with "
            "maskgit_lib.checkpoint.save_weights after loading it yourself with "
            "torch.load(..., weights_only=True)."
        )
    try:
        with safe_open(str(path), framework="pt") as fh:
            raw_meta = fh.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(
            f"{path} is not a readable safetensors checkpoint (truncated or corrupt?): {exc}"
        ) from exc
    if "model_type" not in raw_meta or "config" not in raw_meta:
        raise CheckpointError(
            f"{path} has no maskgit metadata (model_type/config); it was not written by "
            "maskgit_lib.checkpoint.save_weights"
        )
    meta = {
        "model_type": raw_meta["model_type"],
        "config": json.loads(raw_meta["config"]),
        "library_version": raw_meta.get("library_version", "unknown"),
        "metrics": json.loads(raw_meta.get("metrics", "{}")),
    }
    if expected_type is not None and meta["model_type"] != expected_type:
        raise CheckpointError(
            f"{path} holds a {meta['model_type']!r} checkpoint, but a {expected_type!r} "
            "checkpoint was expected (did you swap --vqgan-checkpoint and "
            "--transformer-checkpoint?)"
        )
    return tensors, meta


def load_state_dict_checked(model: torch.nn.Module, state_dict: dict[str, torch.Tensor], path: Any) -> None:
    """Load ``state_dict`` strictly, turning key/shape mismatches into one clear error.

    Raises:
        CheckpointError: naming missing keys, unexpected keys and shape mismatches.
    """
    own = model.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    shapes = [
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
        for k in sorted(set(own) & set(state_dict))
        if own[k].shape != state_dict[k].shape
    ]
    if missing or unexpected or shapes:
        parts = []
        if shapes:
            parts.append(f"shape mismatches: {shapes[:5]}{' ...' if len(shapes) > 5 else ''}")
        if missing:
            parts.append(f"missing keys: {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        if unexpected:
            parts.append(f"unexpected keys: {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
        raise CheckpointError(
            f"checkpoint {path} does not fit this model's config ({'; '.join(parts)}); "
            "it was trained with another config or is another model"
        )
    model.load_state_dict(state_dict, strict=True)


def save_training_state(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Atomically write a resumable training state (tensors, numbers, strings, dicts).

    Args:
        path: destination ``*.pt`` file.
        state: model/optimizer state dicts, step counters, RNG states, config dicts.
    """
    return atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_training_state(path: str | os.PathLike) -> dict[str, Any]:
    """Read a training state with ``torch.load(weights_only=True)`` (no code execution).

    Raises:
        CheckpointError: missing, empty, truncated, a safetensors file, or carrying
            non-weight objects (possible code; never unpickled).
    """
    path = Path(path)
    _require_file(path, "training state")
    with open(path, "rb") as fh:
        head = fh.read(9)
    if head[8:9] == b"{" and int.from_bytes(head[:8], "little") < path.stat().st_size:
        raise CheckpointError(
            f"{path} is a safetensors weights file, not a training state; resuming needs the "
            "state.pt written by the trainer (pass --no-resume or another --out to start over)"
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        detail = next((line.strip() for line in str(exc).splitlines()
                       if "GLOBAL" in line or "Unsupported" in line), "")
        raise CheckpointError(
            f"refused to load {path}: it is not a weights-only training state (it holds Python "
            f"objects other than tensors and plain containers, possibly code{': ' + detail if detail else ''}). "
            "Only files written by maskgit_lib.checkpoint.save_training_state are loaded; do not "
            "load it with torch.load(weights_only=False) unless you trust its source."
        ) from exc
    except Exception as exc:  # any other failure of the unpickler: truncated or not a torch file
        raise CheckpointError(f"{path} is not a readable training state (truncated or corrupt?): "
                              f"{type(exc).__name__}: {exc}") from exc
