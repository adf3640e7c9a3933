"""Writing files safely: atomic writes, output folders that are ours, one process at a time.

:func:`atomic_write` is how every file of the library is written: a temporary file
in the same folder, flushed to disk, then renamed over the target (``os.replace``
is atomic on POSIX), so a crash, a SIGKILL or a full disk leaves either the old
file or the new one, never half of one; a failure is one sentence
(:func:`write_failure`: read-only, full disk, permission). :func:`write_json` and
:func:`save_png` build on it.

Three rules, used by every command that writes a folder of results
(``inpaint``, ``generate``, ``outpaint``, ``demo``) and, for the lock, by the trainers:

1. **Only our own folders.** :func:`prepare_output_dir` refuses a folder that is
   (or holds) an input, lies inside a dataset (a ``maskgit prepare-data`` build, or
   one of the lab layout's ``gt/``, ``masked_image/``, ``mask64/``), or already holds
   files that this command did not write. A folder counts as written by the command
   when it carries the marker :data:`MARKER_NAME` that :func:`claim_output_dir` leaves
   there; ``overwrite=True`` (CLI ``--overwrite``) accepts any other non-empty folder,
   but never a dataset or an input.
2. **One writer.** :func:`exclusive_lock` takes an ``fcntl`` lock on ``<folder>/``
   :data:`LOCK_NAME` and names the process that holds it when it is taken.
3. **Whole files or none.** :func:`save_png` writes through
   :func:`maskgit_lib.checkpoint.atomic_write`, so a full disk or a kill leaves the
   previous file or none, never a truncated PNG.

The marker and lock files are hidden and are not images, so FID and the image
listers skip them.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
from PIL import Image

from . import __version__
from .errors import DataError, WriteError

MARKER_NAME = ".maskgit-output.json"
LOCK_NAME = ".maskgit.lock"
_OWN_FILES = frozenset({MARKER_NAME, LOCK_NAME})
LAB_TEST_FOLDERS = ("gt", "masked_image", "mask64")  # the lab's test layout: never an output
DATASET_GENERATOR = "maskgit_lib.data_prep"  # the "generator" field of a prepare-data manifest


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` then atomically move ``tmp_path`` to ``path``.

    Args:
        path: final destination; its folder is created if needed.
        write: function that writes the complete file at the path it is given.

    Returns:
        The destination path.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise write_failure(path, exc) from exc
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        try:
            write(tmp_path)
        except OSError as exc:
            raise write_failure(path, exc) from exc
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp creates 0600; give the usual mode
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()
    return path


def write_failure(path: Path, exc: BaseException) -> WriteError:
    """One sentence for a failed write: which file, why (read-only, full disk...), what survived."""
    code = getattr(exc, "errno", None)
    try:
        free: int | None = shutil.disk_usage(path.parent).free
    except OSError:
        free = None
    if code in (errno.ENOSPC, errno.EDQUOT) or (code == errno.EIO and free is not None and free < 1 << 20):
        why = f"the disk is full ({'free space unknown' if free is None else f'{free / 1e6:.2f} MB free'})"
    elif code == errno.EROFS:
        why = "the file system is read-only"
    elif code in (errno.EACCES, errno.EPERM):
        why = "permission denied"
    else:
        why = getattr(exc, "strerror", None) or str(exc)
    return WriteError(f"cannot write {path}: {why}; any earlier version of the file is unchanged and no "
                      "partial file was left. Free space or choose a writable folder, then run again.")


def write_json(path: str | os.PathLike, data: Any, *, indent: int = 2, sort_keys: bool = True) -> Path:
    """Atomically write ``data`` as indented JSON (values JSON cannot hold are written as ``str``)."""
    text = json.dumps(data, indent=indent, sort_keys=sort_keys, default=str) + "\n"
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def resolve_folder(path: str | os.PathLike, what: str = "folder") -> Path:
    """Resolve ``path`` (``~``, symlinks, ``..``); a symlink loop becomes one sentence.

    Raises:
        DataError: ``path`` is a symlink loop.
    """
    try:
        return Path(path).expanduser().resolve()
    except (RuntimeError, OSError) as exc:  # Python 3.11 raises RuntimeError("Symlink loop ...")
        raise DataError(f"{what} {path} is a symlink loop (it points back at itself); expected a real folder "
                        "or a link to one.") from exc


def dataset_root(folder: Path) -> Path | None:
    """The ``maskgit prepare-data`` dataset that ``folder`` lies in (or is), else None."""
    for candidate in (folder, *folder.parents):
        manifest = candidate / "manifest.json"
        if manifest.is_file():
            try:
                if json.loads(manifest.read_text()).get("generator") == DATASET_GENERATOR:
                    return candidate
            except (OSError, ValueError, AttributeError):
                continue
    return None


def _is_lab_test_folder(folder: Path) -> bool:
    """``folder`` is ``gt``/``masked_image``/``mask64`` beside the lab's other test folders."""
    if folder.name not in LAB_TEST_FOLDERS:
        return False
    siblings = [s for s in LAB_TEST_FOLDERS if s != folder.name]
    return any((folder.parent / s).is_dir() for s in siblings)


