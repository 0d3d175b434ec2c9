"""iw-SFT(Q) fine-tuning throughput: the suite's step against the plain computation, and against the roofline.

    python benchmarks/finetune_throughput.py [--steps 20] [--batch 256] [--threads 1] [--rounds 5] [--device cpu]
                                             [--precision float32]

Plain computation (what a direct transcription of the objective does): pad the B drawn trajectories to the longest
one, run theta, theta_q and pi_ref on every padded step, mask, and compute every drawn trajectory even when the same
one is drawn several times. The suite's step packs the drawn trajectories without padding (segment sums), computes a
trajectory drawn k times once with weight k, and reads log pi_ref from a table computed once (pi_ref is frozen).
Both give the same loss and gradient (tests/test_weights.py). Throughput is in drawn trajectory-steps per second.
Then the suite's fine-tuning step as ``SFT.fit`` runs it, in its three forms — each drawn trajectory once (the
default), static shapes (every curated transition, weighted by draw counts) and static shapes under torch.compile
(with CUDA graphs on CUDA, and there also without them) — in interleaved rounds, best of each (the compiled forms'
first calls, which compile, are not timed).
The roofline is this machine's float32 matrix-multiply rate on the MLP's own layer shapes; the suite's step does
3 MLP passes' worth of matmul work per transition it computes (theta forward + backward ~ 3 forward passes) plus
one forward of theta_q, i.e. 4 forward passes.
"""

from __future__ import annotations

import argparse
import copy
import time

import numpy as np
import torch

from bench.algorithms.policy import GaussianMLPPolicy
from bench.algorithms.sft import SFTConfig, SFTLearner, iw_sft_loss
from bench.algorithms.trajectory_batch import TrajectoryBatches
from bench.algorithms.weights import temperature_weights
from bench.datasets.curation import quality_bins
from bench.datasets.sources import load_dataset
from bench.specs import get_spec


def plain_step(policy, q, ref, optim, obs, act, starts, lengths, cfg: SFTConfig) -> int:
    """Padded (B, T_max) computation of the same iw-SFT loss; returns the drawn transitions."""
    t_max = int(lengths.max())
    steps = torch.arange(t_max)
    mask = steps[None, :] < lengths[:, None]
    rows = torch.where(mask, starts[:, None] + steps[None, :], 0)
    o, a = obs[rows], act[rows]  # (B, T_max, dim), padding rows point at transition 0 and are masked out
    logp = policy.log_prob(o, a) * mask
    with torch.no_grad():
        rho = (q.log_prob(o, a) - ref.log_prob(o, a)) * mask
        w = temperature_weights(rho.sum(1), lengths.float(), cfg.temperature, cfg.max_weight)
    loss = -(w * logp.sum(1) / lengths).mean()
    optim.zero_grad(set_to_none=True)
    loss.backward()
    optim.step()
    return int(lengths.sum())


def suite_step(policy, q, logp_ref_all, optim, obs, act, batches: TrajectoryBatches, cfg: SFTConfig) -> int:
    b = batches.sample()  # one seed: rows (1, N), counts (1, S)
    rows, counts = b.rows[0], b.counts[0]
    loss, _ = iw_sft_loss(policy, q, obs[rows], act[rows], logp_ref_all[rows], b.sizes, b.lengths, cfg,
                          batches.mean_length, counts)
    optim.zero_grad(set_to_none=True)
    loss.backward()
    optim.step()
    return int((b.lengths * counts).sum())


def layouts(ref, obs, act, traj, curated, batch: int, device: torch.device, rounds: int, steps: int,
            precision: str = "float32") -> None:
    """Fine-tuning steps/s of the three layouts SFT.fit offers (its learner's update on its batch source: the
    optimiser step, the scheduler and the EMA of q included), interleaved rounds, best of each."""
    forms = {"drawn trajectories once": {}, "static shapes": {"static_shapes": True},
             "static shapes + compile": {"static_shapes": True, "compile": True}}
    if device.type == "cuda":  # compile alone vs compile + CUDA graphs (the default on CUDA)
        forms["static shapes + compile, no graphs"] = {"static_shapes": True, "compile": True, "cuda_graphs": False}
    loops = {}
    for name, extra in forms.items():
        cfg = SFTConfig(importance_weighted=True, batch_size=batch, precision=precision, **extra)
        batches = TrajectoryBatches(traj, curated, device, [0], batch, cfg.static_shapes)
        learner = SFTLearner([ref], traj, device, batches.mean_length, cfg)

        def loop(n, learner=learner, batches=batches):
            for _ in range(n):
                learner.update(batches.sample())
            if device.type == "cuda":
                torch.cuda.synchronize()
        loop(2)  # warm-up (and compilation)
        loops[name] = loop
    best = dict.fromkeys(loops, float("inf"))
    for _ in range(rounds):
        for name, loop in loops.items():
            t0 = time.perf_counter()
            loop(steps)
            best[name] = min(best[name], (time.perf_counter() - t0) / steps)
    print(f"SFT.fit's step, {batch} trajectories, {device}, {precision}, best of {rounds} interleaved rounds of "
          f"{steps} steps:")
    base = best["drawn trajectories once"]
    for name, dt in best.items():
        print(f"  {name:34s} {dt * 1e3:8.1f} ms/step  {1 / dt:8.1f} steps/s  ({base / dt:.2f}x the default)")


