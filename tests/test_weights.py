import copy
import math

import numpy as np
import pytest
import torch

from bench.algorithms.policy import GaussianMLPPolicy
from bench.algorithms.sft import SFTConfig, iw_sft_loss
from bench.algorithms.trajectory_batch import gather, trajectory_log_likelihood
from bench.algorithms.weights import (
    ema_update,
    segment_sum,
    trajectory_weights,
    warmup_cosine,
    weight_statistics,
)


def _gather(starts, lengths):
    """trajectory_batch.gather's host arrays as tensors."""
    return tuple(torch.from_numpy(a) for a in gather(starts, lengths))


LEN = torch.tensor([2, 4])
RHO = torch.tensor([1.5, 0.5, -1.0, -1.0, -1.0, -1.0], dtype=torch.float64)  # sums: 2 and -4; means: 1 and -1


def test_temperature_weights_by_hand():
    w = trajectory_weights(RHO, LEN, LEN, "temperature", temperature=0.5, max_weight=1000.0)
    np.testing.assert_allclose(w, [math.exp(0.5), math.exp(-0.5)])
    w = trajectory_weights(RHO, LEN, LEN, "temperature", temperature=0.5, max_weight=1.5)
    np.testing.assert_allclose(w, [1.5, math.exp(-0.5)])  # clamped at the maximum
    huge = trajectory_weights(torch.full((6,), 1e4, dtype=torch.float64), LEN, LEN, "temperature",
                              temperature=1.0, max_weight=1000.0)
    np.testing.assert_allclose(huge, [1000.0, 1000.0])  # no overflow


def test_smoothing_weights_by_hand():
    w = trajectory_weights(RHO, LEN, LEN, "smoothing", alpha=0.1)
    np.testing.assert_allclose(w, [math.exp(0.2), math.exp(-0.4)])


def test_clipped_weights_by_hand():
    rho = torch.log(torch.tensor([3.0, 0.1, 1.5, 1.0, 1.0, 1.0], dtype=torch.float64))
    w = trajectory_weights(rho, LEN, LEN, "clip", ratio_min=0.2, ratio_max=1.8, weight_min=0.0, max_weight=10.0)
    np.testing.assert_allclose(w, [1.8 * 0.2, 1.5])  # per-step ratios clipped to [0.2, 1.8], then multiplied
    w = trajectory_weights(rho, LEN, LEN, "clip", ratio_min=0.2, ratio_max=1.8, weight_min=0.5, max_weight=1.2)
    np.testing.assert_allclose(w, [0.5, 1.2])  # trajectory weight clipped to [0.5, 1.2]


def test_normalised_weights_in_the_loss_by_hand_and_an_unknown_function():
    from bench.algorithms.sft import weighted_nll

    ll, w, counts = torch.tensor([-1.0, -3.0]), torch.tensor([3.0, 1.0]), torch.tensor([1, 2])
    # normalised (Table 4): -(1*3*-1 + 2*1*-3) / (1*3 + 2*1) = 9/5; plain: the same sum over the 3 draws = 9/3
    assert float(weighted_nll(ll, w, counts, normalize=True)) == pytest.approx(1.8)
    assert float(weighted_nll(ll, w, counts, normalize=False)) == pytest.approx(3.0)
    with pytest.raises(ValueError, match="unknown weight function"):
        trajectory_weights(RHO, LEN, LEN, "softmax")


def test_weight_statistics_by_hand_per_seed():
    """Kish's ESS (sum w)^2 / sum w^2 over the draws, as a fraction of them: 1 for equal weights, 1 / n when one
    weight holds everything. Seed 0 drew weights [1, 1, 2] (trajectory 0 twice); seed 1 one trajectory of weight 4
    and one of 0 (its padding segment, count 0, never counts)."""
    w = torch.tensor([[1.0, 2.0, 9.0], [4.0, 0.0, 9.0]])
    counts = torch.tensor([[2, 1, 0], [1, 1, 0]])
    stats = {k: v.tolist() for k, v in weight_statistics(w, counts, cap=4.0).items()}
    assert stats["ess_fraction"] == pytest.approx([(16 / 6) / 3, (16 / 16) / 2])
    assert stats["weight_mean"] == pytest.approx([4 / 3, 2.0])
    assert stats["weight_min"] == [1.0, 0.0] and stats["weight_max"] == [2.0, 4.0]  # the undrawn 9 is no weight
    assert stats["weight_capped_fraction"] == pytest.approx([0.0, 0.5])


