"""Training MaskGIT's two stages from Python (the ``maskgit train-*`` commands call the same functions).

minGPT style: a run is one config object, built from a preset and changed with
``dataclasses.replace``, handed to one function that returns the run's summary::

    from maskgit_lib.training import TransformerRun, train_transformer

    run = TransformerRun.default(preset="tiny", data_dir=Path("data/twemoji64"), out_dir=Path("runs/t"))
    run = dataclasses.replace(run, train=dataclasses.replace(run.train, max_steps=100))
    summary = train_transformer(run)          # summary["metrics"]["masked_acc"], ...

Modules, read in this order:

- :mod:`.vqgan`: stage 1, the tokenizer's loss and validation; :class:`VQGANRun`, :func:`train_vqgan`.
- :mod:`.transformer`: stage 2, MVTM's loss and validation; :class:`TransformerRun`, :func:`train_transformer`.
- :mod:`.loop`: the :class:`~.loop.Trainer` both stages share (resume, time budget, torchrun).
- :mod:`.optim`: AdamW, the LR schedule, the data order; :mod:`.state`: RNG state and resume checks.
- :mod:`.logs`: ``log.csv`` and ``curves.png``; :mod:`.data`: splits and images in memory.
- :mod:`.tokens`: the token cache; :mod:`.hole_examples`: inpainting-shaped examples.
- :mod:`.run`: the settings both runs share, and ``--export``.
"""

from .transformer import TransformerRun, make_train_step, masked_token_metrics, train_transformer
from .vqgan import VQGANRun, reconstruction_metrics, train_vqgan

__all__ = ["TransformerRun", "VQGANRun", "make_train_step", "masked_token_metrics", "reconstruction_metrics",
           "train_transformer", "train_vqgan"]
