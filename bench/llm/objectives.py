"""Importance weights of the LLM objectives: pure functions over packed per-token log-probs.

Token log-probs of a micro-batch are packed: one flat tensor (N,) holding every loss token of every example in turn,
with ``lengths`` (B,) giving each example's count. All weights are detached: they scale the gradient of
log p(y | x; theta), they are not differentiated (the authors' code and the paper both stop the gradient).

    J(theta) = sum_i sum_t w_{i,t} log p(y_{i,t} | x_i, y_{i,<t}; theta) / sum_i |y_i|

  sft            w = 1                                                   (s1: Muennighoff et al., 2025)
  iw_sft         w_i = clamp(exp(mean_t [log pi_theta - log pi_ref]), 0, 16), q = the current model
                 (the authors' LLM code; the suite's default)
  iw_sft_paper   w_i = min(exp(0.1 * sum_t log clip(pi_q / pi_ref, 0.2, 1.8)), w_max), q lagged: pi_q's log-probs
                 are the model's own from the previous epoch (paper §3.3, g = smoothing of clipped ratios)
  iw_sft_token   w_{i,t} = clip(pi_theta / pi_ref, 0.2, 1.8) per token (the authors' per-token variant)

With pi_theta = pi_q = pi_ref (step 0) every weight is exactly 1, so every objective starts as SFT.
"""

from __future__ import annotations

import math

import torch

from bench.algorithms.weights import segment_sum

OBJECTIVES = ("sft", "iw_sft", "iw_sft_paper", "iw_sft_token")


def segment_ids(lengths: torch.Tensor) -> torch.Tensor:
    """Example index of every packed token: lengths [2, 3] -> [0, 0, 1, 1, 1]."""
    return torch.repeat_interleave(torch.arange(len(lengths), device=lengths.device), lengths)


def segment_sums(values: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Per-example sums of packed values."""
    return segment_sum(values, segment_ids(lengths), len(lengths))


def sequence_weights(logp_theta: torch.Tensor, logp_ref: torch.Tensor, lengths: torch.Tensor,
                     max_weight: float = 16.0) -> torch.Tensor:
    """iw_sft: w_i = clamp(exp(mean_t (log pi_theta - log pi_ref)), 0, max_weight), per sequence (B,)."""
    rho = (logp_theta.detach() - logp_ref).float()
    mean_rho = segment_sums(rho, lengths) / lengths.clamp_min(1)
    return torch.exp(mean_rho.clamp(max=math.log(max_weight)))


def clipped_log_ratio_sums(logp_q: torch.Tensor, logp_ref: torch.Tensor, lengths: torch.Tensor,
                           ratio_min: float = 0.2, ratio_max: float = 1.8) -> torch.Tensor:
    """sum_t log clip(pi_q / pi_ref, ratio_min, ratio_max) per sequence (B,): the lagged statistic of iw_sft_paper."""
    rho = (logp_q.detach() - logp_ref).float().clamp(math.log(ratio_min), math.log(ratio_max))
    return segment_sums(rho, lengths)


def smoothed_weights(clipped_sums: torch.Tensor, alpha: float = 0.1, max_weight: float = 16.0) -> torch.Tensor:
    """iw_sft_paper: w_i = min(exp(alpha * sum_t log clip(ratio_t)), max_weight); the cap is taken in log space so a
    long sequence never overflows."""
    return torch.exp((alpha * clipped_sums).clamp(max=math.log(max_weight)))


def token_weights(logp_theta: torch.Tensor, logp_ref: torch.Tensor, ratio_min: float = 0.2,
                  ratio_max: float = 1.8) -> torch.Tensor:
    """iw_sft_token: w_t = clip(pi_theta / pi_ref, ratio_min, ratio_max) per token (N,)."""
    return torch.exp((logp_theta.detach() - logp_ref).float()).clamp(ratio_min, ratio_max)


def effective_sample_size(weights: torch.Tensor) -> float:
    """(sum w)^2 / sum w^2: the number of equally weighted examples the weighted batch is worth."""
    w = weights.double()
    return float(w.sum() ** 2 / (w**2).sum().clamp_min(1e-300))


def weighted_nll_sum(logp: torch.Tensor, weights_per_token: torch.Tensor) -> torch.Tensor:
    """-sum_t w_t log p_t; the caller divides by the global batch's loss-token count."""
    return -(weights_per_token.to(logp.dtype) * logp).sum()


def objective_weights(objective: str, logp: torch.Tensor, logp_ref: torch.Tensor, lengths: torch.Tensor,
                      lagged_sums: torch.Tensor | None = None, *, max_weight: float = 16.0, alpha: float = 0.1,
                      ratio_min: float = 0.2, ratio_max: float = 1.8) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-token weights (N,), the weights to report: per sequence (B,), or per token for iw_sft_token).

    ``lagged_sums`` (B,) is iw_sft_paper's statistic from the model one epoch earlier (0 = pi_ref, weight 1).
    """
    if objective == "sft":
        w = torch.ones(len(lengths), device=logp.device)
    elif objective == "iw_sft":
        w = sequence_weights(logp, logp_ref, lengths, max_weight)
    elif objective == "iw_sft_paper":
        sums = torch.zeros(len(lengths), device=logp.device) if lagged_sums is None else lagged_sums.to(logp.device)
        w = smoothed_weights(sums, alpha, max_weight)
    elif objective == "iw_sft_token":
        w_tok = token_weights(logp, logp_ref, ratio_min, ratio_max)
        return w_tok, w_tok
    else:
        raise ValueError(f"unknown objective {objective!r}; choose one of {', '.join(OBJECTIVES)}")
    return torch.repeat_interleave(w, lengths), w
