"""The fine-tuning step with static shapes: the same loss, gradient and statistics as the unique layout (one seed or a
stacked group), and a step that torch.compile(fullgraph=True, dynamic=False) captures once and never recompiles."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.algorithms.policy import GaussianMLPPolicy
from bench.algorithms.sft import IWSFTQConfig, SFTLearner, SFTQConfig
from bench.algorithms.trajectory_batch import TrajectoryBatches
from bench.datasets.curation import quality_bins
from bench.datasets.sources import load_dataset
from bench.specs import get_spec

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def problem():
    """The embedded dataset's quality bins and two reference policies (seeds 0 and 1)."""
    traj = load_dataset(get_spec("hopper-mini-replay"))
    refs = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        refs.append(GaussianMLPPolicy(traj.obs_dim, traj.act_dim, hidden=64, layers=2).requires_grad_(False))
    obs, act = torch.as_tensor(traj.observations), torch.as_tensor(traj.actions)
    return refs, obs, act, traj, quality_bins(traj, [90, 95, 98])


def _batches(problem, seeds, cfg):
    return TrajectoryBatches(problem[3], problem[4], CPU, seeds, cfg.batch_size, cfg.static_shapes)


def _learner(problem, cfg, seeds):
    """A learner whose q differs from pi_ref (so the weights are not all 1)."""
    learner = SFTLearner([problem[0][s] for s in range(len(seeds))], problem[3], CPU,
                         _batches(problem, seeds, cfg).mean_length, cfg)
    if learner.q is not None:
        torch.manual_seed(5)
        with torch.no_grad():
            for p in learner.q.parameters():
                p.add_(0.05 * torch.randn_like(p))
    return learner


def _loss_and_grad(problem, cfg, seeds):
    learner = _learner(problem, cfg, seeds)
    batch = _batches(problem, seeds, cfg).sample()
    loss, stats = learner.loss(batch)
    loss.sum().backward()
    return loss.detach(), [p.grad for p in learner.model.parameters()], {k: v.tolist() for k, v in stats.items()}


@pytest.mark.parametrize("seeds", [[3], [3, 4]])
@pytest.mark.parametrize("cfg_cls, normalize", [(IWSFTQConfig, False), (IWSFTQConfig, True), (SFTQConfig, False)])
def test_static_shapes_give_the_unique_layouts_loss_gradient_and_statistics(problem, cfg_cls, normalize, seeds):
    common = {"batch_size": 64, "normalize_weights": normalize, "temperature": 5.0}
    loss_u, grad_u, stats_u = _loss_and_grad(problem, cfg_cls(**common), seeds)
    loss_s, grad_s, stats_s = _loss_and_grad(problem, cfg_cls(**common, static_shapes=True), seeds)
    assert loss_u.shape == (len(seeds),)
    torch.testing.assert_close(loss_s, loss_u, rtol=1e-5, atol=0)
    for gs, gu in zip(grad_s, grad_u, strict=True):
        torch.testing.assert_close(gs, gu, rtol=1e-4, atol=1e-6)
    assert stats_s.keys() == stats_u.keys()
    for name in stats_u:
        assert stats_s[name] == pytest.approx(stats_u[name], rel=1e-5)
    if cfg_cls is IWSFTQConfig:  # q differs from pi_ref, so these are real weights, not all 1
        for k in range(len(seeds)):
            assert stats_u["weight_min"][k] < stats_u["weight_max"][k] and 0 < stats_u["ess_fraction"][k] < 1
    if len(seeds) == 2:  # each seed its own draws and its own loss
        assert loss_u[0] != loss_u[1]


def test_the_compiled_static_step_never_recompiles_and_tracks_the_eager_step(problem):
    """50 steps (draw, compiled loss and its gradient, Adam, EMA) with the same draws as an eager twin."""
    import torch._dynamo

    losses = {}
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    for compiled in (False, True):
        cfg = IWSFTQConfig(batch_size=64, static_shapes=True, compile=compiled)
        learner = _learner(problem, cfg, [0])
        batches = _batches(problem, [0], cfg)
        losses[compiled] = []
        with torch._dynamo.config.patch(error_on_recompile=True):
            for _ in range(50):
                losses[compiled].append(learner.update(batches.sample())["loss"].item())
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1  # one graph, captured once, no graph break
    np.testing.assert_allclose(losses[True], losses[False], rtol=1e-4)


