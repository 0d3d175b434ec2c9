"""The d3rlpy baselines on the suite's data, loop, evaluator and records."""

import numpy as np
import pytest
from conftest import kill_after_first_checkpoint, marked_episodes

from bench.algorithms import ALGORITHMS
from bench.algorithms.baselines import to_d3rlpy_dataset
from bench.datasets.curation import all_episodes
from bench.datasets.trajectories import Trajectories
from bench.run import resolve_config, run

D3RLPY = [name for name, cls in ALGORITHMS.items() if cls.family == "d3rlpy"]  # every registered baseline


def test_d3rlpy_dataset_built_from_trajectories_is_aligned():
    eps = marked_episodes([6, 4, 5], terminal_last=[True, False, True])
    traj = Trajectories.from_episodes(eps)
    dataset = to_d3rlpy_dataset(traj, all_episodes(traj))
    assert dataset.transition_count == 6 + (4 - 1) + 5  # a truncated episode's last step has no next observation
    np.random.seed(0)
    batch = dataset.sample_transition_batch(200)
    obs, nxt = batch.observations, batch.next_observations
    terminal = batch.terminals[:, 0] == 1
    # same episode, next step; reward and action belong to the observation's step
    np.testing.assert_array_equal(nxt[~terminal, 0], obs[~terminal, 0])
    np.testing.assert_array_equal(nxt[~terminal, 1], obs[~terminal, 1] + 1)
    np.testing.assert_array_equal(batch.rewards[:, 0], obs[:, 2])
    np.testing.assert_array_equal(batch.actions[:, 1], obs[:, 1])
    # terminal only at the true last step of terminating episodes (0 and 2)
    assert set(map(tuple, obs[terminal, :2].astype(int))) <= {(0, 5), (2, 4)}
    assert dataset.episodes[1].terminated is False and dataset.episodes[0].terminated is True


def test_continuous_actions_even_when_they_look_discrete():
    traj = Trajectories.from_episodes(marked_episodes([3, 3]))  # integer-valued actions
    import d3rlpy

    assert to_d3rlpy_dataset(traj, all_episodes(traj)).dataset_info.action_space == d3rlpy.ActionSpace.CONTINUOUS


@pytest.mark.parametrize("algo", D3RLPY)
def test_baseline_trains_exactly_the_steps_asked_and_is_evaluated_in_mujoco(algo, hopper_minari_dataset, tmp_path):
    steps = 120 if algo == "cql" else 250  # CQL updates ~10/s on a CPU core; not a multiple of eval_every
    overrides = {"steps": steps, "eval_every": 100, "eval_episodes": 1, "final_eval_episodes": 2,
                 "batch_size": 64}
    cfg = resolve_config(f"minari:{hopper_minari_dataset[0]}", algo, 0, overrides)
    rec = run(cfg, tmp_path / "out", log=lambda m: None)
    assert rec.status == "complete"
    assert rec.train_info["d3rlpy"]["grad_steps"] == steps  # not rounded down to whole epochs
    assert [p["step"] for p in rec.curve] == sorted({*range(100, steps + 1, 100), steps})
    assert len(rec.final["returns"]) == 2 and all(n >= 1 for n in rec.final["lengths"])
    assert isinstance(rec.final["normalized_mean"], float)
    assert not (tmp_path / "d3rlpy_logs").exists()  # cwd is tmp_path (conftest)


def test_a_killed_baseline_resumes_to_the_same_result(hopper_minari_dataset, tmp_path, monkeypatch):
    overrides = {"steps": 200, "eval_every": 100, "eval_episodes": 1, "final_eval_episodes": 2, "batch_size": 32}
    cfg = resolve_config(f"minari:{hopper_minari_dataset[0]}", "td3_bc", 0, overrides)
    reference = run(cfg, tmp_path / "ref", log=lambda m: None)
    kill_after_first_checkpoint(monkeypatch, lambda: run(cfg, tmp_path / "out", log=lambda m: None))
    resumed = run(cfg, tmp_path / "out", log=lambda m: None)
    assert [p["loss"] for p in resumed.curve] == [p["loss"] for p in reference.curve]
    assert resumed.final["returns"] == reference.final["returns"]


