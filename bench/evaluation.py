"""Policy evaluation in gymnasium environments, and the scores reports use.

Episodes run in waves of ``num_envs`` environments side by side, one batched forward pass per step; the waves can
be shared out among several processes, each taking the next wave when it is free (env physics, not the policy, is
most of the time, and no process waits on another until the end). Episode k is reset with a seed derived from
(evaluation seed, k) and belongs to wave k // num_envs, so the results depend only on the policy, the seed and
``num_envs`` (which sets the policy's batch shapes, and float32 matmuls of different shapes may differ in the last
bit, which chaotic dynamics amplify) — never on how many processes run the waves; a torch policy acts with one thread
in every process for the same reason.

Scores per episode (a dataset's spec names which):
- ``return``: the D4RL normalised score 100 * (R - R_min) / (R_max - R_min);
- ``success``: 100 if the goal was reached at any step (``info["success"]``, else a positive reward), else 0 —
  antmaze's success rate;
- ``subtasks``: 100 * (sub-tasks completed / sub-tasks asked) — Franka kitchen (4 sub-tasks in D4RL).
"""

from __future__ import annotations

import itertools
import json
import sys
import traceback
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Protocol

import numpy as np

from bench.envs import flatten_observation, make_env

SCORES = ("return", "success", "subtasks")


class Policy(Protocol):
    """What evaluation runs. A policy that can also make ``cpu_copy()`` (a picklable copy acting on the CPU) is
    evaluated by several processes when CUDA is in use, too (spawned processes, given that copy)."""

    def act(self, observations: np.ndarray) -> np.ndarray: ...


def normalized_score(returns, ref_min: float, ref_max: float) -> np.ndarray:
    """D4RL normalised score: 100 * (R - R_min) / (R_max - R_min)."""
    if ref_max == ref_min:
        raise ValueError(f"reference scores are equal ({ref_min}); cannot normalise")
    return 100.0 * (np.asarray(returns, dtype=np.float64) - ref_min) / (ref_max - ref_min)


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


_ENVS: dict[str, list] = {}  # env reference -> the environments this process made for it


def _environments(env: str, count: int) -> list:
    """``count`` environments of ``env``, made once per process and reused by later waves and evaluations (every
    episode starts with a seeded reset; making one costs ~3 ms for Hopper, far more for Franka kitchen). Only the
    latest env reference is kept, so a sweep over many datasets in one process does not pile them up."""
    for other in [k for k in _ENVS if k != env]:
        for e in _ENVS.pop(other):
            e.close()
    made = _ENVS.setdefault(env, [])
    while len(made) < count:
        made.append(make_env(env))
    return made[:count]


def _run_wave(policy: Policy, envs: list, episode_ids: range, seed: int) -> np.ndarray:
    """Episodes ``episode_ids`` side by side, one batched forward pass per step over those still running.

    Returns one row per episode: return, length, success (0/1), sub-tasks completed, sub-tasks asked.
    """
    out = np.zeros((len(episode_ids), 5))
    obs = []
    for row, (env, k) in enumerate(zip(envs, episode_ids, strict=True)):
        o, _ = env.reset(seed=episode_seed(seed, k))
        obs.append(flatten_observation(o))
        out[row, 4] = len(getattr(env.unwrapped, "tasks_to_complete", ()) or ())
    running = list(range(len(episode_ids)))
    while running:
        actions = policy.act(np.stack([obs[row] for row in running]))
        still = []
        for row, action in zip(running, actions, strict=True):
            o, r, term, trunc, info = envs[row].step(action)
            obs[row] = flatten_observation(o)
            out[row, 0] += r
            out[row, 1] += 1
            if info.get("success", r > 0):
                out[row, 2] = 1
            if term or trunc:
                out[row, 3] = len(info.get("episode_task_completions", ()))
            else:
                still.append(row)
        running = still
    return out


def _run_waves(policy: Policy, env: str, waves: list[range], seed: int, next_wave) -> dict[int, np.ndarray]:
    """Run waves until ``next_wave()`` hands out an index past the last one."""
    done = {}
    while (w := next_wave()) < len(waves):
        done[w] = _run_wave(policy, _environments(env, len(waves[w])), waves[w], seed)
    return done


def _shared_counter(counter):
    """``next_wave`` over a counter shared by processes: each wave goes to whichever process asks first."""

    def take() -> int:
        with counter.get_lock():
            counter.value += 1
            return counter.value - 1

    return take


@contextmanager
def _one_torch_thread():
    """Policies act with one torch thread in every process: a matmul's last bit can depend on the thread count,
    and one thread is the fastest for an evaluation batch anyway."""
    torch = sys.modules.get("torch")
    threads = torch.get_num_threads() if torch is not None else None
    if torch is not None:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if torch is not None:
            torch.set_num_threads(threads)


def _worker(conn, policy: Policy, env: str, waves: list[range], seed: int, counter) -> None:
    try:
        with _one_torch_thread():
            conn.send(("done", _run_waves(policy, env, waves, seed, _shared_counter(counter))))
    except BaseException:
        conn.send(("error", traceback.format_exc()))
    finally:
        conn.close()


def default_start_method() -> str:
    """How evaluation processes start: fork (milliseconds; the policy and this process's environments handed over
    as they are), unless CUDA is in use here — a forked child cannot use it — or fork does not exist: spawn."""
    import multiprocessing as mp

    torch = sys.modules.get("torch")
    cuda = torch is not None and torch.cuda.is_initialized()
    return "fork" if "fork" in mp.get_all_start_methods() and not cuda else "spawn"