def test_ema_update_by_hand():
    target, source = torch.nn.Linear(1, 1), torch.nn.Linear(1, 1)
    for p in target.parameters():
        p.data.fill_(1.0)
    for p in source.parameters():
        p.data.fill_(3.0)
    ema_update(target, source, 0.9)
    for p in target.parameters():
        assert float(p.detach()) == pytest.approx(0.9 * 1.0 + 0.1 * 3.0)


def test_warmup_cosine_by_hand():
    assert warmup_cosine(0, 10, 110) == pytest.approx(0.1)
    assert warmup_cosine(9, 10, 110) == pytest.approx(1.0)
    assert warmup_cosine(10, 10, 110) == pytest.approx(1.0)
    assert warmup_cosine(60, 10, 110) == pytest.approx(0.5)
    assert warmup_cosine(110, 10, 110) == pytest.approx(0.0, abs=1e-12)


def test_gather_and_segment_sums_match_a_plain_loop():
    starts, lengths = torch.tensor([5, 0, 5]), torch.tensor([3, 2, 3])  # episode at 5 drawn twice
    idx, sizes = _gather(starts, lengths)
    assert idx.tolist() == [5, 6, 7, 0, 1, 5, 6, 7] and sizes.tolist() == [3, 2, 3]
    logp = torch.arange(8, dtype=torch.float64)
    assert segment_sum(logp, sizes).tolist() == [0 + 1 + 2, 3 + 4, 5 + 6 + 7]
    assert segment_sum(logp, torch.tensor([3, 0, 5])).tolist() == [3, 0, 25]  # an empty segment sums to 0
    mean = trajectory_log_likelihood(logp, sizes, lengths, "trajectory_mean", 2.5)
    np.testing.assert_allclose(mean, [1.0, 3.5, 6.0])
    summed = trajectory_log_likelihood(logp, sizes, lengths, "sum", 2.5)
    np.testing.assert_allclose(summed, [3 / 2.5, 7 / 2.5, 18 / 2.5])


def test_segment_sum_and_its_gradient_under_deterministic_algorithms():
    """torch.use_deterministic_algorithms(True) raises on an op with no deterministic implementation on the device
    (index_add_ on CUDA); segment_sum passes, forward and backward, and equals a plain loop."""
    values = torch.randn(1000, dtype=torch.float64, requires_grad=True)
    sizes = torch.tensor([400, 0, 1, 599])
    with torch.inference_mode(False):
        torch.use_deterministic_algorithms(True)
        try:
            sums = segment_sum(values, sizes)
            (sums * torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)).sum().backward()
        finally:
            torch.use_deterministic_algorithms(False)
    edges = [0, 400, 400, 401, 1000]
    expected = [values[a:b].sum().item() for a, b in zip(edges, edges[1:], strict=False)]
    np.testing.assert_allclose(sums.detach(), expected, rtol=1e-12)
    np.testing.assert_array_equal(values.grad, np.repeat([1.0, 3.0, 4.0], [400, 1, 599]))


@pytest.mark.parametrize("weight_fn", ["temperature", "smoothing", "clip"])
@pytest.mark.parametrize("normalize", [False, True])
def test_iw_sft_gradient_equals_sft_gradient_when_q_is_pi_ref(weight_fn, normalize):
    torch.manual_seed(0)
    reference = GaussianMLPPolicy(4, 2, hidden=16)
    obs, act = torch.randn(9, 4), torch.rand(9, 2) * 2 - 1
    _, lengths = _gather(torch.tensor([0, 2, 2]), torch.tensor([2, 3, 3]))
    rows = torch.tensor([0, 1, 2, 3, 4, 2, 3, 4])
    cfg = SFTConfig(weight_fn=weight_fn, normalize_weights=normalize, min_weight=0.0, max_weight=10.0)
    grads = []
    for iw in (False, True):
        theta = copy.deepcopy(reference)
        q = copy.deepcopy(reference) if iw else None
        logp_ref = reference.log_prob(obs[rows], act[rows]).detach() if iw else None
        loss, w = iw_sft_loss(theta, q, obs[rows], act[rows], logp_ref, lengths, lengths, cfg, 8 / 3)
        np.testing.assert_allclose(w.detach(), np.ones(3))  # q = pi_ref: every weight is 1
        loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in theta.parameters()]))
    torch.testing.assert_close(grads[0], grads[1])


