"""The BC reference policy pi_ref: trained once per (dataset, seed, BC config) and cached on disk.

Every fine-tuning run (sft, sft_q, iw_sft, iw_sft_q) starts theta, theta_q and pi_ref from it. The cache key hashes
the dataset's content fingerprint, the seed, the full BC config and the policy architecture version, so a changed
config or dataset never reuses a stale policy. Writes are atomic; an interrupted training resumes from its checkpoint.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import torch

from bench.algorithms.base import RunContext
from bench.algorithms.bc import BCConfig, train_bc
from bench.algorithms.policy import GaussianMLPPolicy
from bench.datasets.curation import all_episodes
from bench.datasets.trajectories import Trajectories

POLICY_VERSION = "gaussian_mlp_v1"  # bump when GaussianMLPPolicy changes in a way that invalidates old weights


def reference_cache_dir() -> Path:
    return Path(os.environ.get("BENCH_CACHE_DIR", Path.home() / ".cache" / "bench")) / "reference"


def reference_key(fingerprint: str, bc: BCConfig, seed: int) -> str:
    blob = json.dumps({"dataset": fingerprint, "bc": dataclasses.asdict(bc), "seed": seed,
                       "policy": POLICY_VERSION}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def reference_policy(trajectories: Trajectories, bc: BCConfig, seed: int, device: torch.device,
                     log: Callable[[str], None]) -> tuple[GaussianMLPPolicy, dict]:
    """(pi_ref, info): loaded from the cache, or trained on all episodes and stored there."""
    key = reference_key(trajectories.fingerprint(), bc, seed)
    path = reference_cache_dir() / f"{key}.pt"
    info = {"key": key, "path": str(path), "bc_config": dataclasses.asdict(bc)}
    path.parent.mkdir(parents=True, exist_ok=True)
    # One process trains, concurrent runs that need the same policy wait here and then load it.
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if path.exists():
                policy = GaussianMLPPolicy(trajectories.obs_dim, trajectories.act_dim, bc.hidden, bc.layers)
                # read to the CPU, then copied into the policy's tensors on the training device
                policy.to(device).load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
                log(f"reference BC policy from cache {path}")
                return policy.eval(), {**info, "cached": True}
            t0 = time.time()
            policy = _train_and_store(trajectories, bc, seed, device, log, path)
            return policy, {**info, "cached": False, "train_seconds": time.time() - t0}
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _train_and_store(trajectories: Trajectories, bc: BCConfig, seed: int, device: torch.device,
                     log: Callable[[str], None], path: Path) -> GaussianMLPPolicy:
    ctx = RunContext(seed=seed, device=device, total_steps=bc.steps, evaluate=None,
                     eval_every=max(bc.steps // 5, 1), checkpoint_path=path.with_suffix(".ckpt"),
                     log=lambda m: log(f"reference BC: {m}"))
    policy = train_bc(trajectories, all_episodes(trajectories), bc, ctx)
    tmp = path.with_name(path.name + ".part")
    torch.save(policy.state_dict(), tmp)
    os.replace(tmp, path)
    path.with_suffix(".ckpt").unlink(missing_ok=True)
    return policy.eval()
