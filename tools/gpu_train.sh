#!/usr/bin/env bash
# Train the shipped checkpoints on one lent GPU in a single time-boxed run.
# Usage (repo root, data/twemoji64 prepared):  tools/gpu_train.sh smoke|full|holes OUT_DIR
# smoke: a few steps of each stage (checks the environment); full: ~8.5 minutes
#   (HOLE_FRACTION=0.5 trains the transformer with hole examples from the start).
# holes: fine-tune the shipped transformer with hole examples (maskgit_lib.hole_examples)
#        for HOLES_MINUTES (default 1.5) minutes; DEVICE=cpu HOLES_STEPS=2 tries it on a CPU.
set -euo pipefail
mode=${1:-smoke}; out=${2:-runs/gpu_out}
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 MPLBACKEND=Agg
PY=${PY:-python3}
$PY -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"
if [ "$mode" = holes ]; then
  dev=${DEVICE:-cuda}; amp=(--bf16); [ "$dev" = cpu ] && amp=(--no-bf16)
  if [ -n "${HOLES_STEPS:-}" ]; then budget=(--max-steps "$HOLES_STEPS"); else
    budget=(--max-steps 0 --max-minutes "${HOLES_MINUTES:-1.5}"); fi
  start=$(date +%s)
  $PY -m maskgit_lib.cli train-transformer --preset cpu --device "$dev" "${amp[@]}" --batch-size "${HOLES_BATCH:-256}" \
    --lr 2e-4 --warmup-steps 100 --init-weights checkpoints/maskgit_twemoji64.safetensors \
    --hole-fraction 0.5 --hole-variants 8 --val-every 500 --ckpt-every 100000 \
    --data "${DATA:-data/twemoji64}" --no-progress --no-resume --out runs/gpu_holes "${budget[@]}" 2>&1 | tee "$out/holes.log"
  echo "holes done after $(( $(date +%s) - start )) s"
  split -b 15M runs/gpu_holes/final.safetensors "$out/transformer.safetensors.part-"
  tar czf "$out/holes_logs.tgz" runs/gpu_holes/*.csv runs/gpu_holes/*.json runs/gpu_holes/*.png
  ls -la "$out"
  exit 0
fi
if [ "$mode" = smoke ]; then
  vq=(--max-steps 20 --val-every 10 --ckpt-every 10); tf=(--max-steps 20 --val-every 10 --ckpt-every 10)
else
  vq=(--max-steps 0 --max-minutes 3.3 --val-every 1000 --ckpt-every 2000)
  tf=(--max-steps 0 --max-minutes 4.4 --val-every 1000 --ckpt-every 2000)
fi
start=$(date +%s)
$PY -m maskgit_lib.cli train-vqgan --preset cpu --device cuda --bf16 --batch-size 128 --lr 4e-4 \
  --no-progress --no-resume --out runs/gpu_vqgan "${vq[@]}" 2>&1 | tee "$out/vqgan.log"
$PY -m maskgit_lib.cli eval-vqgan --checkpoint runs/gpu_vqgan/final.safetensors --device cuda --no-fid \
  --json runs/gpu_vqgan/eval.json 2>&1 | tee -a "$out/vqgan.log"
echo "vqgan done after $(( $(date +%s) - start )) s"
$PY -m maskgit_lib.cli train-transformer --preset cpu --device cuda --bf16 --batch-size 256 --lr 5e-4 \
  --warmup-steps 500 --vqgan-checkpoint runs/gpu_vqgan/final.safetensors --hole-fraction "${HOLE_FRACTION:-0}" \
  --no-progress --no-resume --out runs/gpu_transformer "${tf[@]}" 2>&1 | tee "$out/transformer.log"
$PY -m maskgit_lib.cli eval-transformer --checkpoint runs/gpu_transformer/final.safetensors \
  --vqgan-checkpoint runs/gpu_vqgan/final.safetensors --device cuda 2>&1 | tee -a "$out/transformer.log" || true
echo "all done after $(( $(date +%s) - start )) s"
cp runs/gpu_vqgan/final.safetensors "$out/vqgan.safetensors"
split -b 15M runs/gpu_transformer/final.safetensors "$out/transformer.safetensors.part-"
tar czf "$out/logs.tgz" runs/gpu_vqgan/*.csv runs/gpu_vqgan/*.json runs/gpu_vqgan/*.png \
  runs/gpu_transformer/*.csv runs/gpu_transformer/*.json runs/gpu_transformer/*.png
ls -la "$out"
