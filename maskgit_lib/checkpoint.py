"""Safe, atomic checkpoint files.

Two kinds of file:

- **Model weights** (``*.safetensors``): tensors plus string metadata holding the
  model type, its config (JSON), the library version and optional metrics. This
  is what ships in ``checkpoints/``; safetensors cannot carry code.
- **Training state** (``*.pt``): model + optimizer + step + RNG state for
  resuming. Written with ``torch.save`` and read back only with
  ``torch.load(weights_only=True)``, which refuses pickled code.

Both are written with :func:`maskgit_lib.outputs.atomic_write`: a crash or
SIGKILL leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import errno
import json
import os
import pickle
from pathlib import Path
from typing import Any, Callable

import torch
from torch.overrides import TorchFunctionMode

from . import __version__
from .errors import CheckpointError
from .outputs import atomic_write


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


_JSON_TYPES = {list: "a list", str: "a string", int: "a number", float: "a number", bool: "a boolean",
               type(None): "null"}


def _json_object(path: Path, text: str, field: str, what: str, *, finite: bool) -> dict[str, Any]:
    """Parse the metadata field ``field`` of ``path``, which must hold a JSON object.

    Args:
        path: the checkpoint, for the message.
        text: the stored JSON text.
        field: ``"config"`` or ``"metrics"``.
        what: what the object is, for the message.
        finite: refuse ``NaN``/``Infinity`` (which ``json`` accepts by default).

    Raises:
        CheckpointError: invalid JSON (also nested too deeply), a non-finite
            constant where ``finite``, or a JSON value other than an object.
    """
    def refuse(constant: str) -> Any:
        raise ValueError(f"{constant} is not a finite number")

    try:
        value = json.loads(text, parse_constant=refuse if finite else None)
    except (ValueError, RecursionError) as exc:  # json.JSONDecodeError is a ValueError
        raise CheckpointError(
            f"{path} has a corrupt metadata field: {field} is not valid JSON ({exc}); expected a JSON "
            f"object ({what})"
        ) from exc
    if not isinstance(value, dict):
        raise CheckpointError(
            f"{path} has a bad metadata field: {field} must be a JSON object ({what}), got "
            f"{_JSON_TYPES.get(type(value), type(value).__name__)}"
        )
    return value


def _require_finite(path: Path, name: str, tensor: torch.Tensor) -> None:
    """Refuse a floating tensor holding NaN or inf (one reduction per tensor)."""
    if not tensor.is_floating_point():
        return
    if tensor.dtype not in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        tensor = tensor.float()  # float8 and other exotic types: isfinite may lack a kernel
    finite = torch.isfinite(tensor)
    if not bool(finite.all()):
        bad = int(finite.numel() - finite.sum())
        raise CheckpointError(
            f"{path} holds non-finite values (NaN/inf) in tensor {name!r} ({bad} of {finite.numel()} "
            "values); the training run diverged or the file is corrupt; use an earlier checkpoint or retrain"
        )


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
        CheckpointError: missing, empty, truncated/corrupt, pickle-based, of
            another model type, metadata ``config``/``metrics`` that are not
            JSON objects (or a config holding NaN/Infinity), or a floating
            tensor holding NaN/inf.
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
        "config": _json_object(path, raw_meta["config"], "config",
                               "the model config written by save_weights", finite=True),
        "library_version": raw_meta.get("library_version", "unknown"),
        "metrics": _json_object(path, raw_meta.get("metrics", "{}"), "metrics",
                                "the metrics written by save_weights, name -> number", finite=False),
    }
    if expected_type is not None and meta["model_type"] != expected_type:
        raise CheckpointError(
            f"{path} holds a {meta['model_type']!r} checkpoint, but a {expected_type!r} "
            "checkpoint was expected (did you swap --vqgan-checkpoint and "
            "--transformer-checkpoint?)"
        )
    for name, tensor in tensors.items():
        _require_finite(path, name, tensor)
    return tensors, meta


def check_tensor_count(path: Any, state_dict: dict[str, torch.Tensor], needed: int, what: str) -> None:
    """Refuse a config that needs more tensors than the file holds, before building anything.

    A cheap guard against metadata that would make even building the model on the
    meta device slow (e.g. ``depth`` = 10**9): ``needed`` is a lower bound of the
    number of tensors the config's model has, computed from the config alone.

    Args:
        path: the checkpoint, for the message.
        state_dict: the tensors read from it.
        needed: at least this many tensors are in a model of the config.
        what: the config fields that set ``needed``, e.g. ``"depth=1000000"``.

    Raises:
        CheckpointError: if ``needed > len(state_dict)``.
    """
    if needed > len(state_dict):
        raise CheckpointError(
            f"checkpoint {path} does not fit this model's config ({what} needs at least {needed} tensors, "
            f"the file holds {len(state_dict)}); it was trained with another config or its metadata is wrong"
        )


def check_state_dict_fits(
    expected: dict[str, torch.Tensor], state_dict: dict[str, torch.Tensor], path: Any
) -> None:
    """Compare tensor names and shapes only (no values), e.g. against a model built on the meta device.

    Args:
        expected: the model's ``state_dict()``; only names and ``.shape`` are read,
            so meta tensors (no memory) are fine.
        state_dict: the tensors read from the checkpoint.
        path: the checkpoint, for the message.

    Raises:
        CheckpointError: naming missing keys, unexpected keys and shape mismatches.
    """
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    shapes = [
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in sorted(set(expected) & set(state_dict))
        if expected[k].shape != state_dict[k].shape
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


class _ShapesOnly(TorchFunctionMode):
    """Used inside ``torch.device("meta")``: random fills of meta tensors are skipped.

    A skeleton built on the meta device only needs shapes; torch's meta kernels
    for ``normal_`` and ``randn`` are Python decompositions whose first use
    imports sympy (about 3 s), so they are replaced by no-ops / ``torch.empty``.
    """

    _FILLS = (torch.Tensor.normal_, torch.nn.init.normal_)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func in self._FILLS:
            target = args[0] if args else kwargs.get("tensor")  # nn.init.normal_ passes tensor=...
            if isinstance(target, torch.Tensor) and target.is_meta:
                return target
        if func is torch.randn:
            kwargs.pop("generator", None)
            return torch.empty(*args, **kwargs)  # on the meta device (the outer torch.device mode)
        return func(*args, **kwargs)


def build_checked(build: Callable[[], torch.nn.Module], state_dict: dict[str, torch.Tensor],
                  path: Any) -> torch.nn.Module:
    """Build a model and load ``state_dict`` into it, checking the shapes before any memory is used.

    ``build()`` runs first on the meta device (shapes, no storage), so a config
    that does not match the stored tensors (say ``dim`` = 2**20 over a small
    file) is refused without allocating; only then is the real model built, so
    its size is bounded by the file's.

    Args:
        build: makes the model from its config (called twice: meta, then CPU).
        state_dict: the tensors read from the checkpoint.
        path: the checkpoint, for the message.

    Returns:
        The model on the CPU holding ``state_dict``'s values (cast to its dtypes).

    Raises:
        CheckpointError: names missing keys, unexpected keys and shape mismatches.
        Whatever ``build`` raises for a config it cannot build.
    """
    with torch.device("meta"), _ShapesOnly():
        skeleton = build()
    check_state_dict_fits(skeleton.state_dict(), state_dict, path)
    del skeleton
    model = build()
    model.load_state_dict(state_dict, strict=True)
    return model


def load_state_dict_checked(model: torch.nn.Module, state_dict: dict[str, torch.Tensor], path: Any) -> None:
    """Load ``state_dict`` strictly, turning key/shape mismatches into one clear error.

    Raises:
        CheckpointError: naming missing keys, unexpected keys and shape mismatches.
    """
    check_state_dict_fits(model.state_dict(), state_dict, path)
    model.load_state_dict(state_dict, strict=True)


def save_training_state(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Atomically write a resumable training state (tensors, numbers, strings, dicts).

    Args:
        path: destination ``*.pt`` file.
        state: model/optimizer state dicts, step counters, RNG states, config dicts.
    """
    def write(tmp: Path) -> None:
        try:
            torch.save(state, tmp)
        except RuntimeError as exc:  # torch's C++ writer hides the OS error ("iostream error", "unexpected pos")
            raise OSError(errno.EIO, f"torch.save failed ({exc})") from exc

    return atomic_write(path, write)


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
                              f"{type(exc).__name__}: {exc}; pass --no-resume to start over, or --out "
                              "another folder") from exc
