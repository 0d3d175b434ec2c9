"""Offline-RL baselines through d3rlpy 2.8.1 — AWAC, TD3+BC, CQL, IQL, ReBRAC — behind the suite's Algorithm interface.

The suite keeps control of everything around d3rlpy's update rule: it builds the d3rlpy dataset from
`Trajectories` (never d3rlpy's Minari loader, which misaligns observations), trains exactly the requested number of
gradient steps with its own loop (d3rlpy's ``fit`` rounds down to whole epochs), evaluates with its own seeded
evaluator, checkpoints and resumes through the run context, and writes nothing to ./d3rlpy_logs.

Batches come from :class:`DeviceTransitions`: the dataset's transitions as tensors on the training device, laid out
exactly as d3rlpy's transition picker lays them out and with d3rlpy's own scalers applied once, so a step draws
indices on the device and hands the batch to d3rlpy's own update (``impl.update``, in :class:`D3rlpyLearner`): the
objective stays d3rlpy's code, while its Python transition sampler and the numpy-to-torch conversion of every batch
are gone. The loop is the suite's one loop (``context.train``), as for every algorithm.

Objectives (see each config class for the paper):
- AWAC:   max_pi E[ exp(A(s, a) / lambda) log pi(a|s) ],  Q by TD learning            (Nair et al. 2020)
- TD3+BC: max_pi E[ lambda Q(s, pi(s)) - (pi(s) - a)^2 ],  lambda = alpha / mean|Q|   (Fujimoto & Gu 2021)
- CQL:    min_Q alpha E_s[ log sum_a exp Q(s, a) - E_{a~D} Q(s, a) ] + TD error,  SAC actor   (Kumar et al. 2020)
- IQL:    expectile regression of V on Q (tau), Q by TD on V, actor by exp(beta (Q - V)) log pi
          (Kostrikov et al. 2022)
- ReBRAC: max_pi E[ lambda Q(s, pi(s)) - beta_1 (pi(s) - a)^2 ],  TD target r + gamma (Q(s', a') - beta_2 (a' - a'_D)^2)
          with a' = pi(s') + clipped noise, a LayerNorm critic, batch 1024          (Tarasov et al. 2023)

A truncated episode's last transition is not used for TD learning (d3rlpy keeps no next observation for it), as in
d3rlpy's own D4RL loader; terminal transitions are kept with terminal = 1.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from bench.algorithms.base import Algorithm
from bench.algorithms.checkpoint import GlobalRNG
from bench.algorithms.context import SeedGroup, train
from bench.configs.domains import bounded, check_domains, choice
from bench.d3rlpy_import import import_d3rlpy
from bench.datasets.curation import Curated, all_episodes
from bench.datasets.trajectories import Trajectories


def to_d3rlpy_dataset(trajectories: Trajectories, curated: Curated):
    """A d3rlpy ReplayBuffer with one Episode per curated episode, built from our aligned arrays."""
    d3rlpy = import_d3rlpy()
    from d3rlpy.dataset import Episode, InfiniteBuffer, ReplayBuffer

    episodes = []
    for i in curated.episode_indices:
        s = trajectories.episode_slice(int(i))
        episodes.append(Episode(
            observations=trajectories.observations[s], actions=trajectories.actions[s],
            rewards=trajectories.rewards[s][:, None], terminated=bool(trajectories.terminals[s][-1]),
        ))
    return ReplayBuffer(InfiniteBuffer(), episodes=episodes, action_space=d3rlpy.ActionSpace.CONTINUOUS,
                        action_size=trajectories.act_dim)


OBSERVATION_SCALINGS = ("none", "standard")
REWARD_SCALINGS = ("none", "return_range", "shift")


@dataclass
class D3rlpyConfig:
    steps: int = bounded(1_000_000, ge=1)  # gradient steps, trained exactly (peers: 1M; d3rlpy's scripts: 500k)
    batch_size: int = bounded(256, ge=1)  # transitions per step
    gamma: float = bounded(0.99, ge=0, le=1)  # discount
    hidden_units: list[int] = bounded([256, 256], ge=1)  # actor and critic MLPs
    observation_scaling: str = choice("none", OBSERVATION_SCALINGS)  # standard: per-dimension mean/std of the data
    # return_range: r * multiplier / (max R - min R); shift: r + shift
    reward_scaling: str = choice("none", REWARD_SCALINGS)
    reward_multiplier: float = bounded(1000.0, gt=0)  # for return_range (IQL locomotion: 1000)
    reward_shift: float = -1.0  # for shift (IQL antmaze: r - 1)
    compile: bool = False  # on CUDA, d3rlpy's compile_graph (torch.compile + CUDA graphs); ignored on a CPU

    def __post_init__(self):  # a bad --set fails when the config is resolved, before any record is written
        check_domains(self)

    def _common(self, d3rlpy) -> dict:
        pre = d3rlpy.preprocessing
        obs = {"none": None, "standard": pre.StandardObservationScaler()}
        rew = {"none": None, "return_range": pre.ReturnBasedRewardScaler(multiplier=self.reward_multiplier),
               "shift": pre.ConstantShiftRewardScaler(shift=self.reward_shift)}
        encoder = d3rlpy.models.VectorEncoderFactory(hidden_units=list(self.hidden_units))
        return {"batch_size": self.batch_size, "gamma": self.gamma, "compile_graph": self.compile,
                "actor_encoder_factory": encoder,
                "critic_encoder_factory": encoder, "observation_scaler": obs[self.observation_scaling],
                "reward_scaler": rew[self.reward_scaling]}


@dataclass
class TD3BCConfig(D3rlpyConfig):
    """TD3+BC, Fujimoto & Gu 2021, "A Minimalist Approach to Offline Reinforcement Learning" (CORL defaults)."""

    actor_learning_rate: float = bounded(3e-4, gt=0)
    critic_learning_rate: float = bounded(3e-4, gt=0)
    alpha: float = bounded(2.5, gt=0)  # BC regulariser: lambda = alpha / mean |Q|
    target_smoothing_sigma: float = bounded(0.2, ge=0)  # policy noise
    target_smoothing_clip: float = bounded(0.5, ge=0)  # noise clip
    update_actor_interval: int = bounded(2, ge=1)  # actor every 2 critic steps
    tau: float = bounded(0.005, gt=0, le=1)  # target network averaging
    observation_scaling: str = choice("standard", OBSERVATION_SCALINGS)  # the paper standardises observations

    def d3rlpy_config(self, d3rlpy):
        return d3rlpy.algos.TD3PlusBCConfig(
            **self._common(d3rlpy), actor_learning_rate=self.actor_learning_rate,
            critic_learning_rate=self.critic_learning_rate, alpha=self.alpha,
            target_smoothing_sigma=self.target_smoothing_sigma, target_smoothing_clip=self.target_smoothing_clip,
            update_actor_interval=self.update_actor_interval, tau=self.tau)


@dataclass
class IQLConfig(D3rlpyConfig):
    """IQL, Kostrikov et al. 2022, "Offline Reinforcement Learning with Implicit Q-Learning" (locomotion)."""

    actor_learning_rate: float = bounded(3e-4, gt=0)
    critic_learning_rate: float = bounded(3e-4, gt=0)
    expectile: float = bounded(0.7, gt=0, lt=1)  # tau of the expectile regression (antmaze: 0.9)
    weight_temp: float = bounded(3.0, gt=0)  # inverse temperature beta (antmaze: 10)
    max_weight: float = bounded(100.0, gt=0)  # clamp of exp(beta A)
    tau: float = bounded(0.005, gt=0, le=1)
    actor_cosine_schedule: bool = True  # cosine decay of the actor learning rate over `steps`
    reward_scaling: str = choice("return_range", REWARD_SCALINGS)  # r * 1000 / (max return - min return)

    def d3rlpy_config(self, d3rlpy):
        schedule = d3rlpy.optimizers.CosineAnnealingLRFactory(T_max=self.steps) if self.actor_cosine_schedule \
            else None
        common = self._common(d3rlpy)
        return d3rlpy.algos.IQLConfig(
            **common, value_encoder_factory=common["critic_encoder_factory"],
            actor_learning_rate=self.actor_learning_rate, critic_learning_rate=self.critic_learning_rate,
            actor_optim_factory=d3rlpy.optimizers.AdamFactory(lr_scheduler_factory=schedule),
            expectile=self.expectile, weight_temp=self.weight_temp, max_weight=self.max_weight, tau=self.tau)


@dataclass
class CQLConfig(D3rlpyConfig):
    """CQL, Kumar et al. 2020, "Conservative Q-Learning for Offline RL" (d3rlpy's reproduction settings)."""

    actor_learning_rate: float = bounded(1e-4, gt=0)  # CORL: 3e-5
    critic_learning_rate: float = bounded(3e-4, gt=0)
    temp_learning_rate: float = bounded(1e-4, ge=0)  # SAC entropy temperature
    alpha_learning_rate: float = bounded(0.0, ge=0)  # 0: fixed conservative weight; > 0: Lagrange (antmaze)
    conservative_weight: float = bounded(5.0, ge=0)  # d3rlpy's scripts: 10 on the medium datasets, 5 elsewhere
    alpha_threshold: float = bounded(10.0, gt=0)  # Lagrange target gap (antmaze, CORL: 0.8)
    n_action_samples: int = bounded(10, ge=1)
    tau: float = bounded(0.005, gt=0, le=1)
    hidden_units: list[int] = bounded([256, 256, 256], ge=1)

    def d3rlpy_config(self, d3rlpy):
        return d3rlpy.algos.CQLConfig(
            **self._common(d3rlpy), actor_learning_rate=self.actor_learning_rate,
            critic_learning_rate=self.critic_learning_rate, temp_learning_rate=self.temp_learning_rate,
            alpha_learning_rate=self.alpha_learning_rate, conservative_weight=self.conservative_weight,
            alpha_threshold=self.alpha_threshold, n_action_samples=self.n_action_samples, tau=self.tau)


@dataclass
class AWACConfig(D3rlpyConfig):
    """AWAC, Nair et al. 2020, "Accelerating Online RL with Offline Datasets" (d3rlpy's reproduction settings)."""

    actor_learning_rate: float = bounded(3e-4, gt=0)
    critic_learning_rate: float = bounded(3e-4, gt=0)
    lam: float = bounded(1.0, gt=0)  # advantage temperature lambda (CORL: 1/3)
    actor_weight_decay: float = bounded(1e-4, ge=0)
    n_action_samples: int = bounded(1, ge=1)
    tau: float = bounded(0.005, gt=0, le=1)
    batch_size: int = bounded(1024, ge=1)  # d3rlpy's default and reproduction script
    hidden_units: list[int] = bounded([256, 256, 256, 256], ge=1)

    def d3rlpy_config(self, d3rlpy):
        return d3rlpy.algos.AWACConfig(
            **self._common(d3rlpy), actor_learning_rate=self.actor_learning_rate,
            critic_learning_rate=self.critic_learning_rate, lam=self.lam, n_action_samples=self.n_action_samples,
            actor_optim_factory=d3rlpy.optimizers.AdamFactory(weight_decay=self.actor_weight_decay), tau=self.tau)


@dataclass
class ReBRACConfig(D3rlpyConfig):
    """ReBRAC, Tarasov et al. 2023, "Revisiting the Minimalist Approach to Offline Reinforcement Learning": TD3+BC
    with decoupled actor / critic penalties, deeper LayerNorm critics, larger batches (d3rlpy's reproduction
    settings; the betas per dataset are the paper's, in the preset)."""

    actor_learning_rate: float = bounded(1e-3, gt=0)
    critic_learning_rate: float = bounded(1e-3, gt=0)
    actor_beta: float = bounded(0.01, ge=0)  # beta_1: the actor's BC penalty (per dataset: the preset)
    critic_beta: float = bounded(0.01, ge=0)  # beta_2: penalty on the next action's distance from the data's
    target_smoothing_sigma: float = bounded(0.2, ge=0)  # policy noise
    target_smoothing_clip: float = bounded(0.5, ge=0)  # noise clip
    update_actor_interval: int = bounded(2, ge=1)  # actor every 2 critic steps
    tau: float = bounded(0.005, gt=0, le=1)
    critic_layer_norm: bool = True  # LayerNorm after each hidden layer of the critics (not the actor)
    batch_size: int = bounded(1024, ge=1)
    hidden_units: list[int] = bounded([256, 256, 256], ge=1)
    observation_scaling: str = choice("standard", OBSERVATION_SCALINGS)

    def d3rlpy_config(self, d3rlpy):
        common = self._common(d3rlpy)
        common["critic_encoder_factory"] = d3rlpy.models.VectorEncoderFactory(
            hidden_units=list(self.hidden_units), use_layer_norm=self.critic_layer_norm)
        return d3rlpy.algos.ReBRACConfig(
            **common, actor_learning_rate=self.actor_learning_rate,
            critic_learning_rate=self.critic_learning_rate, actor_beta=self.actor_beta,
            critic_beta=self.critic_beta, target_smoothing_sigma=self.target_smoothing_sigma,
            target_smoothing_clip=self.target_smoothing_clip, update_actor_interval=self.update_actor_interval,
            tau=self.tau)


class DeviceTransitions:
    """A d3rlpy dataset's TD transitions as device tensors, in the layout of d3rlpy's ``BasicTransitionPicker``.

    Transition i of an episode pairs observation i with observation i + 1 of the same episode; a terminated
    episode's last step has a zero next observation (and next action) and terminal = 1; a truncated episode's last
    step is not a transition (its next observation is unknown), exactly as d3rlpy counts ``transition_count``.
    The algorithm's observation / action / reward scalers transform the whole arrays once, with d3rlpy's own
    ``transform`` — the same element-wise arithmetic it applies to every sampled batch. As the loop's batch source
    it draws ``batch_size`` indices per step uniformly with replacement on the device (as d3rlpy draws them).
    """

    def __init__(self, dataset, algo, device: torch.device, seed: int = 0, batch_size: int = 256):
        from d3rlpy.torch_utility import TorchMiniBatch

        if algo.need_returns_to_go:
            raise ValueError(f"{type(algo).__name__} needs returns-to-go, which DeviceTransitions does not build")
        parts: dict[str, list[np.ndarray]] = {k: [] for k in ("obs", "act", "rew", "next_obs", "next_act", "term")}
        for ep in dataset.episodes:
            n, count = ep.size(), ep.transition_count
            obs, act = np.asarray(ep.observations, np.float32), np.asarray(ep.actions, np.float32)
            next_obs, next_act = np.zeros_like(obs[:count]), np.zeros_like(act[:count])
            inner = min(count, n - 1)  # transitions whose next step is in the episode
            next_obs[:inner], next_act[:inner] = obs[1:inner + 1], act[1:inner + 1]
            term = np.zeros((count, 1), np.float32)
            if ep.terminated:
                term[-1] = 1.0
            for key, value in (("obs", obs[:count]), ("act", act[:count]), ("next_obs", next_obs),
                               ("next_act", next_act), ("term", term),
                               ("rew", np.asarray(ep.rewards, np.float32).reshape(n, -1)[:count])):
                parts[key].append(value)
        t = {k: torch.as_tensor(np.concatenate(v), device=device) for k, v in parts.items()}
        cfg = algo.config
        with torch.no_grad():
            if cfg.observation_scaler is not None:
                t["obs"], t["next_obs"] = (cfg.observation_scaler.transform(t[k]) for k in ("obs", "next_obs"))
            if cfg.action_scaler is not None:
                t["act"], t["next_act"] = (cfg.action_scaler.transform(t[k]) for k in ("act", "next_act"))
            if cfg.reward_scaler is not None:
                t["rew"] = cfg.reward_scaler.transform(t["rew"])
        self.tensors, self.size, self.device, self.batch_size = t, len(t["obs"]), device, batch_size
        self.generator = torch.Generator(device=device).manual_seed(seed)
        self.d3rlpy_device = algo._device  # the device string d3rlpy's batches carry
        self._batch = TorchMiniBatch

    def batch(self, indices: torch.Tensor):
        """The d3rlpy ``TorchMiniBatch`` of the transitions at ``indices`` (a device tensor)."""
        t = self.tensors
        rewards = t["rew"][indices]
        return self._batch(observations=t["obs"][indices], actions=t["act"][indices], rewards=rewards,
                           next_observations=t["next_obs"][indices], next_actions=t["next_act"][indices],
                           returns_to_go=torch.zeros_like(rewards), terminals=t["term"][indices],
                           intervals=torch.ones_like(rewards), device=self.d3rlpy_device)

    def components(self) -> dict[str, torch.Generator]:
        return {"generator": self.generator}

    def sample(self):
        return self.batch(torch.randint(self.size, (self.batch_size,), generator=self.generator, device=self.device))


def build_d3rlpy(cfg, dataset, device: str):
    """A d3rlpy algorithm of ``cfg`` on ``device``, its scalers fitted to ``dataset`` and its networks built."""
    from d3rlpy.algos.utility import build_scalers_with_transition_picker

    algo = cfg.d3rlpy_config(import_d3rlpy()).create(device=device)
    build_scalers_with_transition_picker(algo, dataset)
    algo.build_with_dataset(dataset)
    return algo


class D3rlpyLearner:
    """A d3rlpy algorithm as the loop's learner (one seed): its networks, optimisers and gradient-step count, the
    global RNGs its update draws from (TD3's target smoothing noise, CQL's action samples), and its own update; and
    as its ``Policy`` (deterministic actions)."""

    def __init__(self, algo: Any, build: Callable[[str], Any]):
        self.algo = algo
        self.build = build  # device -> a new algorithm of the same config and dataset, untrained
        self._cpu_algo = None  # the CPU twin cpu_copy loads these weights into, built once

    def state_dict(self) -> dict:
        buf = io.BytesIO()
        self.algo.impl.save_model(buf)
        return {"model": buf.getvalue(), "grad_step": self.algo.grad_step}

    def load_state_dict(self, state: dict) -> None:
        self.algo.impl.load_model(io.BytesIO(state["model"]))
        self.algo._grad_step = state["grad_step"]  # TD3+BC's delayed actor updates count from it

    def components(self) -> dict:
        return {"algo": self, "rng": GlobalRNG()}

    def update(self, batch) -> dict[str, torch.Tensor]:
        """One gradient step of d3rlpy's own update on a prepared ``TorchMiniBatch``: ``QLearningAlgoBase.update``
        without its numpy-to-torch conversion (the batch is already on the device, scaled)."""
        metrics = self.algo.impl.update(batch, self.algo.grad_step)
        self.algo._grad_step += 1  # what QLearningAlgoBase.update does after the update
        return {"loss": torch.tensor([metrics.get("critic_loss", next(iter(metrics.values())))])}  # d3rlpy: floats

    def policy(self, k: int) -> D3rlpyLearner:
        return self

    def act(self, observations: np.ndarray) -> np.ndarray:
        return self.algo.predict(np.asarray(observations, dtype=np.float32))

    def cpu_copy(self) -> D3rlpyPolicy:
        """The algorithm on the CPU (built once) with these weights (d3rlpy's own save / load, as a checkpoint
        moves between devices), for evaluation processes spawned while this one uses CUDA."""
        if self._cpu_algo is None:
            with torch.random.fork_rng(devices=[]):  # building draws initial weights: the run's generator stays put
                self._cpu_algo = self.build("cpu")
        buf = io.BytesIO()
        self.algo.impl.save_model(buf)
        buf.seek(0)
        self._cpu_algo.impl.load_model(buf)
        return D3rlpyPolicy(self._cpu_algo)


@dataclass
class D3rlpyPolicy:
    """A d3rlpy algorithm's deterministic actions; picklable (no dataset, no training state of the suite's)."""

    algo: Any

    def act(self, observations: np.ndarray) -> np.ndarray:
        return self.algo.predict(np.asarray(observations, dtype=np.float32))


class D3rlpyAlgorithm(Algorithm):
    """Trains a d3rlpy algorithm with the suite's loop; subclasses only name their config."""

    Config: ClassVar[type]
    family = "d3rlpy"
    learning_rate_fields = ("actor_learning_rate", "critic_learning_rate")

    def curate(self, trajectories: Trajectories) -> Curated:
        return all_episodes(trajectories)

    def fit(self, trajectories: Trajectories, curated: Curated, group: SeedGroup) -> list[D3rlpyLearner]:
        d3rlpy = import_d3rlpy()
        (run,) = group.runs  # one seed at a time (batches_seeds is False)
        cfg = self.config
        d3rlpy.seed(run.seed)  # torch's global generator: d3rlpy's own noise (TD3 target smoothing, CQL samples)
        dataset = to_d3rlpy_dataset(trajectories, curated)
        build = functools.partial(build_d3rlpy, cfg, dataset)
        algo = build(str(group.device))
        run.info["d3rlpy"] = {"version": d3rlpy.__version__, "algorithm": type(algo).__name__,
                              "transitions": dataset.transition_count}
        batches = DeviceTransitions(dataset, algo, group.device, run.seed, cfg.batch_size)
        policies = train(group, D3rlpyLearner(algo, build), batches)
        run.info["d3rlpy"]["grad_steps"] = algo.grad_step
        return policies


class TD3BC(D3rlpyAlgorithm):
    name = "td3_bc"
    display_name = "TD3+BC"
    order = 50
    summary = "TD3 with a behaviour-cloning term in the actor loss (Fujimoto & Gu 2021)"
    Config = TD3BCConfig


class IQL(D3rlpyAlgorithm):
    name = "iql"
    display_name = "IQL"
    order = 70
    summary = "implicit Q-learning: expectile value, advantage-weighted actor (Kostrikov et al. 2022)"
    Config = IQLConfig


class CQL(D3rlpyAlgorithm):
    name = "cql"
    display_name = "CQL"
    order = 60
    summary = "conservative Q-learning with a SAC actor (Kumar et al. 2020)"
    Config = CQLConfig
    learning_rate_fields = ("actor_learning_rate", "critic_learning_rate", "temp_learning_rate",
                            "alpha_learning_rate")


class AWAC(D3rlpyAlgorithm):
    name = "awac"
    display_name = "AWAC"
    order = 40
    summary = "advantage-weighted actor-critic (Nair et al. 2020)"
    Config = AWACConfig


class ReBRAC(D3rlpyAlgorithm):
    name = "rebrac"
    Config = ReBRACConfig
    display_name = "ReBRAC"
    order = 80
    summary = "TD3+BC with decoupled actor / critic penalties and LayerNorm critics (Tarasov et al. 2023)"
