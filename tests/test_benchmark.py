"""Tests for maskgit_lib.benchmark: metrics, row plans, shared decoding, an end-to-end tiny run, caching."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage.metrics import structural_similarity

from maskgit_lib import cli
from maskgit_lib.evaluation import benchmark, fid, kid, report, tracks
from maskgit_lib.evaluation import rows as plans
from maskgit_lib.config import TransformerConfig, VQGANConfig
from maskgit_lib.data import from_uint8, to_uint8
from maskgit_lib.inpaint import Inpainter, InpaintSettings, batch_seed
from maskgit_lib.transformer import MaskGITTransformer, save_transformer
from maskgit_lib.vqgan import VQGAN, save_vqgan

S = 64


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MASKGIT_CACHE", str(tmp_path / "cache"))


def tiny_models() -> tuple[VQGAN, MaskGITTransformer]:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return VQGAN(VQGANConfig.preset("tiny")).eval(), MaskGITTransformer(TransformerConfig.preset("tiny")).eval()


def write_dataset(root: Path, n: int = 4) -> Path:
    """root/test/{gt,masked_image,mask64} with n smooth images and holes of different sizes."""
    g = torch.Generator().manual_seed(3)
    ramp = torch.linspace(0, 1, S)
    gt = (255 * torch.rand(n, 3, 1, 1, generator=g) * ramp[None, None, :, None] * ramp.flip(0)).round().byte()
    for sub in ("gt", "masked_image", "mask64"):
        (root / "test" / sub).mkdir(parents=True)
    for i in range(n):
        missing = np.zeros((S, S), bool)
        missing[8 + 4 * i:30 + 4 * i, 10:40] = True
        masked = np.where(missing[..., None], 128, gt[i].permute(1, 2, 0).numpy()).astype(np.uint8)
        Image.fromarray(gt[i].permute(1, 2, 0).numpy()).save(root / "test" / "gt" / f"image_{i:03d}.png")
        Image.fromarray(masked).save(root / "test" / "masked_image" / f"image_{i:03d}.png")
        Image.fromarray(np.where(missing, 0, 255).astype(np.uint8), "L").save(root / "test" / "mask64" / f"mask_{i:03d}.png")
    return root


@pytest.fixture
def setup(tmp_path):
    vq, tf = tiny_models()
    save_vqgan(vq, tmp_path / "vq.safetensors")
    save_transformer(tf, tmp_path / "tf.safetensors")
    return {"data": write_dataset(tmp_path / "ds"), "vq": tmp_path / "vq.safetensors",
            "tf": tmp_path / "tf.safetensors", "out": tmp_path / "results"}


def test_hole_metrics_on_hand_examples():
    gt = torch.full((3, 3, 4, 4), 100, dtype=torch.uint8)
    pixel_missing = torch.zeros(3, 4, 4, dtype=torch.bool)
    pixel_missing[0, :2] = True  # image 0: off by 10 in its hole, and 50 outside it (ignored)
    pixel_missing[1, 0, 0] = True  # image 1: exact in its hole
    pred = gt.clone()
    pred[0] += 50
    pred[0, :, :2] = 110
    m = tracks.hole_metrics(pred, gt, pixel_missing)  # image 2 has no hole: skipped
    assert m["images_with_hole"] == 2
    assert m["l1_hole"] == pytest.approx((10 / 255 + 0) / 2)
    assert m["psnr_hole_db"] == pytest.approx((10 * math.log10(255 ** 2 / 100) + 100.0) / 2)
    assert tracks.hole_metrics(pred, gt, torch.zeros_like(pixel_missing))["psnr_hole_db"] is None
    assert tracks.hole_metrics(pred, gt, torch.zeros_like(pixel_missing))["ssim"] is None
    assert tracks.hole_metrics(gt, gt, pixel_missing)["ssim"] == tracks.hole_metrics(gt, gt, pixel_missing)[
        "ssim_hole"] == 1.0  # image 1 is exact, image 0 is not
    assert m["ssim"] < 1.0 and m["ssim_hole"] < 1.0


def test_ssim_hole_sees_damage_in_the_hole_more_than_whole_image_ssim():
    """64x64 textures, noise added inside a 16x16 hole only: whole-image SSIM barely drops, the hole's does."""
    g = torch.Generator().manual_seed(0)
    gt = torch.randint(0, 256, (2, 3, S, S), generator=g, dtype=torch.uint8)
    pixel_missing = torch.zeros(2, S, S, dtype=torch.bool)
    pixel_missing[:, 24:40, 24:40] = True
    pred = gt.clone()
    pred[:, :, 24:40, 24:40] = torch.randint(0, 256, (2, 3, 16, 16), generator=g, dtype=torch.uint8)
    m = tracks.hole_metrics(pred, gt, pixel_missing)
    whole = [structural_similarity(gt[i].permute(1, 2, 0).numpy(), pred[i].permute(1, 2, 0).numpy(),
                                   channel_axis=2, data_range=255) for i in range(2)]
    assert m["ssim"] == pytest.approx(float(np.mean(whole)), rel=1e-12)  # skimage's own score, 7x7 windows
    assert m["ssim_hole"] < 0.3 < 0.8 < m["ssim"] < 1.0  # noise in the hole; its edge windows see known pixels


