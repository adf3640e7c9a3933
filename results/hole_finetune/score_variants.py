"""Score sampler settings (and optionally another transformer) on the first N free-form test images.

Usage: TF=<transformer.safetensors> python score_variants.py N THREADS '[{"confidence": "official"}, {}]'
Each JSON object holds InpaintSettings fields; TF unset = the shipped transformer.
Prints FID (vs the same N ground truths), hole PSNR and inpainting seconds per setting.
"""
import json
import os
import sys

import torch

from maskgit_lib.evaluation import benchmark, rows, tracks
from maskgit_lib.evaluation.fid import frechet_distance_from_features
from maskgit_lib.inpaint import Inpainter, InpaintSettings

n, threads, variants = int(sys.argv[1]), int(sys.argv[2]), json.loads(sys.argv[3])
torch.set_num_threads(threads)
data = tracks.load_tracks(None, ("freeform",), n)["freeform"]
dev = torch.device("cpu")
inpainter = Inpainter.from_checkpoints(transformer_path=os.environ.get("TF"), device="cpu")
gt_feats = tracks.gt_features(data, dev)
for fields in variants:
    row = rows.Row("freeform", "maskgit", InpaintSettings(**fields))
    out, seconds = benchmark.run_maskgit_group(inpainter, data, [row], batch_size=64, seed=0)[row]  # the benchmark's batches
    fid = frechet_distance_from_features(tracks.features(out, dev), gt_feats)
    psnr = tracks.hole_metrics(out, data.gt, data.pixel_missing)["psnr_hole_db"]
    print(json.dumps(fields), f"FID {fid:.2f} PSNR {psnr:.2f} t {seconds:.1f}s", flush=True)
