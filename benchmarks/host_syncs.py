"""Sync-prone operations per training step of every native algorithm, counted with torch.profiler.

    python benchmarks/host_syncs.py [--device cpu|cuda] [--steps 6]

A training step that reads a value back from the device (``.item()``, ``float(tensor)``, ``.tolist()``) or runs an
op whose output size depends on data (``nonzero``, ``unique``, ``masked_select``, ``repeat_interleave`` without
``output_size``) makes the host wait for the GPU. This script trains each algorithm through its real ``fit`` on the
embedded dataset, profiles a window of steps that are neither evaluation nor log steps, and prints one line per
algorithm: "<algo>: <N> sync-prone ops per step". The target is 0.

Counted: the profiler's ``aten::_local_scalar_dense`` (what ``.item()``, ``float(t)``, ``if t:`` run),
``aten::nonzero``, ``aten::unique*`` / ``aten::_unique*``, ``aten::masked_select`` and ``aten::repeat_interleave`` —
each chain once (a sync-prone op inside another counts as one) — and, through a ``TorchFunctionMode``, the tensor
methods that copy to the host without such an op (``tolist``, ``numpy``, ``cpu``, ``__array__``). Host-side work
that never touches a torch tensor (the numpy draws of whole trajectories) is not a sync and is not counted.
One exception, reported beside the count: on a CPU, the fused Adam kernel
(``aten::_fused_adam_``) reads each parameter's step counter with ``_local_scalar_dense``; that is a read of CPU
memory, and on CUDA the same kernel reads the counter on the device (``--device cuda`` counts everything).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch
from torch.overrides import TorchFunctionMode
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from bench.algorithms.bc import BCConfig, train_bc  # noqa: E402
from bench.algorithms.context import RunContext, Schedule, SeedGroup  # noqa: E402
from bench.algorithms.reference import reference_policies  # noqa: E402
from bench.algorithms.sft import IWSFTQ, SFTQ  # noqa: E402
from bench.datasets.curation import all_episodes  # noqa: E402
from bench.datasets.sources import load_dataset  # noqa: E402
from bench.specs import get_spec  # noqa: E402

SYNC_PRONE = ("aten::_local_scalar_dense", "aten::nonzero", "aten::masked_select", "aten::repeat_interleave",
              "aten::unique", "aten::_unique", "aten::unique_consecutive", "aten::unique_dim")
CPU_FUSED_ADAM = "aten::_fused_adam_"


def _sync_prone(name: str) -> bool:
    return name in SYNC_PRONE or name.startswith(("aten::_unique", "aten::unique"))


def _compiling(name: str) -> bool:
    """torch.compile's tracing (once per graph; here also when HostReads' mode enters, which dynamo guards on)."""
    return name in ("entire_frame_compile", "backend_compile", "bytecode_tracing") or name.startswith("compile_attempt")


def count_syncs(events, device: torch.device) -> tuple[int, int]:
    """(sync-prone op chains, CPU fused-Adam step-counter reads) among profiler events, compilation left out."""
    syncs, adam_reads = 0, 0
    for e in events:
        if not _sync_prone(e.name):
            continue
        parents, parent = [], e.cpu_parent
        while parent is not None:
            parents.append(parent.name)
            parent = parent.cpu_parent
        if any(_sync_prone(p) or _compiling(p) for p in parents):
            continue  # counted with the op that contains it, or part of compiling the step
        if device.type == "cpu" and CPU_FUSED_ADAM in parents:
            adam_reads += 1
        else:
            syncs += 1
    return syncs, adam_reads


class HostReads(TorchFunctionMode):
    """Counts calls of tensor methods that copy a tensor's values to the host."""

    METHODS = ("tolist", "numpy", "cpu", "__array__")

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.count += getattr(func, "__name__", "") in self.METHODS
        return func(*args, **(kwargs or {}))


class ProfiledGroup(SeedGroup):
    """A SeedGroup that profiles the update steps ``first..last`` (none of them an evaluation step)."""

    def __init__(self, first: int, last: int, *args):
        super().__init__(*args)
        self.first, self.last, self.prof, self.host_reads = first, last, None, HostReads()

    def step(self, step, stats, policy) -> None:
        super().step(step, stats, policy)
        if step == self.first - 1:  # the window: updates and bookkeeping of steps first..last
            self.prof = profile(activities=[ProfilerActivity.CPU]).__enter__()
            self.host_reads.__enter__()
        elif step == self.last:
            self.host_reads.__exit__(None, None, None)
            self.prof.__exit__(None, None, None)


def profiled_group(device: torch.device, steps: int, window: tuple[int, int], seeds: int = 1) -> ProfiledGroup:
    """Seeds 0..seeds-1 as one group that profiles the steps of ``window``."""
    runs = [RunContext(seed=s, log=lambda m: None) for s in range(seeds)]
    return ProfiledGroup(*window, runs, device, Schedule(steps, steps))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=6, help="profiled steps per algorithm")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cache = Path(tempfile.mkdtemp(prefix="host_syncs_"))  # reference policies: not the user's cache
    device = torch.device(args.device)
    traj = load_dataset(get_spec("hopper-mini-replay"))
    window = (3, 2 + args.steps)  # after two warm-up steps
    total = window[1] + 1  # the only evaluation step comes after the window

    def bc(batch_unit: str):
        def fit(group):
            cfg = BCConfig(steps=total, batch_unit=batch_unit, batch_size=256 if batch_unit == "transitions" else 32)
            train_bc(traj, all_episodes(traj), cfg, group)
        return fit

    def sft(algo_cls, static_shapes: bool = False, compile: bool = False):
        def fit(group):
            cfg = algo_cls.Config(steps=total, warmup_steps=1, batch_size=64, bc_steps=2, bc_batch_size=32,
                                  static_shapes=static_shapes, compile=compile)
            algo = algo_cls(cfg)
            group.references = [p for p, _ in reference_policies(traj, algo.reference_bc(), group.seeds, device,
                                                                 lambda m: None, cache)]
            algo.fit(traj, algo.curate(traj), group)
        return fit

    cases = [("bc", bc("transitions"), 1), ("bc (trajectories)", bc("trajectories"), 1), ("sft_q", sft(SFTQ), 1),
             ("iw_sft_q", sft(IWSFTQ), 1), ("iw_sft_q (static shapes)", sft(IWSFTQ, True), 1),
             ("iw_sft_q (static shapes, compiled)", sft(IWSFTQ, True, True), 1),
             ("bc (5 batched seeds)", bc("transitions"), 5), ("iw_sft_q (5 batched seeds)", sft(IWSFTQ), 5),
             ("iw_sft_q (5 batched seeds, static shapes)", sft(IWSFTQ, True), 5)]
    for name, fit, seeds in cases:
        group = profiled_group(device, total, window, seeds)
        fit(group)
        syncs, adam = count_syncs(group.prof.events(), device)
        syncs += group.host_reads.count
        note = f" (+{adam / args.steps:g} step-counter reads in the CPU fused Adam kernel)" if adam else ""
        print(f"{name}: {syncs / args.steps:g} sync-prone ops per step{note}", flush=True)


if __name__ == "__main__":
    main()
