"""Paste vs Poisson blending vs a second decoding pass, on the first N free-form test images (one decoding).

Usage: TF=<transformer.safetensors> python results/transformer_sweep/postprocess_variants.py N [--no-pass2]
TF unset = the shipped transformer. Cosine T=8, lab confidence, harmonic prefill, the benchmark's batches and
seeds. Rows: ``paste`` (the lab's compositing), ``poisson`` (maskgit_lib.blend.poisson_blend), ``pass2``
(re-encode the pasted result and decode the same hidden tokens again), ``pass2_poisson``.
Prints FID (vs the same N ground truths) and hole PSNR per row.
"""
import os
import sys
import time

import torch

from maskgit_lib.evaluation import tracks
from maskgit_lib.blend import composite, poisson_blend
from maskgit_lib.data import from_uint8, to_uint8
from maskgit_lib.evaluation.fid import frechet_distance_from_features
from maskgit_lib.inpaint import Inpainter, InpaintSettings, batch_seed

n, pass2 = int(sys.argv[1]), "--no-pass2" not in sys.argv
torch.set_num_threads(1)
data = tracks.load_tracks(None, ("freeform",), n)["freeform"]
dev = torch.device("cpu")
inpainter = Inpainter.from_checkpoints(transformer_path=os.environ.get("TF"), device="cpu")
gt_feats = tracks.gt_features(data, dev)
settings = InpaintSettings(confidence="lab", blend="paste")
outs = {k: [] for k in ("paste", "poisson") + (("pass2", "pass2_poisson") if pass2 else ())}
t0 = time.time()
for k, lo in enumerate(range(0, n, 64)):
    images, missing = from_uint8(data.inputs[lo:lo + 64]), data.pixel_missing[lo:lo + 64]
    res = inpainter.inpaint(images, missing, settings, torch.Generator().manual_seed(batch_seed(0, k)))
    outs["paste"].append(res.images)
    outs["poisson"].append(poisson_blend(res.raw, images, missing))
    if pass2:  # the context tokens now come from a plausible image instead of the harmonic fill
        trace = inpainter._decode_trace(inpainter.encode(res.images), res.is_masked0, settings,
                                        torch.Generator().manual_seed(lo))
        raw2 = inpainter.decode(trace.tokens_at(settings.stop_step))
        outs["pass2"].append(composite(raw2, images, missing))
        outs["pass2_poisson"].append(poisson_blend(raw2, images, missing))
print(f"decoding {time.time() - t0:.0f} s", flush=True)
for name, parts in outs.items():
    out = to_uint8(torch.cat(parts))
    fid = frechet_distance_from_features(tracks.features(out, dev), gt_feats)
    psnr = tracks.hole_metrics(out, data.gt, data.pixel_missing)["psnr_hole_db"]
    print(f"{name:<14} FID {fid:.2f} PSNR {psnr:.2f}", flush=True)
