"""Where things live: repository root, data, checkpoints, results, FID weights.

Every path can be overridden with an environment variable so that a notebook,
a test or CI can point the library elsewhere without editing code:

- ``MASKGIT_ROOT``: project root (default: the folder above ``maskgit_lib``).
- ``MASKGIT_DATA``: dataset root (default: ``<root>/data``).
- ``MASKGIT_CHECKPOINTS``: checkpoint folder (default: ``<root>/checkpoints``).
- ``TORCH_HOME``: torch hub cache, where the converted FID Inception weights go
  (default: torch's own default, ``~/.cache/torch``).
"""

from __future__ import annotations

import os
from pathlib import Path

DATASET_NAME = "twemoji64"
VQGAN_CHECKPOINT_NAME = "vqgan_twemoji64.safetensors"
TRANSFORMER_CHECKPOINT_NAME = "maskgit_twemoji64.safetensors"


def project_root() -> Path:
    """Return the project root (``MASKGIT_ROOT`` or the folder above the package)."""
    env = os.environ.get("MASKGIT_ROOT")
    if env:
        return Path(env).expanduser().resolve()
    return Path(__file__).resolve().parent.parent


def data_root() -> Path:
    """Return the folder that holds datasets (``MASKGIT_DATA`` or ``<root>/data``)."""
    env = os.environ.get("MASKGIT_DATA")
    return Path(env).expanduser().resolve() if env else project_root() / "data"


def default_dataset_dir() -> Path:
    """Return the prepared default dataset folder, ``<data>/twemoji64``."""
    return data_root() / DATASET_NAME


def checkpoints_dir() -> Path:
    """Return the checkpoint folder (``MASKGIT_CHECKPOINTS`` or ``<root>/checkpoints``)."""
    env = os.environ.get("MASKGIT_CHECKPOINTS")
    return Path(env).expanduser().resolve() if env else project_root() / "checkpoints"


def default_vqgan_checkpoint() -> Path:
    """Return the path of the shipped VQGAN tokenizer checkpoint."""
    return checkpoints_dir() / VQGAN_CHECKPOINT_NAME


def default_transformer_checkpoint() -> Path:
    """Return the path of the shipped MaskGIT transformer checkpoint."""
    return checkpoints_dir() / TRANSFORMER_CHECKPOINT_NAME


def results_dir() -> Path:
    """Return the folder where benchmarks write tables and plots."""
    return project_root() / "results"


def cache_dir() -> Path:
    """Return a git-ignored cache folder (token caches, FID statistics)."""
    env = os.environ.get("MASKGIT_CACHE")
    return Path(env).expanduser().resolve() if env else project_root() / ".cache"


def torch_hub_checkpoints_dir() -> Path:
    """Return ``$TORCH_HOME/hub/checkpoints``, where pytorch-fid looks for weights."""
    import torch.hub  # local import: keeps ``import maskgit_lib.paths`` light

    return Path(torch.hub.get_dir()) / "checkpoints"
