"""Policy evaluation in gymnasium MuJoCo environments, and D4RL normalised scores.

Episodes run in lock-step across a set of environments with one batched forward pass per step. Episode k is reset
with a seed derived from (evaluation seed, k), so the returns depend only on the policy and the seed, never on how
many environments ran side by side.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from typing import Protocol

import numpy as np


class Policy(Protocol):
    def act(self, observations: np.ndarray) -> np.ndarray: ...


def normalized_score(returns, ref_min: float, ref_max: float) -> np.ndarray:
    """D4RL normalised score: 100 * (R - R_min) / (R_max - R_min)."""
    if ref_max == ref_min:
        raise ValueError(f"reference scores are equal ({ref_min}); cannot normalise")
    return 100.0 * (np.asarray(returns, dtype=np.float64) - ref_min) / (ref_max - ref_min)


def episode_seed(seed: int, episode: int) -> int:
    return int(np.random.SeedSequence([seed, episode, 0xE7A1]).generate_state(1)[0])


@dataclass
class EvalResult:
    returns: list[float]
    lengths: list[int]
    return_mean: float
    return_std: float
    normalized_mean: float | None
    normalized_std: float | None

    def to_dict(self) -> dict:
        return asdict(self)


def evaluate(policy: Policy, env_id: str, episodes: int, seed: int, ref_min: float | None = None,
             ref_max: float | None = None, num_envs: int = 10) -> EvalResult:
    """Run ``episodes`` deterministic episodes of ``policy`` in ``env_id``, ``num_envs`` at a time."""
    import gymnasium as gym

    with warnings.catch_warnings():  # v4 is chosen on purpose for D4RL data (closest to its v3 dynamics)
        warnings.filterwarnings("ignore", message=".*out of date.*")
        envs = [gym.make(env_id) for _ in range(min(num_envs, episodes))]
    space = envs[0].action_space
    if not (np.all(space.low == -1) and np.all(space.high == 1)):
        raise ValueError(f"{env_id} has actions in [{space.low}, {space.high}]; the suite's policies act in "
                         "[-1, 1] and need an environment with that action range")
    returns = np.zeros(episodes)
    lengths = np.zeros(episodes, dtype=np.int64)
    obs = np.zeros((len(envs), envs[0].observation_space.shape[0]), np.float32)
    slot_episode = np.full(len(envs), -1)  # which episode each env runs; -1 = idle
    next_episode = 0
    for i, env in enumerate(envs):
        obs[i] = env.reset(seed=episode_seed(seed, next_episode))[0]
        slot_episode[i] = next_episode
        next_episode += 1
    while np.any(slot_episode >= 0):
        active = np.flatnonzero(slot_episode >= 0)
        actions = policy.act(obs[active])
        for j, i in enumerate(active):
            o, r, term, trunc, _ = envs[i].step(actions[j])
            k = slot_episode[i]
            returns[k] += r
            lengths[k] += 1
            obs[i] = o
            if term or trunc:
                if next_episode < episodes:
                    obs[i] = envs[i].reset(seed=episode_seed(seed, next_episode))[0]
                    slot_episode[i] = next_episode
                    next_episode += 1
                else:
                    slot_episode[i] = -1
    for env in envs:
        env.close()
    norm = normalized_score(returns, ref_min, ref_max) if ref_min is not None and ref_max is not None else None
    return EvalResult(
        returns=returns.tolist(), lengths=lengths.tolist(),
        return_mean=float(returns.mean()), return_std=float(returns.std()),
        normalized_mean=None if norm is None else float(norm.mean()),
        normalized_std=None if norm is None else float(norm.std()),
    )
