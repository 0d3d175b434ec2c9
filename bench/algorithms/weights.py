"""Importance weights of iw-SFT as pure functions (the paper §3; REFERENCE §1).

For a trajectory tau with per-step log-ratios rho_t = log pi_q(a_t|s_t) - log pi_ref(a_t|s_t):

    w(tau) = q(tau) / pi_ref(tau) = exp( sum_t g(rho_t) )     (dynamics cancel: only policy factors remain)

Named weight functions:
- ``temperature`` (the control default, the authors' code): log w = T * mean_t rho_t, w = clamp(exp(log w), 0, w_max);
- ``smoothing`` (paper, g(rho) = alpha * rho): log w = alpha * sum_t rho_t, w = clamp(exp(log w), 0, w_max);
- ``clip`` (paper, g = log of a clipped ratio): w = clamp( prod_t clamp(exp(rho_t), a_min, a_max), b_min, b_max ).
All work in log space so nothing overflows.
"""

from __future__ import annotations

import math

import torch

WEIGHT_FUNCTIONS = ("temperature", "smoothing", "clip")


def segment_sum(values: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
    """(S,) sums of consecutive runs of ``values`` (N,): the first ``sizes[0]`` values, then the next ``sizes[1]``...
    (``sizes`` sums to N; a size of 0 gives 0). Deterministic on every device, forward and backward (each segment is
    reduced in one order; ``index_add_`` adds with atomics on CUDA), and faster on a CPU
    (``benchmarks/segment_sum.py``). Unchecked (``unsafe``): checking that the sizes add up would read the device."""
    return torch.segment_reduce(values, "sum", lengths=sizes, unsafe=True)


def temperature_weights(rho_sum: torch.Tensor, lengths: torch.Tensor, temperature: float,
                        max_weight: float) -> torch.Tensor:
    """w = clamp(exp(T * sum_t rho_t / |tau|), 0, max_weight)."""
    log_w = temperature * rho_sum / lengths
    return torch.exp(torch.clamp(log_w, max=math.log(max_weight)))


def smoothing_weights(rho_sum: torch.Tensor, alpha: float, max_weight: float) -> torch.Tensor:
    """w = clamp(exp(alpha * sum_t rho_t), 0, max_weight)."""
    return torch.exp(torch.clamp(alpha * rho_sum, max=math.log(max_weight)))


def clipped_weights(rho: torch.Tensor, sizes: torch.Tensor, ratio_min: float, ratio_max: float, weight_min: float,
                    weight_max: float) -> torch.Tensor:
    """w = clamp(prod_t clamp(exp(rho_t), ratio_min, ratio_max), weight_min, weight_max)."""
    log_ratio = torch.clamp(rho, math.log(ratio_min), math.log(ratio_max))
    log_w = segment_sum(log_ratio, sizes)
    return torch.exp(torch.clamp(log_w, math.log(weight_min), math.log(weight_max)))


def trajectory_weights(rho: torch.Tensor, sizes: torch.Tensor, lengths: torch.Tensor, fn: str, *,
                       temperature: float = 1.0, alpha: float = 1.0, max_weight: float = 1000.0,
                       ratio_min: float = 0.2, ratio_max: float = 1.8, weight_min: float = 0.0) -> torch.Tensor:
    """One weight per trajectory from per-step log-ratios ``rho`` (N,) in consecutive runs of ``sizes``; a batch's
    normalisation (Table 4's "normalised weights") is the loss's business (``sft.weighted_nll``)."""
    if fn == "temperature":
        w = temperature_weights(segment_sum(rho, sizes), lengths.to(rho.dtype), temperature, max_weight)
    elif fn == "smoothing":
        w = smoothing_weights(segment_sum(rho, sizes), alpha, max_weight)
    elif fn == "clip":
        w = clipped_weights(rho, sizes, ratio_min, ratio_max, max(weight_min, 1e-30), max_weight)
    else:
        raise ValueError(f"unknown weight function {fn!r}; choose one of {', '.join(WEIGHT_FUNCTIONS)}")
    return w


def weight_statistics(w: torch.Tensor, counts: torch.Tensor, cap: float = math.inf) -> dict[str, torch.Tensor]:
    """Statistics of the batch as drawn, where trajectory b with weight ``w[..., b]`` was drawn ``counts[..., b]``
    times (0 allowed), along the last dimension (one value per seed of a stacked batch): mean, min, max, the
    fraction at the ``cap`` (max_weight), and Kish's ESS as a fraction of the draws (twice: a window keeps its mean
    and, as ``ess_fraction_max``, its maximum). Device tensors; nothing is read back."""
    c = counts.to(w.dtype)
    drawn, cw, n = c > 0, c * w, c.sum(-1)
    ess = cw.sum(-1) ** 2 / ((cw * w).sum(-1) + 1e-30) / n
    return {"weight_mean": cw.sum(-1) / n, "weight_capped_fraction": (c * (w >= cap * (1 - 1e-6))).sum(-1) / n,
            "weight_min": torch.where(drawn, w, torch.inf).amin(-1),
            "weight_max": torch.where(drawn, w, -torch.inf).amax(-1), "ess_fraction": ess, "ess_fraction_max": ess}


@torch.no_grad()
def ema_update(target: torch.nn.Module, source: torch.nn.Module, decay: float) -> None:
    """theta_q <- decay * theta_q + (1 - decay) * theta (the paper's time-lagged q for control)."""
    for t, s in zip(target.parameters(), source.parameters(), strict=True):
        t.mul_(decay).add_(s, alpha=1.0 - decay)


def warmup_cosine(step: int, warmup: int, total: int) -> float:
    """Learning-rate multiplier for update ``step`` (0-based): linear warm-up to 1, then cosine decay to 0."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(total - warmup, 1)
    return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
