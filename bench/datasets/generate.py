"""Make D4RL-style offline datasets with online SAC (d3rlpy), written in Minari format.

The D4RL recipe (Fu et al. 2020, §5): train SAC online in the environment, then
- ``random``: roll out a uniformly random policy;
- ``medium``: stop training when the policy reaches a target return (D4RL: about 1/3 of expert), roll it out;
- ``medium-replay``: the whole replay buffer up to that point (every episode the learner saw);
- ``expert``: train for the whole step budget, roll the final policy out.
Rollouts use the stochastic policy, as D4RL did. A generated dataset gets its own name (never a D4RL one): its scores
are not comparable with the paper's.

The run checkpoints at episode boundaries (SAC weights, optimiser, replay contents, RNG states) and resumes from the
last checkpoint when started again with the same configuration.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import sys
import time
import warnings
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import numpy as np

from bench.datasets.trajectories import DatasetError
from bench.envs import make_env

KINDS = ("random", "medium", "medium-replay", "expert")


@dataclass
class GenerateConfig:
    env_id: str = "Hopper-v5"  # gymnasium environment id
    kind: str = "medium-replay"  # one of KINDS
    name: str | None = None  # dataset id is bench/<name>/<kind>-v0; default: env name lower-cased
    seed: int = 0  # fixes env resets, SAC initialisation, exploration and replay sampling
    max_env_steps: int = 1_000_000  # online SAC budget; `expert` trains for all of it
    target_return: float | None = None  # medium(-replay): stop once the evaluated return reaches this
    random_steps: int = 10_000  # uniform-random exploration before SAC acts (standard SAC warm-up)
    eval_every: int = 5_000  # env steps between evaluations of the deterministic policy
    eval_episodes: int = 5  # episodes per evaluation
    dataset_size: int = 1_000_000  # transitions rolled out for random / medium / expert
    batch_size: int = 256  # SAC mini-batch
    learning_rate: float = 3e-4  # SAC actor, critic and temperature learning rate
    ref_min_score: float | None = None  # default: mean return of the random policy over 100 episodes
    ref_max_score: float | None = None  # default: expert's return if trained, else D4RL's for the same body

    def dataset_id(self) -> str:
        name = self.name or self.env_id.split("-v")[0].lower()
        return f"bench/{name}/{self.kind}-v0"


def _episode_seed(seed: int, episode: int) -> int:
    return int(np.random.SeedSequence([seed, episode]).generate_state(1)[0])


def _make_sac(env, cfg: GenerateConfig, device: str):
    from bench.d3rlpy_import import import_d3rlpy

    d3rlpy = import_d3rlpy()

    low, high = env.action_space.low, env.action_space.high
    sac = d3rlpy.algos.SACConfig(
        actor_learning_rate=cfg.learning_rate,
        critic_learning_rate=cfg.learning_rate,
        temp_learning_rate=cfg.learning_rate,
        batch_size=cfg.batch_size,
        action_scaler=d3rlpy.preprocessing.MinMaxActionScaler(minimum=low, maximum=high),
    ).create(device=device)
    d3rlpy.seed(cfg.seed)  # before the networks are built, so their initialisation follows the seed
    sac.build_with_env(env)
    return sac


def _evaluate_sac(sac, env_id: str, episodes: int, seed: int) -> float:
    import gymnasium as gym

    env = gym.make(env_id)
    returns = []
    for k in range(episodes):
        obs, _ = env.reset(seed=_episode_seed(seed + 10_000, k))
        done, total = False, 0.0
        while not done:
            action = sac.predict(obs[None].astype(np.float32))[0]
            obs, r, term, trunc, _ = env.step(action)
            total += float(r)
            done = term or trunc
        returns.append(total)
    env.close()
    return float(np.mean(returns))


class _Replay:
    """Flat replay arrays (what SAC samples from) plus the episode list (what medium-replay publishes)."""

    def __init__(self, capacity: int, obs_dim: int, act_dim: int):
        self.obs = np.zeros((capacity, obs_dim), np.float32)
        self.next_obs = np.zeros((capacity, obs_dim), np.float32)
        self.act = np.zeros((capacity, act_dim), np.float32)
        self.rew = np.zeros((capacity, 1), np.float32)
        self.term = np.zeros((capacity, 1), np.float32)
        self.size = 0
        self.episodes: list[dict] = []

    def add_episode(self, ep: dict) -> None:
        t = len(ep["actions"])
        s = slice(self.size, self.size + t)
        self.obs[s], self.next_obs[s] = ep["observations"][:-1], ep["observations"][1:]
        self.act[s] = ep["actions"]
        self.rew[s, 0] = ep["rewards"]
        self.term[s, 0] = ep["terminations"]
        self.size += t
        self.episodes.append(ep)

    def add_step(self, o, a, r, o2, terminated: bool) -> None:
        i = self.size
        self.obs[i], self.act[i], self.rew[i, 0], self.next_obs[i], self.term[i, 0] = o, a, r, o2, terminated
        self.size += 1

    def sample(self, rng: np.random.Generator, batch_size: int):
        from d3rlpy.dataset import TransitionMiniBatch

        idx = rng.integers(0, self.size, batch_size)
        return TransitionMiniBatch(
            observations=self.obs[idx], actions=self.act[idx], rewards=self.rew[idx],
            next_observations=self.next_obs[idx], next_actions=np.zeros_like(self.act[idx]),
            terminals=self.term[idx], intervals=np.ones_like(self.rew[idx]), transitions=[],
        )


def stack_observations(obs: list):
    """A list of observations (arrays or nested dicts of arrays) as one array (or dict) with a leading time axis."""
    if isinstance(obs[0], dict):
        return {k: stack_observations([o[k] for o in obs]) for k in obs[0]}
    return np.asarray(obs, np.float32)


def _episode_dict(obs: list, act: list, rew: list, terminated: bool) -> dict:
    t = len(act)
    term = np.zeros(t, bool)
    trunc = np.zeros(t, bool)
    (term if terminated else trunc)[-1] = True
    return {"observations": stack_observations(obs), "actions": np.asarray(act, np.float32),
            "rewards": np.asarray(rew, np.float32), "terminations": term, "truncations": trunc}


def _rollout(env_id: str, policy, seed: int, n_transitions: int | None = None,
             n_episodes: int | None = None) -> list[dict]:
    """Whole episodes until ``n_transitions`` steps or ``n_episodes`` episodes; ``policy(obs) -> action``.

    ``env_id`` is a gymnasium id or a JSON EnvSpec; observations are kept as the env returns them (dicts too).
    """
    env = make_env(env_id)
    episodes, total, k = [], 0, 0
    while total < (n_transitions or np.inf) and k < (n_episodes or np.inf):
        obs, _ = env.reset(seed=_episode_seed(seed, k))
        os_, as_, rs = [obs], [], []
        while True:
            a = policy(obs)
            obs, r, term, trunc, _ = env.step(a)
            os_.append(obs)
            as_.append(a)
            rs.append(r)
            if term or trunc:
                break
        episodes.append(_episode_dict(os_, as_, rs, bool(term)))
        total += len(as_)
        k += 1
    env.close()
    return episodes


def random_policy_return(env_id: str, episodes: int = 100, seed: int = 0) -> float:
    """Mean return of the uniform random policy (the usual ``ref_min_score``)."""
    space = make_env(env_id).action_space
    space.seed(seed)
    eps = _rollout(env_id, lambda _o: space.sample(), seed, n_episodes=episodes)
    return float(np.mean([np.sum(e["rewards"]) for e in eps]))


class _Progress:
    def __init__(self, total: int, label: str):
        self.total, self.label, self.t0, self.last = total, label, time.time(), 0.0

    def update(self, done: int, extra: str = "", force: bool = False) -> None:
        now = time.time()
        if not force and now - self.last < 10:
            return
        self.last = now
        rate = done / max(now - self.t0, 1e-9)
        eta = (self.total - done) / max(rate, 1e-9)
        print(f"[generate] {self.label} {done}/{self.total} env steps | {rate:.0f} steps/s | ETA {eta / 60:.1f} min"
              f"{' | ' + extra if extra else ''}", file=sys.stderr, flush=True)


def _save_checkpoint(work_dir: Path, sac, state: dict) -> None:
    """SAC weights and the loop's state, each written to a temporary file and renamed into place. The state is
    data only (episodes' arrays as tensors), read back with ``weights_only=True``: a tampered file runs no code."""
    import torch

    work_dir.mkdir(parents=True, exist_ok=True)
    sac.save_model(str(work_dir / "sac.d3.tmp"))
    os.replace(work_dir / "sac.d3.tmp", work_dir / "sac.d3")
    episodes = [{k: torch.from_numpy(np.asarray(v)) for k, v in ep.items()} for ep in state["episodes"]]
    with open(work_dir / "checkpoint.tmp", "wb") as f:
        torch.save({**state, "episodes": episodes}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(work_dir / "checkpoint.tmp", work_dir / "checkpoint.pt")


def _load_checkpoint(path: Path) -> dict:
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - cut short, or a pickle asking to run code
        raise DatasetError(f"the generator's checkpoint {path} cannot be read as data ({type(e).__name__}); "
                           f"delete {path.parent} to start afresh") from None
    return {**state, "episodes": [{k: v.numpy() for k, v in ep.items()} for ep in state["episodes"]]}


def train_sac(cfg: GenerateConfig, work_dir: Path, device: str = "cpu"):
    """Online SAC with a checkpoint at episode boundaries. Returns (sac, replay, eval history, stop reason)."""
    import gymnasium as gym
    import torch

    env = gym.make(cfg.env_id)
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    sac = _make_sac(env, cfg, device)
    replay = _Replay(cfg.max_env_steps + 1, obs_dim, act_dim)
    rng = np.random.default_rng(cfg.seed)
    env.action_space.seed(cfg.seed)
    history: list[dict] = []
    ckpt = work_dir / "checkpoint.pt"
    if ckpt.exists():
        state = _load_checkpoint(ckpt)
        if state["config"] != dataclasses.asdict(cfg):
            raise DatasetError(f"checkpoint {ckpt} belongs to another configuration; delete {work_dir} to start "
                               "afresh or rerun with the original flags")
        for ep in state["episodes"]:
            replay.add_episode(ep)
        sac.load_model(str(work_dir / "sac.d3"))
        rng.bit_generator.state = state["rng"]
        torch.set_rng_state(state["torch_rng"])
        env.action_space.np_random.bit_generator.state = state["action_rng"]
        history = state["history"]
        print(f"[generate] resumed from {ckpt} at {replay.size} env steps", file=sys.stderr, flush=True)

    def save_checkpoint() -> None:
        state = {"config": dataclasses.asdict(cfg), "episodes": replay.episodes, "rng": rng.bit_generator.state,
                 "torch_rng": torch.get_rng_state(), "history": history,
                 "action_rng": env.action_space.np_random.bit_generator.state}
        _save_checkpoint(work_dir, sac, state)

    progress = _Progress(cfg.max_env_steps, f"SAC {cfg.env_id}")
    stop = "step budget reached"
    next_eval = (replay.size // cfg.eval_every + 1) * cfg.eval_every
    reached = any(h["return"] >= (cfg.target_return or np.inf) for h in history)
    checkpoint_due = False
    while replay.size < cfg.max_env_steps and not reached:
        obs, _ = env.reset(seed=_episode_seed(cfg.seed, len(replay.episodes)))
        os_, as_, rs = [obs.astype(np.float32)], [], []
        while True:
            if replay.size < cfg.random_steps:
                a = env.action_space.sample().astype(np.float32)
            else:
                a = sac.sample_action(os_[-1][None])[0].astype(np.float32)
            obs, r, term, trunc, _ = env.step(a)
            replay.add_step(os_[-1], a, r, obs, bool(term))
            os_.append(obs.astype(np.float32))
            as_.append(a)
            rs.append(r)
            if replay.size >= cfg.random_steps:
                sac.update(replay.sample(rng, cfg.batch_size))
            if replay.size >= next_eval:
                ret = _evaluate_sac(sac, cfg.env_id, cfg.eval_episodes, cfg.seed)
                history.append({"env_steps": replay.size, "return": ret, "time": time.time()})
                progress.update(replay.size, f"eval return {ret:.1f}", force=True)
                next_eval += cfg.eval_every
                checkpoint_due = True
                if cfg.target_return is not None and ret >= cfg.target_return and cfg.kind != "expert":
                    reached, stop = True, f"target return {cfg.target_return} reached ({ret:.1f})"
            done = term or trunc or reached or replay.size >= cfg.max_env_steps
            if done:
                break
            progress.update(replay.size)
        # the flat arrays already hold this episode; only the episode list is appended here
        replay.episodes.append(_episode_dict(os_, as_, rs, bool(term)))
        if checkpoint_due:
            save_checkpoint()
            checkpoint_due = False
    env.close()
    save_checkpoint()
    return sac, replay, history, stop


def generate(cfg: GenerateConfig, out: Path | None = None, work_dir: Path | None = None,
             device: str = "cpu", command: str | None = None) -> Path:
    """Run the recipe for ``cfg.kind`` and write the Minari dataset. Returns the dataset's folder."""
    import gymnasium as gym
    import minari
    import torch

    if cfg.kind not in KINDS:
        raise DatasetError(f"unknown dataset kind {cfg.kind!r}; choose one of {', '.join(KINDS)}")
    try:
        env = gym.make(cfg.env_id)
    except gym.error.Error as e:
        raise DatasetError(f"cannot make environment {cfg.env_id!r}: {e}") from e
    torch.set_num_threads(1)
    if out is not None:
        os.environ["MINARI_DATASETS_PATH"] = str(Path(out).resolve())
    dataset_id = cfg.dataset_id()
    target = Path(minari.storage.get_dataset_path(dataset_id))
    if target.exists():
        raise DatasetError(f"Minari dataset {dataset_id} already exists at {target}; Minari datasets cannot be "
                           "overwritten: delete that folder or pass --name to write another id")
    work_dir = Path(work_dir or Path.home() / ".cache" / "bench" / "generate" / dataset_id.replace("/", "__"))
    t0 = time.time()
    info: dict = {"kind": cfg.kind}
    if cfg.kind == "random":
        env.action_space.seed(cfg.seed)
        episodes = _rollout(cfg.env_id, lambda _o: env.action_space.sample().astype(np.float32),
                            cfg.seed, n_transitions=cfg.dataset_size)
    else:
        sac, replay, history, stop = train_sac(cfg, work_dir, device)
        info.update(stop_reason=stop, env_steps=replay.size, eval_history=history)
        if cfg.kind == "medium-replay":
            episodes = replay.episodes
        else:
            episodes = _rollout(cfg.env_id, lambda o: sac.sample_action(o[None].astype(np.float32))[0],
                                cfg.seed + 1, n_transitions=cfg.dataset_size)
    info["generation_seconds"] = time.time() - t0
    ref_min = cfg.ref_min_score if cfg.ref_min_score is not None else random_policy_return(cfg.env_id)
    ref_max = cfg.ref_max_score
    if ref_max is None:
        from bench.specs import D4RL_REFERENCE_BY_BODY

        body = cfg.env_id.split("-v")[0]
        if cfg.kind == "expert":
            ref_max = float(np.mean([np.sum(e["rewards"]) for e in episodes]))
        elif body in D4RL_REFERENCE_BY_BODY:
            ref_max = D4RL_REFERENCE_BY_BODY[body][1]
        else:
            raise DatasetError(f"no reference maximum score known for {cfg.env_id}; pass --ref-max-score")
    write_minari(episodes, dataset_id, cfg.env_id, ref_min, ref_max,
                 description=(f"D4RL-style '{cfg.kind}' data made by bench with online SAC (d3rlpy). "
                              f"ref_min_score: random policy; ref_max_score: {ref_max:.1f}."),
                 extra={"bench_command": command or shlex.join(sys.argv), "bench_config": dataclasses.asdict(cfg),
                        "bench_generation": info})
    return target


def write_minari(episodes: list[dict], dataset_id: str, env_id: str, ref_min: float, ref_max: float,
                 description: str, extra: dict, algorithm_name: str = "SAC (d3rlpy)") -> None:
    """Write episodes (T+1 observations each) as a Minari dataset with float32 observations."""
    import gymnasium as gym
    import minari
    from minari.data_collector import EpisodeBuffer

    env = make_env(env_id)
    obs_space = env.observation_space
    if isinstance(obs_space, gym.spaces.Box):  # stored as float32, like every observation the suite trains on
        obs_space = gym.spaces.Box(obs_space.low.astype(np.float32), obs_space.high.astype(np.float32),
                                   dtype=np.float32)
    buffers = [EpisodeBuffer(observations=e["observations"], actions=e["actions"], rewards=e["rewards"],
                             terminations=e["terminations"], truncations=e["truncations"]) for e in episodes]
    with warnings.catch_warnings():  # Minari nags about author e-mail and code links we do not have
        warnings.simplefilter("ignore", UserWarning)
        ds = minari.create_dataset_from_buffers(
            dataset_id, buffers, env=env.spec, eval_env=env.spec, algorithm_name=algorithm_name, author="bench",
            observation_space=obs_space, action_space=env.action_space,
            ref_min_score=ref_min, ref_max_score=ref_max, description=description,
            requirements=[f"mujoco=={version('mujoco')}", f"gymnasium=={version('gymnasium')}"],
        )
    ds.storage.update_metadata({"bench": json.dumps(extra, default=float)})
