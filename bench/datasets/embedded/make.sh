#!/usr/bin/env bash
# Regenerates the embedded dataset hopper-mini-replay with the suite's own generator (~10 min on 2 CPU cores):
# online SAC (d3rlpy) in Hopper-v5, seed 0, stopped once the evaluated deterministic return reaches 1500;
# the whole replay buffer up to then is the dataset (the D4RL medium-replay recipe). Then packed into
# episodes.npz + metadata.json (flat compressed float32 arrays; Minari's one-HDF5-group-per-episode layout is
# ~20x bigger for this many short episodes).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
bench datasets generate --env Hopper-v5 --kind medium-replay --name hopper-mini --seed 0 \
  --max-env-steps 150000 --target-return 1500 --random-steps 5000 --eval-every 5000 --eval-episodes 5 \
  --out "$work/minari" --work-dir "$work/checkpoint"
bench datasets pack "$work/minari/bench/hopper-mini/medium-replay-v0" --out "$here/hopper-mini-replay"
