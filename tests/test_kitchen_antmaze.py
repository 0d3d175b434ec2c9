"""Franka kitchen and antmaze on small datasets made here in the real environments, in Minari's layout."""

import json

import gymnasium as gym
import numpy as np
import pytest

from bench.datasets.generate import _rollout, write_minari
from bench.datasets.sources import load_dataset
from bench.envs import flatten_observation, make_env
from bench.evaluation import evaluate
from bench.specs import get_spec

KITCHEN_TASKS = ["microwave", "kettle", "bottom burner", "light switch"]  # D4RL's kitchen goal
# Env specs as Minari stores them (the published datasets' kwargs), with short time limits for speed
KITCHEN_ENV = json.dumps({"id": "FrankaKitchen-v1", "max_episode_steps": 40,
                          "kwargs": {"tasks_to_complete": KITCHEN_TASKS}})
ANTMAZE_ENV = json.dumps({"id": "AntMaze_UMaze-v4", "max_episode_steps": 60,
                          "kwargs": {"continuing_task": True, "reset_target": False}})


def random_episodes(env_json, n, seed):
    space = make_env(env_json).action_space
    space.seed(seed)
    return _rollout(env_json, lambda _o: space.sample(), seed=seed, n_episodes=n)


@pytest.fixture
def kitchen_data():
    for k, part in enumerate(("partial", "complete", "mixed")):
        write_minari(random_episodes(KITCHEN_ENV, 3, k), f"D4RL/kitchen/{part}-v2", KITCHEN_ENV, 0.0, 4.0,
                     "test data in the real FrankaKitchen-v1", {}, algorithm_name="random")


@pytest.fixture
def antmaze_data():
    write_minari(random_episodes(ANTMAZE_ENV, 4, 0), "D4RL/antmaze/umaze-v1", ANTMAZE_ENV, 0.0, 1.0,
                 "test data in the real AntMaze_UMaze-v4", {}, algorithm_name="random")


def test_flattening_order_is_observation_then_sorted_desired_goal():
    env = make_env(KITCHEN_ENV)
    obs, _ = env.reset(seed=0)
    flat = flatten_observation(obs)
    goals = obs["desired_goal"]
    assert flat.shape == (59 + 2 + 7 + 2 + 1,)  # bottom burner, kettle, light switch, microwave
    np.testing.assert_allclose(flat[:59], obs["observation"], rtol=1e-6)
    np.testing.assert_allclose(flat[59:61], goals["bottom burner"], rtol=1e-6)
    np.testing.assert_allclose(flat[61:68], goals["kettle"], rtol=1e-6)
    np.testing.assert_allclose(flat[68:70], goals["light switch"], rtol=1e-6)
    np.testing.assert_allclose(flat[70:], goals["microwave"], rtol=1e-6)
    ant, _ = make_env(ANTMAZE_ENV).reset(seed=0)
    flat = flatten_observation(ant)
    assert flat.shape == (29,)  # D4RL antmaze: 27 + goal 2
    np.testing.assert_allclose(flat[27:], ant["desired_goal"], rtol=1e-6)
    # batched (time-major) dicts flatten the same way
    both = flatten_observation({k: np.stack([v, v]) for k, v in ant.items()})
    np.testing.assert_allclose(both[1], flat)


def test_minari_kitchen_and_antmaze_load_flattened_and_aligned(kitchen_data, antmaze_data):
    traj = load_dataset(get_spec("kitchen-complete"))
    assert traj.obs_dim == 71 and traj.num_episodes == 3
    inner = ~(traj.terminals | traj.timeouts)
    np.testing.assert_allclose(traj.next_observations[:-1][inner[:-1]], traj.observations[1:][inner[:-1]])
    assert json.loads(traj.metadata["env_spec"])["kwargs"]["tasks_to_complete"] == KITCHEN_TASKS
    both = load_dataset(get_spec("kitchen-complete+mixed"))
    assert both.num_episodes == 6 and [p["name"] for p in both.metadata["parts"]] == ["kitchen-complete",
                                                                                        "kitchen-mixed"]
    ant = load_dataset(get_spec("antmaze-umaze"))
    assert ant.obs_dim == 29 and ant.num_episodes == 4


