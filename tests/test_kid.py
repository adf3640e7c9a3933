"""KID against torchmetrics, the lab CSV reader, pytorch-fid .npz statistics in and out, ``maskgit fid`` end to end.

The KID reference is torchmetrics 1.9.0 (``torchmetrics.image.kid``: ``poly_mmd`` and
``KernelInceptionDistance`` with an identity feature extractor) plus a double loop written
out below. The CLI tests run the real Inception on 6 tiny images per folder, offline:
the verified weights are copied from the user's torch hub cache when present (else
converted once), into a temporary ``TORCH_HOME``.
"""

from __future__ import annotations

import csv
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pytorch_fid.fid_score import calculate_frechet_distance, compute_statistics_of_path
from torchmetrics.image.kid import KernelInceptionDistance, poly_mmd

from maskgit_lib import cli
from maskgit_lib.errors import ConfigError, DataError
from maskgit_lib.evaluation import fid, fid_stats, inception, kid
from maskgit_lib.lab_files import PIXELS, read_lab_csv

# ----------------------------------------------------------------------------- KID


def _features(n: int, d: int, seed: int, shift: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.abs(rng.normal(shift, 1.0, size=(n, d)))  # non-negative like pool3 features


def _double_loop_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """The unbiased MMD^2 with k(a, b) = (a.b/d + 1)^3, written out term by term."""
    m, d = len(x), x.shape[1]
    k = lambda a, b: (float(np.dot(a, b)) / d + 1.0) ** 3  # noqa: E731
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    return xx + yy - 2 * xy


def test_one_subset_of_all_samples_equals_torchmetrics_and_the_double_loop():
    x, y = _features(12, 16, 0), _features(12, 16, 1, shift=0.5)
    mean, std = kid.kid_from_features(x, y, subsets=1, subset_size=12)
    reference = float(poly_mmd(torch.from_numpy(x), torch.from_numpy(y)))
    assert mean == pytest.approx(reference, rel=1e-12, abs=1e-15) and std == 0.0
    assert mean == pytest.approx(_double_loop_mmd2(x, y), rel=1e-12)
    again, _ = kid.kid_from_features(x, y, subsets=7, subset_size=100)  # capped at 12: every subset is everything
    assert again == pytest.approx(mean, rel=1e-12)


@pytest.mark.parametrize("gram", [True, False])
def test_subsets_mean_and_std_equal_torchmetrics_poly_mmd_on_the_same_draws(gram, monkeypatch):
    """Each subset is torchmetrics' poly_mmd on the rows numpy's default_rng(seed) draws; std has ddof 0 (theirs)."""
    if not gram:
        monkeypatch.setattr(kid, "_GRAM_LIMIT", 0)  # the per-subset kernels of large sets
    x, y = _features(40, 32, 2), _features(30, 32, 3, shift=0.3)
    mean, std = kid.kid_from_features(x, y, subsets=20, subset_size=10, seed=5)
    rng = np.random.default_rng(5)
    values = []
    for _ in range(20):
        i, j = rng.choice(40, 10, replace=False), rng.choice(30, 10, replace=False)
        values.append(poly_mmd(torch.from_numpy(x[i]), torch.from_numpy(y[j])))
    values = torch.stack(values)
    assert mean == pytest.approx(float(values.mean()), rel=1e-10)
    assert std == pytest.approx(float(values.std(unbiased=False)), rel=1e-8)


def test_mean_agrees_with_torchmetrics_metric_class():
    """torchmetrics' own KernelInceptionDistance (identity features, its own torch.randperm subsets)."""
    x, y = _features(60, 32, 4), _features(60, 32, 5, shift=0.4)
    metric = KernelInceptionDistance(feature=torch.nn.Identity(), subsets=200, subset_size=30)
    metric.update(torch.from_numpy(y), real=True)
    metric.update(torch.from_numpy(x), real=False)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        theirs_mean, theirs_std = (float(v) for v in metric.compute())
    mean, std = kid.kid_from_features(x, y, subsets=200, subset_size=30)
    assert mean > 10 * std / np.sqrt(200)  # a real difference, well resolved
    assert mean == pytest.approx(theirs_mean, abs=4 * np.hypot(std, theirs_std) / np.sqrt(200))
    assert std == pytest.approx(theirs_std, rel=0.35)


def test_kid_is_seeded_and_leaves_the_global_rngs_alone():
    x, y = _features(50, 8, 6), _features(50, 8, 7)
    np_state, torch_state = np.random.get_state()[1].copy(), torch.get_rng_state().clone()
    first = kid.kid_from_features(x, y, subsets=10, subset_size=20, seed=3)
    assert kid.kid_from_features(x, y, subsets=10, subset_size=20, seed=3) == first
    assert kid.kid_from_features(x, y, subsets=10, subset_size=20, seed=4) != first
    assert (np.random.get_state()[1] == np_state).all() and torch.equal(torch.get_rng_state(), torch_state)
    assert kid.kid_subset_size(747, 747, 1000) == 747 and kid.kid_subset_size(5000, 3000, 1000) == 1000
    assert kid.kid_subset_size(747, 747) == 373 and kid.kid_subset_size(3, 64) == 2  # default: half the smaller set
    assert kid.kid_subset_size(2000, 2000) == 1000 and kid.kid_subset_size(5000, 3000) == 1000


def test_kid_refuses_bad_arguments():
    x = _features(5, 4, 0)
    with pytest.raises(ConfigError, match="subsets must be an integer >= 1, got 0"):
        kid.kid_from_features(x, x, subsets=0)
    with pytest.raises(ConfigError, match="subset size must be an integer >= 2, got 1"):
        kid.kid_from_features(x, x, subset_size=1)
    with pytest.raises(DataError, match="same D"):
        kid.kid_from_features(x, _features(5, 3, 0))
    with pytest.raises(DataError, match="at least 2 feature rows"):
        kid.kid_from_features(x[:1], x)
    with pytest.raises(DataError, match="NaN or inf"):
        kid.kid_from_features(np.full((3, 4), np.nan), x)


# ----------------------------------------------------------------------------- the lab CSV


def _write_csv(path: Path, images_hwc: np.ndarray, header: list[str] | None = None, ids: bool = False) -> Path:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header if header is not None else (["id"] if ids else []) + [f"pixel_{k}" for k in range(PIXELS)])
        for i, image in enumerate(images_hwc):
            w.writerow(([f"img{i}"] if ids else []) + image.reshape(-1).tolist())
    return path


