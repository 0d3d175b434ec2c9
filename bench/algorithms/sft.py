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
pi_ref is BC on all data, resolved per seed before ``fit`` (``reference``); theta, theta_q and pi_ref all start
from it, so at step 0 every weight is 1. q is an exponential moving average of theta, updated after every step:
theta_q <- ema * theta_q + (1 - ema) * theta. g is one of the named weight functions in ``weights``.
Batches: ``batch_size`` whole trajectories drawn with replacement; Adam, linear warm-up then cosine decay to 0.

A batch is laid out as ``static_shapes`` says (``trajectory_batch.TrajectoryBatches``: each distinct drawn
trajectory once, or every curated transition weighted by its draw count — fixed shapes, so ``compile=True`` can
capture the step); both give the same loss and gradient (tested). Several seeds train as one stacked model
(``native``), in either layout. Statistics (loss, weight mean/min/max, ESS) stay on the device until an evaluation
step reads them.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from bench.algorithms.base import Algorithm
from bench.algorithms.bc import BATCH_UNITS, BCConfig
from bench.algorithms.checkpoint import Component
from bench.algorithms.context import SeedGroup, train
from bench.algorithms.native import StackedLearner
from bench.algorithms.policy import GaussianMLPPolicy
from bench.algorithms.precision import PRECISIONS, step_precision
from bench.algorithms.trajectory_batch import (
    LOSS_NORMALIZATIONS,
    TrajectoryBatch,
    TrajectoryBatches,
    trajectory_log_likelihood,
)
from bench.algorithms.weights import WEIGHT_FUNCTIONS, ema_update, trajectory_weights, warmup_cosine, weight_statistics
from bench.configs.domains import ConfigError, bounded, check_domains, check_order, choice
from bench.datasets.curation import TIES, Curated, quality_bins
from bench.datasets.trajectories import Trajectories
from bench.specs import get_spec


@dataclass
class SFTConfig:
    percentiles: list[float] = bounded([90.0], ge=0, le=100)  # quality-bin cutoffs; [90] = top 10%
    ties: str = choice("inclusive", TIES)  # returns equal to a cutoff: "inclusive" (>=, authors' code), "strict" (>)
    importance_weighted: bool = False  # iw-SFT: weight each trajectory by q(tau) / pi_ref(tau)
    steps: int = bounded(4500, ge=1)  # fine-tuning gradient steps (Appendix F / Table 4)
    warmup_steps: int = bounded(300, ge=0)  # linear warm-up, then cosine decay to 0
    learning_rate: float = bounded(4e-5, gt=0)  # Adam peak learning rate (Appendix F)
    batch_size: int = bounded(256, ge=1)  # whole trajectories per step, drawn with replacement from the (multi)set
    loss_normalization: str = choice("trajectory_mean", LOSS_NORMALIZATIONS)  # authors' code (Tables 2/4) / Eq. 5
    ema: float = bounded(0.99, ge=0, lt=1)  # theta_q <- ema theta_q + (1 - ema) theta, every step (Table 4's lambda)
    weight_fn: str = choice("temperature", WEIGHT_FUNCTIONS)  # "temperature" (code), "smoothing", "clip" (paper)
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
    bc_batch_unit: str = choice("trajectories", BATCH_UNITS)
    bc_loss_normalization: str = choice("trajectory_mean", LOSS_NORMALIZATIONS)
    bc_learning_rate: float = bounded(1e-3, gt=0)
    bc_precision: str = choice("float32", PRECISIONS)  # the reference BC's: "tf32" (CUDA), "bfloat16" (precision.py)
    precision: str = choice("float32", PRECISIONS)  # the fine-tuning step's
    static_shapes: bool = False  # compute every curated transition each step, weighted by draw counts (see above)
    compile: bool = False  # torch.compile the loss (needs static_shapes; pays on GPUs, see benchmarks/)
    cuda_graphs: bool = True  # with compile on CUDA: replay the compiled forward and backward as CUDA graphs
    divergence_factor: float = bounded(100.0, ge=0)  # as BCConfig's, for the fine-tuning and the reference BC
    # iw-SFT: stop as "diverged" when ESS / batch stays below this at every step of an evaluation window (weights
    # all ~0: ESS 0; one trajectory holding all the weight of a 256 batch: 0.0039); 0 = off
    min_ess_fraction: float = bounded(0.001, ge=0, le=1)

    def __post_init__(self):  # a bad value fails when the config is resolved, before any record or training
        check_domains(self)
        check_order(self, "ratio_min", "ratio_max", strict=True)
        check_order(self, "min_weight", "max_weight")
        if self.reference_dataset is not None:
            try:
                get_spec(self.reference_dataset)
            except KeyError as e:
                raise ConfigError("reference_dataset", f"reference_dataset={self.reference_dataset!r}: "
                                                       f"{e.args[0]}") from None
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


