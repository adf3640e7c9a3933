"""Output folders: no silent overwrite, symlink loops, write failures, locks, reruns (issue: hostile sweep).

Each test drives the CLI in-process the way a user meets the case and asserts the
sentence printed, exit status 2, no traceback, and that nothing was overwritten or
left half-written. Write failures run on a real tiny tmpfs (full or read-only)
where this machine allows ``mount`` (root in a container usually does), and on a
simulated ``ENOSPC``/``EROFS`` everywhere.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from maskgit_lib.cli import main
from maskgit_lib.outputs import LOCK_NAME, MARKER_NAME, exclusive_lock
from maskgit_lib.training.logs import read_csv

pytestmark = pytest.mark.usefixtures("one_thread")

TRAIN = ["--preset", "tiny", "--device", "cpu", "--batch-size", "4", "--max-steps", "2", "--val-every", "2",
         "--ckpt-every", "2", "--log-every", "1", "--no-progress"]



@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch, ckpts):
    monkeypatch.setenv("MASKGIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MASKGIT_CHECKPOINTS", str(ckpts))


def models() -> list[str]:
    return ["--device", "cpu", "--steps", "2"]


def write_dataset(root: Path, n: int = 3, manifest: bool = True) -> Path:
    """A tiny dataset in the lab layout (test/gt, test/masked_image, test/mask64, train/), optionally with our manifest."""
    rng = np.random.default_rng(0)
    for sub in ("train", "test/gt", "test/masked_image", "test/mask64"):
        (root / sub).mkdir(parents=True)
    for i in range(n):
        image = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
        mask = np.full((64, 64), 255, np.uint8)
        mask[16:40, 20:44] = 0
        Image.fromarray(image).save(root / "train" / f"t{i}.png")
        Image.fromarray(image).save(root / "test" / "gt" / f"image_{i:03d}.png")
        masked = image.copy()
        masked[mask == 0] = 128
        Image.fromarray(masked).save(root / "test" / "masked_image" / f"image_{i:03d}.png")
        Image.fromarray(mask, "L").save(root / "test" / "mask64" / f"mask_{i:03d}.png")
    if manifest:
        (root / "manifest.json").write_text(json.dumps({"generator": "maskgit_lib.data_prep", "counts": {}}))
    return root


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def run(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, err


def inpaint_args(data: Path, out: Path) -> list[str]:
    return ["inpaint", "--images", str(data / "test" / "masked_image"), "--masks", str(data / "test" / "mask64"),
            "--out", str(out), *models()]


# ----------------------------------------------------------------------------- 2: foreign and dataset folders


@pytest.mark.parametrize("manifest", [True, False], ids=["prepare-data dataset", "lab layout"])
def test_inpaint_never_writes_into_the_ground_truth(tmp_path, capsys, manifest):
    data = write_dataset(tmp_path / "twemoji64", manifest=manifest)
    before = digests(data / "test" / "gt")
    for extra in ([], ["--overwrite"]):
        code, err = run(capsys, *inpaint_args(data, data / "test" / "gt"), *extra)
        assert code == 2 and "refusing to write there, even with --overwrite" in err
        assert "gt" in err
    assert digests(data / "test" / "gt") == before
    if manifest:  # anywhere inside a prepare-data build
        code, err = run(capsys, *inpaint_args(data, data / "test" / "predictions"))
        assert code == 2 and f"inside the dataset {data.resolve()}" in err
        assert not (data / "test" / "predictions").exists()


def test_a_folder_of_someone_elses_files_needs_overwrite(tmp_path, capsys):
    data = write_dataset(tmp_path / "data", manifest=False)
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "image_000.png").write_bytes(b"a photo I care about")
    code, err = run(capsys, *inpaint_args(data, theirs))
    assert code == 2 and "already holds 1 file(s) not written by maskgit (e.g. image_000.png)" in err
    assert "--overwrite" in err and (theirs / "image_000.png").read_bytes() == b"a photo I care about"
    code, _ = run(capsys, *inpaint_args(data, theirs), "--overwrite")
    assert code == 0 and Image.open(theirs / "image_000.png").size == (64, 64)


def test_rerunning_into_our_own_folder_works_but_another_commands_folder_is_refused(tmp_path, capsys):
    data = write_dataset(tmp_path / "data", manifest=False)
    out = tmp_path / "out"
    assert run(capsys, *inpaint_args(data, out))[0] == 0
    assert json.loads((out / MARKER_NAME).read_text())["command"] == "inpaint"
    first = digests(out)
    assert run(capsys, *inpaint_args(data, out))[0] == 0  # same command again: fine, same bytes
    assert digests(out) == first
    code, err = run(capsys, "generate", "--out", str(out), "--n", "2", *models())
    assert code == 2 and "written by `maskgit inpaint`" in err


# ----------------------------------------------------------------------------- 5: symlink loops


@pytest.mark.parametrize("which", ["--images", "--out"])
def test_a_symlink_loop_is_one_sentence(tmp_path, capsys, which):
    data = write_dataset(tmp_path / "data", manifest=False)
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    argv = inpaint_args(data, tmp_path / "out")
    argv[argv.index(which) + 1] = str(loop)
    code, err = run(capsys, *argv)
    assert code == 2 and f"{loop} is a symlink loop" in err


# ----------------------------------------------------------------------------- 6: write failures


@pytest.fixture
def tmpfs(tmp_path):
    """Mount a tiny tmpfs: ``tmpfs(size_kb, readonly)`` -> its folder; skipped where mount is not allowed."""
    mounted: list[Path] = []

    def mount(size_kb: int, readonly: bool = False) -> Path:
        where = tmp_path / f"mnt{len(mounted)}"
        where.mkdir()
        opts = f"size={size_kb}k" + (",ro" if readonly else "")
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(where)], capture_output=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
        mounted.append(where)
        return where

    yield mount
    for where in mounted:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def assert_no_partial_files(folder: Path) -> None:
    for p in folder.rglob("*"):
        assert not p.name.endswith(".tmp"), p
        if p.suffix == ".png":
            with Image.open(p) as img:
                img.load()  # a truncated PNG raises here


def test_inpaint_on_a_full_disk_says_so_and_leaves_no_truncated_png(tmp_path, capsys, tmpfs):
    data = write_dataset(tmp_path / "data", n=6, manifest=False)
    disk = tmpfs(24)  # room for the marker, the lock and a few 64x64 PNGs of noise (~12 KB each), not six
    code, err = run(capsys, *inpaint_args(data, disk / "out"))
    assert code == 2 and "cannot write" in err and "the disk is full" in err
    assert "no partial file was left" in err
    assert_no_partial_files(disk)


def test_inpaint_and_generate_on_a_read_only_folder(tmp_path, capsys, tmpfs):
    data = write_dataset(tmp_path / "data", manifest=False)
    ro = tmpfs(64, readonly=True)
    code, err = run(capsys, *inpaint_args(data, ro / "out"))
    assert code == 2 and "cannot write" in err and "read-only" in err
    code, err = run(capsys, "generate", "--out", str(ro / "gen"), "--n", "2", *models())
    assert code == 2 and "read-only" in err


@pytest.mark.parametrize("code_", [errno.ENOSPC, errno.EROFS])
def test_simulated_write_failure_of_an_image(tmp_path, capsys, monkeypatch, code_):
    """Same as the tmpfs tests without mount: PIL writes half a file, then the OS error."""
    data = write_dataset(tmp_path / "data", manifest=False)
    real_save = Image.Image.save

    def failing_save(self, fp, *args, **kwargs):
        if str(fp).endswith(".tmp") and "image_001" in str(fp):
            Path(fp).write_bytes(b"\x89PNG\r\n\x1a\n half")
            raise OSError(code_, os.strerror(code_))
        return real_save(self, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", failing_save)
    out = tmp_path / "out"
    code, err = run(capsys, *inpaint_args(data, out))
    assert code == 2 and f"cannot write {out.resolve() / 'image_001.png'}" in err
    assert ("the disk is full" if code_ == errno.ENOSPC else "read-only") in err
    assert not (out / "image_001.png").exists()
    assert_no_partial_files(out)


def test_trainer_on_a_full_disk_keeps_the_previous_state(tmp_path, capsys, tmpfs):
    data = write_dataset(tmp_path / "data", manifest=False)
    disk = tmpfs(16 * 1024)
    out = disk / "run"
    code, err = run(capsys, "train-vqgan", "--data", str(data), "--out", str(out), *TRAIN)
    assert code == 0, err
    state = (out / "state.pt").read_bytes()
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)  # fill the disk to the last byte
    try:
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)
    args = [a if a != "2" else "4" for a in TRAIN]  # continue to step 4: a new state.pt must be written
    code, err = run(capsys, "train-vqgan", "--data", str(data), "--out", str(out), *args)
    assert code == 2 and "cannot write" in err and "the disk is full" in err
    assert (out / "state.pt").read_bytes() == state  # the previous state survives, bit for bit
    assert_no_partial_files(out)


# ----------------------------------------------------------------------------- 8: one writer per folder


def test_two_inpaints_into_one_folder(tmp_path, capsys):
    data = write_dataset(tmp_path / "data", manifest=False)
    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from maskgit_lib.outputs import exclusive_lock
        with exclusive_lock({str(out)!r}, "inpaint"):
            print("locked", flush=True)
            time.sleep(60)
        """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        code, err = run(capsys, *inpaint_args(data, out))
        assert code == 2 and f"is in use by another maskgit process (pid {holder.pid}, `maskgit inpaint`)" in err
        assert not list(out.glob("*.png"))
    finally:
        holder.kill()
        holder.wait()
    assert run(capsys, *inpaint_args(data, out))[0] == 0  # the lock died with its process


