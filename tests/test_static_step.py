"""The fine-tuning step with static shapes: the same loss, gradient and statistics as the unique layout, and a step
that torch.compile(fullgraph=True, dynamic=False) captures once and never recompiles."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from bench.algorithms.policy import GaussianMLPPolicy
from bench.algorithms.sft import IWSFTQConfig, SFTQConfig, _batch_loss
from bench.algorithms.trajectory_batch import EpisodeTable
from bench.datasets.curation import quality_bins
from bench.datasets.sources import load_dataset
from bench.specs import get_spec

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def problem():
    """The embedded dataset's quality bins, pi_ref, and a q that differs from it (so weights are not all 1)."""
    traj = load_dataset(get_spec("hopper-mini-replay"))
    torch.manual_seed(0)
    ref = GaussianMLPPolicy(traj.obs_dim, traj.act_dim, hidden=64, layers=2).requires_grad_(False)
    q = copy.deepcopy(ref)
    with torch.no_grad():
        for p in q.parameters():
            p.add_(0.05 * torch.randn_like(p))
    obs, act = torch.as_tensor(traj.observations), torch.as_tensor(traj.actions)
    with torch.no_grad():
        logp_ref = ref.log_prob(obs, act)
    table = EpisodeTable.from_curated(traj, quality_bins(traj, [90, 95, 98]), CPU)
    return ref, q, obs, act, logp_ref, table


def _loss_and_grad(problem, cfg, seed=3):
    ref, q, obs, act, logp_ref, table = problem
    policy = copy.deepcopy(ref).requires_grad_(True)
    weighted = cfg.importance_weighted
    loss_fn = _batch_loss(policy, q if weighted else None, obs, act, logp_ref if weighted else None, table, cfg, CPU)
    loss, stats = loss_fn(np.random.default_rng(seed))
    loss.backward()
    return loss.detach(), [p.grad for p in policy.parameters()], {k: v.item() for k, v in stats.items()}


@pytest.mark.parametrize("cfg_cls, normalize", [(IWSFTQConfig, False), (IWSFTQConfig, True), (SFTQConfig, False)])
def test_static_shapes_give_the_unique_layouts_loss_gradient_and_statistics(problem, cfg_cls, normalize):
    common = {"batch_size": 64, "normalize_weights": normalize, "temperature": 5.0}
    loss_u, grad_u, stats_u = _loss_and_grad(problem, cfg_cls(**common))
    loss_s, grad_s, stats_s = _loss_and_grad(problem, cfg_cls(**common, static_shapes=True))
    torch.testing.assert_close(loss_s, loss_u, rtol=1e-5, atol=0)
    for gs, gu in zip(grad_s, grad_u, strict=True):
        torch.testing.assert_close(gs, gu, rtol=1e-4, atol=1e-6)
    assert stats_s.keys() == stats_u.keys()
    for name in stats_u:
        assert stats_s[name] == pytest.approx(stats_u[name], rel=1e-5)
    if cfg_cls is IWSFTQConfig:  # q differs from pi_ref, so these are real weights, not all 1
        assert stats_u["weight_min"] < stats_u["weight_max"] and 0 < stats_u["ess_fraction"] < 1


def test_the_compiled_static_step_never_recompiles_and_tracks_the_eager_step(problem):
    """50 steps (draw, compiled loss and its gradient, Adam) with the same draws as an eager twin."""
    import torch._dynamo

    ref, q, obs, act, logp_ref, table = problem
    losses = {}
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    for compiled in (False, True):
        cfg = IWSFTQConfig(batch_size=64, static_shapes=True, compile=compiled)
        policy = copy.deepcopy(ref).requires_grad_(True)
        optim = torch.optim.Adam(policy.parameters(), lr=1e-4)
        loss_fn = _batch_loss(policy, q, obs, act, logp_ref, table, cfg, CPU)
        gen = np.random.default_rng(0)
        losses[compiled] = []
        with torch._dynamo.config.patch(error_on_recompile=True):
            for _ in range(50):
                loss, _ = loss_fn(gen)
                optim.zero_grad()
                loss.backward()
                optim.step()
                losses[compiled].append(loss.item())
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1  # one graph, captured once, no graph break
    np.testing.assert_allclose(losses[True], losses[False], rtol=1e-4)
