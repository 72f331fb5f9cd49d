#!/usr/bin/env bash
# GPU session 2 (about 5 minutes): does the network size limit the lattice model? φ⁴ at κ = 0.2705 with
# a wider MLP (L = 8: 256; L = 16: 512) and with the periodic U-Net at L = 16, otherwise default training.
#     OUT=/tmp/out bash benchmarks/device_width.sh
set -u
export PYTHONPATH=$PWD/src PHYSDIFF_CACHE=/tmp/physdiff-cache PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT/res/fig"
LIMIT=${LIMIT:-310}
point() {  # point FILE NAME [options of bench_lattice.py]
  local file=$1 name=$2; shift 2
  timeout "$LIMIT" python3 benchmarks/bench_lattice.py --points "$name" --device cuda --threads 2 --tolerance 0 --n 2000 --n-ref 5008 \
    --out "$OUT/res/$file.json" --figures "$OUT/res/fig" "$@" > "$OUT/res/$file.log" 2>&1
  echo "$name $* exit $?"
}
point phi4_8_w256 phi4:8:0.2705 --train model.mlp.width=256 &
point phi4_16_w512 phi4:16:0.2705 --train model.mlp.width=512 &
point phi4_16_unet phi4:16:0.2705 --train model.arch=unet &
point phi4_16_w1024 phi4:16:0.2705 --train model.mlp.width=1024 &
wait
tail -n 14 "$OUT"/res/*.log
tar czf "$OUT/width.tar.gz" -C "$OUT" res
