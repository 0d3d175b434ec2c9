import os
import time

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


def test_episodes_run_in_waves_of_num_envs():
    policy = LinearPolicy(11, 3, seed=2)
    four = evaluate(policy, "Hopper-v5", episodes=4, seed=5, num_envs=2)
    first_wave = evaluate(policy, "Hopper-v5", episodes=2, seed=5, num_envs=2)
    assert four.returns[:2] == first_wave.returns and four.lengths[:2] == first_wave.lengths


class _FailsInAWorker(LinearPolicy):
    """Slow in this process (so a worker surely takes a wave), broken in a worker: raises, or the process dies."""

    def __init__(self, dies: bool = False):
        super().__init__(11, 3)
        self.pid, self.dies = os.getpid(), dies

    def act(self, observations):
        if os.getpid() == self.pid:
            time.sleep(0.002)
        elif self.dies:
            os._exit(3)
        else:
            raise FloatingPointError("policy broke in the worker")
        return super().act(observations)


def test_a_torch_policy_gives_the_same_returns_in_worker_processes_and_threads_are_restored():
    import torch

    from bench.algorithms.policy import GaussianMLPPolicy

    torch.manual_seed(0)
    policy = GaussianMLPPolicy(11, 3)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        torch.randn(512, 512) @ torch.randn(512, 512)  # the parent's thread pool is up when the workers fork
        one = evaluate(policy, "Hopper-v5", episodes=7, seed=1, num_envs=3)
        two = evaluate(policy, "Hopper-v5", episodes=7, seed=1, num_envs=3, workers=2)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)
    assert one.returns == two.returns and one.lengths == two.lengths


def test_a_failing_worker_is_reported_with_its_error():
    with pytest.raises(RuntimeError, match="worker process failed(.|\n)*policy broke in the worker"):
        evaluate(_FailsInAWorker(), "Hopper-v5", episodes=8, seed=0, num_envs=1, workers=2)
    with pytest.raises(RuntimeError, match="worker process died \\(exit code 3\\)"):
        evaluate(_FailsInAWorker(dies=True), "Hopper-v5", episodes=8, seed=0, num_envs=1, workers=2)
    with pytest.raises(ValueError, match="at least 1"):
        evaluate(LinearPolicy(11, 3), "Hopper-v5", episodes=0, seed=0)


def test_environments_are_reused_across_evaluations_without_changing_results():
    from bench import evaluation

    evaluation._environments("Hopper-v4", 1)  # drops any Hopper-v5 envs made by earlier tests: the next are new
    policy = LinearPolicy(11, 3, seed=4)
    fresh = evaluate(policy, "Hopper-v5", episodes=3, seed=2, num_envs=3)
    made = list(evaluation._ENVS["Hopper-v5"])
    reused = evaluate(policy, "Hopper-v5", episodes=3, seed=2, num_envs=3, workers=2)
    assert evaluation._ENVS["Hopper-v5"] == made and len(made) == 3  # the same objects, none made again
    assert fresh.returns == reused.returns and fresh.lengths == reused.lengths
    evaluate(policy, "Hopper-v4", episodes=1, seed=0, num_envs=1)
    assert list(evaluation._ENVS) == ["Hopper-v4"]  # one env reference kept at a time


class _FailsHere(LinearPolicy):
    """Fails in this process at its third forward pass; slow in a worker, which would run for long if left alone."""

    def __init__(self):
        super().__init__(11, 3)
        self.pid, self.calls = os.getpid(), 0

    def act(self, observations):
        if os.getpid() == self.pid:
            self.calls += 1
            if self.calls == 3:
                raise FloatingPointError("policy broke here")
        else:
            time.sleep(0.05)
        return super().act(observations)


def test_an_error_in_this_process_stops_the_workers():
    import multiprocessing

    before = set(multiprocessing.active_children())  # another test's kept workers (the grader's, spawned evaluation)
    with pytest.raises(FloatingPointError, match="policy broke here"):
        evaluate(_FailsHere(), "Hopper-v5", episodes=40, seed=0, num_envs=1, workers=2)
    assert set(multiprocessing.active_children()) <= before  # this evaluation's workers are gone


def test_the_cuda_path_spawns_workers_with_cpu_copies_and_gives_the_scores_of_one_process(hopper_minari_dataset):
    """Where CUDA is in use a forked child cannot run the policy: evaluation spawns workers (kept for the next
    evaluation) and gives each a CPU copy — the native policy's, and a d3rlpy algorithm rebuilt on the CPU with its
    weights. Forced here with start_method="spawn": the scores are those of one process, and copying the d3rlpy
    algorithm leaves the run's random stream alone."""
    import torch

    from bench.algorithms import get_algorithm
    from bench.algorithms.baselines import D3rlpyLearner, build_d3rlpy, to_d3rlpy_dataset
    from bench.algorithms.policy import GaussianMLPPolicy
    from bench.datasets.curation import all_episodes
    from bench.datasets.trajectories import Trajectories
    from bench.evaluation import _SPAWNED

    torch.manual_seed(0)
    native = GaussianMLPPolicy(11, 3)
    traj = Trajectories.from_episodes(hopper_minari_dataset[1][:5])
    cfg = get_algorithm("td3_bc").Config(hidden_units=[32, 32])
    dataset = to_d3rlpy_dataset(traj, all_episodes(traj))
    learner = D3rlpyLearner(build_d3rlpy(cfg, dataset, "cpu"), lambda device: build_d3rlpy(cfg, dataset, device))
    state = torch.get_rng_state()
    copy = learner.cpu_copy()
    assert torch.equal(torch.get_rng_state(), state)
    obs = traj.observations[:8]
    np.testing.assert_array_equal(copy.act(obs), learner.act(obs))
    for policy in (native, learner):
        one = evaluate(policy, "Hopper-v5", episodes=6, seed=4, ref_min=0.0, ref_max=100.0, num_envs=2)
        spawned = evaluate(policy, "Hopper-v5", episodes=6, seed=4, ref_min=0.0, ref_max=100.0, num_envs=2,
                           workers=3, start_method="spawn")
        assert spawned.returns == one.returns and spawned.scores == one.scores
    assert list(_SPAWNED) == [3]  # one pool, reused by the second evaluation
    pids = {p.pid for p in _SPAWNED[3]._processes.values()}
    assert len(pids) == 3 and os.getpid() not in pids
