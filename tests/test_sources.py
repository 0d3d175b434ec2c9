import time

import h5py
import numpy as np
import pytest
from conftest import marked_episodes

from bench.datasets.sources import load_dataset, pack_episodes, read_d4rl_hdf5, unpack_episodes
from bench.datasets.trajectories import DatasetError, Trajectories
from bench.specs import get_spec


def write_d4rl_file(path, episodes, with_next=True):
    """A file in D4RL's layout: flat arrays, episodes back to back, terminals/timeouts flags."""
    traj = Trajectories.from_episodes(episodes)
    with h5py.File(path, "w") as f:
        f["observations"] = traj.observations
        f["actions"] = traj.actions
        f["rewards"] = traj.rewards
        f["terminals"] = traj.terminals
        f["timeouts"] = traj.timeouts
        if with_next:
            f["next_observations"] = traj.next_observations
    return traj


@pytest.mark.parametrize("with_next", [True, False])
def test_d4rl_hdf5_reader_is_aligned(tmp_path, with_next):
    eps = marked_episodes([5, 3, 4], terminal_last=[True, False, True])
    expected = write_d4rl_file(tmp_path / "x.hdf5", eps, with_next)
    traj = read_d4rl_hdf5(tmp_path / "x.hdf5")
    np.testing.assert_array_equal(traj.episode_starts, [0, 5, 8, 12])
    np.testing.assert_array_equal(traj.observations, expected.observations)
    np.testing.assert_array_equal(traj.actions[:, 1], traj.observations[:, 1])
    np.testing.assert_array_equal(traj.rewards, traj.observations[:, 2])
    inner = ~(traj.terminals | traj.timeouts)  # inside an episode the next observation is the next row
    np.testing.assert_array_equal(traj.next_observations[inner], expected.next_observations[inner])
    if with_next:
        np.testing.assert_array_equal(traj.next_observations, expected.next_observations)
        assert traj.fingerprint() == expected.fingerprint()


def test_d4rl_registry_loads_from_cache_and_from_path(tmp_path, monkeypatch):
    import hashlib

    eps = marked_episodes([3, 2])
    cache = tmp_path / "d4rl"
    cache.mkdir()
    spec = get_spec("hopper-medium-replay")
    write_d4rl_file(cache / spec.location, eps)
    data = (cache / spec.location).read_bytes()
    (tmp_path / "sums.tsv").write_text(f"{spec.location}\t{len(data)}\t{hashlib.sha256(data).hexdigest()}\n")
    monkeypatch.setenv("BENCH_D4RL_CHECKSUMS", str(tmp_path / "sums.tsv"))  # this file's checksum, for the test
    traj = load_dataset(spec)
    assert traj.num_episodes == 2 and traj.metadata["env_id"] == "Hopper-v4"
    write_d4rl_file(tmp_path / "elsewhere.hdf5", eps)
    assert load_dataset(spec, tmp_path / "elsewhere.hdf5").fingerprint() == traj.fingerprint()


def test_corrupt_or_foreign_hdf5_gives_a_clear_error(tmp_path):
    (tmp_path / "bad.hdf5").write_bytes(b"not an hdf5 file at all")
    with pytest.raises(DatasetError, match="corrupt"):
        read_d4rl_hdf5(tmp_path / "bad.hdf5")
    with h5py.File(tmp_path / "other.hdf5", "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(DatasetError, match="keys .* missing"):
        read_d4rl_hdf5(tmp_path / "other.hdf5")


def test_missing_d4rl_dataset_offline_fails_fast_with_what_and_where(tmp_path):
    t0 = time.time()
    with pytest.raises(DatasetError) as err:
        load_dataset(get_spec("walker2d-expert"))
    assert time.time() - t0 < 5
    msg = str(err.value)
    assert "walker2d_expert-v2.hdf5" in msg and str(tmp_path / "d4rl") in msg
    assert "--data" in msg and "hopper-mini-replay" in msg


def test_missing_minari_dataset_offline_fails_fast(tmp_path):
    t0 = time.time()
    with pytest.raises(DatasetError) as err:
        load_dataset(get_spec("minari:D4RL/antmaze/umaze-v1"))
    assert time.time() - t0 < 5
    msg = str(err.value)
    assert "D4RL/antmaze/umaze-v1" in msg and str(tmp_path / "minari") in msg and "offline" in msg


def test_minari_source_is_aligned_with_the_episodes_written(hopper_minari_dataset, tmp_path):
    dataset_id, episodes = hopper_minari_dataset
    traj = load_dataset(get_spec(f"minari:{dataset_id}"))
    assert traj.num_episodes == len(episodes)
    assert traj.metadata["env_id"] == "Hopper-v5"
    assert traj.metadata["ref_min_score"] == -20.0 and traj.metadata["ref_max_score"] == 3000.0
    for i, ep in enumerate(episodes):
        s = traj.episode_slice(i)
        np.testing.assert_allclose(traj.observations[s], ep["observations"][:-1], rtol=1e-6)
        np.testing.assert_allclose(traj.next_observations[s], ep["observations"][1:], rtol=1e-6)
        np.testing.assert_allclose(traj.actions[s], ep["actions"], rtol=1e-6)
        np.testing.assert_allclose(traj.rewards[s], ep["rewards"], rtol=1e-6)
        assert traj.terminals[s].sum() == ep["terminations"].sum()
    # the same dataset read from its folder with --data gives the same content
    folder = tmp_path / "minari" / dataset_id
    assert load_dataset(get_spec(f"minari:{dataset_id}"), folder).fingerprint() == traj.fingerprint()


def test_minari_marked_episodes_round_trip_through_real_minari(tmp_path):
    import minari
    from minari.data_collector import EpisodeBuffer

    from bench.datasets.sources import read_minari

    eps = marked_episodes([4, 1, 6])
    space_o = __import__("gymnasium").spaces.Box(-1e9, 1e9, (3,), np.float32)
    space_a = __import__("gymnasium").spaces.Box(-1e9, 1e9, (2,), np.float32)
    ds = minari.create_dataset_from_buffers(
        "bench/marked/test-v0", [EpisodeBuffer(**e) for e in eps], observation_space=space_o,
        action_space=space_a)
    traj = read_minari(ds, "marked")
    ep_of = traj.episode_index_of_transitions()
    np.testing.assert_array_equal(traj.next_observations[:, 0], ep_of)
    np.testing.assert_array_equal(traj.next_observations[:, 1], traj.observations[:, 1] + 1)
    np.testing.assert_array_equal(traj.rewards, traj.observations[:, 2])


def test_pack_unpack_round_trip():
    eps = marked_episodes([3, 1, 4])
    back = unpack_episodes(pack_episodes(eps))
    for a, b in zip(eps, back, strict=True):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