def test_a_compiled_step_requests_cuda_graphs_on_cuda_only():
    from bench.algorithms.sft import compile_options

    one_graph = {"fullgraph": True, "dynamic": False}
    assert compile_options(torch.device("cuda"), True) == {**one_graph, "mode": "reduce-overhead"}
    assert compile_options(torch.device("cuda:1"), True) == {**one_graph, "mode": "reduce-overhead"}
    assert compile_options(torch.device("cuda"), False) == one_graph  # --set cuda_graphs=false
    assert compile_options(CPU, True) == one_graph  # inductor has no graphs to replay on a CPU


@pytest.mark.cuda
def test_the_compiled_step_replays_cuda_graphs_and_tracks_the_eager_step():
    """On CUDA: 30 compiled steps run as CUDA graphs (none skipped) with the same losses and statistics as eager."""
    import torch._dynamo

    traj = load_dataset(get_spec("hopper-mini-replay"))
    curated, cuda = quality_bins(traj, [90, 95, 98]), torch.device("cuda")
    torch.manual_seed(0)
    ref = GaussianMLPPolicy(traj.obs_dim, traj.act_dim, hidden=64, layers=2).requires_grad_(False)
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    results = {}
    for compiled in (False, True):
        cfg = IWSFTQConfig(batch_size=64, static_shapes=True, compile=compiled)
        batches = TrajectoryBatches(traj, curated, cuda, [0], cfg.batch_size, True)
        learner = SFTLearner([ref.to(cuda)], traj, cuda, batches.mean_length, cfg)
        assert learner.graphs == compiled
        results[compiled] = [{k: float(v.reshape(-1)[0]) for k, v in learner.update(batches.sample()).items()
                              if torch.is_tensor(v)} for _ in range(30)]
    counters = torch._dynamo.utils.counters["inductor"]
    assert counters["cudagraph_skips"] == 0, dict(counters)
    for eager, graphed in zip(results[False], results[True], strict=True):
        assert graphed == pytest.approx(eager, rel=1e-4)


def _chunked(learner, max_rows):
    for model in (learner.model, learner.q):
        if model is not None:
            model.max_rows = max_rows
    return learner


@pytest.mark.parametrize("static", [False, True])
def test_a_batch_over_max_rows_is_computed_in_chunks_with_the_same_loss_gradient_and_statistics(problem, static):
    """Two seeds, a chunk of 700 rows (all seeds together): the loss, each parameter's gradient and the weight
    statistics of one pass, up to float rounding; the compiled static step still one graph."""
    import torch._dynamo

    cfg = IWSFTQConfig(batch_size=64, static_shapes=static, temperature=5.0)
    whole = _loss_and_grad(problem, cfg, [3, 4])
    learner = _chunked(_learner(problem, cfg, [3, 4]), 700)
    batch = _batches(problem, [3, 4], cfg).sample()
    assert batch.rows.numel() > 2 * 700  # really more than two chunks
    loss, stats = learner.loss(batch)
    loss.sum().backward()
    torch.testing.assert_close(loss.detach(), whole[0], rtol=1e-5, atol=0)
    for chunked, plain in zip([p.grad for p in learner.model.parameters()], whole[1], strict=True):
        torch.testing.assert_close(chunked, plain, rtol=1e-4, atol=1e-6)
    for name, values in whole[2].items():
        assert stats[name].tolist() == pytest.approx(values, rel=1e-5)
    if static:
        torch._dynamo.reset()
        torch._dynamo.utils.counters.clear()
        compiled = _chunked(_learner(problem, IWSFTQConfig(batch_size=64, static_shapes=True, temperature=5.0,
                                                           compile=True), [3, 4]), 700)
        batches = _batches(problem, [3, 4], cfg)
        with torch._dynamo.config.patch(error_on_recompile=True):
            for _ in range(3):
                compiled.update(batches.sample())
        assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1
