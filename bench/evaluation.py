"""Policy evaluation in gymnasium environments, and the scores reports use.

Episodes run in lock-step across a set of environments with one batched forward pass per step. Episode k is reset
with a seed derived from (evaluation seed, k), so the results depend only on the policy and the seed, never on how
many environments ran side by side.

Scores per episode (a dataset's spec names which):
- ``return``: the D4RL normalised score 100 * (R - R_min) / (R_max - R_min);
- ``success``: 100 if the goal was reached at any step (``info["success"]``, else a positive reward), else 0 —
  antmaze's success rate;
- ``subtasks``: 100 * (sub-tasks completed / sub-tasks asked) — Franka kitchen (4 sub-tasks in D4RL).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass
from typing import Protocol

import numpy as np

from bench.datasets.trajectories import flatten_observation

SCORES = ("return", "success", "subtasks")


class Policy(Protocol):
    def act(self, observations: np.ndarray) -> np.ndarray: ...


def normalized_score(returns, ref_min: float, ref_max: float) -> np.ndarray:
    """D4RL normalised score: 100 * (R - R_min) / (R_max - R_min)."""
    if ref_max == ref_min:
        raise ValueError(f"reference scores are equal ({ref_min}); cannot normalise")
    return 100.0 * (np.asarray(returns, dtype=np.float64) - ref_min) / (ref_max - ref_min)


def make_env(env: str):
    """``env`` is a gymnasium id or a JSON EnvSpec (as Minari stores it: id, max_episode_steps, kwargs)."""
    import gymnasium as gym

    spec = json.loads(env) if env.lstrip().startswith("{") else {"id": env}
    if spec["id"] not in gym.registry:
        _register_robotics(spec["id"])
    with warnings.catch_warnings():  # v4 is chosen on purpose for D4RL data (closest to its v3 dynamics)
        warnings.filterwarnings("ignore", message=".*out of date.*")
        if spec.get("additional_wrappers"):
            return gym.make(gym.envs.registration.EnvSpec.from_json(env))
        extra = {"max_episode_steps": spec["max_episode_steps"]} if spec.get("max_episode_steps") else {}
        return gym.make(spec["id"], **extra, **(spec.get("kwargs") or {}))


def _register_robotics(env_id: str) -> None:
    import gymnasium as gym

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import gymnasium_robotics
    except ImportError as e:
        raise ValueError(f"environment {env_id} needs gymnasium-robotics: pip install gymnasium-robotics==1.3.1") from e
    gym.register_envs(gymnasium_robotics)


def env_label(env: str) -> str:
    """The id of an env reference (for records and messages)."""
    return json.loads(env)["id"] if env.lstrip().startswith("{") else env


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
    scores: list[float] | None = None  # per-episode normalised score

    def to_dict(self) -> dict:
        return asdict(self)


def evaluate(policy: Policy, env: str, episodes: int, seed: int, ref_min: float | None = None,
             ref_max: float | None = None, num_envs: int = 10, score: str = "return") -> EvalResult:
    """Run ``episodes`` deterministic episodes of ``policy`` in ``env``, ``num_envs`` at a time."""
    if score not in SCORES:
        raise ValueError(f"unknown score {score!r}; choose one of {', '.join(SCORES)}")
    envs = [make_env(env) for _ in range(min(num_envs, episodes))]
    space = envs[0].action_space
    if not (np.all(space.low == -1) and np.all(space.high == 1)):
        raise ValueError(f"{env_label(env)} has actions in [{space.low}, {space.high}]; the suite's policies act in "
                         "[-1, 1] and need an environment with that action range")
    returns = np.zeros(episodes)
    lengths = np.zeros(episodes, dtype=np.int64)
    success = np.zeros(episodes, dtype=bool)
    subtasks = np.zeros(episodes)
    obs: list[np.ndarray] = [np.empty(0)] * len(envs)
    slot_episode = np.full(len(envs), -1)  # which episode each env runs; -1 = idle
    asked = [0] * len(envs)
    next_episode = 0

    def start(i: int) -> None:
        nonlocal next_episode
        o, _ = envs[i].reset(seed=episode_seed(seed, next_episode))
        obs[i] = flatten_observation(o)
        asked[i] = len(getattr(envs[i].unwrapped, "tasks_to_complete", ()) or ())
        slot_episode[i] = next_episode
        next_episode += 1

    for i in range(len(envs)):
        start(i)
    while np.any(slot_episode >= 0):
        active = np.flatnonzero(slot_episode >= 0)
        actions = policy.act(np.stack([obs[i] for i in active]))
        for j, i in enumerate(active):
            o, r, term, trunc, info = envs[i].step(actions[j])
            k = slot_episode[i]
            returns[k] += r
            lengths[k] += 1
            success[k] |= bool(info.get("success", r > 0))
            obs[i] = flatten_observation(o)
            if term or trunc:
                if score == "subtasks":
                    subtasks[k] = len(info.get("episode_task_completions", ())) / max(asked[i], 1)
                if next_episode < episodes:
                    start(i)
                else:
                    slot_episode[i] = -1
    for e in envs:
        e.close()
    if score == "return":
        per_episode = normalized_score(returns, ref_min, ref_max) if ref_min is not None and ref_max is not None \
            else None
    else:
        per_episode = 100.0 * (success if score == "success" else subtasks)
    return EvalResult(
        returns=returns.tolist(), lengths=lengths.tolist(),
        return_mean=float(returns.mean()), return_std=float(returns.std()),
        normalized_mean=None if per_episode is None else float(np.mean(per_episode)),
        normalized_std=None if per_episode is None else float(np.std(per_episode)),
        scores=None if per_episode is None else np.asarray(per_episode, float).tolist(),
    )
