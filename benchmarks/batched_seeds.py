"""K seeds of BC pre-training as one batched model against K sequential runs (one process, one thread).

    python benchmarks/batched_seeds.py [--seeds 5] [--steps 300] [--threads 1] [--run-steps 2000]

First the training loops alone (train_bc per seed vs train_bc_seeds), then whole runs with evaluation and records
(`bench run --seed S` for each seed vs `bench run --seeds K`, i.e. run() per seed vs run_seeds()).
"""

from __future__ import annotations

import argparse
import time

import torch

from bench.algorithms.base import RunContext
from bench.algorithms.batched import train_bc_seeds
from bench.algorithms.bc import BCConfig, train_bc
from bench.datasets.curation import all_episodes
from bench.datasets.sources import load_dataset
from bench.specs import get_spec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--run-steps", type=int, default=2000)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    traj = load_dataset(get_spec("hopper-mini-replay"))
    cfg = BCConfig(steps=args.steps, batch_size=256)
    seeds = list(range(args.seeds))

    def ctx(seed):
        return RunContext(seed=seed, device=torch.device("cpu"), total_steps=cfg.steps, evaluate=None,
                          eval_every=10**9, log=lambda m: None)

    t0 = time.perf_counter()
    for seed in seeds:
        train_bc(traj, all_episodes(traj), cfg, ctx(seed))
    sequential = time.perf_counter() - t0
    t0 = time.perf_counter()
    train_bc_seeds(traj, all_episodes(traj), cfg, [ctx(s) for s in seeds])
    batched = time.perf_counter() - t0
    print(f"BC, {args.seeds} seeds x {args.steps} steps of 256 transitions, {args.threads} thread(s):")
    print(f"  sequential: {sequential:.1f} s ({args.seeds * args.steps / sequential:.0f} seed-updates/s)")
    print(f"  batched:    {batched:.1f} s ({args.seeds * args.steps / batched:.0f} seed-updates/s)")
    print(f"  speed-up:   {sequential / batched:.2f}x")

    import tempfile
    from pathlib import Path

    from bench.run import resolve_config, run, run_seeds

    over = {"steps": args.run_steps, "eval_every": args.run_steps // 2, "eval_episodes": 5, "final_eval_episodes": 10}
    cfgs = [resolve_config("hopper-mini-replay", "bc", s, over) for s in seeds]
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        for c in cfgs:
            run(c, Path(tmp) / "sequential", log=lambda m: None)
        sequential = time.perf_counter() - t0
        t0 = time.perf_counter()
        run_seeds(cfgs, Path(tmp) / "batched", log=lambda m: None)
        batched = time.perf_counter() - t0
    print(f"whole runs (bench run), {args.seeds} seeds x {args.run_steps} steps, 2 evaluations of 5 episodes and a "
          f"final one of 10:")
    print(f"  one run per seed: {sequential:.1f} s;  --seeds {args.seeds} (batched): {batched:.1f} s;  "
          f"speed-up {sequential / batched:.2f}x")


if __name__ == "__main__":
    main()
