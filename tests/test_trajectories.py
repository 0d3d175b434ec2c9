import numpy as np
import pytest
from conftest import marked_episodes

from bench.datasets.trajectories import DatasetError, Trajectories


def test_from_episodes_aligns_each_step_with_its_next_observation():
    eps = marked_episodes([4, 1, 3])
    traj = Trajectories.from_episodes(eps)
    assert traj.num_episodes == 3 and traj.num_transitions == 8
    ep_of = traj.episode_index_of_transitions()
    # obs t, action t, reward t and next obs t all name the same (episode, step)
    np.testing.assert_array_equal(traj.observations[:, 0], ep_of)
    np.testing.assert_array_equal(traj.actions[:, 0], ep_of)
    np.testing.assert_array_equal(traj.actions[:, 1], traj.observations[:, 1])
    np.testing.assert_array_equal(traj.rewards, traj.observations[:, 2])
    np.testing.assert_array_equal(traj.next_observations[:, 0], ep_of)  # never from the next episode
    np.testing.assert_array_equal(traj.next_observations[:, 1], traj.observations[:, 1] + 1)
    # flags: episode 0 and 2 terminate, episode 1 is truncated
    assert traj.terminals.tolist() == [0, 0, 0, 1, 0, 0, 0, 1]
    assert traj.timeouts.tolist() == [0, 0, 0, 0, 1, 0, 0, 0]
    np.testing.assert_allclose(traj.episode_returns, [0 + 1 + 2 + 3, 1000, 6000 + 3])


def test_to_episodes_round_trips():
    eps = marked_episodes([5, 2])
    back = Trajectories.from_episodes(eps).to_episodes()
    for a, b in zip(eps, back, strict=True):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])


def test_from_flat_splits_at_terminals_and_timeouts_and_fills_next_observations():
    obs = np.arange(7, dtype=np.float32)[:, None]
    terminals = np.array([0, 1, 0, 0, 0, 0, 0])
    timeouts = np.array([0, 0, 0, 1, 0, 0, 0])  # last episode is cut by the end of the data
    traj = Trajectories.from_flat(obs, np.zeros((7, 1)), np.ones(7), terminals, timeouts)
    assert traj.episode_starts.tolist() == [0, 2, 4, 7]
    # inside an episode: the following row; at an episode's last step: unknown -> itself, flagged as an end
    assert traj.next_observations[:, 0].tolist() == [1, 1, 3, 3, 5, 6, 6]
    assert traj.timeouts.tolist() == [0, 0, 0, 1, 0, 0, 1]
    np.testing.assert_allclose(traj.episode_returns, [2, 2, 3])


def test_terminal_wins_over_timeout_on_the_same_step():
    traj = Trajectories.from_flat(np.zeros((2, 1)), np.zeros((2, 1)), np.zeros(2), [0, 1], [0, 1])
    assert traj.terminals.tolist() == [False, True] and traj.timeouts.tolist() == [False, False]


def test_fingerprint_depends_on_content_only():
    a = Trajectories.from_episodes(marked_episodes([3, 2]), name="a")
    b = Trajectories.from_episodes(marked_episodes([3, 2]), name="b")
    c = Trajectories.from_episodes(marked_episodes([3, 3]))
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()


def test_nan_and_inconsistent_data_are_rejected():
    eps = marked_episodes([3])
    eps[0]["rewards"][1] = np.nan
    with pytest.raises(DatasetError, match="NaN"):
        Trajectories.from_episodes(eps)
    bad = marked_episodes([3])
    bad[0]["observations"] = bad[0]["observations"][:-1]  # T observations instead of T+1
    with pytest.raises(DatasetError, match="T\\+1"):
        Trajectories.from_episodes(bad)
