"""Shared fixtures: an offline, isolated environment and tiny datasets made in the real MuJoCo Hopper."""

from __future__ import annotations

import os

import numpy as np
import pytest


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (scripts/device_check.sh runs it on a GPU)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def offline_and_isolated(tmp_path, monkeypatch):
    """No network, and every store (Minari, D4RL cache, generator work dirs) inside the test's tmp folder."""
    monkeypatch.setenv("BENCH_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    monkeypatch.setenv("BENCH_DATA_DIR", str(tmp_path / "d4rl"))
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    # Ray's token auth keeps the first session's token path in the process; a later test's new HOME then starts a
    # GCS that finds no token and dies (Ray 2.60). Local test clusters need no authentication.
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    monkeypatch.chdir(tmp_path)


def marked_episodes(lengths, obs_dim=3, act_dim=2, terminal_last=None):
    """Episodes whose values encode (episode, step) so any misalignment shows.

    observation t of episode e = [e, t, e*1000 + t, ...]; action t = [e, t]; reward t = e*1000 + t.
    """
    eps = []
    for e, n in enumerate(lengths):
        obs = np.zeros((n + 1, obs_dim), np.float32)
        obs[:, 0] = e
        obs[:, 1] = np.arange(n + 1)
        obs[:, 2] = e * 1000 + np.arange(n + 1)
        act = np.stack([np.full(n, e), np.arange(n)], 1).astype(np.float32)[:, :act_dim]
        term = np.zeros(n, bool)
        trunc = np.zeros(n, bool)
        is_terminal = terminal_last[e] if terminal_last is not None else e % 2 == 0
        (term if is_terminal else trunc)[-1] = True
        eps.append({"observations": obs, "actions": act, "rewards": (e * 1000 + np.arange(n)).astype(np.float32),
                    "terminations": term, "truncations": trunc})
    return eps


@pytest.fixture
def hopper_minari_dataset():
    """A small real Hopper-v5 dataset (random actions) written in Minari format; returns its id."""
    import gymnasium as gym

    from bench.datasets.generate import _rollout, write_minari

    space = gym.make("Hopper-v5").action_space
    space.seed(0)
    episodes = _rollout("Hopper-v5", lambda _o: space.sample(), seed=0, n_episodes=30)
    write_minari(episodes, "bench/test-hopper/random-v0", "Hopper-v5", ref_min=-20.0, ref_max=3000.0,
                 description="test data", extra={"bench_command": "pytest"})
    return "bench/test-hopper/random-v0", episodes


class RunsCode:
    """What a tampered checkpoint holds: a pickle that runs a shell command when it is loaded."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def kill_after_first_checkpoint(monkeypatch, run_fn, when=lambda checkpoint: True):
    """Run ``run_fn()`` so that it dies (KeyboardInterrupt) right after the first checkpoint ``when`` accepts."""
    from bench.algorithms.checkpoint import Checkpoint

    original = Checkpoint.save

    def save_then_die(self, step):
        original(self, step)
        if self.path is not None and when(self):
            raise KeyboardInterrupt

    monkeypatch.setattr(Checkpoint, "save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        run_fn()
    monkeypatch.setattr(Checkpoint, "save", original)


def seed_group(seeds, steps, eval_every=10**9, checkpoint=None, device="cpu"):
    """A SeedGroup of the given seeds (one seed: a single run) without evaluations, loggers or output."""
    import torch

    from bench.algorithms.context import RunContext, Schedule, SeedGroup

    return SeedGroup([RunContext(seed=s, log=lambda m: None) for s in seeds], torch.device(device),
                     Schedule(steps, eval_every), checkpoint)
