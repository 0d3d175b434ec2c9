"""Wall time of one small sweep grid with 1 worker and with 2 workers (the ratio is the point).

    python benchmarks/sweep_scaling.py [--steps 1000]

Grid: 2 datasets (hopper-mini-replay and a 20k-step random Hopper-v5 dataset made here) x 2 algorithms (bc, bc_10)
x 2 seeds, each run `--steps` updates, 10 final evaluation episodes. Each worker count writes to a fresh folder.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["MINARI_DATASETS_PATH"] = str(Path(tmp) / "minari")
        from bench.datasets.generate import GenerateConfig, generate
        from bench.sweep import Grid, run_sweep

        generate(GenerateConfig(env_id="Hopper-v5", kind="random", name="scaling", dataset_size=20_000,
                                ref_min_score=0.0, ref_max_score=3234.3))
        grid = Grid(["hopper-mini-replay", "minari:bench/scaling/random-v0"], ["bc", "bc_10"], [0, 1],
                    {"steps": args.steps, "eval_every": args.steps, "eval_episodes": 5, "final_eval_episodes": 10})
        configs = grid.expand()
        times = {}
        for workers in (1, 2):
            t0 = time.perf_counter()
            summary = run_sweep(configs, Path(tmp) / f"w{workers}", "local", workers, log=lambda m: None)
            times[workers] = time.perf_counter() - t0
            assert summary.ok, summary.text()
            print(f"{len(configs)} runs, {workers} worker(s): {times[workers]:.1f} s")
        print(f"speed-up with 2 workers: {times[1] / times[2]:.2f}x")


if __name__ == "__main__":
    main()
