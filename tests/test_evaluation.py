import numpy as np
import pytest

from bench.evaluation import evaluate, normalized_score


def test_normalized_score_against_hand_values():
    lo, hi = -20.272305, 3234.3  # D4RL hopper
    np.testing.assert_allclose(normalized_score([lo, hi, (lo + hi) / 2], lo, hi), [0.0, 100.0, 50.0])
    # 1000 on hopper: 100 * 1020.272305 / 3254.572305
    np.testing.assert_allclose(normalized_score(1000.0, lo, hi), 31.348890, rtol=1e-6)
    with pytest.raises(ValueError):
        normalized_score(1.0, 5.0, 5.0)


class LinearPolicy:
    """A fixed, deterministic policy: a = tanh(W s)."""

    def __init__(self, obs_dim, act_dim, seed=0):
        self.w = np.random.default_rng(seed).normal(0, 0.3, (act_dim, obs_dim))

    def act(self, observations):
        return np.tanh(observations @ self.w.T)


def test_evaluation_is_deterministic_and_independent_of_batching():
    policy = LinearPolicy(11, 3)
    a = evaluate(policy, "Hopper-v5", episodes=5, seed=7, ref_min=0.0, ref_max=100.0, num_envs=5)
    b = evaluate(policy, "Hopper-v5", episodes=5, seed=7, ref_min=0.0, ref_max=100.0, num_envs=2)
    c = evaluate(policy, "Hopper-v5", episodes=5, seed=8, ref_min=0.0, ref_max=100.0, num_envs=5)
    assert a.lengths == b.lengths
    np.testing.assert_allclose(a.returns, b.returns, rtol=1e-12)  # batch shape only changes the last bit of a matmul
    assert a.returns != c.returns  # the seed matters
    assert len(a.returns) == 5 and all(n >= 1 for n in a.lengths)
    np.testing.assert_allclose(a.return_mean, np.mean(a.returns))
    np.testing.assert_allclose(a.normalized_mean, a.return_mean)  # refs 0/100 make score == return


def test_evaluation_matches_a_plain_gymnasium_loop():
    import gymnasium as gym

    from bench.evaluation import episode_seed

    policy = LinearPolicy(11, 3, seed=1)
    res = evaluate(policy, "Hopper-v5", episodes=2, seed=3, num_envs=2)
    env = gym.make("Hopper-v5")
    for k in range(2):
        obs, _ = env.reset(seed=episode_seed(3, k))
        total, done = 0.0, False
        while not done:
            obs, r, term, trunc, _ = env.step(policy.act(obs[None].astype(np.float32))[0])
            total += r
            done = term or trunc
        np.testing.assert_allclose(res.returns[k], total, rtol=1e-9)


def test_worker_processes_give_the_returns_of_one_process():
    policy = LinearPolicy(11, 3)
    one = evaluate(policy, "Hopper-v5", episodes=7, seed=3, ref_min=0.0, ref_max=100.0, num_envs=4)
    two = evaluate(policy, "Hopper-v5", episodes=7, seed=3, ref_min=0.0, ref_max=100.0, num_envs=4, workers=2)
    three = evaluate(policy, "Hopper-v5", episodes=7, seed=3, ref_min=0.0, ref_max=100.0, num_envs=4, workers=3)
    assert one.returns == two.returns == three.returns and one.lengths == two.lengths == three.lengths
