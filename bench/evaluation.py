"""Policy evaluation in gymnasium environments, and the scores reports use.

Episodes run in lock-step across a set of environments with one batched forward pass per step; the environments can
be stepped in several worker processes at once (env physics, not the policy, is most of the time). Episode k is
reset with a seed derived from (evaluation seed, k), so the results depend only on the policy, the seed and the
number of environments side by side (which sets the policy's batch shape, and float32 matmuls of different shapes
may differ in the last bit, which chaotic dynamics amplify) — never on how many processes step them.

Scores per episode (a dataset's spec names which):
- ``return``: the D4RL normalised score 100 * (R - R_min) / (R_max - R_min);
- ``success``: 100 if the goal was reached at any step (``info["success"]``, else a positive reward), else 0 —
  antmaze's success rate;
- ``subtasks``: 100 * (sub-tasks completed / sub-tasks asked) — Franka kitchen (4 sub-tasks in D4RL).
"""

from __future__ import annotations

import json
import time
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


class _Envs:
    """Environments of one worker, driven by commands (the same code in this process and in a worker process)."""

    def __init__(self, env: str, count: int):
        self.envs = [make_env(env) for _ in range(count)]

    def reset(self, items: list[tuple[int, int]]) -> list[tuple[np.ndarray, int]]:
        """[(local env, seed)] -> [(flat observation, sub-tasks asked)]."""
        out = []
        for i, seed in items:
            o, _ = self.envs[i].reset(seed=seed)
            out.append((flatten_observation(o), len(getattr(self.envs[i].unwrapped, "tasks_to_complete", ()) or ())))
        return out

    def step(self, items: list[tuple[int, np.ndarray]]) -> list[tuple]:
        """[(local env, action)] -> [(flat obs, reward, done, success, sub-tasks completed)]."""
        out = []
        for i, action in items:
            o, r, term, trunc, info = self.envs[i].step(action)
            out.append((flatten_observation(o), float(r), bool(term or trunc), bool(info.get("success", r > 0)),
                        len(info.get("episode_task_completions", ()))))
        return out

    def close(self) -> None:
        for e in self.envs:
            e.close()


def _recv(conn, spin_seconds: float = 0.005):
    """Receive, polling for a few milliseconds before blocking: waking a process that sleeps in a blocking read
    takes ~0.5 ms on a small VM — as long as a few env steps."""
    deadline = time.perf_counter() + spin_seconds
    while not conn.poll() and time.perf_counter() < deadline:
        pass
    return conn.recv()


def _worker(conn, env: str, count: int) -> None:
    envs = _Envs(env, count)
    while (msg := _recv(conn))[0] != "close":
        conn.send(getattr(envs, msg[0])(msg[1]))
    envs.close()
    conn.close()


class _EnvPool:
    """``num_envs`` environments split over ``workers`` processes: env i lives in share i % workers; share 0 is
    stepped by this process while the other shares step in worker processes at the same time. (This process takes
    a share itself because waking a sleeping worker costs as much as several env steps on a small VM.)"""

    def __init__(self, env: str, num_envs: int, workers: int):
        self.workers = max(1, min(workers, num_envs))
        counts = [len(range(w, num_envs, self.workers)) for w in range(self.workers)]
        self.local = _Envs(env, counts[0])
        self.conns, self.procs = [], []
        if self.workers == 1:
            return
        import multiprocessing as mp

        # fork starts in milliseconds and the workers never touch torch; spawn where fork does not exist.
        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        for w in range(1, self.workers):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_worker, args=(child, env, counts[w]), daemon=True)
            proc.start()
            child.close()
            self.conns.append(parent)
            self.procs.append(proc)

    def call(self, command: str, items: list[tuple[int, object]]) -> dict[int, tuple]:
        """Run ``command`` on [(global env index, argument)]; returns {global env index: result}."""
        shares: list[list[tuple[int, object]]] = [[] for _ in range(self.workers)]
        for i, arg in items:
            shares[i % self.workers].append((i, arg))
        for conn, share in zip(self.conns, shares[1:], strict=True):
            if share:
                conn.send((command, [(i // self.workers, arg) for i, arg in share]))
        out = {}
        if shares[0]:
            local = getattr(self.local, command)([(i // self.workers, arg) for i, arg in shares[0]])
            out.update(zip([i for i, _ in shares[0]], local, strict=True))
        for conn, share in zip(self.conns, shares[1:], strict=True):
            if share:
                out.update(zip([i for i, _ in share], _recv(conn), strict=True))
        return out

    def close(self) -> None:
        self.local.close()
        for conn, proc in zip(self.conns, self.procs, strict=True):
            conn.send(("close", None))
            proc.join(timeout=10)


def evaluate(policy: Policy, env: str, episodes: int, seed: int, ref_min: float | None = None,
             ref_max: float | None = None, num_envs: int = 10, score: str = "return",
             workers: int = 1) -> EvalResult:
    """Run ``episodes`` deterministic episodes of ``policy`` in ``env``, ``num_envs`` at a time, the environments
    stepped in ``workers`` processes (this one included; the results do not depend on ``workers``)."""
    if score not in SCORES:
        raise ValueError(f"unknown score {score!r}; choose one of {', '.join(SCORES)}")
    n = min(num_envs, episodes)
    pool = _EnvPool(env, n, workers)
    space = pool.local.envs[0].action_space
    if not (np.all(space.low == -1) and np.all(space.high == 1)):
        pool.close()
        raise ValueError(f"{env_label(env)} has actions in [{space.low}, {space.high}]; the suite's policies act in "
                         "[-1, 1] and need an environment with that action range")
    returns = np.zeros(episodes)
    lengths = np.zeros(episodes, dtype=np.int64)
    success = np.zeros(episodes, dtype=bool)
    subtasks = np.zeros(episodes)
    obs: list[np.ndarray] = [np.empty(0)] * n
    slot_episode = np.full(n, -1)  # which episode each env runs; -1 = idle
    asked = [0] * n
    next_episode = 0

    def start(slots: list[int]) -> None:
        nonlocal next_episode
        items = []
        for i in slots:
            if next_episode < episodes:
                slot_episode[i] = next_episode
                items.append((i, episode_seed(seed, next_episode)))
                next_episode += 1
            else:
                slot_episode[i] = -1
        for i, (o, n_asked) in pool.call("reset", items).items():
            obs[i], asked[i] = o, n_asked

    try:
        start(list(range(n)))
        while np.any(slot_episode >= 0):
            active = np.flatnonzero(slot_episode >= 0)
            actions = policy.act(np.stack([obs[i] for i in active]))
            results = pool.call("step", list(zip(active.tolist(), actions, strict=True)))
            finished = []
            for i in active:
                o, r, done, succeeded, completed = results[i]
                k = slot_episode[i]
                returns[k] += r
                lengths[k] += 1
                success[k] |= succeeded
                obs[i] = o
                if done:
                    if score == "subtasks":
                        subtasks[k] = completed / max(asked[i], 1)
                    finished.append(int(i))
            if finished:
                start(finished)
    finally:
        pool.close()
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
