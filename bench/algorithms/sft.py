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

A batch is laid out in one of two ways, with the same loss and gradient (tested):
- ``static_shapes=False``: each distinct drawn trajectory once, weighted by how often it was drawn — the least work,
  but the shapes change every step;
- ``static_shapes=True``: every curated transition every step, each trajectory weighted by its draw count (0 for
  most) — fixed shapes, so ``compile=True`` (``torch.compile(fullgraph=True, dynamic=False)``) and CUDA graphs can
  capture the step; more work when the curated set is much larger than what a batch draws.
Statistics (loss, weight mean/min/max, ESS) stay on the device until an evaluation step reads them.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bench.algorithms.base import Algorithm, RunContext
from bench.algorithms.batched import StackedGaussianMLP, resume_group
from bench.algorithms.bc import BCConfig
from bench.algorithms.policy import GaussianMLPPolicy
from bench.algorithms.precision import check_precision, step_precision
from bench.algorithms.reference import reference_policies
from bench.algorithms.trajectory_batch import EpisodeTable, trajectory_log_likelihood
from bench.algorithms.weights import ema_update, trajectory_weights, warmup_cosine, weight_statistics
from bench.configs.domains import bounded, check_domains
from bench.datasets.curation import Curated, quality_bins
from bench.datasets.trajectories import Trajectories


@dataclass
class SFTConfig:
    percentiles: list[float] = bounded([90.0], ge=0, le=100)  # quality-bin cutoffs; [90] = top 10%
    ties: str = "inclusive"  # returns equal to a cutoff: "inclusive" (>=, authors' code) or "strict" (>, paper)
    importance_weighted: bool = False  # iw-SFT: weight each trajectory by q(tau) / pi_ref(tau)
    steps: int = bounded(4500, ge=1)  # fine-tuning gradient steps (Appendix F / Table 4)
    warmup_steps: int = bounded(300, ge=0)  # linear warm-up, then cosine decay to 0
    learning_rate: float = bounded(4e-5, gt=0)  # Adam peak learning rate (Appendix F)
    batch_size: int = bounded(256, ge=1)  # whole trajectories per step, drawn with replacement from the (multi)set
    loss_normalization: str = "trajectory_mean"  # "trajectory_mean" (authors' code, Tables 2/4) or "sum" (Eq. 5)
    ema: float = bounded(0.99, ge=0, lt=1)  # theta_q <- ema theta_q + (1 - ema) theta, every step (Table 4's lambda)
    weight_fn: str = "temperature"  # "temperature" (code), "smoothing" or "clip" (paper) — see weights.py
    temperature: float = bounded(1.0, gt=0)  # temperature: log w = temperature * mean_t rho_t (Table 4's temp)
    smoothing_alpha: float = bounded(0.1, gt=0)  # smoothing: log w = alpha * sum_t rho_t
    ratio_min: float = bounded(0.2, gt=0)  # clip: per-step ratio bounds
    ratio_max: float = bounded(1.8, gt=0)
    min_weight: float = bounded(0.0, ge=0)  # clip: trajectory-weight floor (max_weight: shared by all)
    max_weight: float = bounded(1000.0, gt=0)  # upper clamp of every trajectory weight (authors' code: 1000)
    normalize_weights: bool = False  # weights of a batch sum to 1 (Table 4's "normalised weights")
    # The BC reference policy (REFERENCE §2: Adam 1e-3, 10,000 steps, 128 whole trajectories in the authors' code)
    reference_dataset: str | None = None  # train pi_ref on another dataset (kitchen: "kitchen-partial"); None = this
    bc_steps: int = bounded(10_000, ge=1)
    bc_batch_size: int = bounded(128, ge=1)
    bc_batch_unit: str = "trajectories"
    bc_loss_normalization: str = "trajectory_mean"
    bc_learning_rate: float = bounded(1e-3, gt=0)
    bc_precision: str = "float32"  # the reference BC's: "float32", "tf32" (CUDA) or "bfloat16" (precision.py)
    precision: str = "float32"  # the fine-tuning step's: "float32", "tf32" (CUDA) or "bfloat16" (precision.py)
    static_shapes: bool = False  # compute every curated transition each step, weighted by draw counts (see above)
    compile: bool = False  # torch.compile the loss (needs static_shapes; pays on GPUs, see benchmarks/)
    divergence_factor: float = bounded(100.0, ge=0)  # as BCConfig's, for the fine-tuning and the reference BC
    # iw-SFT: stop as "diverged" when ESS / batch stays below this at every step of an evaluation window (weights
    # all ~0: ESS 0; one trajectory holding all the weight of a 256 batch: 0.0039); 0 = off
    min_ess_fraction: float = bounded(0.001, ge=0, le=1)

    def __post_init__(self):  # a bad value fails when the config is resolved, before any record is written
        check_domains(self)
        self.reference_bc()
        check_precision("precision", self.precision)
        if self.compile and not self.static_shapes:
            raise ValueError("compile=true needs static_shapes=true (a compiled step must see the same shapes "
                             "every step): add --set static_shapes=true")

    def reference_bc(self) -> BCConfig:
        return BCConfig(steps=self.bc_steps, batch_size=self.bc_batch_size, batch_unit=self.bc_batch_unit,
                        loss_normalization=self.bc_loss_normalization, learning_rate=self.bc_learning_rate,
                        precision=self.bc_precision, divergence_factor=self.divergence_factor)


