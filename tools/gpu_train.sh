#!/usr/bin/env bash
# Train the shipped checkpoints on one lent GPU in a single time-boxed run.
# Usage (repo root, data/twemoji64 prepared):  tools/gpu_train.sh smoke|full|holes|sweep OUT_DIR
# smoke: a few steps of each stage (checks the environment); full: ~8.5 minutes
#   (HOLE_FRACTION=0.5 trains the transformer with hole examples from the start, VIEWS=id,flip,small,... on more
#   views of each image; the shipped transformer's two-stage recipe is in checkpoints/README.md).
# holes: fine-tune the shipped transformer with hole examples (maskgit_lib.training.hole_examples)
#        for HOLES_MINUTES (default 1.5) minutes; DEVICE=cpu HOLES_STEPS=2 tries it on a CPU.
# sweep: train the transformer variants of SWEEP (below) from scratch on the shipped VQGAN, all at once on one
#        GPU, each until SWEEP_SECONDS (default 530) after the start; float16 weights OUT/<name>.safetensors.
set -euo pipefail
mode=${1:-smoke}; out=${2:-runs/gpu_out}
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 MPLBACKEND=Agg
PY=${PY:-python3}
$PY -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"
if [ "$mode" = sweep ]; then
  t0=$(date +%s); end=$(( t0 + ${SWEEP_SECONDS:-530} ))
  six=id,flip,small,small+flip,large,large+flip
  declare -A SWEEP=(  # name -> flags (all: preset cpu, batch 256, lr 5e-4, warmup 500, bf16, seed 0)
    [holes]="--hole-fraction 0.5"
    [holes_views]="--hole-fraction 0.5 --views $six"
    [holes_views_drop]="--hole-fraction 0.5 --views $six --dropout 0.2"
    [views]="--views $six" )
  common=(--preset cpu --device "${DEVICE:-cuda}" --batch-size 256 --lr 5e-4 --warmup-steps 500 --val-every 1000
          --ckpt-every 100000 --hole-variants 8 --data "${DATA:-data/twemoji64}" --no-progress --no-resume)
  [ "${DEVICE:-cuda}" = cpu ] && common+=(--no-bf16) || common+=(--bf16)
  # one process builds every token and hole-example cache first (the others then only read them)
  $PY -m maskgit_lib.cli train-transformer "${common[@]}" --hole-fraction 0.5 --views "$six" --max-steps 1 \
    --out runs/sweep/prep 2>&1 | tee "$out/prep.log"
  minutes=$($PY -c "import time; print(max(0.5, ($end - 40 - time.time()) / 60))")
  echo "caches built after $(( $(date +%s) - t0 )) s; each variant trains for $minutes minutes"
  for name in "${!SWEEP[@]}"; do
    OMP_NUM_THREADS=4 $PY -m maskgit_lib.cli train-transformer "${common[@]}" ${SWEEP[$name]} --max-steps 0 \
      --max-minutes "$minutes" ${SWEEP_STEPS:+--max-steps $SWEEP_STEPS} --weights-dtype float16 \
      --export "$out/$name.safetensors" --out "runs/sweep/$name" > "$out/$name.log" 2>&1 &
  done
  wait || true
  for name in "${!SWEEP[@]}"; do echo "== $name: ${SWEEP[$name]}"; tail -3 "$out/$name.log"; done
  tar czf "$out/sweep_logs.tgz" "$out"/*.log runs/sweep/*/*.csv runs/sweep/*/*.json runs/sweep/*/*.png
  rm -f "$out"/*.log
  echo "sweep done after $(( $(date +%s) - t0 )) s"; ls -la "$out"
  exit 0
fi
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
  --views "${VIEWS:-id,flip}" \
  --no-progress --no-resume --out runs/gpu_transformer "${tf[@]}" 2>&1 | tee "$out/transformer.log"
$PY -m maskgit_lib.cli eval-transformer --checkpoint runs/gpu_transformer/final.safetensors \
  --vqgan-checkpoint runs/gpu_vqgan/final.safetensors --device cuda 2>&1 | tee -a "$out/transformer.log" || true
echo "all done after $(( $(date +%s) - start )) s"
cp runs/gpu_vqgan/final.safetensors "$out/vqgan.safetensors"
split -b 15M runs/gpu_transformer/final.safetensors "$out/transformer.safetensors.part-"
tar czf "$out/logs.tgz" runs/gpu_vqgan/*.csv runs/gpu_vqgan/*.json runs/gpu_vqgan/*.png \
  runs/gpu_transformer/*.csv runs/gpu_transformer/*.json runs/gpu_transformer/*.png
ls -la "$out"
