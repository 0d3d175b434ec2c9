"""Evaluation throughput: one environment at a time against waves of batched environments in 1 and 2 processes.

    python benchmarks/evaluation.py [--episodes 100] [--workers 2] [--repeats 5]

The policy is the suite's own 3 x 256 Gaussian MLP after 500 BC steps on hopper-mini-replay (episodes of ~150
steps in Hopper-v5). Prints episodes/s and env steps/s for each setting and checks that worker processes give
the same returns as one process with the same number of environments side by side.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from bench.algorithms.bc import BCConfig, train_bc
from bench.algorithms.context import RunContext, Schedule, SeedGroup
from bench.datasets.curation import all_episodes
from bench.datasets.sources import load_dataset
from bench.evaluation import evaluate
from bench.specs import get_spec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    traj = load_dataset(get_spec("hopper-mini-replay"))
    group = SeedGroup([RunContext(seed=0, log=lambda _m: None)], torch.device("cpu"), Schedule(500, 500))
    (policy,) = train_bc(traj, all_episodes(traj), BCConfig(steps=500), group)
    settings = [(1, 1), (10, 1), (25, 1), (50, 1), (10, args.workers), (25, args.workers), (50, args.workers)]
    best = {k: float("inf") for k in settings}
    results = {}
    for _ in range(args.repeats):  # rounds over all settings, best of each: noise on a shared VM hits all alike
        for num_envs, workers in settings:
            t0 = time.perf_counter()
            results[num_envs, workers] = evaluate(policy, "Hopper-v5", args.episodes, 0, num_envs=num_envs,
                                                  workers=workers)
            best[num_envs, workers] = min(best[num_envs, workers], time.perf_counter() - t0)
    plain = args.episodes / best[1, 1]
    for num_envs, workers in settings:
        res, dt = results[num_envs, workers], best[num_envs, workers]
        # the same env count in one process is the reference: processes never change a result
        same = np.array_equal(res.returns, results[num_envs, 1].returns)
        print(f"{num_envs:>2} env(s), {workers} process(es): {args.episodes / dt:7.1f} episodes/s "
              f"({sum(res.lengths) / dt:6.0f} env steps/s, mean length {np.mean(res.lengths):.0f}) "
              f"{args.episodes / dt / plain:5.2f}x vs 1 env in 1 process; returns equal to 1 process: {same}"
              + (" (fewer waves than processes)" if -(-args.episodes // num_envs) < workers else ""))

if __name__ == "__main__":
    main()