@dataclass
class SFTQConfig(SFTConfig):
    percentiles: list[float] = bounded([90.0, 95.0, 98.0], ge=0, le=100)


@dataclass
class IWSFTConfig(SFTConfig):
    importance_weighted: bool = True


@dataclass
class IWSFTQConfig(SFTQConfig):
    importance_weighted: bool = True


def trajectory_terms(policy, q_policy, obs: torch.Tensor, act: torch.Tensor, logp_ref: torch.Tensor | None,
                     seg: torch.Tensor, lengths: torch.Tensor, cfg: SFTConfig,
                     mean_length: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(log-likelihood under theta, importance weight) of each trajectory of a packed batch; w = 1 without q.

    ``obs``/``act`` may carry a leading seed dimension for a stacked policy; ``seg`` indexes the flattened
    transitions (and ``logp_ref`` has their shape).
    """
    ll = trajectory_log_likelihood(policy.log_prob(obs, act).reshape(-1), seg, lengths, cfg.loss_normalization,
                                   mean_length)
    if q_policy is None:
        return ll, torch.ones_like(ll)
    with torch.no_grad():
        rho = (q_policy.log_prob(obs, act) - logp_ref).reshape(-1)
        w = trajectory_weights(rho, seg, lengths, cfg.weight_fn, temperature=cfg.temperature,
                               alpha=cfg.smoothing_alpha, max_weight=cfg.max_weight, ratio_min=cfg.ratio_min,
                               ratio_max=cfg.ratio_max, weight_min=cfg.min_weight)
    return ll, w


def weighted_nll(ll: torch.Tensor, w: torch.Tensor, counts: torch.Tensor, normalize: bool) -> torch.Tensor:
    """-sum_b c_b w_b ll_b / sum_b c_b (or / sum_b c_b w_b, normalised weights) along the last dimension."""
    c = counts.to(ll.dtype)
    return -(c * w * ll).sum(-1) / ((c * w).sum(-1) if normalize else c.sum(-1))


def iw_sft_loss(policy: GaussianMLPPolicy, q_policy: GaussianMLPPolicy | None, obs: torch.Tensor,
                act: torch.Tensor, logp_ref: torch.Tensor | None, seg: torch.Tensor, lengths: torch.Tensor,
                cfg: SFTConfig, mean_length: float,
                counts: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, raw trajectory weights) for one batch; ``q_policy``/``logp_ref`` None means plain SFT (w = 1).

    ``counts[b]``: how many times trajectory b was drawn (default 1 each); the loss is the one over all draws.
    """
    ll, w = trajectory_terms(policy, q_policy, obs, act, logp_ref, seg, lengths, cfg, mean_length)
    c = torch.ones_like(ll) if counts is None else counts
    return weighted_nll(ll, w, c, cfg.normalize_weights and q_policy is not None), w


class SFT(Algorithm):
    name = "sft"
    Config = SFTConfig
    display_name = "SFT"
    order = 100
    family = "native"
    summary = "the BC reference policy fine-tuned on the top 10% of trajectories"

    def datasets_used(self) -> dict[str, str]:
        return {} if self.config.reference_dataset is None else {"reference": self.config.reference_dataset}

    def curate(self, trajectories: Trajectories) -> Curated:
        return quality_bins(trajectories, self.config.percentiles, self.config.ties)

    def fit(self, trajectories: Trajectories, curated: Curated, ctx: RunContext) -> GaussianMLPPolicy:
        cfg: SFTConfig = self.config
        (reference,) = self._references(trajectories, [ctx])
        policy = copy.deepcopy(reference).requires_grad_(True).train()
        q_policy = copy.deepcopy(reference).requires_grad_(False) if cfg.importance_weighted else None
        obs = torch.as_tensor(trajectories.observations, device=ctx.device)
        act = torch.as_tensor(trajectories.actions, device=ctx.device)
        table = EpisodeTable.from_curated(trajectories, curated, ctx.device)
        logp_ref_all = _reference_log_probs([reference], obs, act)[0] if cfg.importance_weighted else None
        # fused: one kernel over all parameters; on a GPU its step counters stay on the device (no host sync)
        optim = torch.optim.Adam(policy.parameters(), lr=cfg.learning_rate, fused=True)
        sched = torch.optim.lr_scheduler.LambdaLR(optim, lambda k: warmup_cosine(k, cfg.warmup_steps, cfg.steps))
        gen = np.random.default_rng(ctx.seed)  # trajectories are drawn on the host (EpisodeTable)
        loss_fn = _batch_loss(policy, q_policy, obs, act, logp_ref_all, table, cfg, ctx.device)

        ctx.watch(cfg.divergence_factor, cfg.min_ess_fraction if cfg.importance_weighted else 0.0)
        start = ctx.resume(policy=policy, optim=optim, sched=sched, generator=gen,
                           **({"q_policy": q_policy} if q_policy is not None else {}))
        for step in range(start + 1, cfg.steps + 1):
            loss, stats = loss_fn(gen)
            optim.zero_grad(set_to_none=True)
            loss.backward()
            optim.step()
            sched.step()
            if q_policy is not None:
                ema_update(q_policy, policy, cfg.ema)
            ctx.step(step, policy, {"loss": loss, "learning_rate": sched.get_last_lr()[0], **stats})
        if q_policy is not None:
            ctx.info["weights"] = _weights_info(cfg, ctx.curve)
        return policy.eval()

    def can_batch_seeds(self) -> bool:
        return not self.config.static_shapes  # the static-shape (compiled) step trains one seed at a time

    def fit_seeds(self, trajectories: Trajectories, curated: Curated, ctxs: list[RunContext],
                  checkpoint_path: Path | None = None) -> list[GaussianMLPPolicy]:
        """K seeds as one stacked model: each seed its own pi_ref, q, data order and Adam state; the loss is the sum
        of the per-seed losses, so each seed gets exactly its own gradient (equal to K separate runs up to float
        rounding). Each seed's drawn trajectories once, padded to one shape (``EpisodeTable.sample_seeds``)."""
        cfg: SFTConfig = self.config
        device, weighted = ctxs[0].device, cfg.importance_weighted
        references = self._references(trajectories, ctxs)
        policy = StackedGaussianMLP(references).to(device).train()
        q_policy = copy.deepcopy(policy).requires_grad_(False) if weighted else None
        obs = torch.as_tensor(trajectories.observations, device=device)
        act = torch.as_tensor(trajectories.actions, device=device)
        table = EpisodeTable.from_curated(trajectories, curated, device)
        logp_ref_all = torch.stack(_reference_log_probs(references, obs, act)) if weighted else None
        optim = torch.optim.Adam(policy.parameters(), lr=cfg.learning_rate, fused=True)
        sched = torch.optim.lr_scheduler.LambdaLR(optim, lambda k: warmup_cosine(k, cfg.warmup_steps, cfg.steps))
        gens = [np.random.default_rng(ctx.seed) for ctx in ctxs]
        for ctx in ctxs:
            ctx.watch(cfg.divergence_factor, cfg.min_ess_fraction if weighted else 0.0)
        group, start = resume_group(checkpoint_path, ctxs, {
            "stacked": policy, "optim": optim, "sched": sched, **({"q_policy": q_policy} if weighted else {}),
            **{f"generator{k}": g for k, g in enumerate(gens)}})

        for step in range(start + 1, cfg.steps + 1):
            rows, seg, lengths, counts = table.sample_seeds(cfg.batch_size, gens, unique=True)
            logp_ref = logp_ref_all.gather(1, rows) if weighted else None
            with step_precision(cfg.precision, device):
                ll, w = trajectory_terms(policy, q_policy, obs[rows], act[rows], logp_ref, seg, lengths, cfg,
                                         table.mean_length)
            ll, w = ll.view_as(counts), w.view_as(counts)
            per_seed = weighted_nll(ll, w, counts, cfg.normalize_weights and weighted)
            optim.zero_grad(set_to_none=True)
            per_seed.sum().backward()  # seed k's weights get exactly seed k's gradient
            optim.step()
            sched.step()
            if weighted:
                ema_update(q_policy, policy, cfg.ema)
            due = ctxs[0].due(step)
            for k, ctx in enumerate(ctxs):
                stats = weight_statistics(w[k], counts[k], cfg.max_weight) if weighted else {}
                ctx.step(step, policy.unstack(k, references[0]) if due else None,
                         {"loss": per_seed[k], "learning_rate": sched.get_last_lr()[0], **stats})
            if due and step != cfg.steps:
                group.save(step)
        if weighted:
            for ctx in ctxs:
                ctx.info["weights"] = _weights_info(cfg, ctx.curve)
        return [policy.unstack(k, references[0]) for k in range(len(ctxs))]

    def _references(self, trajectories: Trajectories, ctxs: list[RunContext]) -> list[GaussianMLPPolicy]:
        """pi_ref of each context's seed (cached; the missing ones trained together), frozen; notes it in ctx.info."""
        cfg: SFTConfig = self.config
        ref_data = trajectories
        if cfg.reference_dataset is not None:
            if "reference" not in ctxs[0].datasets:
                raise ValueError(f"reference_dataset {cfg.reference_dataset} is not loaded: run.py loads it (and "
                                 "records its fingerprint) into ctx.datasets['reference'] before fit")
            ref_data = ctxs[0].datasets["reference"]
        if (ref_data.obs_dim, ref_data.act_dim) != (trajectories.obs_dim, trajectories.act_dim):
            raise ValueError(f"reference_dataset {cfg.reference_dataset} has observation/action sizes "
                             f"{(ref_data.obs_dim, ref_data.act_dim)}, the fine-tuning data "
                             f"{(trajectories.obs_dim, trajectories.act_dim)}")
        found = reference_policies(ref_data, cfg.reference_bc(), [c.seed for c in ctxs], ctxs[0].device, ctxs[0].log)
        for ctx, (_, info) in zip(ctxs, found, strict=True):
            ctx.info["reference"] = {**info, "dataset": ref_data.name}
        return [policy.requires_grad_(False) for policy, _ in found]


def _reference_log_probs(references: list[GaussianMLPPolicy], obs: torch.Tensor,
                         act: torch.Tensor) -> list[torch.Tensor]:
    """log pi_ref of every transition, per reference: pi_ref is frozen, so this is computed once, not every step."""
    with torch.no_grad():
        return [torch.cat([ref.log_prob(o, a) for o, a in zip(obs.split(65536), act.split(65536), strict=True)])
                for ref in references]


def _weights_info(cfg: SFTConfig, curve: list[dict]) -> dict:
    """The record's weight summary: per evaluation window as the curve holds them (mean / min / max of the
    weights, mean ESS fraction) and over the run."""
    windows = [{"step": p["step"], **{k.removeprefix("weight_"): p[k] for k in WEIGHT_STATISTICS}} for p in curve]
    return {"function": cfg.weight_fn, "normalized": cfg.normalize_weights, "per_window": windows,
            "mean": sum(x["mean"] for x in windows) / len(windows), "max": max(x["max"] for x in windows),
            "min": min(x["min"] for x in windows),
            "ess_fraction": sum(x["ess_fraction"] for x in windows) / len(windows)}


WEIGHT_STATISTICS = ("weight_mean", "weight_min", "weight_max", "ess_fraction")


def _batch_loss(policy: GaussianMLPPolicy, q_policy: GaussianMLPPolicy | None, obs: torch.Tensor, act: torch.Tensor,
                logp_ref_all: torch.Tensor | None, table: EpisodeTable, cfg: SFTConfig, device: torch.device):
    """``loss_fn(generator) -> (loss, statistics)`` for one step: draws a batch and computes its loss.

    Both layouts (see the module docstring) draw the same trajectories from ``generator`` and give the same loss.
    """
    def statistics(w: torch.Tensor, counts: torch.Tensor) -> dict[str, torch.Tensor]:
        return {} if q_policy is None else weight_statistics(w, counts, cfg.max_weight)

    if not cfg.static_shapes:
        def unique_loss(gen: np.random.Generator):
            rows, seg, lengths, counts = table.sample_unique(cfg.batch_size, gen)
            with step_precision(cfg.precision, device):
                loss, w = iw_sft_loss(policy, q_policy, obs[rows], act[rows],
                                      None if logp_ref_all is None else logp_ref_all[rows], seg, lengths, cfg,
                                      table.mean_length, counts)
            return loss, statistics(w, counts)
        return unique_loss

    rows, seg, lengths = table.packed()
    packed_obs, packed_act = obs[rows], act[rows]
    packed_ref = None if logp_ref_all is None else logp_ref_all[rows]

    def packed_loss(counts: torch.Tensor):
        with step_precision(cfg.precision, device):
            loss, w = iw_sft_loss(policy, q_policy, packed_obs, packed_act, packed_ref, seg, lengths, cfg,
                                  table.mean_length, counts)
        return loss, statistics(w, counts)

    step = torch.compile(packed_loss, fullgraph=True, dynamic=False) if cfg.compile else packed_loss
    return lambda gen: step(table.sample_counts(cfg.batch_size, gen))


class SFTQ(SFT):
    name = "sft_q"
    Config = SFTQConfig
    display_name = "SFT(Q)"
    order = 110
    summary = "SFT on the quality bins [90, 95, 98] as a multiset (Algorithm 2)"


class IWSFT(SFT):
    name = "iw_sft"
    Config = IWSFTConfig
    display_name = "iw-SFT"
    order = 120
    summary = "importance-weighted SFT on the top 10%, q an EMA of the policy"


class IWSFTQ(SFT):
    name = "iw_sft_q"
    Config = IWSFTQConfig
    display_name = "iw-SFT(Q)"
    order = 130
    summary = "importance-weighted SFT on the quality bins: the paper's method"