class ScriptedTaskEnv(gym.Env):
    """Emits the infos of FrankaKitchen-v1 / AntMaze on a script, so the scores can be counted by hand."""

    observation_space = gym.spaces.Box(-1, 1, (2,), np.float32)
    action_space = gym.spaces.Box(-1, 1, (1,), np.float32)

    def __init__(self, completions=(), success_at=()):
        self.tasks_to_complete = set(KITCHEN_TASKS)
        self.completions, self.success_at = list(completions), set(success_at)

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.episode = 0, getattr(self, "episode", -1) + 1
        return np.zeros(2, np.float32), {}

    def step(self, action):
        self.t += 1
        done = self.t == 5
        info = {"success": self.t in self.success_at.get(self.episode, ()) if isinstance(self.success_at, dict)
                else False}
        if done:
            info["episode_task_completions"] = self.completions[self.episode % len(self.completions)] \
                if self.completions else []
        return np.zeros(2, np.float32), 0.0, False, done, info


class Zero:
    def act(self, obs):
        return np.zeros((len(obs), 1), np.float32)


def test_kitchen_score_is_subtasks_done_over_four_averaged_over_episodes():
    # one env runs the episodes one after another: completions of 1, 4, 0 and 2 sub-tasks
    gym.register("ScriptedKitchen-v0", entry_point=ScriptedTaskEnv, kwargs={
        "completions": [["microwave"], KITCHEN_TASKS, [], ["kettle", "light switch"]]})
    res = evaluate(Zero(), "ScriptedKitchen-v0", episodes=4, seed=0, num_envs=1, score="subtasks")
    assert res.scores == [25.0, 100.0, 0.0, 50.0]
    assert res.normalized_mean == pytest.approx((25 + 100 + 0 + 50) / 4)


def test_antmaze_score_is_the_success_rate():
    env = ScriptedTaskEnv()
    env.success_at = {0: {3}, 2: {1, 5}}  # episodes 0 and 2 reach the goal, 1 and 3 do not
    gym.register("ScriptedMaze-v0", entry_point=lambda: env)
    res = evaluate(Zero(), "ScriptedMaze-v0", episodes=4, seed=0, num_envs=1, score="success")
    assert res.scores == [100.0, 0.0, 100.0, 0.0] and res.normalized_mean == 50.0


def test_sparse_ties_are_kept_whole_by_curation(antmaze_data):
    from bench.datasets.curation import quality_bins

    traj = load_dataset(get_spec("antmaze-umaze"))
    cur = quality_bins(traj, [90, 95, 98])
    tied = traj.episode_returns == traj.episode_returns.max()
    assert set(cur.episode_indices) == set(np.flatnonzero(tied))  # every episode tied with the best return


def test_bench_kitchen_end_to_end(kitchen_data, tmp_path):
    from bench.kitchen import KitchenConfig, kitchen_configs
    from bench.reports.report import build_report
    from bench.sweep import run_sweep

    tiny = {"steps": 20, "eval_every": 20, "eval_episodes": 1, "final_eval_episodes": 2, "batch_size": 4,
            "bc_steps": 20, "bc_batch_size": 4, "warmup_steps": 2, "eval_envs": 2}
    configs = kitchen_configs(KitchenConfig(seeds=[0]), tiny)
    assert [(c.env, c.algo) for c in configs] == [
        ("kitchen-partial", "bc"), ("kitchen-complete+mixed", "sft"), ("kitchen-complete+mixed", "sft_q"),
        ("kitchen-complete+mixed", "iw_sft_q"), ("kitchen-complete", "bc"), ("kitchen-complete", "bc_5")]
    summary = run_sweep(configs, tmp_path / "results", "local", workers=2, log=lambda m: None)
    assert summary.ok, summary.text()
    from bench.results.store import load_records

    records = {(r.env, r.algo): r for r in load_records([tmp_path / "results"])[0]}
    iw = records[("kitchen-complete+mixed", "iw_sft_q")]
    assert iw.train_info["reference"]["dataset"] == "kitchen-partial"
    assert {b["part"] for b in iw.train_info["curation"]["bins"]} == {"kitchen-complete", "kitchen-mixed"}
    assert iw.dataset["score"] == "subtasks" and iw.dataset["eval_env"] == "FrankaKitchen-v1"
    assert all(0 <= r.final["normalized_mean"] <= 100 for r in records.values())
    build_report([tmp_path / "results"], tmp_path / "report", n_resamples=50)
    table = (tmp_path / "report" / "main_table.md").read_text()
    assert "*Kitchen*" in table and "kitchen-complete+mixed" in table and "BC 5%" in table
