"""Training throughput on the embedded dataset (one process, one torch thread, no evaluation).

    python benchmarks/throughput.py [--steps 50] [--threads 1]

Prints updates/s for BC, the SFT family's fine-tuning step (and trajectory-steps/s: transitions per batch x
steps/s) at the quick-start batch (32 trajectories) and the paper's (256), and the four d3rlpy baselines.
Evaluation throughput: benchmarks/evaluation.py.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench.algorithms import ALGORITHMS, get_algorithm
from bench.algorithms.context import RunContext, Schedule, SeedGroup
from bench.algorithms.reference import reference_policies
from bench.datasets.curation import quality_bins
from bench.datasets.sources import load_dataset
from bench.run import resolve_config
from bench.specs import get_spec


class _Timer(SeedGroup):
    """A seed group that records the wall time of each step (its bookkeeping included; it never evaluates)."""

    def step(self, step, stats, policy):
        super().step(step, stats, policy)
        self.times.append(time.perf_counter())


def updates_per_second(algo: str, overrides: dict, steps: int, traj) -> tuple[float, dict]:
    cfg = resolve_config("hopper-mini-replay", algo, 0, {**overrides, "steps": steps})
    algorithm = get_algorithm(algo)(get_algorithm(algo).Config(**cfg.algo_config))
    cpu = torch.device("cpu")
    group = _Timer([RunContext(seed=0, log=lambda m: None)], cpu, Schedule(steps, steps))
    group.times = []
    if (bc := algorithm.reference_bc()) is not None:  # pi_ref as run.py resolves it (untimed, in a scratch cache)
        with tempfile.TemporaryDirectory() as cache:
            bc.steps = 10
            group.references = [p for p, _ in reference_policies(traj, bc, [0], cpu, lambda m: None, Path(cache))]
    algorithm.fit(traj, algorithm.curate(traj), group)
    warm = max(steps // 5, 1)  # skip warm-up steps (allocations, first Adam steps)
    t = np.asarray(group.times[warm:])
    return (len(t) - 1) / (t[-1] - t[0]), cfg.algo_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=50, help="timed updates per algorithm (d3rlpy: x4)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--d3rlpy", nargs="*", default=None,
                        help="only these d3rlpy-family algorithms (default: every registered one)")
    parser.add_argument("--only-d3rlpy", action="store_true", help="skip BC and the SFT family")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    traj = load_dataset(get_spec("hopper-mini-replay"))
    print(f"hopper-mini-replay: {traj.num_episodes} episodes, {traj.num_transitions} transitions; "
          f"torch {torch.__version__}, {args.threads} thread(s)")

    if args.only_d3rlpy:
        return _d3rlpy_rates(args, traj)
    rate, _ = updates_per_second("bc", {}, args.steps * 10, traj)
    print(f"{'bc (256 transitions)':<34} {rate:8.1f} updates/s")
    for precision in ("float32", "bfloat16"):  # the SFT family's reference BC (paper protocol)
        over = {"batch_unit": "trajectories", "batch_size": 128, "precision": precision}
        rate, _ = updates_per_second("bc", over, args.steps, traj)
        print(f"{f'bc (128 trajectories, {precision})':<34} {rate:8.1f} updates/s")
    for algo in ("sft_q", "iw_sft_q"):
        for batch in (32, 256):
            # the reference BC is cached after the first call; keep it short here, it is not what is timed
            over = {"batch_size": batch, "bc_steps": 200, "bc_batch_size": 256, "bc_batch_unit": "transitions"}
            rate, cfg = updates_per_second(algo, over, args.steps, traj)
            cur = quality_bins(traj, cfg["percentiles"])
            lengths = traj.episode_lengths[cur.episode_indices]
            mean_len = float((cur.sampling_probabilities() * lengths).sum())
            print(f"{algo + f' ({batch} trajectories)':<34} {rate:8.2f} updates/s  "
                  f"{rate * batch * mean_len:10.0f} trajectory-steps/s (mean sampled length {mean_len:.0f})")
    _d3rlpy_rates(args, traj)


def _d3rlpy_rates(args, traj) -> None:
    for algo in args.d3rlpy or [name for name, c in ALGORITHMS.items() if c.family == "d3rlpy"]:
        # the preset's batch for hopper-mini-replay (256), and the algorithm's own default when it differs (1024)
        for batch in sorted({256, get_algorithm(algo).Config().batch_size}):
            rate, _ = updates_per_second(algo, {"batch_size": batch}, args.steps * (4 if algo != "cql" else 1), traj)
            print(f"{f'{algo} (batch {batch})':<34} {rate:8.1f} updates/s   rates.yaml key {algo}/{batch}")


if __name__ == "__main__":
    main()
