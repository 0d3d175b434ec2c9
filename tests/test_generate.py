import json

import numpy as np
import pytest

from bench.datasets import generate as gen
from bench.datasets.sources import load_dataset
from bench.specs import get_spec


def _bench_meta(dataset_id):
    import minari

    return json.loads(minari.load_dataset(dataset_id).storage.metadata["bench"])


def test_random_dataset_is_a_minari_dataset_with_scores_and_command():
    cfg = gen.GenerateConfig(env_id="Hopper-v5", kind="random", name="t", dataset_size=300)
    gen.generate(cfg, command="bench datasets generate --kind random")
    traj = load_dataset(get_spec("minari:bench/t/random-v0"))
    assert traj.num_transitions >= 300 and traj.metadata["env_id"] == "Hopper-v5"
    # ref_min_score defaults to the random policy's return; ref_max to D4RL's hopper expert return
    assert -50 < traj.metadata["ref_min_score"] < 100 and traj.metadata["ref_max_score"] == 3234.3
    assert _bench_meta("bench/t/random-v0")["bench_command"] == "bench datasets generate --kind random"
    np.testing.assert_array_equal(traj.next_observations[:-1][~(traj.terminals | traj.timeouts)[:-1]],
                                  traj.observations[1:][~(traj.terminals | traj.timeouts)[:-1]])
    with pytest.raises(gen.DatasetError, match="already exists"):
        gen.generate(cfg)


SMALL = dict(env_id="Hopper-v5", kind="medium-replay", name="m", max_env_steps=400, random_steps=150,
             eval_every=150, eval_episodes=1, batch_size=32, ref_min_score=0.0, ref_max_score=1.0)


def test_medium_replay_holds_every_step_of_the_replay_buffer(tmp_path):
    gen.generate(gen.GenerateConfig(**SMALL), work_dir=tmp_path / "w")
    traj = load_dataset(get_spec("minari:bench/m/medium-replay-v0"))
    assert traj.num_transitions == 400
    info = _bench_meta("bench/m/medium-replay-v0")["bench_generation"]
    assert info["stop_reason"] == "step budget reached" and [h["env_steps"] for h in info["eval_history"]] == [150, 300]


def test_target_return_stops_training_early(tmp_path):
    cfg = gen.GenerateConfig(**{**SMALL, "name": "early", "target_return": -1e9})
    gen.generate(cfg, work_dir=tmp_path / "w")
    traj = load_dataset(get_spec("minari:bench/early/medium-replay-v0"))
    assert traj.num_transitions == 150  # stopped at the first evaluation
    assert traj.timeouts[-1]  # the episode cut by the stop is a truncation


def test_a_killed_generation_resumes_to_the_same_dataset(tmp_path, monkeypatch, capsys):
    gen.generate(gen.GenerateConfig(**{**SMALL, "name": "ref"}), work_dir=tmp_path / "ref")
    reference = load_dataset(get_spec("minari:bench/ref/medium-replay-v0"))

    cfg = gen.GenerateConfig(**{**SMALL, "name": "killed"})
    real_save = gen._save_checkpoint

    def save_then_die(*args):
        real_save(*args)
        raise KeyboardInterrupt  # killed right after the first checkpoint

    monkeypatch.setattr(gen, "_save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        gen.generate(cfg, work_dir=tmp_path / "k")
    monkeypatch.setattr(gen, "_save_checkpoint", real_save)
    gen.generate(cfg, work_dir=tmp_path / "k")
    assert "resumed from" in capsys.readouterr().err
    resumed = load_dataset(get_spec("minari:bench/killed/medium-replay-v0"))
    assert resumed.fingerprint() == reference.fingerprint()
