"""Importance weights of the LLM objectives: pure functions over packed per-token log-probs.

Token log-probs of a micro-batch are packed: one flat tensor (N,) holding every loss token of every example in turn,
with ``lengths`` (B,) giving each example's count. All weights are detached: they scale the gradient of
log p(y | x; theta), they are not differentiated (the authors' code and the paper both stop the gradient).

    J(theta) = sum_i sum_t w_{i,t} log p(y_{i,t} | x_i, y_{i,<t}; theta) / sum_i |y_i|

  sft            w = 1                                                   (s1: Muennighoff et al., 2025)
  iw_sft         w_i = clamp(exp(mean_t [log pi_theta - log pi_ref]), 0, 16), q = the current model
                 (the authors' LLM code; the suite's default)
  iw_sft_paper   w_i = min(exp(0.1 * sum_t log clip(pi_q / pi_ref, 0.2, 1.8)), w_max), q lagged: pi_q's log-probs
                 are the model's own from the previous epoch (paper §3.3 and Appendix C read literally: the
                 per-step g(rho_t) = 0.1 x clip(rho_t) summed over the sequence's tokens)
  iw_sft_paper_mean
                 w_i = min(exp(a * mean_t log clip(pi_q / pi_ref, 0.2, 1.8)), w_max), a = ``mean_alpha`` (1),
                 q lagged as above: the same g, length-normalised as the authors' code normalises iw_sft
  iw_sft_token   w_{i,t} = clip(pi_theta / pi_ref, 0.2, 1.8) per token (the authors' per-token variant)

The two readings of Appendix C. Read literally, 0.1 x clip acts on a SUM over a trace's ~10k tokens: a mean
clipped log-ratio of only +0.003 per token already gives exp(3) = 20 > w_max, and -0.01 gives exp(-10) ~ 0; after
one epoch nearly every weight sits at the cap or near 0, which is SFT with a 16x loss on a few traces (the logged
fractions at the cap and at the floor show it). Normalised by length, the weight depends on how far q has moved
per token, whatever the trace's length, and stays informative. ``iw_sft_paper`` keeps the literal reading, since
it is what the paper writes; ``iw_sft_paper_mean`` is the reading we think was meant. Neither is the default
(``iw_sft``, the authors' code, is).

With pi_theta = pi_q = pi_ref (step 0) every weight is exactly 1, so every objective starts as SFT.
"""

from __future__ import annotations

import math

import torch

from bench.algorithms.weights import segment_sum

OBJECTIVES = ("sft", "iw_sft", "iw_sft_paper", "iw_sft_paper_mean", "iw_sft_token")
LAGGED = ("iw_sft_paper", "iw_sft_paper_mean")  # objectives whose q is the model one epoch earlier


