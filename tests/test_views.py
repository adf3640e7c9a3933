"""Fixed training-image views (:mod:`maskgit_lib.views`): names, geometry, no aliasing."""

from __future__ import annotations

import pytest
import torch

from maskgit_lib.errors import ConfigError
from maskgit_lib.views import DEFAULT_VIEWS, apply_view, check_view, parse_views


def _images(n: int = 3, size: int = 64) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, 3, size, size), generator=gen, dtype=torch.uint8)


def test_view_names():
    assert parse_views("id,flip,small,small+flip,large,large+flip") == (
        "id", "flip", "small", "small+flip", "large", "large+flip")
    assert parse_views(" id , flip ") == DEFAULT_VIEWS
    for bad in ["", "rotate", "small+large", "id+flip", "flip+flip", "small,"]:
        with pytest.raises(ConfigError, match="bad view"):
            parse_views(bad)
    with pytest.raises(ConfigError, match="repeat"):
        parse_views("id,flip,id")
    assert check_view("flip+small") == "flip+small"  # order of parts is free


def test_id_and_flip_are_exact_and_never_alias_the_input():
    x = _images()
    before = x.clone()
    same = apply_view(x, "id")
    assert torch.equal(same, x) and same.data_ptr() != x.data_ptr()
    assert torch.equal(apply_view(x, "flip"), x.flip(-1))
    same[:] = 0
    assert torch.equal(x, before)


def test_small_view_shrinks_onto_white_and_large_view_crops():
    x = torch.zeros(2, 3, 64, 64, dtype=torch.uint8)  # black images
    small = apply_view(x, "small")
    assert small.shape == x.shape and small.dtype == torch.uint8
    assert (small[..., :4, :] == 255).all() and (small[..., :, 60:] == 255).all()  # 4-pixel white frame
    assert (small[..., 4:60, 4:60] == 0).all()  # the 56x56 content
    x[..., 16:48, 16:48] = 200  # a 32x32 centre square grows to 36x36 in the large view
    large = apply_view(x, "large")
    assert large.shape == x.shape and large.dtype == torch.uint8
    assert 35 ** 2 <= int((large[0, 0] > 100).sum()) <= 37 ** 2
    assert large[0, 0, 32, 14] > 100 and large[0, 0, 32, 12] < 100  # its edge moved from column 16 to 14
    assert torch.equal(apply_view(x, "large+flip"), apply_view(x, "large").flip(-1))


def test_bad_images_are_refused():
    with pytest.raises(ConfigError, match="uint8"):
        apply_view(torch.zeros(3, 64, 64, dtype=torch.uint8), "flip")
    with pytest.raises(ConfigError, match="uint8"):
        apply_view(torch.zeros(1, 3, 64, 64), "small")


def test_one_flip_for_the_whole_library():
    from maskgit_lib.training.data import random_hflip
    from maskgit_lib.training.hole_examples import _dihedral
    from maskgit_lib.views import hflip

    x = _images()
    assert torch.equal(hflip(x), x.flip(-1)) and hflip(x).data_ptr() != x.data_ptr()
    assert torch.equal(apply_view(x, "flip"), hflip(x))
    flipped = random_hflip(x, torch.Generator().manual_seed(0))  # each image: itself or its mirror
    assert all(torch.equal(f, i) or torch.equal(f, hflip(i)) for f, i in zip(flipped, x))
    masks = torch.rand(8, 16, 16, generator=torch.Generator().manual_seed(1)) < 0.3
    which = torch.arange(8)
    expected = [torch.rot90(m.transpose(-1, -2) if k & 4 else m, k & 3, dims=(-2, -1)) for k, m in zip(range(8), masks)]
    assert torch.equal(_dihedral(masks, which), torch.stack(expected))  # the cached hole examples stay valid