def test_lab_csv_round_trips_in_hwc_order(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(5, 64, 64, 3), dtype=np.uint8)  # (N, H, W, C) as PIL/numpy hold them
    got = read_lab_csv(_write_csv(tmp_path / "test_gt.csv", images))
    assert got.dtype == torch.uint8 and got.shape == (5, 3, 64, 64)
    assert torch.equal(got, torch.from_numpy(images).permute(0, 3, 1, 2))
    assert got[2, 1, 10, 20] == images[2, 10, 20, 1]  # column (10*64 + 20)*3 + 1 = green of row 10, column 20
    assert torch.equal(read_lab_csv(_write_csv(tmp_path / "ids.csv", images, ids=True)), got)
    planar = _write_csv(tmp_path / "chw.csv", images.transpose(0, 3, 1, 2))
    assert torch.equal(read_lab_csv(planar, order="chw"), got)
    numbered = _write_csv(tmp_path / "numbered.csv", images, header=[str(k) for k in range(PIXELS)])
    assert torch.equal(read_lab_csv(numbered), got)
    (tmp_path / "floats.csv").write_text(",".join(f"p{k}" for k in range(PIXELS)) + "\n"
                                         + ",".join(f"{v}.0" for v in images[0].reshape(-1)) + "\n\n")
    assert torch.equal(read_lab_csv(tmp_path / "floats.csv"), got[:1])


def test_lab_csv_refuses_bad_headers_and_rows_naming_the_row(tmp_path):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(3, 64, 64, 3), dtype=np.uint8)
    bad_header = _write_csv(tmp_path / "h.csv", images, header=["a", "b", "c"])
    with pytest.raises(DataError, match="the header row has 3 columns; expected 12288 pixel columns"):
        read_lab_csv(bad_header)
    no_header = tmp_path / "no_header.csv"
    no_header.write_text("\n".join(",".join(map(str, im.reshape(-1))) for im in images) + "\n")
    with pytest.raises(DataError, match="the first row holds pixel values, not column names"):
        read_lab_csv(no_header)
    short = _write_csv(tmp_path / "short.csv", images)
    lines = short.read_text().splitlines()
    lines[2] = lines[2].rsplit(",", 5)[0]  # row 2 loses 5 values
    short.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"short.csv: row 2 \(line 3\) has 12283 pixel values; expected 12288"):
        read_lab_csv(short)
    big = _write_csv(tmp_path / "big.csv", images)
    lines = big.read_text().splitlines()
    lines[3] = "256," + lines[3].split(",", 1)[1]
    big.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"row 3 \(line 4\), column 'pixel_0' holds '256'; expected integers 0..255"):
        read_lab_csv(big)
    lines[3] = "x," + lines[3].split(",", 1)[1]
    big.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"row 3 \(line 4\), column 'pixel_0' holds 'x'"):
        read_lab_csv(big)
    only_header = _write_csv(tmp_path / "empty.csv", images[:0])
    with pytest.raises(DataError, match="has a header but no image rows"):
        read_lab_csv(only_header)
    with pytest.raises(DataError, match="does not exist"):
        read_lab_csv(tmp_path / "missing.csv")