def segment_sums(values: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Per-example sums of packed values (each example's ``lengths[i]`` tokens, one after the other)."""
    return segment_sum(values, lengths)


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


def mean_smoothed_weights(clipped_sums: torch.Tensor, lengths: torch.Tensor, alpha: float = 1.0,
                          max_weight: float = 16.0) -> torch.Tensor:
    """iw_sft_paper_mean: w_i = min(exp(alpha * sum_t log clip(ratio_t) / |y_i|), max_weight)."""
    mean = clipped_sums / lengths.to(clipped_sums.dtype).clamp_min(1)
    return torch.exp((alpha * mean).clamp(max=math.log(max_weight)))


def weight_floor(objective: str, lengths: torch.Tensor, *, max_weight: float = 16.0, alpha: float = 0.1,
                 mean_alpha: float = 1.0, ratio_min: float = 0.2) -> torch.Tensor:
    """The lowest weight each reported weight can take: every token's ratio at ``ratio_min`` for the clipped
    objectives (iw_sft_paper: 0.2^(0.1 |y|), ~0 for a long trace); 1 / max_weight, the cap's mirror, for iw_sft,
    whose exp(mean log-ratio) has no floor of its own; 0 (none) for sft. Per sequence (B,), per token for
    iw_sft_token."""
    n = lengths.double()
    if objective == "iw_sft_paper":
        return torch.exp(alpha * n * math.log(ratio_min))
    if objective == "iw_sft_paper_mean":
        return torch.full_like(n, math.exp(mean_alpha * math.log(ratio_min)))
    if objective == "iw_sft_token":
        return torch.full((int(lengths.sum()),), ratio_min, dtype=torch.float64)
    return torch.full_like(n, 1.0 / max_weight if objective == "iw_sft" else 0.0)


def bound_fractions(weights: torch.Tensor, floor: torch.Tensor, cap: float) -> tuple[float, float]:
    """(fraction of weights at the cap, fraction at their floor), within 1e-6 relative."""
    w, f = weights.double(), floor.double()
    return float((w >= cap * (1 - 1e-6)).double().mean()), float((w <= f * (1 + 1e-6)).double().mean())


def token_weights(logp_theta: torch.Tensor, logp_ref: torch.Tensor, ratio_min: float = 0.2,
                  ratio_max: float = 1.8) -> torch.Tensor:
    """iw_sft_token: w_t = clip(pi_theta / pi_ref, ratio_min, ratio_max) per token (N,)."""
    return torch.exp((logp_theta.detach() - logp_ref).float()).clamp(ratio_min, ratio_max)


def effective_sample_size(weights: torch.Tensor) -> float:
    """(sum w)^2 / sum w^2: the number of equally weighted examples the weighted batch is worth."""
    w = weights.double()
    return float(w.sum() ** 2 / (w**2).sum().clamp_min(1e-300))


LOSS_NORMALIZATIONS = ("tokens", "sequence")


def weighted_nll_sum(logp: torch.Tensor, weights_per_token: torch.Tensor, lengths: torch.Tensor | None = None,
                     normalization: str = "tokens") -> torch.Tensor:
    """A micro-batch's part of the loss numerator. ``tokens``: -sum_t w_t log p_t, which the caller divides by the
    global batch's loss tokens (every token counts alike: a 20k-token trace 10x a 2k one); ``sequence``:
    -sum_i mean_{t in i} w_t log p_t over the packed sequences of ``lengths``, which the caller divides by the global
    batch's sequences (every sequence counts alike, as s1 and the authors' code train: one sequence per GPU)."""
    nll = -(weights_per_token.to(logp.dtype) * logp)
    if normalization == "tokens":
        return nll.sum()
    if normalization == "sequence":
        return (segment_sums(nll, lengths) / lengths.clamp_min(1)).sum()
    raise ValueError(f"unknown loss normalization {normalization!r}; choose one of {', '.join(LOSS_NORMALIZATIONS)}")


def objective_weights(objective: str, logp: torch.Tensor, logp_ref: torch.Tensor, lengths: torch.Tensor,
                      lagged_sums: torch.Tensor | None = None, *, max_weight: float = 16.0, alpha: float = 0.1,
                      mean_alpha: float = 1.0, ratio_min: float = 0.2,
                      ratio_max: float = 1.8) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-token weights (N,), the weights to report: per sequence (B,), or per token for iw_sft_token).

    ``lagged_sums`` (B,) is the lagged objectives' statistic from the model one epoch earlier (0 = pi_ref, w = 1).
    """
    if objective == "sft":
        w = torch.ones(len(lengths), device=logp.device)
    elif objective == "iw_sft":
        w = sequence_weights(logp, logp_ref, lengths, max_weight)
    elif objective in LAGGED:
        sums = torch.zeros(len(lengths), device=logp.device) if lagged_sums is None else lagged_sums.to(logp.device)
        w = (smoothed_weights(sums, alpha, max_weight) if objective == "iw_sft_paper"
             else mean_smoothed_weights(sums, lengths.to(logp.device), mean_alpha, max_weight))
    elif objective == "iw_sft_token":
        w_tok = token_weights(logp, logp_ref, ratio_min, ratio_max)
        return w_tok, w_tok
    else:
        raise ValueError(f"unknown objective {objective!r}; choose one of {', '.join(OBJECTIVES)}")
    return torch.repeat_interleave(w, lengths), w