def test_presets_cite_peer_settings():
    td3 = resolve_config("hopper-medium-replay", "td3_bc")
    assert td3.algo_config["alpha"] == 2.5 and td3.algo_config["observation_scaling"] == "standard"
    iql = resolve_config("hopper-medium-replay", "iql")
    assert iql.algo_config["expectile"] == 0.7 and iql.algo_config["reward_scaling"] == "return_range"
    assert resolve_config("hopper-medium", "cql").algo_config["conservative_weight"] == 10.0
    assert resolve_config("hopper-medium-replay", "cql").algo_config["conservative_weight"] == 5.0
    assert resolve_config("hopper-medium-replay", "awac").algo_config["hidden_units"] == [256] * 4


def test_d4rl_files_without_next_observations_follow_qlearning_dataset_for_the_baselines():
    """D4RL's qlearning_dataset convention: a time-limited episode's last step has no known next observation, so
    it is dropped from TD learning; it is never paired with the next episode's first observation. A terminal step
    is kept, with terminal = 1."""
    from bench.algorithms.baselines import to_d3rlpy_dataset
    from bench.datasets.curation import all_episodes
    from bench.datasets.trajectories import Trajectories

    obs = np.arange(7 * 2, dtype=np.float32).reshape(7, 2)  # row t holds [2t, 2t + 1]
    traj = Trajectories.from_flat(obs, np.zeros((7, 1)), np.ones(7), terminals=np.array([0, 0, 0, 0, 0, 0, 1]),
                                  timeouts=np.array([0, 0, 1, 0, 0, 0, 0]))  # episode 0 (3 steps) times out
    assert traj.next_observations[2].tolist() != obs[3].tolist()  # not the next episode's first observation
    dataset = to_d3rlpy_dataset(traj, all_episodes(traj))
    assert [e.transition_count for e in dataset.episodes] == [2, 4] and dataset.transition_count == 6
    pairs = [(dataset.transition_picker(e, i)) for e in dataset.episodes for i in range(e.transition_count)]
    expected_next = [obs[1], obs[2], obs[4], obs[5], obs[6], np.zeros(2)]
    for tr, nxt in zip(pairs, expected_next, strict=True):
        np.testing.assert_array_equal(tr.next_observation, nxt)
    assert [float(tr.terminal) for tr in pairs] == [0, 0, 0, 0, 0, 1]


def _with_truncated_episodes(episodes):
    """The episodes, two of them cut short by a time limit: truncated at step 6 (the first) and 9 (the last), so
    their final transitions have no next observation to bootstrap from."""
    out = [dict(e) for e in episodes]
    for k, cut in ((0, 6), (-1, 9)):
        e = out[k]
        out[k] = {"observations": e["observations"][:cut + 1], "actions": e["actions"][:cut],
                  "rewards": e["rewards"][:cut], "terminations": np.zeros(cut, bool),
                  "truncations": np.arange(cut) == cut - 1}
    return out


