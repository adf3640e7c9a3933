"""`maskgit inpaint / generate / outpaint / demo` run in-process with tiny random-init models."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from maskgit_lib import paths
from maskgit_lib.cli import main
from maskgit_lib.outputs import claim_output_dir

S = 64


pytestmark = pytest.mark.usefixtures("one_thread")



def draw_image(i: int) -> np.ndarray:
    """uint8 (S, S, 3): a coloured disc on a tinted background."""
    yy, xx = np.mgrid[:S, :S]
    image = np.zeros((S, S, 3), np.uint8) + np.array([40 * i, 200, 255 - 50 * i], np.uint8)
    image[(yy - 32) ** 2 + (xx - 20 - 8 * i) ** 2 < 200] = (250, 120, 20)
    return image


def lab_folder(root: Path, masks: list[np.ndarray]) -> tuple[Path, Path]:
    """root/masked_image/image_NNN.png (gray holes) + root/mask64/mask_NNN.png; masks uint8 (S, S)."""
    (root / "masked_image").mkdir(parents=True)
    (root / "mask64").mkdir()
    (root / "gt").mkdir()
    for i, mask in enumerate(masks):
        image = draw_image(i)
        Image.fromarray(image).save(root / "gt" / f"image_{i:03d}.png")
        masked = np.where(mask[..., None] < 128, np.uint8(128), image)
        Image.fromarray(masked).save(root / "masked_image" / f"image_{i:03d}.png")
        Image.fromarray(mask, "L").save(root / "mask64" / f"mask_{i:03d}.png")
    return root / "masked_image", root / "mask64"


def box(value_in: int = 0, value_out: int = 255) -> np.ndarray:
    mask = np.full((S, S), value_out, np.uint8)
    mask[20:44, 12:40] = value_in
    return mask


@pytest.fixture()
def lab(tmp_path) -> tuple[Path, Path]:
    masks = [box(), np.full((S, S), 255, np.uint8), np.zeros((S, S), np.uint8)]  # box, empty, all missing
    return lab_folder(tmp_path / "lab", masks)


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def models(ckpts: Path) -> list[str]:
    return ["--device", "cpu", "--vqgan-checkpoint", str(ckpts / paths.VQGAN_CHECKPOINT_NAME),
            "--transformer-checkpoint", str(ckpts / paths.TRANSFORMER_CHECKPOINT_NAME)]


def test_inpaint_composites_and_is_deterministic(ckpts, lab, tmp_path, capsys):
    images, masks = lab
    base = ["inpaint", "--images", str(images), "--masks", str(masks), "--steps", "4", "--batch-size", "2",
            *models(ckpts)]
    code, out, _ = run(capsys, *base, "--out", str(tmp_path / "a"))
    assert code == 0 and "Inpainted 3 image(s)" in out and "empty mask" in out
    assert run(capsys, *base, "--out", str(tmp_path / "b"))[0] == 0
    assert run(capsys, *base, "--out", str(tmp_path / "raw"), "--no-composite")[0] == 0
    for i in range(3):
        name = f"image_{i:03d}.png"
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    known = box() == 255
    first = pixels(tmp_path / "a" / "image_000.png")
    assert np.array_equal(first[known], pixels(images / "image_000.png")[known])
    assert not np.array_equal(pixels(tmp_path / "raw" / "image_000.png")[known], first[known])
    assert np.array_equal(pixels(tmp_path / "a" / "image_001.png"), pixels(images / "image_001.png"))  # empty mask
    assert not np.array_equal(pixels(tmp_path / "a" / "image_002.png"), pixels(images / "image_002.png"))


def test_sweet_spot_and_trace(ckpts, lab, tmp_path, capsys):
    images, masks = lab
    code, out, _ = run(capsys, "inpaint", "--images", str(images), "--masks", str(masks), "--out", str(tmp_path / "o"),
                       "--steps", "3", "--sweet-spot", "2", "--save-trace", "--limit", "1", *models(ckpts))
    assert code == 0 and "stop after step 2" in out
    assert sorted(p.name for p in (tmp_path / "o" / "trace").iterdir()) == [
        "image_000_latent00.png", "image_000_latent01.png", "image_000_latent02.png", "image_000_latent03.png",
        "image_000_step01.png", "image_000_step02.png", "image_000_step03.png"]
    assert np.array_equal(pixels(tmp_path / "o" / "image_000.png"),
                          pixels(tmp_path / "o" / "trace" / "image_000_step02.png"))


def test_non_binary_mask_needs_threshold(ckpts, tmp_path, capsys):
    images, masks = lab_folder(tmp_path / "lab", [box(value_in=30, value_out=230)])
    argv = ["inpaint", "--images", str(images), "--masks", str(masks), "--out", str(tmp_path / "o"), "--steps", "2",
            *models(ckpts)]
    code, _, err = run(capsys, *argv)
    assert code == 2 and "mask_000.png is not binary" in err and "threshold" in err
    assert not (tmp_path / "o" / "image_000.png").exists()
    assert run(capsys, *argv, "--threshold")[0] == 0 and (tmp_path / "o" / "image_000.png").is_file()


def test_missing_mask_partner_names_the_file(ckpts, lab, tmp_path, capsys):
    images, masks = lab
    (masks / "mask_001.png").unlink()
    code, _, err = run(capsys, "inpaint", "--images", str(images), "--masks", str(masks), "--out",
                       str(tmp_path / "o"), *models(ckpts))
    assert code == 2 and "image_001.png has no mask" in err and "mask_001.png" in err


def test_mismatched_sizes_are_refused(ckpts, lab, tmp_path, capsys):
    images, masks = lab
    Image.fromarray(np.zeros((32, 32), np.uint8), "L").save(masks / "mask_000.png")
    code, _, err = run(capsys, "inpaint", "--images", str(images), "--masks", str(masks), "--out",
                       str(tmp_path / "o"), *models(ckpts))
    assert code == 2 and "32x32" in err


@pytest.mark.parametrize("out", ["images", "masks", "parent"])
def test_output_folder_may_not_hold_the_inputs(lab, out, capsys):
    images, masks = lab
    target = {"images": images, "masks": masks, "parent": images.parent}[out]
    before = sorted((p.name, p.read_bytes()) for p in images.iterdir())
    code, _, err = run(capsys, "inpaint", "--images", str(images), "--masks", str(masks), "--out", str(target))
    assert code == 2 and "refusing to write there" in err
    assert sorted((p.name, p.read_bytes()) for p in images.iterdir()) == before


@pytest.mark.parametrize("flags, message", [
    (["--steps", "-3"], "argument --steps: must be an integer >= 1, got -3"),
    (["--steps", "x"], "argument --steps: must be an integer >= 1, got 'x'"),
    (["--schedule", "zigzag"], "argument --schedule: unknown mask schedule 'zigzag'"),
    (["--sweet-spot", "0"], "argument --sweet-spot: must be an integer >= 1, got 0"),
    (["--dilate", "-1"], "argument --dilate: must be an integer >= 0, got -1"),
])
def test_bad_flag_values_are_argparse_errors(flags, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["inpaint", "--images", "a", "--masks", "b", "--out", str(tmp_path / "o"), *flags])
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_sweet_spot_after_the_last_step_is_refused(lab, tmp_path, capsys):
    images, masks = lab
    code, _, err = run(capsys, "inpaint", "--images", str(images), "--masks", str(masks), "--out",
                       str(tmp_path / "o"), "--steps", "8", "--sweet-spot", "9")
    assert code == 2 and "sweet spot must be an integer in 1..steps (1..8), got 9" in err


def test_missing_checkpoint_says_how_to_train(lab, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MASKGIT_CHECKPOINTS", str(tmp_path / "none"))
    images, masks = lab
    code, _, err = run(capsys, "inpaint", "--images", str(images), "--masks", str(masks), "--out",
                       str(tmp_path / "o"), "--device", "cpu")
    assert code == 2 and "does not exist" in err and "maskgit train-vqgan" in err


def test_generate_and_outpaint_write_files(ckpts, lab, tmp_path, capsys):
    code, out, _ = run(capsys, "generate", "--out", str(tmp_path / "gen"), "--n", "3", "--steps", "2", *models(ckpts))
    assert code == 0 and sorted(p.name for p in (tmp_path / "gen").iterdir()) == [
        ".maskgit-output.json", ".maskgit.lock", "sample_000.png", "sample_001.png", "sample_002.png"]
    assert (tmp_path / "gen_grid.png").is_file() and "grid:" in out
    images, _ = lab
    code, _, _ = run(capsys, "outpaint", "--images", str(images), "--out", str(tmp_path / "outp"), "--keep", "0.5",
                     "--steps", "2", *models(ckpts))
    assert code == 0 and len(list((tmp_path / "outp").glob("image_*.png"))) == 3
    centre = (slice(16, 48), slice(16, 48))
    assert np.array_equal(pixels(tmp_path / "outp" / "image_000.png")[centre], pixels(images / "image_000.png")[centre])
    with pytest.raises(SystemExit):
        main(["outpaint", "--images", str(images), "--out", str(tmp_path / "x"), "--keep", "1.5"])


def test_demo_without_checkpoints_explains_and_exits_0(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MASKGIT_CHECKPOINTS", str(tmp_path / "none"))
    code, out, _ = run(capsys, "demo", "--data", str(tmp_path / "data"))
    assert code == 0
    assert paths.VQGAN_CHECKPOINT_NAME in out and paths.TRANSFORMER_CHECKPOINT_NAME in out
    assert "maskgit train-vqgan" in out and "maskgit train-transformer" in out and "FID weights" in out


def test_demo_with_checkpoints(ckpts, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MASKGIT_CHECKPOINTS", str(ckpts))
    lab_folder(tmp_path / "data" / "test", [box(), box(), box()])
    (tmp_path / "results").mkdir()
    claim_output_dir(tmp_path / "results" / "demo", "inpaint")  # as an earlier, larger run left it
    Image.fromarray(draw_image(0)).save(tmp_path / "results" / "demo" / "image_002.png")  # stale earlier output
    code, out, _ = run(capsys, "demo", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "results" / "demo"),
                       "--limit", "2", "--steps", "2", "--no-fid", "--device", "cpu")
    assert code == 0 and "inpainted 2 test images" in out and "images/s" in out
    assert sorted(p.name for p in (tmp_path / "results" / "demo").iterdir()) == [
        ".maskgit-output.json", ".maskgit.lock", "image_000.png", "image_001.png"]
    assert (tmp_path / "results" / "demo_gallery.png").is_file()
