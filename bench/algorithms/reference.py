"""The BC reference policy pi_ref: resolved per (dataset, seed, BC config) before a fine-tuning run's ``fit``.

Every fine-tuning run (sft, sft_q, iw_sft, iw_sft_q) starts theta, theta_q and pi_ref from it. ``run.py`` resolves it
(:func:`reference_policies`) and hands it to ``fit`` as ``group.references``, by one mechanism for a single run, a
batched group and a Ray task: weights the caller already holds (a Ray sweep's upstream task sends them), else the
cache folder, else trained — the missing seeds together as one batched model — and stored there. The key hashes the
dataset's content fingerprint, the seed, the full BC config and the policy architecture version, so a changed config
or dataset never reuses a stale policy. Writes are atomic; an interrupted training resumes from its checkpoint.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import io
import json
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import torch

from bench.algorithms.bc import BCConfig, train_bc
from bench.algorithms.context import RunContext, Schedule, SeedGroup
from bench.algorithms.policy import GaussianMLPPolicy
from bench.datasets.curation import all_episodes
from bench.datasets.trajectories import Trajectories

POLICY_VERSION = "gaussian_mlp_v1"  # bump when GaussianMLPPolicy changes in a way that invalidates old weights


def reference_cache_dir() -> Path:
    """Where this machine keeps trained reference policies: $BENCH_CACHE_DIR/reference (~/.cache/bench/reference)."""
    return Path(os.environ.get("BENCH_CACHE_DIR", Path.home() / ".cache" / "bench")) / "reference"


def reference_key(fingerprint: str, bc: BCConfig, seed: int) -> str:
    blob = json.dumps({"dataset": fingerprint, "bc": dataclasses.asdict(bc), "seed": seed,
                       "policy": POLICY_VERSION}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def policy_bytes(policy: GaussianMLPPolicy) -> bytes:
    """A policy's weights as the bytes of its cache file (what a Ray task sends)."""
    buffer = io.BytesIO()
    torch.save(policy.state_dict(), buffer)
    return buffer.getvalue()


def reference_policies(trajectories: Trajectories, bc: BCConfig, seeds: list[int], device: torch.device,
                       log: Callable[[str], None], cache: Path,
                       given: Mapping[str, bytes] | None = None) -> list[tuple[GaussianMLPPolicy, dict]]:
    """(pi_ref, info) per seed, frozen, on ``device``: from ``given`` ({key: weights file bytes}), else from the
    ``cache`` folder, else trained on all episodes of ``trajectories`` and stored there — the missing seeds together
    as one batched model (each the policy its separate training gives, up to float rounding)."""
    fingerprint = trajectories.fingerprint()
    keys = [reference_key(fingerprint, bc, seed) for seed in seeds]
    info = {"bc_config": dataclasses.asdict(bc), "dataset": trajectories.name}
    found: dict[int, tuple[GaussianMLPPolicy, dict]] = {}
    for k, key in enumerate(keys):
        if given is not None and key in given:
            found[k] = (_load(trajectories, bc, io.BytesIO(given[key]), device),
                        {**info, "key": key, "cached": True, "from": "the caller"})
    if len(found) < len(seeds):
        cache.mkdir(parents=True, exist_ok=True)
        paths = [cache / f"{key}.pt" for key in keys]
        # One process trains, concurrent runs that need the same policies wait here and then load them; locks are
        # taken in key order, so two processes asking for overlapping seeds cannot deadlock.
        with contextlib.ExitStack() as locks:
            for path in sorted({paths[k] for k in range(len(seeds)) if k not in found}):
                fcntl.flock(locks.enter_context(open(path.with_suffix(".lock"), "w")), fcntl.LOCK_EX)
            missing = [k for k, path in enumerate(paths) if k not in found and not path.exists()]
            for k, path in enumerate(paths):
                if k not in found and k not in missing:
                    log(f"reference BC policy from cache {path}")
                    found[k] = (_load(trajectories, bc, path, device),
                                {**info, "key": keys[k], "path": str(path), "cached": True})
            if missing:
                t0 = time.time()
                trained = _train_and_store(trajectories, bc, [seeds[k] for k in missing], device, log,
                                           [paths[k] for k in missing])
                seconds = (time.time() - t0) / len(missing)  # a batched training's time, shared
                for k, policy in zip(missing, trained, strict=True):
                    found[k] = (policy, {**info, "key": keys[k], "path": str(paths[k]), "cached": False,
                                         "train_seconds": seconds})
    return [(found[k][0].requires_grad_(False), found[k][1]) for k in range(len(seeds))]


def _load(trajectories: Trajectories, bc: BCConfig, source: Path | io.BytesIO,
          device: torch.device) -> GaussianMLPPolicy:
    policy = GaussianMLPPolicy(trajectories.obs_dim, trajectories.act_dim, bc.hidden, bc.layers)
    # read to the CPU, then copied into the policy's tensors on the training device
    policy.to(device).load_state_dict(torch.load(source, map_location="cpu", weights_only=True))
    return policy.eval()


def _train_and_store(trajectories: Trajectories, bc: BCConfig, seeds: list[int], device: torch.device,
                     log: Callable[[str], None], paths: list[Path]) -> list[GaussianMLPPolicy]:
    runs = [RunContext(seed=seed, log=lambda m, seed=seed: log(f"reference BC seed {seed}: {m}")) for seed in seeds]
    name = paths[0].stem if len(paths) == 1 else \
        "group-" + hashlib.sha256("".join(p.stem for p in paths).encode()).hexdigest()[:20]
    checkpoint = paths[0].with_name(f"{name}.ckpt")
    group = SeedGroup(runs, device, Schedule(bc.steps, max(bc.steps // 5, 1)), checkpoint)
    policies = train_bc(trajectories, all_episodes(trajectories), bc, group)
    for policy, path in zip(policies, paths, strict=True):
        tmp = path.with_name(path.name + ".part")
        tmp.write_bytes(policy_bytes(policy))
        os.replace(tmp, path)
    checkpoint.unlink(missing_ok=True)
    return policies