def test_the_device_sampler_holds_d3rlpys_transitions_truncated_episodes_included(hopper_minari_dataset):
    """Every transition of DeviceTransitions equals d3rlpy's transition picker's: observation, action, reward,
    next observation, next action and terminal, for terminated and time-limited episodes alike (a truncated episode's
    last step is no transition; its second-to-last bootstraps from its real last observation, never from zeros)."""
    import torch

    from bench.algorithms.baselines import DeviceTransitions, TD3BCConfig, to_d3rlpy_dataset
    from bench.d3rlpy_import import import_d3rlpy
    from bench.datasets.curation import all_episodes
    from bench.datasets.trajectories import Trajectories

    d3rlpy = import_d3rlpy()
    traj = Trajectories.from_episodes(_with_truncated_episodes(hopper_minari_dataset[1][:8]))
    assert not traj.terminals[traj.episode_slice(0)].any() and traj.timeouts[traj.episode_slice(0)][-1]
    dataset = to_d3rlpy_dataset(traj, all_episodes(traj))
    algo = TD3BCConfig(observation_scaling="none").d3rlpy_config(d3rlpy).create(device="cpu")
    algo.build_with_dataset(dataset)
    transitions = DeviceTransitions(dataset, algo, torch.device("cpu"))
    where = [(ep, i) for ep in dataset.episodes for i in range(ep.transition_count)]
    assert transitions.size == len(where) == traj.num_transitions - 2  # the two truncated last steps
    t = transitions.tensors
    for row, (ep, i) in enumerate(where):
        picked = dataset.transition_picker(ep, i)
        for key, value in (("obs", picked.observation), ("act", picked.action), ("rew", picked.reward),
                           ("next_obs", picked.next_observation), ("next_act", picked.next_action),
                           ("term", picked.terminal)):
            np.testing.assert_array_equal(t[key][row].numpy(), np.asarray(value, np.float32).reshape(-1),
                                          err_msg=f"{key} of transition {i} of an episode of {ep.size()} steps")
    first = traj.episode_slice(0)  # truncated at step 6: transition 4 goes to observation 5, transition 5 is none
    np.testing.assert_array_equal(t["next_obs"][4].numpy(), traj.observations[first][5])
    assert float(t["term"][4]) == 0.0


@pytest.mark.parametrize("algo", D3RLPY)
def test_the_device_sampler_feeds_d3rlpys_update_exactly(hopper_minari_dataset, algo):
    """Given the same transitions, N updates through DeviceTransitions + D3rlpyLearner leave the parameters that
    d3rlpy's own ``algo.update(TransitionMiniBatch)`` leaves (scalers, terminals, TD3+BC's delayed actor)."""
    import torch
    from d3rlpy.dataset import TransitionMiniBatch

    from bench.algorithms import get_algorithm
    from bench.algorithms.baselines import D3rlpyLearner, DeviceTransitions, build_d3rlpy, to_d3rlpy_dataset
    from bench.d3rlpy_import import import_d3rlpy
    from bench.datasets.curation import all_episodes
    from bench.datasets.trajectories import Trajectories

    d3rlpy = import_d3rlpy()
    traj = Trajectories.from_episodes(_with_truncated_episodes(hopper_minari_dataset[1][:8]))
    dataset = to_d3rlpy_dataset(traj, all_episodes(traj))
    cfg = get_algorithm(algo).Config(batch_size=16, hidden_units=[32, 32], steps=10)

    def build(device: str = "cpu"):
        d3rlpy.seed(0)
        return build_d3rlpy(cfg, dataset, device)

    ours, theirs = build(), build()
    transitions = DeviceTransitions(dataset, ours, torch.device("cpu"))
    where = [(ep, i) for ep in dataset.episodes for i in range(ep.transition_count)]
    assert transitions.size == len(where) == dataset.transition_count
    gen = torch.Generator().manual_seed(1)
    for _ in range(6):
        idx = torch.randint(transitions.size, (16,), generator=gen)
        torch.manual_seed(7)  # the same noise inside both updates (target smoothing, CQL's action samples)
        D3rlpyLearner(ours, build).update(transitions.batch(idx))
        torch.manual_seed(7)
        theirs.update(TransitionMiniBatch.from_transitions(
            [dataset.transition_picker(*where[i]) for i in idx.tolist()]))
    assert ours.grad_step == theirs.grad_step == 6
    mine, reference = ours.impl.modules, theirs.impl.modules
    compared = 0
    for name in vars(reference):
        a, b = getattr(mine, name), getattr(reference, name)
        if isinstance(a, torch.nn.Module):
            for p, q in zip(a.parameters(), b.parameters(), strict=True):
                torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
                compared += 1
    assert compared >= 8  # actor and critics (and targets) were all compared