# ----------------------------------------------------------------------------- .npz statistics


def test_saved_stats_are_pytorch_fids_format(tmp_path):
    """Saved statistics load with pytorch-fid's own reader, and its Frechet distance equals ours."""
    f1, f2 = _features(80, 48, 8), _features(70, 48, 9, shift=0.2)
    a = fid_stats.save_fid_stats(tmp_path / "a.npz", *fid.feature_statistics(f1))
    b = fid_stats.save_fid_stats(tmp_path / "b.npz", *fid.feature_statistics(f2))
    with np.load(a) as z:
        assert sorted(z.files) == ["mu", "sigma"]
    m1, s1 = compute_statistics_of_path(str(a), None, 50, 48, "cpu")  # pytorch-fid's .npz branch
    m2, s2 = compute_statistics_of_path(str(b), None, 50, 48, "cpu")
    with pytest.warns(DeprecationWarning):  # pytorch-fid passes sqrtm's deprecated disp=
        theirs = calculate_frechet_distance(m1, s1, m2, s2)
    assert fid.frechet_distance_from_features(f1, f2) == pytest.approx(theirs, rel=1e-6)
    assert fid.frechet_distance(*fid_stats.read_fid_stats(a), *fid_stats.read_fid_stats(b)) == pytest.approx(
        theirs, rel=1e-6)
    for n in (5, 30):  # statistics against features: the (N2,N2) shortcut equals the full formula
        f3 = _features(n, 48, 10, shift=0.1)
        assert fid.frechet_distance_to_features(m1, s1, f3) == pytest.approx(
            fid.frechet_distance(m1, s1, *fid.feature_statistics(f3)), rel=1e-6)
    with pytest.raises(ConfigError, match="already exists; choose a new file"):
        fid_stats.save_fid_stats(a, m1, s1)
    with pytest.raises(ConfigError, match="must end in .npz"):
        fid_stats.check_stats_path(tmp_path / "a.txt")


def test_bad_stats_files_are_refused(tmp_path):
    np.savez(tmp_path / "keys.npz", m=np.zeros(3))
    with pytest.raises(DataError, match=r"holds arrays \['m'\]; expected pytorch-fid's statistics"):
        fid_stats.read_fid_stats(tmp_path / "keys.npz")
    np.savez(tmp_path / "shape.npz", mu=np.zeros(3), sigma=np.eye(4))
    with pytest.raises(DataError, match=r"holds mu \(3,\) and sigma \(4, 4\)"):
        fid_stats.read_fid_stats(tmp_path / "shape.npz")
    np.savez(tmp_path / "nan.npz", mu=np.full(2, np.nan), sigma=np.eye(2))
    with pytest.raises(DataError, match="NaN or inf"):
        fid_stats.read_fid_stats(tmp_path / "nan.npz")
    (tmp_path / "junk.npz").write_text("not a zip")
    with pytest.raises(DataError, match="is not a readable .npz statistics file"):
        fid_stats.read_fid_stats(tmp_path / "junk.npz")
    with pytest.raises(DataError, match="statistics file .* does not exist"):
        fid.open_fid_input(tmp_path / "missing.npz")


# ----------------------------------------------------------------------------- maskgit fid, real Inception


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """Temporary TORCH_HOME (verified weights) and cache, one thread, two folders of 6 images."""
    root = tmp_path_factory.mktemp("kid")
    installed = inception.inception_weights_path()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TORCH_HOME", str(root / "torch"))
        mp.setenv("MASKGIT_CACHE", str(root / "cache"))
        mp.setattr(torch.hub, "download_url_to_file", lambda *a, **k: pytest.fail("download attempted"))
        if installed.is_file():  # ensure_inception_weights checks its SHA-256 and rebuilds a bad copy
            inception.inception_weights_path().parent.mkdir(parents=True)
            shutil.copyfile(installed, inception.inception_weights_path())
        inception._shared_inception.cache_clear()
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        inception.ensure_inception_weights()
        rng = np.random.default_rng(0)
        folders = {}
        for name, smooth in (("a", False), ("b", True)):
            folders[name] = root / name
            folders[name].mkdir()
            for i in range(6):
                ramp = np.linspace(0, 1, 64)[None, :, None] * rng.uniform(0, 255, size=(1, 1, 3))
                img = np.clip(ramp + rng.normal(0, 10, (64, 64, 3)), 0, 255) if smooth else rng.integers(0, 256,
                                                                                                        (64, 64, 3))
                Image.fromarray(img.astype(np.uint8)).save(folders[name] / f"image_{i:03d}.png")
        yield {"root": root, **folders}
        torch.set_num_threads(threads)
        inception._shared_inception.cache_clear()