_SPAWNED: dict[int, object] = {}  # process count -> this process's spawned evaluation workers, reused by evaluations


def _spawned_workers(processes: int):
    """``processes`` spawned worker processes, started once and kept (each keeps its environments between
    evaluations, and a spawn costs seconds of imports); they exit with this process."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    if processes not in _SPAWNED:
        for pool in _SPAWNED.values():
            pool.shutdown(cancel_futures=True)
        _SPAWNED.clear()
        _SPAWNED[processes] = ProcessPoolExecutor(processes, mp_context=get_context("spawn"))
    return _SPAWNED[processes]


def _spawned_wave(policy: Policy, env: str, wave: range, seed: int) -> np.ndarray:
    with _one_torch_thread():
        return _run_wave(policy, _environments(env, len(wave)), wave, seed)


def _run_spawned(policy: Policy, env: str, waves: list[range], seed: int, processes: int) -> dict[int, np.ndarray]:
    """Every wave in a spawned worker, acting with a CPU copy of the policy: which process runs a wave changes
    nothing, and this process (training on the GPU) only waits."""
    cpu = policy.cpu_copy()
    futures = {w: _spawned_workers(processes).submit(_spawned_wave, cpu, env, wave, seed)
               for w, wave in enumerate(waves)}
    try:
        return {w: f.result() for w, f in futures.items()}
    except Exception as e:  # a worker died (BrokenProcessPool) or an episode failed: the pool is not reused
        _SPAWNED.pop(processes).shutdown(cancel_futures=True)
        raise RuntimeError(f"an evaluation worker process failed ({type(e).__name__}: {e}); rerun, or set "
                           "eval_workers=1 to evaluate in this process") from e


def _run_all(policy: Policy, env: str, waves: list[range], seed: int, processes: int,
             start_method: str) -> dict[int, np.ndarray]:
    """All waves, in this process and ``processes - 1`` forked ones, each process taking the next wave when it is
    free (so a slower core takes fewer, and no process waits on another until the end); or, started by spawn, in
    ``processes`` spawned ones."""
    if processes > 1 and start_method == "spawn":
        if hasattr(policy, "cpu_copy"):
            return _run_spawned(policy, env, waves, seed, processes)
        warnings.warn(f"evaluating in one process, not {processes}: new processes must be spawned here (CUDA is in "
                      f"use) and {type(policy).__name__} has no cpu_copy() to give them (the results are the same)",
                      stacklevel=3)
        processes = 1
    if processes == 1:
        return _run_waves(policy, env, waves, seed, itertools.count().__next__)
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    counter = ctx.Value("i", 0)
    conns, procs, finished = [], [], False
    try:
        for _ in range(processes - 1):
            parent, child = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=_worker, args=(child, policy, env, waves, seed, counter), daemon=True)
            proc.start()
            child.close()
            conns.append(parent)
            procs.append(proc)
        done = _run_waves(policy, env, waves, seed, _shared_counter(counter))
        for conn, proc in zip(conns, procs, strict=True):
            try:
                status, payload = conn.recv()
            except EOFError:
                proc.join(timeout=5)
                raise RuntimeError(f"an evaluation worker process died (exit code {proc.exitcode}); rerun, or set "
                                   "eval_workers=1 to evaluate in this process") from None
            if status == "error":
                raise RuntimeError(f"an evaluation worker process failed:\n{payload}")
            done.update(payload)
        finished = True
        return done
    finally:
        for proc in procs:
            if not finished:  # this process failed or was interrupted: the workers' remaining waves are not wanted
                proc.terminate()
            proc.join(timeout=5)
            if proc.is_alive():
                proc.terminate()
                proc.join()


def evaluate(policy: Policy, env: str, episodes: int, seed: int, ref_min: float | None = None,
             ref_max: float | None = None, num_envs: int = 10, score: str = "return",
             workers: int = 1, start_method: str | None = None) -> EvalResult:
    """Run ``episodes`` deterministic episodes of ``policy`` in ``env``, in waves of ``num_envs`` side by side,
    the waves shared out among ``workers`` processes (the results do not depend on ``workers``), started as
    ``start_method`` says (default: :func:`default_start_method`)."""
    if score not in SCORES:
        raise ValueError(f"unknown score {score!r}; choose one of {', '.join(SCORES)}")
    if episodes < 1 or num_envs < 1:
        raise ValueError(f"episodes ({episodes}) and num_envs ({num_envs}) must be at least 1")
    n = min(num_envs, episodes)
    waves = [range(s, min(s + n, episodes)) for s in range(0, episodes, n)]
    space = _environments(env, n)[0].action_space  # all made before any fork, so workers need not make their own
    if not (np.all(space.low == -1) and np.all(space.high == 1)):
        raise ValueError(f"{env_label(env)} has actions in [{space.low}, {space.high}]; the suite's policies act in "
                         "[-1, 1] and need an environment with that action range")
    with _one_torch_thread():
        done = _run_all(policy, env, waves, seed, max(1, min(workers, len(waves))),
                        start_method or default_start_method())
    rows = np.concatenate([done[w] for w in range(len(waves))])
    returns, lengths, success = rows[:, 0], rows[:, 1].astype(np.int64), rows[:, 2].astype(bool)
    subtasks = rows[:, 3] / np.maximum(rows[:, 4], 1)
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