def test_row_plans():
    quick = plans.plan_rows("quick", ("freeform",))
    labels = [r.label for r in quick]
    assert "maskgit cosine T=8" in labels and "maskgit cosine T=12 s=8" in labels and "maskgit cosine T=8 raw" in labels
    assert "baseline telea" in labels and "VQGAN ceiling (GT recon, raw)" in labels
    for profile in ("quick", "full", "complete"):
        planned = plans.plan_rows(profile)
        assert len({(r.track, r.label) for r in planned}) == len(planned)  # no duplicates
        assert sum(r.method == "maskgit" and r.settings.steps == 1 for r in planned) == 1  # once, free-form
    complete = plans.plan_rows("complete", ("freeform",))
    steps = {(r.settings.schedule, r.settings.steps) for r in complete if r.method == "maskgit"}
    assert {("square", 16), ("linear", 4), ("exp", 8)} <= steps
    assert {r.track for r in plans.plan_rows("full")} == set(plans.TRACKS)
    headline = [r.label for r in plans.plan_rows("headline", ("freeform",)) if r.method == "maskgit"]
    assert headline == ["maskgit cosine T=8", "maskgit cosine T=8 paste-blend", "maskgit cosine T=8 official-conf",
                        "maskgit cosine T=8 official-conf temp=0", "maskgit cosine T=8 gray-fill paste-blend"]
    assert "maskgit cosine T=8 raw" in labels and "maskgit cosine T=8 paste-blend" in labels  # raw: no blend label
    assert len({(r.track, r.label) for r in plans.plan_rows("headline")}) == len(plans.plan_rows("headline"))


def test_profiles_are_exclusive(capsys):
    assert cli.main(["benchmark", "--quick", "--headline"]) != 0
    assert "choose one of --quick, --headline, --complete (got quick, headline)" in capsys.readouterr().err


def test_shared_decoding_equals_separate_runs(setup):
    """Sweet-spot, raw and paste rows cut from one decoding equal Inpainter.inpaint with their own settings."""
    inpainter = Inpainter(*tiny_models(), device="cpu")
    data = tracks.load_tracks(setup["data"], ("freeform",), None)["freeform"]
    rows = [plans.Row("freeform", "maskgit", InpaintSettings(steps=4, **kw))
            for kw in ({}, {"sweet_spot": 2}, {"sweet_spot": 2, "composite": False}, {"composite": False},
                       {"blend": "paste"}, {"sweet_spot": 2, "blend": "paste"})]
    assert len({r.group() for r in rows}) == 1
    out = benchmark.run_maskgit_group(inpainter, data, rows, batch_size=3, seed=5)
    for row in rows:
        expected = []
        for k, lo in enumerate(range(0, 4, 3)):
            gen = torch.Generator().manual_seed(batch_seed(5, k))
            res = inpainter.inpaint(from_uint8(data.inputs[lo:lo + 3]), data.pixel_missing[lo:lo + 3],
                                    row.settings, gen)
            expected.append(to_uint8(res.images))
        assert torch.equal(out[row][0], torch.cat(expected)), row.label
        assert out[row][1] > 0
    again = benchmark.run_maskgit_group(inpainter, data, rows, batch_size=3, seed=5)
    assert all(torch.equal(again[r][0], out[r][0]) for r in rows)  # deterministic on the CPU


def test_one_step_is_the_same_for_every_schedule(setup):
    inpainter = Inpainter(*tiny_models(), device="cpu")
    images, pm = from_uint8(torch.full((2, 3, S, S), 90, dtype=torch.uint8)), torch.zeros(2, S, S, dtype=torch.bool)
    pm[:, 10:30, 10:30] = True
    outs = [inpainter.inpaint(images, pm, InpaintSettings(steps=1, schedule=s)).images for s in ("cosine", "linear")]
    assert torch.equal(*outs)


def run_cli(setup, *extra) -> int:
    return cli.main(["benchmark", "--quick", "--data", str(setup["data"]), "--vqgan-checkpoint", str(setup["vq"]),
                     "--transformer-checkpoint", str(setup["tf"]), "--out", str(setup["out"]), "--device", "cpu",
                     "--batch-size", "3", *extra])


