#!/usr/bin/env bash
# The README gallery: each figure made by exactly the commands the README shows beside it.
#     bash docs/gallery.sh [DATASET ...]      (~1 min per 2D dataset, ~6 min for digits, on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
PHYSDIFF=${PHYSDIFF:-.venv/bin/physdiff}
mkdir -p docs/gallery runs
sets=("$@")
[ ${#sets[@]} -gt 0 ] || sets=(gaussian two_gaussians spiral moons eight_gaussians checkerboard swiss_roll rings digits)
for d in "${sets[@]}"; do
  $PHYSDIFF train --dataset "$d" --out "runs/$d" --overwrite --no-progress
  $PHYSDIFF plot "runs/$d"
  cp "runs/$d/samples.png" "docs/gallery/$d.png"
done
