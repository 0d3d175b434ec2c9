"""The SFT family: SFT, SFT(Q), iw-SFT, iw-SFT(Q) — fine-tuning the BC reference policy on curated trajectories.

Qin & Springenberg (2025), "Supervised Fine Tuning on Curated Data is Reinforcement Learning (and can be
improved)", §3 (objectives), Algorithm 2 (quality bins), Appendix E/F and Table 4 (control protocol):

    SFT / SFT(Q):        J(theta)    = E_{tau ~ D+} [ log p(tau; theta) ]
    iw-SFT / iw-SFT(Q):  J_iw(theta) = E_{tau ~ D+} [ w(tau) log p(tau; theta) ],
                         w(tau) = q(tau) / pi_ref(tau) = exp( sum_t g(rho_t) ),
                         rho_t  = log pi_q(a_t|s_t) - log pi_ref(a_t|s_t)

D+ is the top 10% of episodes by return (SFT, iw-SFT) or the multiset union of the bins above the [90, 95, 98]
return percentiles (the (Q) variants): an episode above c cutoffs is drawn c times as often. log p(tau; theta)
keeps only the policy factors (dynamics do not depend on theta) and is normalised per ``loss_normalization``.
pi_ref is BC on all data (cached, see ``reference``); theta, theta_q and pi_ref all start from it, so at step 0
every weight is 1. q is an exponential moving average of theta, updated after every step:
theta_q <- ema * theta_q + (1 - ema) * theta. g is one of the named weight functions in ``weights``.
Batches: ``batch_size`` whole trajectories drawn with replacement; Adam, linear warm-up then cosine decay to 0.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import torch

from bench.algorithms.base import Algorithm, RunContext
from bench.algorithms.bc import BCConfig
from bench.algorithms.policy import GaussianMLPPolicy
from bench.algorithms.reference import reference_policy
from bench.algorithms.trajectory_batch import EpisodeTable, trajectory_log_likelihood
from bench.algorithms.weights import effective_sample_size, ema_update, trajectory_weights, warmup_cosine
from bench.datasets.curation import Curated, quality_bins
from bench.datasets.trajectories import Trajectories


@dataclass
class SFTConfig:
    percentiles: list[float] = field(default_factory=lambda: [90.0])  # quality-bin cutoffs; [90] = top 10%
    ties: str = "inclusive"  # returns equal to a cutoff: "inclusive" (>=, authors' code) or "strict" (>, paper)
    importance_weighted: bool = False  # iw-SFT: weight each trajectory by q(tau) / pi_ref(tau)
    steps: int = 4500  # fine-tuning gradient steps (Appendix F / Table 4)
    warmup_steps: int = 300  # linear warm-up, then cosine decay to 0
    learning_rate: float = 4e-5  # Adam peak learning rate (Appendix F)
    batch_size: int = 256  # whole trajectories per step, drawn with replacement from the (multi)set
    loss_normalization: str = "trajectory_mean"  # "trajectory_mean" (authors' code, Tables 2/4) or "sum" (Eq. 5)
    ema: float = 0.99  # theta_q <- ema * theta_q + (1 - ema) * theta, every step (Table 4's lambda)
    weight_fn: str = "temperature"  # "temperature" (code), "smoothing" or "clip" (paper) — see weights.py
    temperature: float = 1.0  # temperature: log w = temperature * mean_t rho_t (Table 4's temp)
    smoothing_alpha: float = 0.1  # smoothing: log w = alpha * sum_t rho_t
    ratio_min: float = 0.2  # clip: per-step ratio bounds
    ratio_max: float = 1.8
    min_weight: float = 0.0  # clip: trajectory-weight bounds (max_weight is shared with the other functions)
    max_weight: float = 1000.0  # upper clamp of every trajectory weight (authors' code: 1000)
    normalize_weights: bool = False  # weights of a batch sum to 1 (Table 4's "normalised weights")
    # The BC reference policy (REFERENCE §2: Adam 1e-3, 10,000 steps, 128 whole trajectories in the authors' code)
    reference_dataset: str | None = None  # train pi_ref on another dataset (kitchen: "kitchen-partial"); None = this
    bc_steps: int = 10_000
    bc_batch_size: int = 128
    bc_batch_unit: str = "trajectories"
    bc_loss_normalization: str = "trajectory_mean"
    bc_learning_rate: float = 1e-3
    bc_precision: str = "float32"  # of the reference BC's forward pass: "float32" or "bfloat16" (see bc.py)

    def __post_init__(self):
        self.reference_bc()  # a bad bc_* value fails when the config is resolved, before any record is written

    def reference_bc(self) -> BCConfig:
        return BCConfig(steps=self.bc_steps, batch_size=self.bc_batch_size, batch_unit=self.bc_batch_unit,
                        loss_normalization=self.bc_loss_normalization, learning_rate=self.bc_learning_rate,
                        precision=self.bc_precision)


@dataclass
class SFTQConfig(SFTConfig):
    percentiles: list[float] = field(default_factory=lambda: [90.0, 95.0, 98.0])


@dataclass
class IWSFTConfig(SFTConfig):
    importance_weighted: bool = True


@dataclass
class IWSFTQConfig(SFTQConfig):
    importance_weighted: bool = True


def iw_sft_loss(policy: GaussianMLPPolicy, q_policy: GaussianMLPPolicy | None, obs: torch.Tensor,
                act: torch.Tensor, logp_ref: torch.Tensor | None, seg: torch.Tensor, lengths: torch.Tensor,
                cfg: SFTConfig, mean_length: float,
                counts: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, raw trajectory weights) for one batch; ``q_policy``/``logp_ref`` None means plain SFT (w = 1).

    ``counts[b]``: how many times trajectory b was drawn (default 1 each); the loss is the one over all draws.
    """
    ll = trajectory_log_likelihood(policy.log_prob(obs, act), seg, lengths, cfg.loss_normalization, mean_length)
    if q_policy is None:
        w = torch.ones_like(ll)
    else:
        with torch.no_grad():
            rho = q_policy.log_prob(obs, act) - logp_ref
            w = trajectory_weights(rho, seg, lengths, cfg.weight_fn, temperature=cfg.temperature,
                                   alpha=cfg.smoothing_alpha, max_weight=cfg.max_weight, ratio_min=cfg.ratio_min,
                                   ratio_max=cfg.ratio_max, weight_min=cfg.min_weight)
    c = torch.ones_like(ll) if counts is None else counts.to(ll.dtype)
    if cfg.normalize_weights and q_policy is not None:
        return -(c * w * ll).sum() / (c * w).sum(), w
    return -(c * w * ll).sum() / c.sum(), w