@pytest.mark.slow
def test_end_to_end_quick_run_writes_reports_and_resumes(setup, capsys):
    assert run_cli(setup, "--no-fid", "--tracks", "freeform,box") == 0
    out = setup["out"]
    report = json.loads((out / "benchmark_quick.json").read_text())
    assert {"profile", "command", "machine", "torch", "checkpoints", "images", "wall_seconds", "seed"} <= set(
        report["meta"])
    assert report["meta"]["images"] == {"freeform": 4, "box": 4} and report["meta"]["profile"] == "quick"
    assert "--no-fid" in report["meta"]["command"]
    rows = report["rows"]
    assert {r["track"] for r in rows} == {"freeform", "box"} and not any(r["from_cache"] for r in rows)
    for r in rows:
        assert {"label", "settings", "images", "fid", "psnr_hole_db", "l1_hole", "seconds_per_image"} <= set(r)
        assert r["images"] == 4 and r["fid"] is None and r["psnr_hole_db"] > 0
    md = (out / "benchmark_quick.md").read_text()
    assert "## Headline" in md and "## Track: freeform" in md and "## Track: box" in md
    assert (out / "gallery_quick.png").is_file() and (out / "schedule_steps_quick.png").is_file()
    assert "Headline" in capsys.readouterr().out

    assert run_cli(setup, "--no-fid", "--tracks", "freeform,box", "--no-figures") == 0  # all rows cached now
    again = json.loads((out / "benchmark_quick.json").read_text())["rows"]
    assert all(r["from_cache"] for r in again)
    assert [(r["id"], r["psnr_hole_db"], r["seconds_inpaint"]) for r in again] == [
        (r["id"], r["psnr_hole_db"], r["seconds_inpaint"]) for r in rows]
    cached = list((Path(setup["out"]).parent / "cache" / "benchmark" / "rows").glob("*.npz"))
    assert len(cached) == len(rows)
    for path in cached:  # forget the raw row: its group is decoded again, the composited row is checked
        spec = json.loads(str(np.load(path)["spec"]))
        if spec["settings"] and not spec["settings"]["composite"] and spec["track"] == "freeform":
            path.unlink()
    assert run_cli(setup, "--no-fid", "--tracks", "freeform", "--no-figures") == 0
    third = {r["label"]: r for r in json.loads((out / "benchmark_quick.json").read_text())["rows"]}
    assert not third["maskgit cosine T=8 raw"]["from_cache"]
    assert third["maskgit cosine T=8"]["from_cache"] and third["maskgit cosine T=8"]["recomputed_matches_cache"]


def test_fid_path_with_a_stand_in_network(setup, monkeypatch):
    """The FID code path end to end, with a cheap stand-in for Inception (the real one takes minutes here)."""
    proj = torch.randn(3 * 8 * 8, 2048, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def fake_features(images, batch_size=50, device=None):
        if not isinstance(images, torch.Tensor):
            files = fid.list_fid_images(images) if isinstance(images, (str, Path)) else images
            images = torch.stack([torch.from_numpy(np.array(Image.open(p).convert("RGB"))).permute(2, 0, 1)
                                  for p in files])
        small = torch.nn.functional.avg_pool2d(images.double() / 255, 8).flatten(1)  # (N, 192)
        return (small @ proj).numpy()

    monkeypatch.setattr(fid, "inception_features", fake_features)  # folder_features looks it up in fid
    monkeypatch.setattr(tracks, "inception_features", fake_features)  # the benchmark's own features()
    assert run_cli(setup, "--tracks", "freeform", "--no-figures") == 0
    rows = json.loads((setup["out"] / "benchmark_quick.json").read_text())["rows"]
    assert all(isinstance(r["fid"], float) and r["fid"] >= -1e-6 for r in rows)
    assert all(isinstance(r["kid"], float) and r["kid_std"] >= 0.0 for r in rows)
    assert all(0.0 < r["ssim"] <= 1.0 and 0.0 < r["ssim_hole"] <= 1.0 for r in rows)
    by_id = {r["id"]: r for r in rows}
    gt_feats = tracks.gt_features(tracks.load_tracks(setup["data"], ("freeform",), None)["freeform"],
                                  torch.device("cpu"))
    ceiling = by_id["freeform/VQGAN ceiling (GT recon, raw)"]
    raw = torch.from_numpy(np.load(next(p for p in (Path(setup["out"]).parent / "cache" / "benchmark" / "rows")
                                        .glob("*.npz") if json.loads(str(np.load(p)["spec"]))["method"]
                                        == "vqgan_raw"))["outputs"])
    feats = tracks.features(raw, torch.device("cpu"))
    assert ceiling["fid"] == fid.frechet_distance_from_features(feats, gt_feats)  # FID as before
    assert (ceiling["kid"], ceiling["kid_std"]) == kid.kid_from_features(feats, gt_feats)  # same features
    md = (setup["out"] / "benchmark_quick.md").read_text()
    assert "| FID | KID x 1000 (± std) | PSNR hole (dB) | L1 hole | SSIM | SSIM hole |" in md
    assert f"{1000 * ceiling['kid']:.2f} ± {1000 * ceiling['kid_std']:.2f}" in md
    fig = report.fid_vs_steps_figure(rows)
    labels = [line.get_label() for line in fig.axes[0].get_lines()]
    assert {"cosine", "linear", "square"} <= set(labels) and any("baseline" in label for label in labels)
    assert not (setup["out"] / "fid_vs_steps_quick.png").exists()
    by = {r["label"]: r for r in rows}
    assert by["maskgit cosine T=8"]["fid_seconds"] is not None
