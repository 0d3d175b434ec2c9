"""Point-maze, a dataset family added as one registry entry: Minari's layout made here in the real PointMaze."""

import json

import pytest

from bench.datasets.generate import _rollout, write_minari
from bench.envs import make_env
from bench.results.store import read_record
from bench.run import resolve_config, run
from bench.specs import get_spec

# as Minari stores D4RL/pointmaze/umaze-v2's env spec (its kwargs), with a short time limit for speed
POINTMAZE_ENV = json.dumps({"id": "PointMaze_UMaze-v3", "max_episode_steps": 50,
                            "kwargs": {"continuing_task": True, "reset_target": False}})


def test_pointmaze_loads_trains_and_is_scored_with_the_datasets_reference_returns(tmp_path):
    space = make_env(POINTMAZE_ENV).action_space
    space.seed(0)
    episodes = _rollout(POINTMAZE_ENV, lambda _o: space.sample(), seed=0, n_episodes=4)
    write_minari(episodes, "D4RL/pointmaze/umaze-v2", POINTMAZE_ENV, 0.0, 20.0, "test data in PointMaze_UMaze-v3",
                 {}, algorithm_name="random")
    spec = get_spec("pointmaze-umaze")
    assert (spec.family, spec.location, spec.ref_max_score) == ("Point-maze", "D4RL/pointmaze/umaze-v2", None)
    cfg = resolve_config("pointmaze-umaze", "bc", 0, {"steps": 30, "eval_every": 30, "eval_episodes": 1,
                                                      "final_eval_episodes": 2, "batch_size": 16})
    record = read_record(tmp_path / "out" / run(cfg, tmp_path / "out", log=lambda m: None).filename)
    assert record.status == "complete"
    assert record.dataset["obs_dim"] == 4 + 2 and record.dataset["act_dim"] == 2  # observation + desired goal
    assert (record.dataset["ref_min_score"], record.dataset["ref_max_score"]) == (0.0, 20.0)  # from the metadata
    returns = record.final["returns"]
    assert record.final["normalized_mean"] == pytest.approx(sum(100 * r / 20.0 for r in returns) / len(returns))
