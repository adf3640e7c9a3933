#!/usr/bin/env python3
"""GPU recipe: train the next transformer on a bare, offline GPU machine within hard time limits.

Called through ``tools/gpu_recipe.sh`` (which finds a Python with torch). Commands:

``pack OUT.tar [--data DIR] [--limit N]``
    Here, on the CPU machine that has the prepared data (``maskgit prepare-data
    --sources twemoji,openmoji,fluent``). The train and val images are decoded
    as the trainer decodes them (RGB uint8, alpha on white) and stored as xz
    streams of raw (N, 64, 64, 3) arrays: much smaller than the PNGs, which are
    already deflated. Prints the size and the carry budget (64 MiB minus the
    working tree that travels anyway).

``run OUT [--pack P] [--work W] [--budget MIN] [--chunk MIN] [--tiny]``
    There. Unpacks into W (default /tmp/maskgit_recipe, kept between calls on a
    warm machine), writes the images back as RGB PNGs (pixel-identical, checked),
    builds the token and hole-example caches once (their own step, not in the
    budget), then trains with ``--max-minutes BUDGET`` (the LR follows the
    clock over all calls) in segments of ``--stop-at-step``; a call stops
    before CHUNK minutes and the next call resumes from W/run/state.pt.
    OUT gets ``recipe.log`` (throughput, TFLOP/s, MFU), ``summary.json``,
    ``logs.tgz`` and the float16 weights (split into 15 MiB parts when larger).

``tiny OUT`` (= ``run OUT --tiny``)
    The same path on a CPU: tiny preset, a few images, a few steps.

``latency``
    Decode latency of one image at T=8 on this CPU with random weights, for the
    GPU config and the shipped ``cpu`` preset.

torch.compile: the library's trainer builds and wraps the model itself and has
no compile option, so this recipe does not compile.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import dataclasses
import hashlib
import io
import json
import lzma
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from maskgit_lib import paths  # noqa: E402
from maskgit_lib.config import TransformerConfig, config_from_dict  # noqa: E402
from maskgit_lib.data import list_images  # noqa: E402
from maskgit_lib.training.data import load_images_uint8  # noqa: E402
from maskgit_lib.transformer import flops_per_image  # noqa: E402

PACK_FORMAT = 1
CARRY_LIMIT = 64 * 2**20  # the device tool's limit on what travels: working tree + carried paths
CHUNK_IMAGES = 1024  # images per xz stream (compressed and decompressed in parallel)
SIX_VIEWS = "id,flip,small,small+flip,large,large+flip"
H200_BF16_PEAK_TFLOPS = 989.0  # NVIDIA H200 SXM datasheet, dense bf16 (KINDS.md: 788 measured on random data)
PART_BYTES = 15 * 2**20  # files back from $OUT: at most 16 MiB each, 8 files

# The GPU model: 384 wide, 12 post-norm blocks, 6 heads of 64, MLP 1536 (~22M params, 3.2x the cpu preset's
# forward FLOPs); `latency` measures its CPU decode time (the course's budget: <= 1.5 s at T=8 on 2 cores).
GPU_MODEL = TransformerConfig(dim=384, depth=12, heads=6, mlp_dim=1536, dropout=0.1, attention_dropout=0.0)
GPU_TRAIN = dict(batch_size=512, lr=5e-4, weight_decay=0.05, warmup_steps=400, val_every=1000, ckpt_every=2000,
                 log_every=20, hole_fraction=0.5, hole_variants=4, token_views=tuple(SIX_VIEWS.split(",")),
                 bf16=True)
TINY_TRAIN = dict(batch_size=8, lr=1e-3, weight_decay=0.01, warmup_steps=2, val_every=1000, ckpt_every=1000,
                  log_every=1, hole_fraction=0.5, hole_variants=2, token_views=("id", "flip"), bf16=False)


def say(msg: str, log: Path | None = None) -> None:
    line = f"[gpu_recipe {time.strftime('%H:%M:%S')}] {msg}"
    print(line, flush=True)
    if log is not None:
        with open(log, "a") as fh:
            fh.write(line + "\n")


def mib(n: int) -> str:
    return f"{n / 2**20:.2f} MiB"


def tree_bytes() -> int:
    """Bytes of the working tree that travels anyway (tracked + untracked, not ignored)."""
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True,
                         capture_output=True).stdout.decode()
    return sum((ROOT / p).stat().st_size for p in out.split("\0") if p and (ROOT / p).is_file())


# ----------------------------------------------------------------------------------------------- pack / unpack
def _xz(block: bytes) -> bytes:
    return lzma.compress(block, preset=6)


def cmd_pack(args: argparse.Namespace) -> int:
    t0 = time.monotonic()
    data = Path(args.data)
    out = Path(args.out)
    meta = {"format": PACK_FORMAT, "source": str(data), "splits": {}}
    members: list[tuple[str, bytes]] = []
    for split in ("train", "val"):
        files = list_images(data / split)
        if args.limit:
            files = files[:args.limit]
        images = load_images_uint8(files).permute(0, 2, 3, 1).contiguous().numpy()  # (N, 64, 64, 3) uint8
        raw = images.tobytes()
        blocks = [images[i:i + CHUNK_IMAGES].tobytes() for i in range(0, len(images), CHUNK_IMAGES)]
        with cf.ProcessPoolExecutor(max(1, os.cpu_count() or 1)) as pool:
            packed = list(pool.map(_xz, blocks))
        names = [f"{split}.{i:03d}.xz" for i in range(len(packed))]
        members += list(zip(names, packed))
        artists: dict[str, int] = {}
        for f in files:
            artist = f.name.split("_", 1)[0] if f.name.split("_", 1)[0] in ("openmoji", "fluent") else "twemoji"
            artists[artist] = artists.get(artist, 0) + 1
        meta["splits"][split] = {"names": [f.name for f in files], "shape": list(images.shape),
                                 "sha256": hashlib.sha256(raw).hexdigest(), "members": names,
                                 "raw_bytes": len(raw), "packed_bytes": sum(map(len, packed)), "artists": artists}
        print(f"{split}: {len(files)} images {artists}, raw {mib(len(raw))} -> xz {mib(sum(map(len, packed)))}")
    body = json.dumps(meta).encode()
    tmp = out.with_name(out.name + ".tmp")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tmp, "w") as tar:
        for name, blob in [("meta.json", body), *members]:
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    tmp.replace(out)
    size, tree = out.stat().st_size, tree_bytes()
    print(f"packed {out}: {mib(size)} ({size} bytes) in {time.monotonic() - t0:.1f} s")
    print(f"carry budget: {mib(CARRY_LIMIT)} - working tree {mib(tree)} = {mib(CARRY_LIMIT - tree)}; "
          f"this pack leaves {mib(CARRY_LIMIT - tree - size)}")
    return 0 if size + tree <= CARRY_LIMIT else 1


def _unxz(blob: bytes) -> bytes:
    return lzma.decompress(blob)


def _write_png(path: Path, pixels: np.ndarray) -> None:
    Image.fromarray(pixels, "RGB").save(path, compress_level=1)


def unpack(pack: Path, data: Path, log: Path) -> dict:
    """Pack -> data/{train,val}/*.png (skipped when data already holds this pack); returns the meta."""
    digest = hashlib.sha256(pack.read_bytes()).hexdigest()
    done = data / "unpacked.json"
    if done.exists() and json.loads(done.read_text()).get("pack_sha256") == digest:
        say(f"data already unpacked in {data}", log)
        return json.loads(done.read_text())
    t0 = time.monotonic()
    if data.exists():
        shutil.rmtree(data)
    with tarfile.open(pack) as tar:
        blobs = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    meta = json.loads(blobs["meta.json"])
    if meta.get("format") != PACK_FORMAT:
        raise SystemExit(f"gpu_recipe: {pack} has pack format {meta.get('format')}, expected {PACK_FORMAT}")
    workers = max(1, min(16, os.cpu_count() or 1))
    for split, info in meta["splits"].items():
        with cf.ProcessPoolExecutor(workers) as pool:
            raw = b"".join(pool.map(_unxz, [blobs[n] for n in info["members"]]))
        if hashlib.sha256(raw).hexdigest() != info["sha256"]:
            raise SystemExit(f"gpu_recipe: {pack}: the {split} images do not match their SHA-256")
        images = np.frombuffer(raw, dtype=np.uint8).reshape(info["shape"])
        folder = data / split
        folder.mkdir(parents=True)
        with cf.ThreadPoolExecutor(workers) as pool:
            list(pool.map(_write_png, [folder / n for n in info["names"]], images))
        sample = list(range(0, len(images), max(1, len(images) // 256)))  # the trainer decodes them identically
        back = load_images_uint8([folder / info["names"][i] for i in sample]).permute(0, 2, 3, 1).numpy()
        if not np.array_equal(back, images[sample]):
            raise SystemExit(f"gpu_recipe: the {split} PNGs written to {folder} do not decode to the packed pixels")
        say(f"unpacked {split}: {len(images)} images {info['artists']}", log)
    record = {**meta, "pack_sha256": digest}
    record["splits"] = {k: {kk: vv for kk, vv in v.items() if kk != "names"} for k, v in meta["splits"].items()}
    done.write_text(json.dumps(record, indent=1))
    say(f"unpack + PNG write + check in {time.monotonic() - t0:.1f} s", log)
    return record


# ------------------------------------------------------------------------------------------------ one segment
def cmd_segment(args: argparse.Namespace) -> int:
    """One training process (spawned by ``run``): a fresh process so the trainer's clock starts at its start."""
    from maskgit_lib.training import TransformerRun, train_transformer  # noqa: PLC0415 (a tool, not library)
    import logging  # noqa: PLC0415

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stdout)
    spec = json.loads(args.spec)
    run = TransformerRun.default(preset="tiny" if spec["tiny"] else "cpu", device=spec["device"])
    train = dataclasses.replace(run.train, **{**spec["train"], "token_views": tuple(spec["train"]["token_views"])})
    run = dataclasses.replace(run, model=config_from_dict(TransformerConfig, spec["model"]), train=train,
                              data_dir=Path(spec["data"]), out_dir=Path(spec["out"]), resume=spec["resume"],
                              stop_at_step=spec["stop_at_step"], weights_dtype="float16", progress=False,
                              vqgan_checkpoint=Path(spec["vqgan"]))
    summary = train_transformer(run)
    print("SEGMENT_SUMMARY " + json.dumps({k: summary.get(k) for k in
                                            ("steps", "stop_reason", "wall_time_s", "images_per_s")}))
    return 0


def spawn(spec: dict, log: Path) -> float:
    """Run one segment in a child process, its output into the log and onto stdout; returns its wall seconds."""
    t0 = time.monotonic()
    cmd = [sys.executable, str(Path(__file__).resolve()), "_segment", json.dumps(spec)]
    with open(log, "a") as fh:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=os.environ)
        for line in proc.stdout:
            sys.stdout.write(line)
            fh.write(line)
        rc = proc.wait()
    if rc != 0:
        raise SystemExit(f"gpu_recipe: a training segment failed (exit {rc}); see {log}")
    return time.monotonic() - t0


def read_csv_rows(path: Path) -> list[dict]:
    import csv  # noqa: PLC0415

    if not path.exists():
        return []
    with open(path) as fh:
        return list(csv.DictReader(fh))


def train_rate(run_dir: Path, since_step: int) -> float | None:
    """Optimizer steps per second of wall time (validation included) over the CSV rows after ``since_step``."""
    rows = [(int(r["step"]), float(r["elapsed_s"])) for r in read_csv_rows(run_dir / "log.csv")
            if r.get("elapsed_s") and r.get("images_per_s")]
    rows = [r for r in rows if r[0] > since_step]
    if len(rows) < 3:
        return None
    (s0, e0), (s1, e1) = rows[1], rows[-1]  # rows[0] holds the first steps' start-up
    return (s1 - s0) / (e1 - e0) if e1 > e0 and s1 > s0 else None


def throughput_line(run_dir: Path, peak: float) -> str:
    summary = json.loads((run_dir / "summary.json").read_text())
    cfg = config_from_dict(TransformerConfig, summary["model_config"])
    flops = flops_per_image(cfg, training=True)
    ips = summary.get("images_per_s") or 0.0
    rates = [float(r["images_per_s"]) for r in read_csv_rows(run_dir / "log.csv") if r.get("images_per_s")]
    steady = statistics.median(rates[1:]) if len(rates) > 2 else ips
    tflops = ips * flops / 1e12
    return (f"throughput: {ips:.1f} images/s (summary.json images_per_s, this segment; median of its CSV rows "
            f"{steady:.1f}), model {flops / 1e9:.2f} GFLOP/image (flops_per_image(cfg, training=True)) -> "
            f"{tflops:.2f} TFLOP/s, MFU {100 * tflops / peak:.2f}% of {peak:.0f} TFLOP/s "
            f"(H200 dense bf16 peak assumed); steps {summary['steps']}, stop {summary['stop_reason']}, "
            f"elapsed {summary['wall_time_s']:.1f} s, device {summary['device']}")


def export(run_dir: Path, out: Path, log: Path) -> None:
    """Weights, summary and logs -> out (at most 8 files of <= 15 MiB: the device tool's return limits)."""
    for old in out.glob("transformer.safetensors*"):
        old.unlink()
    final = run_dir / "final.safetensors"
    if final.stat().st_size <= PART_BYTES:
        shutil.copyfile(final, out / "transformer.safetensors")
    else:
        blob = final.read_bytes()
        for i in range(0, len(blob), PART_BYTES):
            (out / f"transformer.safetensors.part-{i // PART_BYTES:02d}").write_bytes(blob[i:i + PART_BYTES])
        say(f"weights split into {-(-len(blob) // PART_BYTES)} parts: cat {out.name}/transformer.safetensors.part-* "
            f"> transformer.safetensors", log)
    shutil.copyfile(run_dir / "summary.json", out / "summary.json")
    state = run_dir / "state.pt"
    if state.exists() and state.stat().st_size <= PART_BYTES:
        shutil.copyfile(state, out / "state.pt")
    with tarfile.open(out / "logs.tgz", "w:gz") as tar:
        for name in ("log.csv", "curves.png", "summary.json", "plan.json"):
            if (run_dir / name).exists():
                tar.add(run_dir / name, arcname=f"run/{name}")
        for p in sorted((run_dir.parent / "prep").glob("*.json")):
            tar.add(p, arcname=f"prep/{p.name}")


# ------------------------------------------------------------------------------------------------------- run
def check_environment(tiny: bool, log: Path) -> str:
    missing = []
    for name in ("numpy", "PIL", "safetensors", "tqdm", "matplotlib", "scipy"):
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise SystemExit(f"gpu_recipe: {sys.executable} lacks {', '.join(missing)} (carry them as wheels)")
    cuda = torch.cuda.is_available()
    gpu = torch.cuda.get_device_name(0) if cuda else "none"
    say(f"python {sys.version.split()[0]} ({sys.executable}), torch {torch.__version__}, cuda {cuda}, gpu {gpu}, "
        f"{os.cpu_count()} CPUs", log)
    if tiny:
        return "cpu"
    if not cuda:
        raise SystemExit("gpu_recipe: no CUDA GPU visible to torch; use `tiny` on a CPU")
    return "cuda"


def cmd_run(args: argparse.Namespace) -> int:
    call_start = time.monotonic()
    out, work = Path(args.out).resolve(), Path(args.work).resolve()
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    log = out / "recipe.log"
    device = check_environment(args.tiny, log)
    budget_s, chunk_s = args.budget * 60.0, args.chunk * 60.0
    say(f"mode {'tiny' if args.tiny else 'gpu'}: budget {args.budget} min of training in all, "
        f"this call <= {args.chunk} min; work folder {work}", log)
    os.environ["MASKGIT_CACHE"] = str(work / "cache")
    os.environ.setdefault("OMP_NUM_THREADS", "2" if args.tiny else "8")
    pack = Path(args.pack).resolve()
    if not pack.exists():
        raise SystemExit(f"gpu_recipe: no pack {pack}; run `tools/gpu_recipe.sh pack {pack}` on the data machine")
    unpack(pack, work / "data", log)
    model = dataclasses.asdict(TransformerConfig.preset("tiny") if args.tiny else GPU_MODEL)
    train = {**(TINY_TRAIN if args.tiny else GPU_TRAIN), "max_steps": 0, "max_minutes": args.budget}
    if args.batch_size:
        train["batch_size"] = args.batch_size
    base = {"tiny": args.tiny, "device": device, "model": model, "train": train, "data": str(work / "data"),
            "vqgan": str(args.vqgan or paths.default_vqgan_checkpoint())}
    run_dir = work / "run"
    if not (work / "prep" / "summary.json").exists():  # the caches, once: not in the training budget
        wall = spawn({**base, "out": str(work / "prep"), "resume": False, "stop_at_step": None,
                      "train": {**train, "max_steps": 1, "max_minutes": 0.0}}, log)
        say(f"token and hole-example caches built (with 1 step) in {wall:.1f} s", log)
    calib = 3 if args.tiny else 100
    segment_overhead = 20.0 if args.tiny else 30.0
    while True:
        summary = json.loads((run_dir / "summary.json").read_text()) if (run_dir / "summary.json").exists() else None
        if summary and summary["stop_reason"] == "max_minutes":
            say(f"training is done ({summary['steps']} steps, {summary['wall_time_s']:.1f} s)", log)
            break
        step = summary["steps"] if summary else 0
        elapsed = summary["wall_time_s"] if summary else 0.0
        left_call = chunk_s - (time.monotonic() - call_start)
        rate = train_rate(run_dir, 0) if summary else None
        if summary is None:
            stop, why = calib, f"calibration: {calib} steps to measure the step rate"
        elif rate is None:
            stop, why = step + calib, "no step rate yet"
        elif budget_s - elapsed <= left_call - segment_overhead:
            stop, why = None, f"to the end of the budget ({budget_s - elapsed:.0f} s left)"
        else:
            steps = int(rate * (left_call - segment_overhead))
            if steps < max(20, calib // 2):
                say(f"this call's {args.chunk} min are used up: run the same command again to resume "
                    f"from step {step} ({elapsed:.0f} of {budget_s:.0f} s trained)", log)
                break
            stop, why = step + steps, f"{steps} steps at {rate:.2f} steps/s fill this call ({left_call:.0f} s left)"
        say(f"segment from step {step} to {stop if stop else 'the budget'}: {why}", log)
        wall = spawn({**base, "out": str(run_dir), "resume": True, "stop_at_step": stop}, log)
        say(throughput_line(run_dir, args.peak_tflops) + f"; segment wall {wall:.1f} s", log)
        plan = {"budget_min": args.budget, "chunk_min": args.chunk, "model": model,
                "train": {**train, "token_views": list(train["token_views"])}, "pack": str(pack)}
        (run_dir / "plan.json").write_text(json.dumps(plan, indent=1))
        export(run_dir, out, log)
        if time.monotonic() - call_start > chunk_s - segment_overhead:
            new = json.loads((run_dir / "summary.json").read_text())
            if new["stop_reason"] != "max_minutes":
                say(f"this call's {args.chunk} min are used up: run the same command again to resume from step "
                    f"{new['steps']}", log)
            break
    say(f"OUT {out}: " + ", ".join(f"{p.name} ({mib(p.stat().st_size)})" for p in sorted(out.iterdir())), log)
    return 0


# --------------------------------------------------------------------------------------------------- latency
def cmd_latency(args: argparse.Namespace) -> int:
    from maskgit_lib.inpaint import Inpainter, InpaintSettings  # noqa: PLC0415
    from maskgit_lib.masks import brush_stroke_mask  # noqa: PLC0415
    from maskgit_lib.transformer import MaskGITTransformer  # noqa: PLC0415
    from maskgit_lib.vqgan import load_vqgan  # noqa: PLC0415

    torch.set_num_threads(args.threads)
    vqgan = load_vqgan(paths.default_vqgan_checkpoint(), "cpu").eval()
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, 64, 64, generator=gen) * 2 - 1
    missing = brush_stroke_mask(64, gen)[None]
    for name, cfg in (("gpu", GPU_MODEL), ("cpu preset", TransformerConfig.preset("cpu"))):
        torch.manual_seed(0)
        model = MaskGITTransformer(cfg).eval()
        inp = Inpainter(vqgan, model, device="cpu")
        settings = InpaintSettings(steps=8)
        inp.inpaint(image, missing, settings)  # warm-up
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            inp.inpaint(image, missing, settings)
            times.append(time.perf_counter() - t0)
        params = sum(p.numel() for p in model.parameters())
        print(f"{name}: D={cfg.dim} depth={cfg.depth} heads={cfg.heads} mlp={cfg.mlp_dim}, {params / 1e6:.2f}M params, "
              f"{flops_per_image(cfg) / 1e9:.2f} GFLOP/forward; inpaint 1 image T=8 on {args.threads} threads: "
              f"median {statistics.median(times):.3f} s (min {min(times):.3f}, {args.repeats} runs)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack", help="pack the prepared data for the trip")
    p.add_argument("out")
    p.add_argument("--data", default=os.environ.get("DATA", "/tmp/emoji3"))
    p.add_argument("--limit", type=int, default=0, help="first N images of each split (0: all)")
    for name in ("run", "tiny"):
        p = sub.add_parser(name, help="unpack, train, export (tiny: on a CPU, tiny preset)")
        p.add_argument("out")
        p.add_argument("--pack", default=None, help="the pack (default runs/recipe_data.tar, git-ignored)")
        p.add_argument("--work", default=os.environ.get("WORK", "/tmp/maskgit_recipe"))
        p.add_argument("--budget", type=float, default=float(os.environ.get("BUDGET", 8 if name == "run" else 0.3)),
                       help="minutes of training in all calls together (env BUDGET)")
        p.add_argument("--chunk", type=float, default=float(os.environ.get("CHUNK", 8 if name == "run" else 5)),
                       help="minutes one call may take at most (env CHUNK; the device tool allows 10)")
        p.add_argument("--batch-size", type=int, default=int(os.environ.get("BATCH", 0)) or None)
        p.add_argument("--vqgan", default=None, help="frozen tokenizer (default: the shipped one)")
        p.add_argument("--peak-tflops", type=float, default=H200_BF16_PEAK_TFLOPS)
        p.add_argument("--tiny", action="store_true", default=name == "tiny")
    p = sub.add_parser("latency", help="CPU decode latency of the GPU config (random weights)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p = sub.add_parser("_segment")
    p.add_argument("spec")
    args = parser.parse_args(argv)
    if args.cmd in ("run", "tiny") and args.pack is None:
        args.pack = str(ROOT / "runs" / "recipe_data.tar")
    return {"pack": cmd_pack, "run": cmd_run, "tiny": cmd_run, "latency": cmd_latency,
            "_segment": cmd_segment}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
