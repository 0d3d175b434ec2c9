"""Environments: building one from what a dataset stores, and flattening its observations — shared by the
datasets (which store observations) and the evaluation (which steps environments). A leaf module: it imports
nothing of the suite."""

from __future__ import annotations

import json
import warnings

import numpy as np


def flatten_observation(obs) -> np.ndarray:
    """A goal-conditioned dict observation as one float32 vector: ``observation``, then ``desired_goal``.

    A dict-valued ``desired_goal`` (Franka kitchen: one entry per sub-task) contributes its values in sorted key
    order. ``achieved_goal`` is left out: it repeats part of ``observation``. This gives D4RL's layouts: antmaze
    27 + 2 = 29 dims. Leading (batch/time) axes are kept; plain arrays pass through.
    """
    if not isinstance(obs, dict):
        return np.asarray(obs, dtype=np.float32)
    goal = obs.get("desired_goal")
    parts = [np.asarray(obs["observation"], dtype=np.float32)]
    if isinstance(goal, dict):
        parts += [np.asarray(goal[k], dtype=np.float32) for k in sorted(goal)]
    elif goal is not None:
        parts.append(np.asarray(goal, dtype=np.float32))
    return np.concatenate(parts, axis=-1)


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
