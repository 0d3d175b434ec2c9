#!/usr/bin/env bash
# Everything a GPU must show, in one run of under 8 minutes on one GPU, with one summary table at the end:
#   the tests marked `cuda` and the kill-and-resume tests on CUDA, host syncs per training step on CUDA, the
#   fine-tuning step's throughput in its layouts (eager; compiled with and without CUDA graphs), batched BC seeds,
#   the d3rlpy baselines' updates/s (suite loop vs d3rlpy's fit, with and without compile_graph), and a
#   paper-protocol iw_sft_q run on the embedded dataset (Table 4 hopper-medium-replay settings, 256 whole
#   trajectories per step, reference BC 10,000 steps of 128 trajectories), eager and compiled with CUDA graphs and
#   spawned evaluation workers, each with its wall time split into reference BC, fine-tuning and evaluation.
#
# The GPU machine has python3.12 + torch + CUDA but no MuJoCo / gymnasium / d3rlpy / Minari and no network: run
# `bash scripts/fetch_device_wheels.sh` first on a machine with PyPI access; the wheels in device_wheels/ are
# installed here with --no-index. On a machine without CUDA the script runs up to the first check that needs it,
# says so, and prints the table. Logs and records go to $OUT (the device tool's output folder) or a temporary one.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$(mktemp -d)}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" MUJOCO_GL=egl BENCH_OFFLINE=1 HF_HUB_OFFLINE=1
export BENCH_CACHE_DIR="$OUT/cache" MINARI_DATASETS_PATH="$OUT/minari" BENCH_DATA_DIR="$OUT/d4rl"
rows=()

check() {  # check NAME LIMIT_S COMMAND...: run it, keep its log, add a row (status, seconds, last line)
  local name=$1 limit=$2 log t0 rc
  shift 2
  log="$OUT/$(echo "$name" | tr -c 'A-Za-z0-9_\n' '_').log"
  t0=$(date +%s)
  timeout "$limit" "$@" >"$log" 2>&1
  rc=$?
  local status=PASS
  [ $rc -eq 124 ] && status="TIMEOUT(${limit}s)"
  [ $rc -ne 0 ] && [ $rc -ne 124 ] && status="FAIL(rc=$rc)"
  rows+=("$name|$status|$(( $(date +%s) - t0 ))|$(grep -v '^\s*$' "$log" | grep -v USDT | tail -n 1 | cut -c1-110)")
  echo "== $name: $status"
  grep -v USDT "$log" | tail -n 25
}

summary() {
  echo
  echo "| check | status | s | last line of its log |"
  echo "|---|---|---|---|"
  for r in "${rows[@]}"; do echo "| ${r//|/ | } |"; done
  echo "logs: $OUT"
}

if ! "$PY" -c "import mujoco, gymnasium, d3rlpy, minari" 2>/dev/null; then
  if [ -d device_wheels ]; then
    check "install wheels (no index)" 300 "$PY" -m pip install --no-index --no-deps --quiet device_wheels/*.whl
  else
    echo "MuJoCo/gymnasium/d3rlpy/Minari missing and no device_wheels/: run scripts/fetch_device_wheels.sh" >&2
  fi
fi
check "imports and versions" 120 "$PY" -c "
import torch, mujoco, gymnasium, d3rlpy, minari, bench
print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else '-', '| mujoco', mujoco.__version__,
      '| gymnasium', gymnasium.__version__, '| d3rlpy', d3rlpy.__version__, '| minari', minari.__version__)"
check "host syncs per step (cpu)" 180 "$PY" benchmarks/host_syncs.py --device cpu

if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  echo
  echo "CUDA is not available here: stopped before the GPU checks (everything above ran)."
  rows+=("GPU checks|NOT RUN|0|no CUDA device on this machine")
  summary
  exit 0
fi

check "tests marked cuda" 300 "$PY" -m pytest -q -p no:cacheprovider -m cuda tests
check "kill-and-resume on CUDA (bc, iw_sft_q, batched, td3_bc)" 300 "$PY" -m pytest -q -p no:cacheprovider \
  tests/test_run.py tests/test_sft.py tests/test_batched.py tests/test_baselines.py -k "resume or interrupted or killed"
check "host syncs per step (cuda)" 180 "$PY" benchmarks/host_syncs.py --device cuda
check "fine-tuning step layouts (cuda)" 240 "$PY" benchmarks/finetune_throughput.py --device cuda --steps 30 --rounds 3
check "batched BC seeds (cuda)" 240 "$PY" benchmarks/batched_seeds.py --device cuda --run-steps 0 --steps 300 \
  --repeats 2
check "baselines: suite loop vs d3rlpy fit (cuda)" 240 "$PY" benchmarks/baselines_throughput.py --device cuda \
  --algos td3_bc,iql --rounds 2
check "baselines with compile_graph (cuda)" 300 "$PY" benchmarks/baselines_throughput.py --device cuda \
  --algos td3_bc,iql --rounds 2 --compile

paper=(--env hopper-mini-replay --algo iw_sft_q --seed 0 --device cuda --set steps=4500 --set warmup_steps=300
       --set learning_rate=1e-4 --set batch_size=256 --set bc_steps=10000 --set bc_batch_size=128
       --set bc_batch_unit=trajectories --set eval_every=500)
split() {  # the wall-time split of the newest record under $1
  "$PY" - "$1" <<'PYEOF'
import json, sys, pathlib
rec = json.loads(max(pathlib.Path(sys.argv[1]).glob("*.json"), key=lambda p: p.stat().st_mtime).read_text())
t, ref = rec["timings"], rec["train_info"]["reference"].get("train_seconds", 0.0)
print(f"reference BC {ref:.0f} s | fine-tuning {t['train'] - ref - t['train_evals']:.0f} s | evaluation "
      f"{t['train_evals'] + t['final_eval']:.0f} s | total {t['total']:.0f} s | score {rec['final']['normalized_mean']:.1f}"
      f" | {rec['device']['name']} {rec['device']['precision']}")
PYEOF
}
check "paper-protocol iw_sft_q (cuda)" 420 "$PY" -m bench run "${paper[@]}" --out "$OUT/paper"
check "  its wall time" 30 split "$OUT/paper"
check "paper-protocol iw_sft_q, static shapes + compile + CUDA graphs, 4 spawned eval workers (cuda)" 420 \
  "$PY" -m bench run "${paper[@]}" --set static_shapes=true --set compile=true --set eval_workers=4 \
  --out "$OUT/paper_compiled"
check "  its wall time" 30 split "$OUT/paper_compiled"
summary
