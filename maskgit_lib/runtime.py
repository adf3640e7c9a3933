"""Where and how code runs: devices, torchrun processes, seeds, precision, progress bars, the CPU.

Foundations shared by inference, training and the measurements, so that none of
them imports another for a helper:

- :func:`resolve_device` turns ``"auto"``/``"cpu"``/``"cuda:N"`` into a device (one
  rule, one message); :func:`setup_distributed` starts torchrun's process group and
  returns a :class:`DistContext`; :func:`barrier`, :func:`broadcast_floats`.
- :func:`derive_seed` makes a 63-bit seed from any parts (stable across processes);
  :func:`make_generator` a seeded ``torch.Generator``.
- :func:`autocast` (bf16) and :func:`exact_fp32` (TF32 off) for precision.
- :func:`progress_bar`: the one tqdm bar of the library (stderr, calm when not a terminal).
- :func:`cpu_info` / :func:`physical_cores`: what ``/proc/cpuinfo`` says.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from .errors import ConfigError


@dataclass(frozen=True)
class DistContext:
    """Where this process runs: its device and its place among torchrun's processes."""

    device: torch.device
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str = "auto") -> torch.device:
    """``"auto"`` -> CUDA if available, else CPU; ``"cpu"``/``"cuda"``/``"cuda:1"`` as given.

    Raises:
        ConfigError: CUDA requested but not available, or an unknown device name.
    """
    name = (name or "auto").strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"unknown device {name!r}; use auto, cpu or cuda[:N]") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name} asked for CUDA, but torch sees no GPU; use --device cpu")
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"device {name!r} is not supported; use auto, cpu or cuda[:N]")
    return device


def configure_backends(device: torch.device) -> None:
    """Fast CUDA defaults: TF32 matmuls/convolutions and cuDNN autotuning (no-op on CPU)."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True


def setup_distributed(device: str = "auto") -> DistContext:
    """Start ``torch.distributed`` when launched by torchrun, else return a single-process context.

    Args:
        device: ``auto``/``cpu``/``cuda``; under torchrun with CUDA each rank
            uses ``cuda:LOCAL_RANK`` and NCCL, on CPU gloo.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    base = resolve_device(device)
    if world <= 1 or "RANK" not in os.environ:
        configure_backends(base)
        return DistContext(base)
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if base.type == "cuda":
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
    else:
        dev = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    configure_backends(dev)
    return DistContext(dev, rank, world, local)


def cleanup_distributed() -> None:
    """Destroy the process group if one was started."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    """Wait for every rank (no-op for a single process)."""
    if ctx.distributed:
        dist.barrier(device_ids=[ctx.local_rank]) if ctx.device.type == "cuda" else dist.barrier()


def broadcast_floats(ctx: DistContext, values: Sequence[float]) -> list[float]:
    """Rank 0's ``values`` on every rank (a host sync; identity for a single process)."""
    if not ctx.distributed:
        return list(values)
    buf = torch.tensor(list(values), dtype=torch.float64, device=ctx.device)
    dist.broadcast(buf, src=0)
    return buf.cpu().tolist()


def process_start_time() -> float:
    """``time.monotonic()`` value at which this process started (Linux; else now).

    Used as the start of the ``--max-minutes`` budget so Python and torch
    imports count too. A process older than a minute (a notebook kernel, a
    test runner) is not a fresh command: then the budget starts now.
    """
    now = time.monotonic()
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        age = uptime - ticks / os.sysconf("SC_CLK_TCK")
        return now - age if 0 <= age < 60 else now
    except (OSError, ValueError, IndexError):
        return now


def derive_seed(*parts: Any) -> int:
    """A 63-bit seed from any parts (stable across processes and Python versions)."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & 0x7FFF_FFFF_FFFF_FFFF


def make_generator(seed: int, device: torch.device) -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with ``seed``."""
    return torch.Generator(device=device).manual_seed(seed)


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    """bfloat16 autocast on ``device`` when ``enabled``."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)


@contextlib.contextmanager
def exact_fp32() -> Iterator[None]:
    """Disable TF32 inside the block (validation numbers comparable to a CPU run)."""
    old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def progress_bar(total: int | None, desc: str, enabled: bool = True, initial: int = 0, unit: str = "it",
                 leave: bool = True) -> tqdm:
    """The library's tqdm bar, on stderr; refreshes at most every 30 s when stderr is not a terminal.

    Args:
        total: steps or items expected (None: unknown). desc: the bar's label.
        enabled: False gives a silent bar (other ranks, ``progress=False``).
        initial: count already done (a resumed run). unit: ``"it"``, ``"img"``...
        leave: keep the finished bar on screen.
    """
    tty = hasattr(sys.stderr, "isatty") and sys.stderr.isatty()
    return tqdm(total=total, initial=initial, disable=not enabled, desc=desc, unit=unit, dynamic_ncols=True,
                mininterval=0.5 if tty else 30.0, leave=leave)


def cpu_info() -> dict[str, str]:
    """The first value of each ``/proc/cpuinfo`` key (``model name``, ``flags``...); {} elsewhere."""
    info: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())
    return info


def physical_cores() -> int:
    """Physical cores available to this process (``/proc/cpuinfo`` core ids; else ``os.cpu_count()``)."""
    cores, current = set(), {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines() + [""]:
            key, _, value = line.partition(":")
            if not key.strip():
                if "processor" in current:
                    cores.add((current.get("physical id"), current.get("core id", current["processor"])))
                current = {}
            else:
                current[key.strip()] = value.strip()
    return len(cores) or (os.cpu_count() or 1)


def native_bf16(device: torch.device) -> bool:
    """Does the hardware run bf16 matmuls natively (CUDA bf16, or oneDNN's AVX512-BF16/AMX)?"""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False