def matmul_roofline(rows: int, shapes: list[tuple[int, int]], repeats: int = 5) -> float:
    """GFLOP/s of float32 (rows x in) @ (in x out) for the MLP's layer shapes."""
    flops, seconds = 0.0, 0.0
    for fan_in, fan_out in shapes:
        x, w = torch.randn(rows, fan_in), torch.randn(fan_in, fan_out)
        x @ w  # warm-up
        t0 = time.perf_counter()
        for _ in range(repeats):
            x @ w
        seconds += time.perf_counter() - t0
        flops += 2.0 * rows * fan_in * fan_out * repeats
    return flops / seconds / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=256, help="trajectories per step (paper: 256)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds of the roofline comparison")
    parser.add_argument("--device", default="cpu", help="cpu or cuda: on cuda only the three layouts are timed")
    parser.add_argument("--precision", default="float32", help="of the layouts' steps: float32, tf32, bfloat16")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    traj = load_dataset(get_spec("hopper-mini-replay"))
    curated = quality_bins(traj, [90, 95, 98])
    cfg = SFTConfig(importance_weighted=True, batch_size=args.batch)
    obs = torch.as_tensor(traj.observations, device=device)
    act = torch.as_tensor(traj.actions, device=device)
    ref = GaussianMLPPolicy(traj.obs_dim, traj.act_dim).to(device).requires_grad_(False)
    table = TrajectoryBatches(traj, curated, device, [0], args.batch)  # the curated episodes and their probabilities
    if device.type == "cuda":
        layouts(ref, obs, act, traj, curated, args.batch, device, args.rounds, args.steps, args.precision)
        return

    results = {}
    for name in ("plain", "suite"):
        policy, q = copy.deepcopy(ref).requires_grad_(True), copy.deepcopy(ref)
        optim = torch.optim.Adam(policy.parameters(), lr=1e-4)
        gen = np.random.default_rng(0)  # the plain step's draws; the suite's batches draw with seed 0 alike
        batches = TrajectoryBatches(traj, curated, device, [0], args.batch)
        logp_ref_all = None
        t0 = time.perf_counter()
        if name == "suite":
            with torch.no_grad():
                logp_ref_all = ref.log_prob(obs, act)  # once per dataset, counted in the time
        drawn = 0
        for _ in range(args.steps):
            if name == "plain":
                picks = gen.choice(len(table.probs), size=args.batch, replace=True, p=table.probs)
                drawn += plain_step(policy, q, ref, optim, obs, act, torch.from_numpy(table.starts[picks]),
                                    torch.from_numpy(table.lengths[picks]), cfg)
            else:
                drawn += suite_step(policy, q, logp_ref_all, optim, obs, act, batches, cfg)
        results[name] = (drawn / (time.perf_counter() - t0), time.perf_counter() - t0)
        print(f"{name:>5}: {results[name][0]:10.0f} drawn trajectory-steps/s ({args.steps} steps of "
              f"{args.batch} trajectories, {results[name][1]:.1f} s)")
    print(f"speed-up: {results['suite'][0] / results['plain'][0]:.2f}x")

    # How close the suite's step runs to the matmul roofline: time it on a fixed unique batch
    fixed = TrajectoryBatches(traj, curated, device, [1], args.batch).sample()
    rows, sizes, lengths, counts = fixed.rows[0], fixed.sizes, fixed.lengths, fixed.counts[0]
    policy, q = copy.deepcopy(ref).requires_grad_(True), copy.deepcopy(ref)
    optim = torch.optim.Adam(policy.parameters(), lr=1e-4)
    with torch.no_grad():
        logp_ref_all = ref.log_prob(obs, act)
    shapes = [(traj.obs_dim, 256), (256, 256), (256, 256), (256, traj.act_dim)]

    def seconds_per_step(steps: int) -> float:
        t0 = time.perf_counter()
        for _ in range(steps):
            loss, _ = iw_sft_loss(policy, q, obs[rows], act[rows], logp_ref_all[rows], sizes, lengths, cfg,
                                  table.mean_length, counts)
            optim.zero_grad(set_to_none=True)
            loss.backward()
            optim.step()
        return (time.perf_counter() - t0) / steps

    # step and roofline in interleaved rounds, best of each: the speed of a shared machine's cores drifts by tens
    # of percent within a minute, and a ratio of two numbers taken minutes apart would measure the drift
    dt, peak = float("inf"), 0.0
    for _ in range(args.rounds):
        dt = min(dt, seconds_per_step(max(args.steps // args.rounds, 1)))
        peak = max(peak, matmul_roofline(len(rows), shapes))
    forward_flops = 2.0 * len(rows) * sum(i * o for i, o in shapes)
    achieved = 4 * forward_flops / dt / 1e9  # theta forward + backward (~3 forwards) + theta_q forward
    print(f"suite step on {len(rows)} computed transitions: {dt * 1e3:.0f} ms, {achieved:.1f} GFLOP/s of matmul "
          f"work; roofline (float32 matmul, same shapes) {peak:.1f} GFLOP/s -> {100 * achieved / peak:.0f}% "
          f"(best of {args.rounds} interleaved rounds each)")

    layouts(ref, obs, act, traj, curated, args.batch, device, args.rounds, max(args.steps // args.rounds, 1),
            args.precision)


if __name__ == "__main__":
    main()