def _constant_policy(log_std: float) -> GaussianMLPPolicy:
    """A policy whose mean is 0 everywhere (all weights 0: tanh(0)) and whose std is exp(log_std)."""
    policy = GaussianMLPPolicy(3, 1, hidden=4, layers=1)
    with torch.no_grad():
        for p in policy.parameters():
            p.zero_()
        policy.log_std.fill_(log_std)
    return policy


@pytest.mark.parametrize("weight_fn, expected", [
    # rho_t = log q - log pi_ref = log 2 - 1.5 a_t^2 (q: std 1/2, pi_ref: std 1, both mean 0). Trajectory A has
    # actions [0, 0] (rho = log 2 per step), B has [1, 1, 1] (rho = log 2 - 1.5 per step).
    ("temperature", [3.0, 4 * math.exp(-3)]),  # exp(2 * mean rho): 4 (clamped at max_weight 3) and 4 e^-3
    ("smoothing", [2.0, 2 ** 1.5 * math.exp(-2.25)]),  # exp(0.5 * sum rho): 2 and 2^1.5 e^-2.25
    ("clip", [3.0, (2 * math.exp(-1.5)) ** 3]),  # per-step ratio 2 clipped to 1.8: 1.8^2 = 3.24, capped at 3
])
@pytest.mark.parametrize("normalize", [False, True])
def test_iw_sft_loss_by_hand_when_q_differs_from_pi_ref(weight_fn, expected, normalize):
    """A sign flip of rho (weights 1/4 and e^3 / 4), a lost temperature or a missing clamp all change these."""
    reference, q = _constant_policy(0.0), _constant_policy(-math.log(2))
    obs = torch.zeros(5, 3)
    act = torch.tensor([[0.0], [0.0], [1.0], [1.0], [1.0]])
    _, lengths = _gather(torch.tensor([0, 2]), torch.tensor([2, 3]))
    cfg = SFTConfig(weight_fn=weight_fn, temperature=2.0, smoothing_alpha=0.5, max_weight=3.0,
                    normalize_weights=normalize)
    logp_ref = reference.log_prob(obs, act).detach()
    loss, w = iw_sft_loss(copy.deepcopy(reference), q, obs, act, logp_ref, lengths, lengths, cfg, 2.5)
    np.testing.assert_allclose(w.detach(), expected, rtol=1e-5)
    # theta = pi_ref: per-step log-likelihoods -log(2 pi) / 2 for a = 0 and that - 1/2 for a = 1, each trajectory's
    # mean (loss_normalization trajectory_mean); the loss -sum w ll / 2, or / sum w with normalised weights
    ll = np.array([-0.5 * math.log(2 * math.pi), -0.5 - 0.5 * math.log(2 * math.pi)])
    by_hand = -(np.array(expected) * ll).sum() / (sum(expected) if normalize else 2)
    assert loss.item() == pytest.approx(by_hand, rel=1e-5)


def test_iw_weights_follow_q_when_q_moves():
    torch.manual_seed(0)
    reference = GaussianMLPPolicy(4, 2, hidden=16)
    q = copy.deepcopy(reference)
    with torch.no_grad():
        q.log_std.fill_(-1.0)  # q now differs from pi_ref
    obs, act = torch.randn(5, 4), torch.rand(5, 2) * 2 - 1
    _, lengths = _gather(torch.tensor([0, 2]), torch.tensor([2, 3]))
    logp_ref = reference.log_prob(obs, act).detach()
    _, w = iw_sft_loss(copy.deepcopy(reference), q, obs, act, logp_ref, lengths, lengths, SFTConfig(), 2.5)
    rho = (q.log_prob(obs, act) - logp_ref).detach()
    expected = torch.exp(torch.stack([rho[:2].mean(), rho[2:].mean()]))  # temperature 1: exp(mean rho)
    torch.testing.assert_close(w, expected)


