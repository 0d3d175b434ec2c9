"""K seeds of BC pre-training as one batched model against K sequential runs (one process, one thread).

    python benchmarks/batched_seeds.py [--seeds 5] [--steps 300] [--threads 1]
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
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    traj = load_dataset(get_spec("hopper-mini-replay"))
    cfg = BCConfig(steps=args.steps, batch_size=256)
    seeds = list(range(args.seeds))

    t0 = time.perf_counter()
    for seed in seeds:
        ctx = RunContext(seed=seed, device=torch.device("cpu"), total_steps=cfg.steps, evaluate=None,
                         eval_every=10**9, log=lambda m: None)
        train_bc(traj, all_episodes(traj), cfg, ctx)
    sequential = time.perf_counter() - t0
    t0 = time.perf_counter()
    train_bc_seeds(traj, cfg, seeds)
    batched = time.perf_counter() - t0
    print(f"BC, {args.seeds} seeds x {args.steps} steps of 256 transitions, {args.threads} thread(s):")
    print(f"  sequential: {sequential:.1f} s ({args.seeds * args.steps / sequential:.0f} seed-updates/s)")
    print(f"  batched:    {batched:.1f} s ({args.seeds * args.steps / batched:.0f} seed-updates/s)")
    print(f"  speed-up:   {sequential / batched:.2f}x")


if __name__ == "__main__":
    main()
