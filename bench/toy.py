"""The two-armed bandit of the paper's §3.5 / Figure 1: why SFT on successes is not enough, and iw-SFT fixes it.

Arms: left pays 1 with probability 0.5, right always pays 1; the data comes from a uniform pi_ref. Among the
successes, right appears twice as often as left, so SFT (maximum likelihood on the successes) converges to
P(right) = 2/3 and an expected reward of 2/3 * 1 + 1/3 * 0.5 = 5/6. iw-SFT weights each success by
q(a) / pi_ref(a) with q = the (detached) current policy: its fixed points put all mass on one arm, and the
gradient flows towards the arm with more successes, so P(right) -> 1.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

SUCCESS_PROBABILITY = np.array([0.5, 1.0])  # left, right


@dataclass
class ToyConfig:
    samples: int = 10_000  # draws from the uniform reference policy
    steps: int = 2_000  # full-batch gradient steps
    learning_rate: float = 0.05  # Adam
    seed: int = 0


def success_actions(samples: int, seed: int) -> np.ndarray:
    """Actions (0 = left, 1 = right) of the successful draws from a uniform policy."""
    rng = np.random.default_rng(seed)
    actions = rng.integers(0, 2, samples)
    success = rng.random(samples) < SUCCESS_PROBABILITY[actions]
    return actions[success]


def train(actions: np.ndarray, importance_weighted: bool, cfg: ToyConfig) -> np.ndarray:
    """P(right) after each step of maximising mean_i w_i log pi_theta(a_i) on the successes (w = 1 for SFT)."""
    torch.manual_seed(cfg.seed)
    logits = torch.zeros(2, requires_grad=True)  # start at pi_ref = uniform, so every weight starts at 1
    optim = torch.optim.Adam([logits], lr=cfg.learning_rate)
    # mean_i w(a_i) log pi(a_i) over the successes == sum_a freq(a) w(a) log pi(a): two terms instead of N
    freq = torch.as_tensor(np.bincount(actions, minlength=2) / len(actions), dtype=torch.float32)
    log_pi_ref = torch.log(torch.tensor([0.5, 0.5]))
    p_right = np.empty(cfg.steps + 1)
    p_right[0] = 0.5
    for k in range(cfg.steps):
        log_pi = torch.log_softmax(logits, 0)
        w = torch.exp(log_pi.detach() - log_pi_ref) if importance_weighted else torch.ones(2)
        loss = -(freq * w * log_pi).sum()
        optim.zero_grad()
        loss.backward()
        optim.step()
        p_right[k + 1] = torch.softmax(logits.detach(), 0)[1].item()
    return p_right


def run_toy(cfg: ToyConfig, out: Path) -> dict:
    """Train SFT and iw-SFT, write ``toy_bandit.json`` and the figure (PNG, PDF) to ``out``; return the numbers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    actions = success_actions(cfg.samples, cfg.seed)
    curves = {"sft": train(actions, False, cfg), "iw_sft": train(actions, True, cfg)}
    result = {
        "config": asdict(cfg),
        "successes": int(len(actions)), "right_fraction_of_successes": float(actions.mean()),
        "theory": {"sft_p_right": 2 / 3, "sft_expected_reward": 5 / 6, "iw_sft_p_right": 1.0},
        **{name: {"p_right": float(c[-1]), "expected_reward": float(c[-1] + (1 - c[-1]) * 0.5)}
           for name, c in curves.items()},
    }
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "toy_bandit.json").write_text(json.dumps(result, indent=1))
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    steps = np.arange(cfg.steps + 1)
    ax.plot(steps, curves["sft"], label="SFT")
    ax.plot(steps, curves["iw_sft"], label="iw-SFT")
    ax.axhline(2 / 3, ls="--", c="grey", lw=0.8)
    ax.text(cfg.steps, 2 / 3, " 2/3", va="center", fontsize=8)
    ax.set(xlabel="gradient step", ylabel="P(right arm)", ylim=(0.45, 1.02),
           title="Two-armed bandit (paper §3.5)")
    ax.legend(loc="lower right", frameon=False)
    fig.tight_layout()
    for ext in ("png", "pdf"):
        fig.savefig(out / f"toy_bandit.{ext}", dpi=150)
    plt.close(fig)
    return result
