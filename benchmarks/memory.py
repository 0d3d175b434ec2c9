"""Peak host memory (RSS) of one run per algorithm on D4RL-sized data: a synthetic Hopper file in D4RL's layout of
0.1M, 1M and 2M transitions (1000-step episodes, random values; D4RL's files hold 0.2M to 2M).

    python benchmarks/memory.py [--sizes 0.1,1,2] [--algos bc,bc_10,sft_q,iw_sft_q,iw_sft_q*5,td3_bc,iql,cql,awac]
                                [--steps 20]

Each run is `bench run --env hopper-medium-replay --data FILE` with the algorithm's preset for that dataset (the
paper's batch sizes: the SFT family's 256 whole trajectories, its reference BC's 128), --steps updates of each
training phase and one evaluation episode, in a process of its own; its peak RSS is the kernel's (wait4's
ru_maxrss). ``iw_sft_q*5``: five seeds as one batched model, as `bench sweep` trains a cell. Peak memory does not
grow with more steps (nothing accumulates per step), so a short run measures a full one.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

EPISODE = 1000
OBS, ACT = 11, 3  # Hopper


def write_d4rl_file(path: Path, transitions: int, seed: int = 0) -> None:
    """A D4RL-layout HDF5 file of ``transitions`` random Hopper transitions in 1000-step episodes (time-outs)."""
    import h5py

    rng = np.random.default_rng(seed)
    timeouts = np.zeros(transitions, bool)
    timeouts[EPISODE - 1::EPISODE] = True
    with h5py.File(path, "w") as f:
        f["observations"] = rng.standard_normal((transitions, OBS), dtype=np.float32)
        f["next_observations"] = rng.standard_normal((transitions, OBS), dtype=np.float32)
        f["actions"] = rng.uniform(-1, 1, (transitions, ACT)).astype(np.float32)
        f["rewards"] = rng.standard_normal(transitions, dtype=np.float32) + 1.0
        f["terminals"] = np.zeros(transitions, bool)
        f["timeouts"] = timeouts


def peak_rss_gb(algo: str, data: Path, steps: int, out: Path) -> tuple[float, float]:
    """(peak RSS in GB, seconds) of one `bench run` of ``algo`` (``name*K``: K batched seeds) on ``data``, with an
    empty reference-policy cache of its own (the SFT family trains its reference BC in the run, as a first run
    does)."""
    name, _, seeds = algo.partition("*")
    overrides = {"steps": steps, "eval_every": steps, "eval_episodes": 1, "final_eval_episodes": 1}
    if name in ("sft", "sft_q", "iw_sft", "iw_sft_q"):
        overrides["bc_steps"] = steps
    cmd = [str(Path(sys.executable).parent / "bench"), "run", "--env", "hopper-medium-replay", "--algo", name,
           "--data", str(data), "--out", str(out), "--force", *(["--seeds", seeds] if seeds else [])]
    for key, value in overrides.items():
        cmd += ["--set", f"{key}={value}"]
    t0 = time.perf_counter()
    env = {**os.environ, "BENCH_CACHE_DIR": tempfile.mkdtemp(prefix="cache_", dir=out.parent)}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read()
    if proc.returncode != 0:
        raise RuntimeError(f"{algo} on {data.name} failed ({proc.returncode}):\n{err[-2000:]}")
    return usage.ru_maxrss / 1024 ** 2, time.perf_counter() - t0  # ru_maxrss is in KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="0.1,1,2", help="millions of transitions")
    parser.add_argument("--algos", default="bc,bc_10,sft_q,iw_sft_q,iw_sft_q*5,td3_bc,iql,cql,awac")
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    sizes = [float(s) for s in args.sizes.split(",")]
    algos = args.algos.split(",")
    work = Path(tempfile.mkdtemp(prefix="bench_memory_"))
    table: dict[str, list[str]] = {a: [] for a in algos}
    for size in sizes:
        data = work / f"hopper_{size:g}M.hdf5"
        write_d4rl_file(data, int(round(size * 1e6 / EPISODE)) * EPISODE)
        for algo in algos:
            gb, seconds = peak_rss_gb(algo, data, args.steps, work / "out")
            table[algo].append(f"{gb:6.2f} GB")
            print(f"{algo:>10} {size:g}M transitions: peak RSS {gb:.2f} GB ({seconds:.0f} s)", flush=True)
        data.unlink()
    print(f"\npeak RSS of one run ({args.steps} steps per phase), by dataset size")
    print(f"| algorithm | {' | '.join(f'{s:g}M' for s in sizes)} |\n|---|{'---|' * len(sizes)}")
    for algo, cells in table.items():
        print(f"| {algo} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
