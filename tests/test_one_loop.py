"""One training loop for every algorithm: single runs keep today's numbers, loggers never change a record, and the
quality bins' multiplicities set how often SFT(Q) draws each trajectory."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.run import resolve_config, run, run_seeds

COMMON = {"eval_every": 20, "eval_episodes": 1, "final_eval_episodes": 1}
SFT = {"steps": 40, "batch_size": 8, "warmup_steps": 5, "bc_steps": 40, "bc_batch_size": 64}
CASES = {
    "bc": ("bc", {"steps": 60, "batch_size": 64}),
    "bc_traj": ("bc", {"steps": 60, "batch_size": 8, "batch_unit": "trajectories"}),
    "sft_q": ("sft_q", SFT),
    "iw_sft_q": ("iw_sft_q", {**SFT, "temperature": 5.0}),
    "iw_sft_q_static": ("iw_sft_q", {**SFT, "temperature": 5.0, "static_shapes": True}),
    "td3_bc": ("td3_bc", {"steps": 40, "batch_size": 32}),
}
# The loss curves (window means at steps 20, 40[, 60]) these runs had before the loops were merged into one, from
# commit a4cd7e4 (one loop per layout and per single / batched seeds): hopper-mini-replay, seed 0, each case's
# --set values with COMMON, through bench.run.run, on this suite's 2-core AMD EPYC (torch 2.13.0+cpu, 1 thread).
BEFORE = {
    "bc": [3.234345245361328, 3.169264793395996, 3.1324642181396483],
    "bc_traj": [3.234162139892578, 3.169671821594238, 3.116435241699219],
    "sft_q": [3.0786111831665037, 3.052546501159668],
    "iw_sft_q": [3.119864082336426, 3.265975570678711],
    "iw_sft_q_static": [3.119864273071289, 3.265975570678711],
    "td3_bc": [7.796527099609375, 1.90718994140625],
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_single_run_trains_as_before_the_loops_were_merged(case, tmp_path):
    algo, over = CASES[case]
    rec = run(resolve_config("hopper-mini-replay", algo, 0, {**COMMON, **over}), tmp_path, log=lambda m: None)
    assert rec.status == "complete"
    # float rounding only: BC on transitions, the d3rlpy loop and both SFT layouts are bit-identical here; BC on
    # whole trajectories now computes a trajectory drawn twice once, with weight 2 (5e-5 relative after 60 steps)
    np.testing.assert_allclose([p["loss"] for p in rec.curve], BEFORE[case], rtol=1e-3)


@pytest.mark.parametrize("algo, over", [("bc", {"steps": 60, "batch_size": 64}),
                                        ("iw_sft_q", {**SFT, "temperature": 5.0})])
def test_a_logger_never_changes_the_record(algo, over, tmp_path):
    """Same config hash, same curve and scores, with and without --logger csv --log-every 10 (the loggers' window
    between evaluations is theirs alone; the record's statistics and the divergence checks keep theirs)."""
    plain = run(resolve_config("hopper-mini-replay", algo, 0, {**COMMON, **over}), tmp_path / "plain",
                log=lambda m: None)
    logged = run(resolve_config("hopper-mini-replay", algo, 0, {**COMMON, **over, "loggers": ["csv"],
                                                                "log_every": 10}), tmp_path / "logged",
                 log=lambda m: None)
    assert plain.config_hash == logged.config_hash
    assert [{k: v for k, v in p.items() if k != "time"} for p in plain.curve] == \
        [{k: v for k, v in p.items() if k != "time"} for p in logged.curve]
    assert plain.final["returns"] == logged.final["returns"]
    assert plain.train_info.get("weights") == logged.train_info.get("weights")
    import csv

    (path,) = (tmp_path / "logged" / "csv").glob("*.csv")
    rows = list(csv.DictReader(path.open()))
    losses = {int(r["step"]): float(r["value"]) for r in rows if r["metric"] == "loss"}
    assert sorted(losses) == [10, 20, 30, 40] + ([50, 60] if algo == "bc" else [])  # the loggers did get steps
    assert losses[20] == pytest.approx(plain.curve[0]["loss"])  # at an evaluation step: the curve's point


def test_static_shapes_batch_seeds_like_separate_runs(tmp_path):
    cfgs = [resolve_config("hopper-mini-replay", "iw_sft_q", s, {**COMMON, **SFT, "static_shapes": True})
            for s in (0, 1)]
    batched = run_seeds(cfgs, tmp_path / "batched", log=lambda m: None)
    separate = [run(c, tmp_path / "separate", log=lambda m: None) for c in cfgs]
    for b, s in zip(batched, separate, strict=True):
        assert b.train_info["batched_seeds"] == [0, 1] and "batched_seeds" not in s.train_info
        np.testing.assert_allclose([p["loss"] for p in b.curve], [p["loss"] for p in s.curve], rtol=1e-4)
        for name in ("mean", "min", "max", "ess_fraction"):
            assert b.train_info["weights"][name] == pytest.approx(s.train_info["weights"][name], rel=1e-4)
    assert batched[0].curve[0]["loss"] != batched[1].curve[0]["loss"]


@pytest.mark.parametrize("static", [False, True])
def test_sft_q_draws_each_trajectory_as_often_as_its_quality_bins_say(static):
    """Returns 0..99: the cutoffs at the 90th / 95th / 98th percentiles (89.1, 94.05, 97.02) put episodes 90-94 in
    one bin, 95-97 in two and 98-99 in three: 17 bin places, so episode 99 is drawn with probability 3/17 and
    episode 90 with 1/17 (uniform over the 10 selected would be 1/10 each)."""
    from bench.algorithms.trajectory_batch import TrajectoryBatches
    from bench.datasets.curation import quality_bins
    from bench.datasets.trajectories import Trajectories

    episodes = []
    for e in range(100):
        episodes.append({"observations": np.zeros((5, 2), np.float32), "actions": np.zeros((4, 1), np.float32),
                         "rewards": np.full(4, e / 4, np.float32), "terminations": np.array([0, 0, 0, 1], bool),
                         "truncations": np.zeros(4, bool)})
    traj = Trajectories.from_episodes(episodes)
    curated = quality_bins(traj, [90, 95, 98])
    assert list(curated.episode_indices) == list(range(90, 100))
    assert list(curated.multiplicity) == [1] * 5 + [2] * 3 + [3] * 2
    batches = TrajectoryBatches(traj, curated, torch.device("cpu"), [0, 1], 256, static)
    drawn = np.zeros((2, 100))
    for _ in range(100):
        batch = batches.sample()
        seg = torch.repeat_interleave(torch.arange(len(batch.sizes)), batch.sizes)  # each row's segment
        episode_of_segment = {s: r // 4 for s, r in zip(seg.tolist(), batch.rows.reshape(-1).tolist(),
                                                        strict=True)}  # episode e holds transitions 4e .. 4e + 3
        per_seed = batch.counts.shape[1]
        for s, count in enumerate(batch.counts.reshape(-1).tolist()):
            if count:  # padding and (static layout) undrawn episodes count 0
                drawn[s // per_seed, episode_of_segment[s]] += count
    expected = np.zeros(100)
    expected[90:95], expected[95:98], expected[98:] = 1 / 17, 2 / 17, 3 / 17
    for k in range(2):  # 25,600 draws per seed: a binomial standard error below 0.0024 for every episode
        assert drawn[k].sum() == 25_600
        np.testing.assert_allclose(drawn[k] / 25_600, expected, atol=0.012)
    assert not np.array_equal(drawn[0], drawn[1])  # each seed its own draws