@pytest.mark.parametrize("normalize", [False, True])
def test_repeated_trajectories_computed_once_give_the_same_loss_and_gradient(normalize):
    torch.manual_seed(1)
    reference = GaussianMLPPolicy(4, 2, hidden=16)
    q = copy.deepcopy(reference)
    with torch.no_grad():
        for p in q.parameters():
            p.add_(0.05 * torch.randn_like(p))  # q != pi_ref: weights differ between trajectories
    obs, act = torch.randn(12, 4), torch.rand(12, 2) * 2 - 1
    logp_ref_all = reference.log_prob(obs, act).detach()
    starts, lengths = torch.tensor([0, 3, 7]), torch.tensor([3, 4, 5])
    draws = torch.tensor([1, 0, 1, 2, 1])  # trajectory 1 drawn three times
    cfg = SFTConfig(importance_weighted=True, normalize_weights=normalize, temperature=3.0)
    results = []
    for dedupe in (False, True):
        theta = copy.deepcopy(reference)
        with torch.no_grad():
            theta.log_std.add_(0.1)
        if dedupe:
            uniq, counts = torch.unique(draws, return_counts=True)
            rows, lens = _gather(starts[uniq], lengths[uniq])
        else:
            (rows, lens), counts = _gather(starts[draws], lengths[draws]), None
        loss, _ = iw_sft_loss(theta, q, obs[rows], act[rows], logp_ref_all[rows], lens, lens, cfg, 4.0, counts)
        loss.backward()
        results.append((loss.detach(), torch.cat([p.grad.flatten() for p in theta.parameters()])))
    torch.testing.assert_close(results[0][0], results[1][0])
    torch.testing.assert_close(results[0][1], results[1][1])


def test_packed_batch_with_cached_reference_equals_the_padded_plain_computation():
    """The suite's step (packed, duplicates once, log pi_ref from a table) == padded (B, T_max) computation."""
    torch.manual_seed(2)
    reference = GaussianMLPPolicy(4, 2, hidden=16)
    q = copy.deepcopy(reference)
    with torch.no_grad():
        for p in q.parameters():
            p.add_(0.05 * torch.randn_like(p))
    obs, act = torch.randn(20, 4), torch.rand(20, 2) * 2 - 1
    starts, lengths = torch.tensor([0, 6, 9, 15]), torch.tensor([6, 3, 6, 5])
    draws = torch.tensor([2, 0, 2, 3, 2, 1])
    cfg = SFTConfig(importance_weighted=True, temperature=2.0)
    # plain: pad to T_max, three networks on every padded step, every draw computed
    theta = copy.deepcopy(reference)
    t_max = int(lengths[draws].max())
    mask = torch.arange(t_max)[None, :] < lengths[draws][:, None]
    rows = torch.where(mask, starts[draws][:, None] + torch.arange(t_max)[None, :], 0)
    logp = theta.log_prob(obs[rows], act[rows]) * mask
    rho = ((q.log_prob(obs[rows], act[rows]) - reference.log_prob(obs[rows], act[rows])) * mask).detach()
    w = torch.exp(cfg.temperature * rho.sum(1) / lengths[draws])
    plain = -(w * logp.sum(1) / lengths[draws]).mean()
    plain.backward()
    plain_grad = torch.cat([p.grad.flatten() for p in theta.parameters()])
    # suite: packed, unique, cached log pi_ref
    theta = copy.deepcopy(reference)
    logp_ref_all = reference.log_prob(obs, act).detach()
    uniq, counts = torch.unique(draws, return_counts=True)
    rows, lens = _gather(starts[uniq], lengths[uniq])
    loss, _ = iw_sft_loss(theta, q, obs[rows], act[rows], logp_ref_all[rows], lens, lens, cfg, 5.0, counts)
    loss.backward()
    torch.testing.assert_close(loss.detach(), plain.detach())
    torch.testing.assert_close(torch.cat([p.grad.flatten() for p in theta.parameters()]), plain_grad)