def weighted_nll(ll: torch.Tensor, w: torch.Tensor, counts: torch.Tensor, normalize: bool) -> torch.Tensor:
    """-sum_b c_b w_b ll_b / sum_b c_b (or / sum_b c_b w_b, normalised weights) along the last dimension."""
    c = counts.to(ll.dtype)
    return -(c * w * ll).sum(-1) / ((c * w).sum(-1) if normalize else c.sum(-1))


def iw_sft_loss(policy, q_policy, obs: torch.Tensor, act: torch.Tensor, logp_ref: torch.Tensor | None,
                sizes: torch.Tensor, lengths: torch.Tensor, cfg: SFTConfig, mean_length: float,
                counts: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, raw trajectory weights) of a packed batch; ``q_policy``/``logp_ref`` None means plain SFT (w = 1).

    ``sizes[b]``: how many consecutive transitions trajectory b holds; ``counts[b]``: how many times it was drawn
    (default 1 each): the loss is the one over all draws. With a stacked policy, ``obs``/``act`` carry a leading seed
    dimension (``logp_ref`` their shape), ``sizes`` runs over the flattened transitions, ``counts`` is (K, S) and the
    loss (K,): each seed's own (weights come back as (K, S)).
    """
    ll = trajectory_log_likelihood(policy.log_prob(obs, act).reshape(-1), sizes, lengths, cfg.loss_normalization,
                                   mean_length)
    w = torch.ones_like(ll)
    if q_policy is not None:
        with torch.no_grad():
            rho = (q_policy.log_prob(obs, act) - logp_ref).reshape(-1)
            w = trajectory_weights(rho, sizes, lengths, cfg.weight_fn, temperature=cfg.temperature,
                                   alpha=cfg.smoothing_alpha, max_weight=cfg.max_weight, ratio_min=cfg.ratio_min,
                                   ratio_max=cfg.ratio_max, weight_min=cfg.min_weight)
    c = torch.ones_like(ll) if counts is None else counts
    ll, w = ll.view_as(c), w.view_as(c)
    return weighted_nll(ll, w, c, cfg.normalize_weights and q_policy is not None), w


def compile_options(device: torch.device, cuda_graphs: bool) -> dict:
    """torch.compile's options for a loss with static shapes: one graph (``fullgraph``), never recompiled
    (``dynamic=False``); on CUDA with ``cuda_graphs``, inductor's CUDA graphs (``mode="reduce-overhead"``: the batch
    is copied into fixed buffers and the recorded forward and backward kernels are replayed, none launched from
    Python). Compile alone gave LeanRL 1.0-2.0x on an H100, compile with CUDA graphs 3.4-5.7x."""
    graphs = cuda_graphs and device.type == "cuda"
    return {"fullgraph": True, "dynamic": False, **({"mode": "reduce-overhead"} if graphs else {})}


class SFTLearner(StackedLearner):
    """theta per seed, started from that seed's pi_ref; with importance weights, q (an EMA of theta, also started
    from pi_ref) and log pi_ref of every transition, computed once (pi_ref is frozen). The loss is compiled
    (:func:`compile_options`) when the config asks for it; the optimiser step (one fused Adam kernel) and the EMA
    follow it eagerly."""

    def __init__(self, references: list[GaussianMLPPolicy], trajectories: Trajectories, device: torch.device,
                 mean_length: float, cfg: SFTConfig):
        super().__init__(references, trajectories, device, cfg.learning_rate,
                         lambda k: warmup_cosine(k, cfg.warmup_steps, cfg.steps))
        obs, act = self.obs, self.act
        self.cfg, self.mean_length = cfg, mean_length
        weighted = cfg.importance_weighted
        self.q = copy.deepcopy(self.model).requires_grad_(False) if weighted else None
        self.logp_ref = None
        if weighted:  # log pi_ref of every transition, per seed: pi_ref is frozen, so computed once, not every step
            with torch.no_grad():
                self.logp_ref = torch.stack([torch.cat([ref.log_prob(o, a) for o, a in zip(
                    obs.split(65536), act.split(65536), strict=True)]) for ref in references])
        options = compile_options(device, cfg.cuda_graphs)
        self.graphs = cfg.compile and "mode" in options
        if cfg.compile:  # the dataset and the log pi_ref table are read where they are, never copied into buffers
            for table in (self.obs, self.act, self.logp_ref):
                if table is not None:
                    torch._dynamo.mark_static_address(table)
        self._loss = torch.compile(self._batch_loss, **options) if cfg.compile else self._batch_loss

    def loss(self, batch: TrajectoryBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if not self.graphs:
            return self._loss(batch.rows, batch.sizes, batch.lengths, batch.counts)
        torch.compiler.cudagraph_mark_step_begin()  # a new step: the graphs may reuse the last step's outputs
        per_seed, stats = self._loss(batch.rows, batch.sizes, batch.lengths, batch.counts)
        # the next replay overwrites the graphs' outputs: what outlives this step is copied out
        return per_seed.clone(), {k: v.clone() for k, v in stats.items()}

    def _batch_loss(self, rows: torch.Tensor, sizes: torch.Tensor, lengths: torch.Tensor,
                    counts: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        cfg = self.cfg
        logp_ref = None if self.q is None else self.logp_ref.gather(1, rows)
        with step_precision(cfg.precision, self.obs.device):
            per_seed, w = iw_sft_loss(self.model, self.q, self.obs[rows], self.act[rows], logp_ref, sizes, lengths, cfg,
                                      self.mean_length, counts)
        return per_seed, ({} if self.q is None else weight_statistics(w, counts, cfg.max_weight))

    def after_step(self) -> None:
        if self.q is not None:
            ema_update(self.q, self.model, self.cfg.ema)

    def components(self) -> dict[str, Component]:
        return {**super().components(), **({"q_policy": self.q} if self.q is not None else {})}


class SFT(Algorithm):
    name = "sft"
    Config = SFTConfig
    display_name = "SFT"
    order = 100
    family = "native"
    summary = "the BC reference policy fine-tuned on the top 10% of trajectories"
    learning_rate_fields = ("learning_rate", "bc_learning_rate")
    batches_seeds = True

    def datasets_used(self) -> dict[str, str]:
        return {} if self.config.reference_dataset is None else {"reference": self.config.reference_dataset}

    def reference_bc(self) -> BCConfig:
        return self.config.reference_bc()

    def precision(self) -> str:
        return self.config.precision

    def rate_key(self) -> str:
        cfg = self.config
        return f"{'iw_sft' if cfg.importance_weighted else 'sft'}/{cfg.batch_size}/{cfg.precision}"

    def curate(self, trajectories: Trajectories) -> Curated:
        return quality_bins(trajectories, self.config.percentiles, self.config.ties)

    def fit(self, trajectories: Trajectories, curated: Curated, group: SeedGroup) -> list[GaussianMLPPolicy]:
        """Every seed of ``group`` fine-tuned from its pi_ref (``group.references``, resolved by run.py)."""
        cfg: SFTConfig = self.config
        if group.references is None or len(group.references) != len(group.runs):
            raise ValueError(f"{self.name} fine-tunes each seed's reference policy: resolve them before fit "
                             "(bench.algorithms.reference.reference_policies, as run.py does) into group.references")
        batches = TrajectoryBatches(trajectories, curated, group.device, group.seeds, cfg.batch_size,
                                    cfg.static_shapes)
        learner = SFTLearner(group.references, trajectories, group.device, batches.mean_length, cfg)
        group.watch(cfg.divergence_factor, cfg.min_ess_fraction if cfg.importance_weighted else 0.0)
        policies = train(group, learner, batches)
        if cfg.importance_weighted:
            for run in group.runs:
                run.info["weights"] = _weights_info(cfg, run.curve)
        return policies


WEIGHT_STATISTICS = ("weight_mean", "weight_min", "weight_max", "ess_fraction")


def _weights_info(cfg: SFTConfig, curve: list[dict]) -> dict:
    """The record's weight summary: per evaluation window as the curve holds them (mean / min / max of the
    weights, mean ESS fraction) and over the run."""
    windows = [{"step": p["step"], **{k.removeprefix("weight_"): p[k] for k in WEIGHT_STATISTICS}} for p in curve]
    return {"function": cfg.weight_fn, "normalized": cfg.normalize_weights, "per_window": windows,
            "mean": sum(x["mean"] for x in windows) / len(windows), "max": max(x["max"] for x in windows),
            "min": min(x["min"] for x in windows),
            "ess_fraction": sum(x["ess_fraction"] for x in windows) / len(windows)}


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
