"""d3rlpy baselines: the suite's training loop (device-resident sampler) against d3rlpy's own ``fit()``.

    python benchmarks/baselines_throughput.py [--algos td3_bc,iql,cql,awac] [--rounds 3] [--device cpu] [--compile]

Both train the same algorithm (the suite's preset config, built the same way) on the same data
(hopper-mini-replay): the suite's loop draws indices on the device and hands d3rlpy's update a prepared batch
(``DeviceTransitions`` + ``D3rlpyLearner``, as ``D3rlpyAlgorithm.fit`` runs them, statistics through a SeedGroup);
``fit()`` samples with d3rlpy's Python transition sampler and converts every batch from numpy. Rounds alternate
between the two (the cores' speed drifts), best of each; one thread. Prints
"<algo>: suite X/s, d3rlpy fit Y/s, ratio Z" and the projected wall time of 1M updates at the suite's rate.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from bench.algorithms import get_algorithm  # noqa: E402
from bench.algorithms.baselines import D3rlpyLearner, DeviceTransitions, build_d3rlpy, to_d3rlpy_dataset  # noqa: E402
from bench.algorithms.context import RunContext, Schedule, SeedGroup  # noqa: E402
from bench.configs import load_preset  # noqa: E402
from bench.d3rlpy_import import import_d3rlpy  # noqa: E402
from bench.datasets.curation import all_episodes  # noqa: E402
from bench.datasets.sources import load_dataset  # noqa: E402
from bench.specs import get_spec  # noqa: E402

STEPS = {"td3_bc": 300, "iql": 300, "cql": 40, "awac": 100}  # per round: a few seconds each


def build(algo_name: str, dataset, device: torch.device, compile_graph: bool = False):
    fields, _ = load_preset(algo_name, "hopper-mini-replay")
    cfg = get_algorithm(algo_name).Config(**{**fields, "compile": compile_graph})
    import_d3rlpy().seed(0)
    return build_d3rlpy(cfg, dataset, str(device)), cfg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--algos", default="td3_bc,iql,cql,awac")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--compile", action="store_true", help="d3rlpy's compile_graph (CUDA only), both sides")
    args = parser.parse_args()
    torch.set_num_threads(1)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else lambda: None
    import_d3rlpy()  # quietly, before anything else imports it
    import logging

    import structlog
    from d3rlpy.logging import NoopAdapterFactory

    # fit() warns that the models are built already (they are: both sides start from the same built algorithm)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))

    traj = load_dataset(get_spec("hopper-mini-replay"))
    dataset = to_d3rlpy_dataset(traj, all_episodes(traj))
    for name in args.algos.split(","):
        steps = STEPS[name]
        suite_algo, cfg = build(name, dataset, device, args.compile)
        fit_algo, _ = build(name, dataset, device, args.compile)
        batches = DeviceTransitions(dataset, suite_algo, device, 0, cfg.batch_size)
        learner = D3rlpyLearner(suite_algo, functools.partial(build_d3rlpy, cfg, dataset))
        group = SeedGroup([RunContext(seed=0, log=lambda m: None)], device, Schedule(10**12, 10**12))

        def suite(n: int, learner=learner, batches=batches, group=group) -> None:
            for step in range(1, n + 1):  # the loop of D3rlpyAlgorithm.fit (context.train)
                group.step(step, learner.update(batches.sample()), learner.policy)
            sync()

        def fit(n: int, algo=fit_algo) -> None:
            algo.fit(dataset, n_steps=n, n_steps_per_epoch=n, logger_adapter=NoopAdapterFactory(),
                     show_progress=False, save_interval=10**9)
            sync()

        suite(5)
        fit(5)  # warm-up
        best = {"suite": float("inf"), "fit": float("inf")}
        for _ in range(args.rounds):
            for label, loop in (("suite", suite), ("fit", fit)):
                t0 = time.perf_counter()
                loop(steps)
                best[label] = min(best[label], (time.perf_counter() - t0) / steps)
        ours, theirs = 1 / best["suite"], 1 / best["fit"]
        print(f"{name}: suite {ours:.1f}/s, d3rlpy fit {theirs:.1f}/s, ratio {ours / theirs:.2f}  "
              f"(1M updates: suite {1e6 / ours / 3600:.1f} h, fit {1e6 / theirs / 3600:.1f} h; batch "
              f"{cfg.batch_size}, {device}{', compile_graph' if args.compile else ''}, best of {args.rounds} "
              f"interleaved rounds of {steps})", flush=True)


if __name__ == "__main__":
    main()
