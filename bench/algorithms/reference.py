"""The BC reference policy pi_ref: resolved per (dataset, seed, BC config) before a fine-tuning run's ``fit``.

Every fine-tuning run (sft, sft_q, iw_sft, iw_sft_q) starts theta, theta_q and pi_ref from it. ``run.py`` resolves it
(:func:`reference_policies`) and hands it to ``fit`` as ``group.references``, by one mechanism for a single run, a
batched group and a Ray task: from a cache folder the caller names (this machine's, or a Ray task's scratch folder
holding what its upstream task trained), else trained — the missing seeds together as one batched model — and stored
there. The key hashes the dataset's content fingerprint, the seed, the full BC config and the policy architecture
version, so a changed config or dataset never reuses a stale policy. Writes are atomic; an interrupted training
resumes from its checkpoint.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import torch

from bench.algorithms.bc import BCConfig, train_bc
from bench.algorithms.context import DivergenceGuard, RunContext, Schedule, SeedGroup
from bench.algorithms.policy import GaussianMLPPolicy
from bench.datasets.curation import all_episodes
from bench.datasets.trajectories import Trajectories
from bench.locks import file_lock, writable_folder

POLICY_VERSION = "gaussian_mlp_v1"  # bump when GaussianMLPPolicy changes in a way that invalidates old weights


def reference_cache_dir() -> Path:
    """Where this machine keeps trained reference policies: $BENCH_CACHE_DIR/reference (~/.cache/bench/reference)."""
    return Path(os.environ.get("BENCH_CACHE_DIR", Path.home() / ".cache" / "bench")) / "reference"


def writable_reference_cache(cache: Path) -> Path:
    """``cache``, created if missing, once it can be written; else one line naming it and the fix."""
    return writable_folder(cache, f"the reference-policy cache {cache}",
                           "set BENCH_CACHE_DIR to a folder you can write")


def reference_key(fingerprint: str, bc: BCConfig, seed: int) -> str:
    blob = json.dumps({"dataset": fingerprint, "bc": dataclasses.asdict(bc), "seed": seed,
                       "policy": POLICY_VERSION}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def reference_policies(trajectories: Trajectories, bc: BCConfig, seeds: list[int], device: torch.device,
                       log: Callable[[str], None], cache: Path) -> list[tuple[GaussianMLPPolicy, dict]]:
    """(pi_ref, info) per seed, frozen, on ``device``: from the ``cache`` folder, or trained on all episodes of
    ``trajectories`` and stored there — the missing seeds together as one batched model (each the policy its separate
    training gives, up to float rounding)."""
    fingerprint = trajectories.fingerprint()
    paths = [cache / f"{reference_key(fingerprint, bc, seed)}.pt" for seed in seeds]
    infos = [{"key": p.stem, "path": str(p), "bc_config": dataclasses.asdict(bc), "dataset": trajectories.name}
             for p in paths]
    writable_reference_cache(cache)
    # One process trains, concurrent runs that need the same policies wait here and then load them; locks are
    # taken in key order, so two processes asking for overlapping seeds cannot deadlock.
    with contextlib.ExitStack() as locks:
        for path in sorted(set(paths)):
            locks.enter_context(file_lock(path.with_suffix(".lock"), on_wait=lambda holder, path=path: log(
                f"waiting for {holder}, which trains the reference policy {path.stem}")))
        loaded = {k: policy for k, policy in enumerate(_load(p, trajectories, bc, device, log) for p in paths)
                  if policy is not None}
        missing = [k for k in range(len(paths)) if k not in loaded]
        t0 = time.time()
        trained = _train_and_store(trajectories, bc, [seeds[k] for k in missing], device, log,
                                   [paths[k] for k in missing]) if missing else []
        seconds = (time.time() - t0) / max(len(missing), 1)  # a batched training's time, shared
        out = [(loaded[k], {**info, "cached": True}) if k in loaded else
               (trained[missing.index(k)], {**info, "cached": False, "train_seconds": seconds})
               for k, info in enumerate(infos)]
    return [(policy.requires_grad_(False), info) for policy, info in out]


def _load(path: Path, trajectories: Trajectories, bc: BCConfig, device: torch.device,
          log: Callable[[str], None]) -> GaussianMLPPolicy | None:
    """The cached policy at ``path`` on ``device``; None when there is none. A damaged file (cut short, another
    shape, or more than weights) is a cache miss: it is named, deleted and trained again."""
    if not path.exists():
        return None
    policy = GaussianMLPPolicy(trajectories.obs_dim, trajectories.act_dim, bc.hidden, bc.layers)
    try:  # read to the CPU as data only, then copied into the policy's tensors on the training device
        policy.to(device).load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    except Exception as e:  # noqa: BLE001 - whatever is wrong with a cache file, the fix is to rebuild it
        log(f"warning: the cached reference policy {path} is damaged ({type(e).__name__}: "
            f"{str(e).splitlines()[0][:200]}); deleting it and training it again")
        path.unlink(missing_ok=True)
        return None
    log(f"reference BC policy from cache {path}")
    return policy.eval()


def _train_and_store(trajectories: Trajectories, bc: BCConfig, seeds: list[int], device: torch.device,
                     log: Callable[[str], None], paths: list[Path]) -> list[GaussianMLPPolicy]:
    runs = [RunContext(seed=seed, log=lambda m, seed=seed: log(f"reference BC seed {seed}: {m}")) for seed in seeds]
    name = paths[0].stem if len(paths) == 1 else \
        "group-" + hashlib.sha256("".join(p.stem for p in paths).encode()).hexdigest()[:20]
    checkpoint = paths[0].with_name(f"{name}.ckpt")
    # the fine-tuning config names this BC's fields bc_*
    fix = f"lower bc_learning_rate, the reference BC's (e.g. --set bc_learning_rate={bc.learning_rate / 10:g})"
    group = SeedGroup(runs, device, Schedule(bc.steps, max(bc.steps // 5, 1)), checkpoint, DivergenceGuard(fix=fix))
    policies = train_bc(trajectories, all_episodes(trajectories), bc, group)
    for policy, path in zip(policies, paths, strict=True):
        tmp = path.with_name(path.name + ".part")
        with open(tmp, "wb") as f:  # on disk before it has its name: a crash never leaves a short file as the cache
            torch.save(policy.state_dict(), f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    checkpoint.unlink(missing_ok=True)
    return policies
