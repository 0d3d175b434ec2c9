"""Per-trajectory sums, forward and backward: the suite's segment_sum (torch.segment_reduce, deterministic on every
device) against the index_add_ it replaced (atomics on CUDA), on the shapes a training step sums.

    python benchmarks/segment_sum.py [--device cpu] [--rounds 5] [--calls 200]

Shapes: a unique-layout batch (64 trajectories of ~200 steps), 5 batched seeds' static layout (3200 segments of
~150) and a batch of whole 1000-step trajectories (128). Each round times both on every shape, in turn; the best
round of each is printed with the ratio, so that a shared machine's drift hits both alike.
"""

from __future__ import annotations

import argparse
import time

import torch

from bench.algorithms.weights import segment_sum

SHAPES = {"unique batch, 64 x ~200": (64, 200), "5 seeds static, 3200 x ~150": (3200, 150),
          "whole trajectories, 128 x ~1000": (128, 1000)}


def index_add_sum(values: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
    seg = torch.repeat_interleave(torch.arange(len(sizes), device=sizes.device), sizes)  # outside the timing below
    return torch.zeros(len(sizes), dtype=values.dtype, device=values.device).index_add_(0, seg, values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()
    torch.set_num_threads(1)
    device = torch.device(args.device)
    gen = torch.Generator().manual_seed(0)
    cases = {}
    for name, (segments, length) in SHAPES.items():
        sizes = torch.randint(length // 2, length * 3 // 2, (segments,), generator=gen)
        values = torch.randn(int(sizes.sum()), generator=gen).to(device).requires_grad_(True)
        sizes = sizes.to(device)
        seg = torch.repeat_interleave(torch.arange(segments, device=device), sizes)
        cases[name] = {
            "segment_sum": lambda v=values, s=sizes: segment_sum(v, s),
            "index_add_": lambda v=values, s=seg, n=segments: torch.zeros(n, device=v.device).index_add_(0, s, v),
        }
        torch.testing.assert_close(cases[name]["segment_sum"](), index_add_sum(values, sizes), rtol=1e-5, atol=1e-4)
    best = {(n, k): float("inf") for n in cases for k in cases[n]}
    for _ in range(args.rounds):
        for name, fns in cases.items():
            for kind, fn in fns.items():
                weights = torch.randn(SHAPES[name][0], device=device)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                for _ in range(args.calls):
                    (fn() * weights).sum().backward()
                if device.type == "cuda":
                    torch.cuda.synchronize()
                best[(name, kind)] = min(best[(name, kind)], (time.perf_counter() - t0) / args.calls)
    print(f"device {device}, best of {args.rounds} rounds of {args.calls} forward+backward calls")
    for name in cases:
        ours, theirs = best[(name, "segment_sum")], best[(name, "index_add_")]
        print(f"{name:>34}: segment_sum {ours * 1e6:8.1f} us | index_add_ {theirs * 1e6:8.1f} us | "
              f"{theirs / ours:.2f}x")


if __name__ == "__main__":
    main()