def test_two_trainers_on_one_run_folder(tmp_path, capsys):
    data = write_dataset(tmp_path / "data", manifest=False)
    out = tmp_path / "run"
    with exclusive_lock(out, "train-transformer"):  # another open file description: conflicts like a process
        code, err = run(capsys, "train-vqgan", "--data", str(data), "--out", str(out), *TRAIN)
    assert code == 2 and f"is in use by another maskgit process (pid {os.getpid()}" in err
    assert not (out / "log.csv").exists()
    assert (out / LOCK_NAME).is_file()


# ----------------------------------------------------------------------------- 9: rerunning a finished run


def test_rerunning_a_finished_run_adds_no_duplicate_validation_row(tmp_path, capsys):
    data = write_dataset(tmp_path / "data", manifest=False)
    out = tmp_path / "run"
    for _ in range(2):
        assert run(capsys, "train-vqgan", "--data", str(data), "--out", str(out), *TRAIN)[0] == 0
    _, rows = read_csv(out / "log.csv")
    val_steps = [int(r["step"]) for r in rows if r.get("val_psnr")]
    assert val_steps == [2], val_steps
    steps = [int(r["step"]) for r in rows if r.get("loss")]
    assert steps == [1, 2]
    time.sleep(0)  # rows above are the whole story: one train row per step, one validation row