def _run(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main(["fid", *map(str, argv), "--device", "cpu"])
    out, err = capsys.readouterr()
    return code, out, err


def test_fid_a_a_is_zero_and_kid_is_near_zero(env, capsys):
    code, out, err = _run(capsys, env["a"], env["a"])
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "FID: 0.000000"
    m = re.fullmatch(r"KID: (\S+) ± (\S+) \(subsets 100 x size 3\)", lines[1])
    mean, std = float(m.group(1)), float(m.group(2))
    code, out, _ = _run(capsys, env["a"], env["b"])
    m2 = re.search(r"KID: (\S+) ± (\S+)", out)
    ab = float(m2.group(1))
    assert ab > 0.05 and abs(mean) < 0.1 * ab and std < ab  # A vs A: mean ~0; A vs B: clearly positive
    feats_a, feats_b = fid.folder_features(env["a"], device="cpu"), fid.folder_features(env["b"], device="cpu")
    assert ab == pytest.approx(kid.kid_from_features(feats_a, feats_b)[0], rel=1e-4, abs=1e-6)


def test_stats_round_trip_and_lab_csv_through_the_cli(env, capsys, tmp_path):
    code, out, err = _run(capsys, env["a"], env["b"], "--save-stats", tmp_path / "a.npz", "--no-kid")
    assert code == 0, err
    assert "KID" not in out
    fid_ab = float(re.search(r"FID: (\S+)", out).group(1))
    assert f"saved the statistics of {env['a']} to {tmp_path / 'a.npz'}" in out
    with np.load(tmp_path / "a.npz") as z:
        assert sorted(z.files) == ["mu", "sigma"] and z["mu"].shape == (2048,) and z["sigma"].shape == (2048, 2048)
        np.testing.assert_allclose(z["mu"], fid.folder_features(env["a"], device="cpu").mean(0), atol=1e-6)
    code, out, err = _run(capsys, tmp_path / "a.npz", env["b"])
    assert code == 0, err
    assert float(re.search(r"FID: (\S+)", out).group(1)) == pytest.approx(fid_ab, rel=1e-5)
    assert out.splitlines()[1].startswith("KID: - (KID needs image folders")
    code, _, err = _run(capsys, env["a"], env["b"], "--save-stats", tmp_path / "a.npz")
    assert code == 2 and "already exists" in err
    code, out, err = _run(capsys, tmp_path / "a.npz", "--save-stats", tmp_path / "c.npz")  # GT optional
    assert code == 0 and "FID" not in out
    with np.load(tmp_path / "a.npz") as z, np.load(tmp_path / "c.npz") as c:
        assert np.array_equal(z["mu"], c["mu"]) and np.array_equal(z["sigma"], c["sigma"])

    images = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in sorted(env["a"].glob("*.png"))])
    lab = _write_csv(tmp_path / "test_gt.csv", images)
    code, out, err = _run(capsys, env["a"], lab)
    assert code == 0, err
    assert float(re.search(r"FID: (\S+)", out).group(1)) < 1e-3  # the same images as a tensor: FID ~0
    assert "(subsets 100 x size 3)" in out
    code, _, err = _run(capsys, env["a"], tmp_path / "short.csv")
    assert code == 2 and "short.csv does not exist" in err


def test_fid_flags_are_checked_before_any_image(tmp_path, capsys):
    assert cli.main(["fid", str(tmp_path)]) == 2
    assert "maskgit fid needs PRED and GT (or PRED and --save-stats OUT.npz)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["fid", "a", "b", "--kid-subset-size", "1"])
    assert "argument --kid-subset-size: must be an integer >= 2, got 1" in capsys.readouterr().err
    assert cli.main(["fid", str(tmp_path), str(tmp_path), "--save-stats", str(tmp_path / "s.txt")]) == 2
    assert "must end in .npz" in capsys.readouterr().err
