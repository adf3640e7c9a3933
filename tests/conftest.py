"""Fixtures shared by several test modules."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from maskgit_lib import paths
from maskgit_lib.config import TransformerConfig, VQGANConfig
from maskgit_lib.transformer import MaskGITTransformer, save_transformer
from maskgit_lib.vqgan import VQGAN, save_vqgan


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module: tiny models run several times faster on 2 shared cores.

    Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def save_tiny_models(folder: Path) -> Path:
    """Tiny random VQGAN and transformer (seed 0) under the default checkpoint file names; returns ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        save_vqgan(VQGAN(VQGANConfig.preset("tiny")), folder / paths.VQGAN_CHECKPOINT_NAME)
        save_transformer(MaskGITTransformer(TransformerConfig.preset("tiny")),
                         folder / paths.TRANSFORMER_CHECKPOINT_NAME)
    return folder


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory) -> Path:
    """A checkpoint folder holding :func:`save_tiny_models` (a module may define its own ``ckpts``)."""
    return save_tiny_models(tmp_path_factory.mktemp("ckpts"))
