"""maskgit_lib: a small library for the MaskGIT image-inpainting course.

Layers, lowest first; a module imports only its own layer or lower (``tests/test_layering.py``
checks it, ``docs/architecture.md`` draws it):

- foundations: ``errors``, ``paths``, ``config``, ``runtime``, ``outputs``, ``checkpoint``
- data: ``data``, ``masks``, ``views``, ``data_prep``
- the course's algorithms: ``attention``, ``quantizer``, ``discriminator``, ``masking``, ``prefill``, ``blend``
- models, sampler, figures: ``transformer``, ``vqgan``, ``decoding``, ``viz``
- the inpainting API: ``inpaint``, ``folders``, ``widgets``
- ``training/`` (``train_vqgan``, ``train_transformer``), ``evaluation/`` (FID, baselines, benchmark, speed)
- ``cli/``: the ``maskgit`` command, a thin shell over the functions above.

Nothing runs at import time. ``maskgit_lib.inpaint_image(image, mask)`` (the diffusers-style
one-liner, :func:`maskgit_lib.inpaint.inpaint_image`) is resolved lazily on first access.
"""

import importlib

__version__ = "0.1.0"


def __getattr__(name: str):
    """Lazy ``maskgit_lib.inpaint_image`` (PEP 562): torch is imported on first use, not by ``import maskgit_lib``."""
    if name == "inpaint_image":
        return importlib.import_module(".inpaint", __name__).inpaint_image
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
