"""K seeds of BC pre-training as one batched model against K sequential runs (one process, one thread).

    python benchmarks/batched_seeds.py [--seeds 5] [--steps 300] [--threads 1] [--repeats 3] [--run-steps 2000]
                                       [--device cpu]

First the training loops alone (train_bc per seed vs train_bc on all seeds as one group, at float32 and at
bfloat16 forward precision; best of --repeats rounds, each round running all four, so that noise on a shared
machine hits them alike), then whole runs (the float32 preset) with evaluation and records, once (`bench run --seed
S` for each seed vs `bench run --seeds K`, i.e. run() per seed vs run_seeds(); 0 steps skips them).

Also prints the floor no batching can go below: the float32 matrix multiplies one seed's BC step performs
(forward x @ W per layer, backward h^T @ g and g @ W^T) at this machine's matmul rate on the same shapes (the
roofline of finetune_throughput.py), measured in the same rounds. Batching removes per-operation overhead, never
matmul work, so sequential step time / that floor bounds the speed-up.
"""

from __future__ import annotations

import argparse
import time

import torch
from finetune_throughput import matmul_roofline  # this folder is on sys.path when a script here runs

from bench.algorithms.bc import BCConfig, train_bc
from bench.algorithms.context import RunContext, Schedule, SeedGroup
from bench.datasets.curation import all_episodes
from bench.datasets.sources import load_dataset
from bench.specs import get_spec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--run-steps", type=int, default=2000)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (on cuda: the loops only, no matmul floor)")
    args = parser.parse_args()
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else lambda: None
    torch.set_num_threads(args.threads)
    traj = load_dataset(get_spec("hopper-mini-replay"))
    seeds = list(range(args.seeds))

    def group(seeds):
        return SeedGroup([RunContext(seed=s, log=lambda m: None) for s in seeds], device,
                         Schedule(args.steps, 10**9))

    precisions = ("float32", "bfloat16")
    best = {(p, mode): float("inf") for p in precisions for mode in ("sequential", "batched")}
    bc = BCConfig()
    dims = [traj.obs_dim] + [bc.hidden] * bc.layers + [traj.act_dim]
    shapes = list(zip(dims[:-1], dims[1:], strict=True))
    # a seed's step: forward and weight gradient of every layer, input gradient of all but the first
    step_flops = 2.0 * 256 * (2 * sum(i * o for i, o in shapes) + sum(i * o for i, o in shapes[1:]))
    floor = float("inf")
    for _ in range(args.repeats):  # in the same rounds as the loops: the cores' speed drifts
        if device.type == "cpu":
            floor = min(floor, step_flops / (matmul_roofline(256, shapes) * 1e9))
        for precision in precisions:
            cfg = BCConfig(steps=args.steps, batch_size=256, precision=precision)
            t0 = time.perf_counter()
            for seed in seeds:
                train_bc(traj, all_episodes(traj), cfg, group([seed]))
            sync()
            best[precision, "sequential"] = min(best[precision, "sequential"], time.perf_counter() - t0)
            t0 = time.perf_counter()
            train_bc(traj, all_episodes(traj), cfg, group(seeds))
            sync()
            best[precision, "batched"] = min(best[precision, "batched"], time.perf_counter() - t0)
    updates = args.seeds * args.steps
    print(f"BC, {args.seeds} seeds x {args.steps} steps of 256 transitions, {device}, {args.threads} thread(s), "
          f"best of {args.repeats} rounds:")
    for precision in precisions:
        seq, bat = best[precision, "sequential"], best[precision, "batched"]
        print(f"  {precision:8s}  sequential {seq:5.1f} s ({updates / seq:4.0f} seed-updates/s)   batched {bat:5.1f} s "
              f"({updates / bat:4.0f} seed-updates/s)   speed-up {seq / bat:.2f}x")
    seq_step = best["float32", "sequential"] / updates
    if device.type == "cpu":
        print(f"  float32 matmuls alone: {floor * 1e3:.2f} ms per seed-update = {100 * floor / seq_step:.0f}% of a "
              f"sequential step ({seq_step * 1e3:.2f} ms); batching removes only the rest, so it cannot beat "
              f"{seq_step / floor:.2f}x in float32 here")
    both = best["float32", "sequential"] / best["bfloat16", "batched"]
    print(f"  batched bfloat16 vs sequential float32: {both:.2f}x")
    if args.run_steps <= 0:
        return

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