def read_marker(folder: Path) -> dict | None:
    """The marker :func:`claim_output_dir` left in ``folder`` (a dict), or None."""
    try:
        marker = json.loads((folder / MARKER_NAME).read_text())
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) else None


def prepare_output_dir(out_dir: str | os.PathLike, *inputs: str | os.PathLike, command: str,
                       overwrite: bool = False) -> Path:
    """Check that ``command`` may write into ``out_dir``; nothing is created here.

    Args:
        out_dir: the output folder (absent, empty, or written earlier by ``command``).
        inputs: folders the command reads; ``out_dir`` must not be or contain one.
        command: the command's name, e.g. ``"inpaint"`` (recorded in the marker).
        overwrite: accept a non-empty folder without this command's marker.

    Returns:
        The resolved output folder.

    Raises:
        DataError: a file, an input, a dataset folder, a symlink loop, or a folder
            holding files this command did not write (without ``overwrite``).
    """
    out = resolve_folder(out_dir, "output folder")
    if out.exists() and not out.is_dir():
        raise DataError(f"output path {out_dir} is a file; expected a folder (it will be created if missing).")
    for folder in inputs:
        resolved = resolve_folder(folder, "input folder")
        if out == resolved or out in resolved.parents:
            how = "is" if out == resolved else "contains"
            raise DataError(f"output folder {out_dir} {how} the input folder {folder}; refusing to write there "
                            "so that inputs are never overwritten. Choose another --out folder.")
    root = dataset_root(out)
    if root is not None or _is_lab_test_folder(out):
        where = f"inside the dataset {root} (built by maskgit prepare-data)" if root is not None else \
            f"one of the test folders {'/'.join(LAB_TEST_FOLDERS)} of the dataset in {out.parent}"
        raise DataError(f"output folder {out_dir} is {where}; refusing to write there, even with --overwrite, "
                        "so that the dataset (and the ground truth FID compares with) stays intact. "
                        "Choose an --out folder outside the dataset, e.g. results/inpainted.")
    if out.is_dir() and not overwrite:
        foreign = sorted(p.name for p in out.iterdir() if p.name not in _OWN_FILES)
        marker = read_marker(out)
        if foreign and (marker is None or marker.get("command") != command):
            by = f"written by `maskgit {marker.get('command')}`" if marker else "not written by maskgit"
            raise DataError(f"output folder {out_dir} already holds {len(foreign)} file(s) {by} "
                            f"(e.g. {foreign[0]}); refusing to overwrite them. Choose an empty or new --out "
                            f"folder, or pass --overwrite to write into it anyway.")
    return out


def make_folder(folder: Path) -> Path:
    """``mkdir -p`` whose failure (read-only, full disk, no permission) is one sentence.

    Raises:
        WriteError: the folder cannot be created.
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise write_failure(folder, exc) from exc
    return folder


def claim_output_dir(out: Path, command: str) -> Path:
    """Create ``out`` and leave the marker saying ``command`` writes there (idempotent)."""
    make_folder(out)
    marker = read_marker(out)
    if marker is None or marker.get("command") != command:
        text = json.dumps({"command": command, "written_by": f"maskgit_lib {__version__}"}, sort_keys=True)
        atomic_write(out / MARKER_NAME, lambda tmp: tmp.write_text(text + "\n"))
    return out


@contextlib.contextmanager
def exclusive_lock(folder: str | os.PathLike, command: str) -> Iterator[Path]:
    """Hold an exclusive ``fcntl`` lock on ``folder`` for the duration of the block.

    The lock file records ``<pid> <command>`` so that a second process can say who
    holds it. The lock dies with the process (also on SIGKILL): no stale locks.

    Raises:
        DataError: another process holds the lock (names its pid and command).
    """
    folder = make_folder(Path(folder))
    path = folder / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise write_failure(path, exc) from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
            pid, _, other = holder.partition(" ")
            raise DataError(f"{folder} is in use by another maskgit process (pid {pid}, `maskgit {other or '?'}`); "
                            "two runs writing one folder would mix their files. Wait for it to finish, or "
                            "choose another --out folder.") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {command}\n".encode(), 0)
        yield folder
    finally:
        os.close(fd)  # closing releases the lock


def save_png(array: np.ndarray, path: str | os.PathLike) -> Path:
    """Write a uint8 (H, W, 3) RGB or (H, W) grayscale array as a PNG, atomically."""
    mode = "RGB" if array.ndim == 3 else "L"
    image = Image.fromarray(np.ascontiguousarray(array), mode)
    return atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))
