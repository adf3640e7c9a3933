"""maskgit_lib: a small library for the MaskGIT image-inpainting course.

Modules (one topic each): ``config``, ``paths``, ``checkpoint``, ``data``,
``data_prep``, ``fid``, ``vqgan``, ``attention``, ``transformer``, ``masking``,
``decoding``, ``inpaint``, ``training``, ``train_vqgan``, ``train_transformer``,
``viz``, ``widgets``, ``benchmark``, ``cli``. Nothing runs at import time.
"""

__version__ = "0.1.0"