class SFT(Algorithm):
    name = "sft"
    Config = SFTConfig

    def curate(self, trajectories: Trajectories) -> Curated:
        return quality_bins(trajectories, self.config.percentiles, self.config.ties)

    def fit(self, trajectories: Trajectories, curated: Curated, ctx: RunContext) -> GaussianMLPPolicy:
        cfg: SFTConfig = self.config
        ref_data = trajectories if cfg.reference_dataset is None else _load_reference_data(cfg.reference_dataset)
        if (ref_data.obs_dim, ref_data.act_dim) != (trajectories.obs_dim, trajectories.act_dim):
            raise ValueError(f"reference_dataset {cfg.reference_dataset} has observation/action sizes "
                             f"{(ref_data.obs_dim, ref_data.act_dim)}, the fine-tuning data "
                             f"{(trajectories.obs_dim, trajectories.act_dim)}")
        reference, ref_info = reference_policy(ref_data, cfg.reference_bc(), ctx.seed, ctx.device, ctx.log)
        ctx.info["reference"] = {**ref_info, "dataset": ref_data.name}
        policy = copy.deepcopy(reference).train()
        q_policy = copy.deepcopy(reference).requires_grad_(False) if cfg.importance_weighted else None
        reference.requires_grad_(False)

        obs = torch.as_tensor(trajectories.observations, device=ctx.device)
        act = torch.as_tensor(trajectories.actions, device=ctx.device)
        table = EpisodeTable.from_curated(trajectories, curated, ctx.device)
        logp_ref_all = None
        if cfg.importance_weighted:  # pi_ref is frozen: its log-probs are computed once, not every step
            with torch.no_grad():
                logp_ref_all = torch.cat([reference.log_prob(o, a) for o, a in
                                          zip(obs.split(65536), act.split(65536), strict=True)])
        optim = torch.optim.Adam(policy.parameters(), lr=cfg.learning_rate)
        sched = torch.optim.lr_scheduler.LambdaLR(
            optim, lambda k: warmup_cosine(k, cfg.warmup_steps, cfg.steps))
        gen = torch.Generator(device="cpu").manual_seed(ctx.seed)
        stats: list[tuple[float, float, float, float]] = []  # per step: mean, min, max, ESS / batch
        windows: list[dict] = []

        start = 0
        if (state := ctx.resume()) is not None:
            policy.load_state_dict(state["policy"])
            if q_policy is not None:
                q_policy.load_state_dict(state["q_policy"])
            optim.load_state_dict(state["optim"])
            sched.load_state_dict(state["sched"])
            gen.set_state(state["generator"])
            windows = state["weight_windows"]
            start = state["step"]

        def checkpoint() -> dict:
            return {"policy": policy.state_dict(), "q_policy": q_policy and q_policy.state_dict(),
                    "optim": optim.state_dict(), "sched": sched.state_dict(), "generator": gen.get_state(),
                    "weight_windows": windows}

        for step in range(start + 1, cfg.steps + 1):
            # a trajectory drawn several times is computed once and weighted by its count (same loss, less work)
            rows, seg, lengths, counts = table.sample_unique(cfg.batch_size, gen)
            loss, w = iw_sft_loss(policy, q_policy, obs[rows], act[rows],
                                  None if logp_ref_all is None else logp_ref_all[rows], seg, lengths, cfg,
                                  table.mean_length, counts)
            optim.zero_grad(set_to_none=True)
            loss.backward()
            optim.step()
            sched.step()
            if q_policy is not None:
                ema_update(q_policy, policy, cfg.ema)
                drawn = w.repeat_interleave(counts)  # statistics over the batch as drawn
                stats.append((drawn.mean().item(), drawn.min().item(), drawn.max().item(),
                              effective_sample_size(drawn) / len(drawn)))
            if q_policy is not None and (step % ctx.eval_every == 0 or step == cfg.steps):
                a = np.asarray(stats)
                windows.append({"step": step, "mean": float(a[:, 0].mean()), "min": float(a[:, 1].min()),
                                "max": float(a[:, 2].max()), "ess_fraction": float(a[:, 3].mean())})
                stats.clear()
            ctx.step(step, policy, loss.item(), checkpoint)
        if q_policy is not None:
            ctx.info["weights"] = {
                "function": cfg.weight_fn, "normalized": cfg.normalize_weights, "per_window": windows,
                "mean": float(np.mean([x["mean"] for x in windows])), "max": max(x["max"] for x in windows),
                "min": min(x["min"] for x in windows),
                "ess_fraction": float(np.mean([x["ess_fraction"] for x in windows])),
            }
        return policy.eval()


def _load_reference_data(name: str) -> Trajectories:
    from bench.datasets.sources import load_dataset_cached
    from bench.specs import get_spec

    return load_dataset_cached(get_spec(name))


class SFTQ(SFT):
    name = "sft_q"
    Config = SFTQConfig


class IWSFT(SFT):
    name = "iw_sft"
    Config = IWSFTConfig


class IWSFTQ(SFT):
    name = "iw_sft_q"
    Config = IWSFTQConfig
