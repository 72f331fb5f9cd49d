#!/usr/bin/env bash
# One GPU session (about 8 minutes): the CPU/CUDA agreement check and every lattice benchmark point
# in parallel, each process training and sampling on the one GPU, its Monte Carlo on one CPU core.
#     OUT=/tmp/out bash benchmarks/device_run.sh
# Results: $OUT/gpu_check.json, $OUT/lattice_gpu.tar.gz (one JSON, log and figures per point).
set -u
export PYTHONPATH=$PWD/src PHYSDIFF_CACHE=/tmp/physdiff-cache PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT/res/fig"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -c "import torch, torchdiffeq; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
LIMIT=${LIMIT:-480}
point() {  # point FILE NAME [options of bench_lattice.py]
  local file=$1 name=$2; shift 2
  timeout "$LIMIT" python3 benchmarks/bench_lattice.py --points "$name" --device cuda --threads 1 \
    --out "$OUT/res/$file.json" --figures "$OUT/res/fig" "$@" > "$OUT/res/$file.log" 2>&1
  echo "$name $* exit $?"
}
timeout "$LIMIT" python3 benchmarks/gpu_check.py --out "$OUT/gpu_check.json" > "$OUT/gpu_check.log" 2>&1 &
for p in phi4:8:0.26 phi4:8:0.2705 phi4:8:0.28 ising:8:0.3 ising:8:0.44 ising:8:0.5 ising:16:0.44; do
  point "${p//:/_}" "$p" &
done
for p in phi4:16:0.26 phi4:16:0.2705 phi4:16:0.28; do
  point "${p//:/_}" "$p" --tolerance 64 &
done
# ablation of the lattice network (site network without the Gaussian part) and twice the training
point phi4_8_0.2705_nogauss phi4:8:0.2705 --train model.gaussian=none &
point phi4_8_0.2705_12k phi4:8:0.2705 --train train.steps=12000 &
wait
cat "$OUT/gpu_check.log"
tail -n 30 "$OUT"/res/*.log
tar czf "$OUT/lattice_gpu.tar.gz" -C "$OUT" res
