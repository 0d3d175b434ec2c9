"""The report against rliable 1.2 itself on equal seeds per task, and against hand computations where rliable has no
definition (unequal seeds per task, every run used), on fixed hand-made record sets: a task only one algorithm has,
an algorithm on fewer tasks, a NaN score, a duplicate record, runs of another config, failed and diverged runs.

The expected numbers were computed once with rliable (it is not needed at test time):

    python3.11 -m venv /tmp/rl && /tmp/rl/bin/pip install rliable "pandas<3"   # arch 7.2 fails with pandas 3
    /tmp/rl/bin/python ref.py   # for each set: matrices(scores) as below, then
        # rly.get_interval_estimates(m, agg, reps=50000) with agg = [metrics.aggregate_mean, aggregate_median,
        #   aggregate_iqm, aggregate_optimality_gap(x, 100)], and for every ordered pair (x, y)
        # rly.get_interval_estimates({"x,y": (m[x], m[y])}, metrics.probability_of_improvement, reps=20000)

Points must agree exactly (to the 6 decimals stored); intervals — two different random streams — within 1.0 point
of the 0-100 scale (0.01 on rliable's 0-1 scale) for the aggregates and 0.02 for probabilities of improvement,
with 20,000 resamples here.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from bench.reports import statistics as st
from bench.reports.latex import latex_escape
from bench.reports.report import (
    aggregate_rows,
    build_report,
    improvement_matrix,
    main_table_rows,
    paper_comparison_rows,
    score_matrices,
    select_runs,
)
from bench.results.store import RunRecord, save_record

TASKS = ["hopper-medium-replay", "walker2d-medium-replay", "hopper-expert"]
EQUAL = {
    ("hopper-medium-replay", "bc"): {0: 18.2, 1: 25.1, 2: 21.7, 3: 30.4, 4: 15.9},
    ("hopper-medium-replay", "iql"): {0: 88.0, 1: 95.3, 2: 60.2, 3: 91.4, 4: 79.8},
    ("hopper-medium-replay", "iw_sft_q"): {0: 84.1, 1: 80.7, 2: 89.9, 3: 86.2, 4: 78.5},
    ("walker2d-medium-replay", "bc"): {0: 22.0, 1: 31.5, 2: 26.3, 3: 19.8, 4: 28.9},
    ("walker2d-medium-replay", "iql"): {0: 70.1, 1: 76.8, 2: 73.9, 3: 68.4, 4: 81.0},
    ("walker2d-medium-replay", "iw_sft_q"): {0: 74.2, 1: 78.0, 2: 72.5, 3: 77.1, 4: 76.4},
    ("hopper-expert", "bc"): {0: 52.3, 1: 49.8, 2: 60.1, 3: 47.5, 4: 55.0},
    ("hopper-expert", "iql"): {0: 91.2, 1: 95.7, 2: 88.3, 3: 101.4, 4: 84.9},
    ("hopper-expert", "iw_sft_q"): {0: 110.2, 1: 112.8, 2: 108.9, 3: 111.5, 4: 107.3},
}
# Messy: unequal seeds per task (bc has 3 on walker2d, iql 4 on hopper-medium-replay), a task only bc has
# (antmaze-umaze: left out of the common set), and — not in these scores — a NaN score, a duplicate record and
# runs of another config, which the report must ignore.
MESSY = {k: dict(v) for k, v in EQUAL.items()}
MESSY[("walker2d-medium-replay", "bc")] = {s: MESSY[("walker2d-medium-replay", "bc")][s] for s in (0, 1, 2)}
MESSY[("hopper-medium-replay", "iql")] = {s: MESSY[("hopper-medium-replay", "iql")][s] for s in (1, 2, 3, 4)}
MESSY[("antmaze-umaze", "bc")] = {0: 55.0, 1: 60.0}

RLIABLE = {
    "equal": {
        "aggregates": {
            "bc": [33.633333, 25.7, 31.466667, 66.366667],
            "iql": [83.093333, 82.94, 83.922222, 17.0],
            "iw_sft_q": [89.886667, 83.88, 87.855556, 13.493333],
        },
        "intervals": {
            "bc": [[31.34, 22.42, 28.678, 64.007], [35.993, 29.42, 34.078, 68.66]],
            "iql": [[78.66, 73.6, 79.044, 13.18], [86.98, 91.6, 88.022, 21.387]],
            "iw_sft_q": [[88.46, 80.5, 85.889, 12.187], [91.3, 87.32, 89.911, 14.787]],
        },
        "poi": {
            "bc,iql": 0.0,
            "bc,iw_sft_q": 0.0,
            "iql,bc": 1.0,
            "iql,iw_sft_q": 0.32,
            "iw_sft_q,bc": 1.0,
            "iw_sft_q,iql": 0.68,
        },
        "poi_intervals": {
            "bc,iql": [0.0, 0.0],
            "bc,iw_sft_q": [0.0, 0.0],
            "iql,bc": [1.0, 1.0],
            "iql,iw_sft_q": [0.1333, 0.5067],
            "iw_sft_q,bc": [1.0, 1.0],
            "iw_sft_q,iql": [0.4933, 0.8667],
        },
    },
}
AGGREGATES = ["Mean", "Median", "IQM", "Optimality gap"]


def record(env, algo, seed, score, config_hash="h", status="complete", sha="abc"):
    r = RunRecord(env=env, algo=algo, seed=seed, config={"algo_config": {"steps": 100}}, config_hash=config_hash,
                  status=status)
    r.final = {"normalized_mean": score, "returns": [0.0]} if status == "complete" else {}
    r.dataset = {"sha256": sha, "paper_comparable": False}
    r.curve = [{"step": 50, "normalized_mean": None if score is None else score - 5},
               {"step": 100, "normalized_mean": score}]
    r.error = None if status == "complete" else "Traceback ...\nDivergedError: diverged at step 100: loss = nan"
    return r


def records_of(scores: dict) -> list[RunRecord]:
    return [record(env, algo, seed, s) for (env, algo), runs in scores.items() for seed, s in runs.items()]


def messy_records() -> list[RunRecord]:
    recs = records_of(MESSY)
    recs.append(record("hopper-expert", "iql", 5, float("nan")))  # complete, but its score is NaN
    recs.append(record("hopper-medium-replay", "iw_sft_q", 0, EQUAL[("hopper-medium-replay", "iw_sft_q")][0]))
    recs += [record("walker2d-medium-replay", "iw_sft_q", s, 10.0, config_hash="other") for s in (7, 8)]
    recs.append(record("hopper-medium-replay", "bc", 9, None, status="failed"))
    recs.append(record("hopper-expert", "bc", 9, None, status="diverged"))
    return recs


def check_against_rliable(cells, expected):
    sm = score_matrices(cells)
    assert sm.tasks == TASKS and list(sm.matrices) == ["bc", "iql", "iw_sft_q"]
    for row in aggregate_rows(sm, n_resamples=20000):
        a = row["algo"]
        for i, name in enumerate(AGGREGATES):
            assert row[name] == pytest.approx(expected["aggregates"][a][i], abs=2e-6), (a, name)
            assert abs(row[f"{name}_low"] - expected["intervals"][a][0][i]) <= 1.0, (a, name)
            assert abs(row[f"{name}_high"] - expected["intervals"][a][1][i]) <= 1.0, (a, name)
    poi = improvement_matrix(sm, n_resamples=20000)
    assert len(poi) == 6  # every ordered pair
    for r in poi:
        key = f"{r['algo']},{r['other']}"
        assert r["P"] == pytest.approx(expected["poi"][key], abs=1e-6), key
        assert abs(r["low"] - expected["poi_intervals"][key][0]) <= 0.02, key
        assert abs(r["high"] - expected["poi_intervals"][key][1]) <= 0.02, key
    return sm


def test_equal_seeds_match_rliable():
    check_against_rliable(select_runs(records_of(EQUAL)).cells, RLIABLE["equal"])


def hand_aggregates(per_task: list[list[float]]) -> list[float]:
    """Mean, Median, IQM, optimality gap by hand: per-task means; for the IQM each task's runs repeated to the least
    common multiple of the counts (every task then holds as many scores), then scipy's 25% trimmed mean."""
    from scipy import stats

    means = [np.mean(t) for t in per_task]
    units = math.lcm(*(len(t) for t in per_task))
    repeated = np.concatenate([np.repeat(t, units // len(t)) for t in per_task])
    return [float(np.mean(means)), float(np.median(means)), float(stats.trim_mean(repeated, 0.25)),
            100 - float(np.mean([np.mean(np.minimum(t, 100)) for t in per_task]))]


def hand_poi(x: list[list[float]], y: list[list[float]]) -> float:
    return float(np.mean([np.mean([(a > b) + 0.5 * (a == b) for a in xt for b in yt])
                          for xt, yt in zip(x, y, strict=True)]))


def test_messy_records_use_every_run_and_match_a_hand_computation():
    selection = select_runs(messy_records())
    sm = score_matrices({k: c for k, c in selection.cells.items() if c.n})
    assert sm.tasks == TASKS and sm.compared == ["bc", "iql", "iw_sft_q"] and not sm.apart
    per_task = {a: [list(MESSY[(t, a)].values()) for t in TASKS] for a in sm.compared}
    assert {a: sm.runs(a) for a in sm.compared} == {"bc": 13, "iql": 14, "iw_sft_q": 15}  # every run
    rows = aggregate_rows(sm, n_resamples=2000)
    for row in rows:
        expected = hand_aggregates(per_task[row["algo"]])
        for name, value in zip(AGGREGATES, expected, strict=True):
            assert row[name] == pytest.approx(value, abs=1e-9), (row["algo"], name)
            assert row[f"{name}_low"] <= row[name] <= row[f"{name}_high"]
    iw = next(r for r in rows if r["algo"] == "iw_sft_q")  # its runs are those of the equal set: rliable's numbers
    assert [iw[name] for name in AGGREGATES] == pytest.approx(RLIABLE["equal"]["aggregates"]["iw_sft_q"], abs=2e-6)
    for r in improvement_matrix(sm, n_resamples=2000):
        assert r["P"] == pytest.approx(hand_poi(per_task[r["algo"]], per_task[r["other"]]), abs=1e-12)
        assert r["tasks"] == 3
    assert "antmaze-umaze (BC)" in sm.describe()  # only bc has it: named, not mixed in
    cells = selection.cells
    assert cells[("hopper-expert", "iql")].scoreless == 1 and cells[("hopper-expert", "iql")].n == 5
    assert selection.duplicates == 1 and cells[("hopper-medium-replay", "iw_sft_q")].n == 5
    assert cells[("walker2d-medium-replay", "iw_sft_q")].other_configs == {"other": 2}
    reasons = [why for _, why in selection.left_out]
    assert "status failed: DivergedError: diverged at step 100: loss = nan" in reasons
    assert "status diverged: DivergedError: diverged at step 100: loss = nan" in reasons
    assert sum("no finite final evaluation score" in why for why in reasons) == 1
    assert sum("the cell uses config h (5 runs)" in why for why in reasons) == 2
    pooled = select_runs(messy_records(), mix_configs=True).cells[("walker2d-medium-replay", "iw_sft_q")]
    assert pooled.n == 7 and "2 different configs" in pooled.mixed()


def test_the_iqm_of_unequal_counts_by_hand():
    """Task A: runs 0 and 10; task B: one run, 100. Each task holds 2 units (10 counts once, 100 twice); a quarter
    of the 4 units, 1, is cut at each end: 0 and one 100 go, the IQM is (10 + 100) / 2."""
    m = np.array([[0.0, 100.0], [10.0, np.nan]])
    assert st.aggregate_iqm(m) == pytest.approx(55.0)
    assert st.aggregate_mean(m) == pytest.approx(52.5) and st.aggregate_median(m) == pytest.approx(52.5)
    assert st.probability_of_improvement(m, np.array([[5.0, 100.0]])) == pytest.approx((0.5 + 0.5) / 2)


def test_stratified_resamples_keep_each_tasks_count_and_draw_within_it():
    m = np.array([[1.0, 10.0, 100.0], [2.0, 20.0, np.nan], [3.0, np.nan, np.nan]])
    reps = st.stratified_resamples(m, 4000, np.random.default_rng(0))
    assert (st.task_counts(reps) == [3, 2, 1]).all()
    assert set(np.unique(reps[:, :, 0])) == {1.0, 2.0, 3.0} and set(np.unique(reps[:, :2, 1])) == {10.0, 20.0}
    assert np.isnan(reps[:, 2, 1]).all() and (reps[:, 0, 2] == 100.0).all() and np.isnan(reps[:, 1:, 2]).all()
    assert np.mean(reps[:, :2, 1] == 10.0) == pytest.approx(0.5, abs=0.02)


def test_one_extra_single_task_algorithm_leaves_the_others_aggregates_and_poi_unchanged(tmp_path):
    records = records_of(EQUAL)
    before = score_matrices(select_runs(records).cells)
    after = score_matrices(select_runs(records + [record("hopper-expert", "cql", 0, 95.0)]).cells)
    assert after.tasks == TASKS and after.compared == before.compared and after.apart == ["cql"]
    agg_before, agg_after = aggregate_rows(before, 500), aggregate_rows(after, 500)
    assert agg_after[:3] == agg_before
    cql = agg_after[3]
    assert cql["algo"] == "cql" and not cql["compared"] and cql["tasks"] == 1 and cql["Mean"] == 95.0
    poi_before, poi_after = improvement_matrix(before, 500), improvement_matrix(after, 500)
    assert [r for r in poi_after if "cql" not in (r["algo"], r["other"])] == poi_before
    with_cql = [r for r in poi_after if "cql" in (r["algo"], r["other"])]
    assert len(with_cql) == 6 and all(r["tasks"] == 1 and r["task_set"] == "hopper-expert" for r in with_cql)
    iw_over_cql = next(r for r in with_cql if r["algo"] == "iw_sft_q")
    assert iw_over_cql["P"] == 1.0  # its five hopper-expert runs all beat 95
    assert "CQL (1 task: hopper-expert)" in after.describe()
    for r in records + [record("hopper-expert", "cql", 0, 95.0)]:
        save_record(r, tmp_path / "res")
    build_report([tmp_path / "res"], tmp_path / "rep", n_resamples=200)
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "| iw-SFT(Q) (15 runs) | 3 | 5 |" in md and "| CQL (1 run) | 1 | 1 |" in md
    assert "over their own tasks, not comparable with the rows above" in md
    assert "- over CQL: 1.00 (1 task)" in md


def test_unequal_seeds_use_every_run_and_agree_with_the_tables_average():
    """10 runs on one task, 2 on the other: the aggregate Mean is the table's average row (the mean of the dataset
    means), not the mean of a truncated matrix."""
    runs = {("hopper-medium-replay", "sft"): [50.0 + (s % 3) for s in range(10)],
            ("hopper-medium-replay", "iw_sft_q"): [49.0 + (s % 5) for s in range(10)],
            ("walker2d-medium-replay", "sft"): [50.0, 52.0], ("walker2d-medium-replay", "iw_sft_q"): [48.0, 56.0]}
    recs = [record(e, a, s, v) for (e, a), vs in runs.items() for s, v in enumerate(vs)]
    cells = select_runs(recs).cells
    sm = score_matrices(cells)
    rows = {r["algo"]: r for r in aggregate_rows(sm, 500)}
    _, groups = main_table_rows(cells)
    average = dict(groups[0][1])["average (2 datasets)"]
    for a in ("sft", "iw_sft_q"):
        assert rows[a]["runs"] == 12 and rows[a]["runs_per_task_min"] == 2 and rows[a]["runs_per_task_max"] == 10
        assert rows[a]["Mean"] == pytest.approx(average[a].mean)
        assert rows[a]["Mean"] == pytest.approx(np.mean([np.mean(runs[(e, a)]) for e in TASKS[:2]]))


def test_no_shared_task_writes_no_empty_file_and_no_dead_link(tmp_path):
    for r in [record("hopper-medium-replay", "bc", s, 20.0 + s) for s in range(3)] + \
             [record("walker2d-medium-replay", "iql", s, 70.0 + s) for s in range(3)]:
        save_record(r, tmp_path / "res")
    out = tmp_path / "rep"
    (out).mkdir()
    (out / "probability_of_improvement.csv").write_text("algo,other\n")  # from an older report
    build_report([tmp_path / "res"], out, n_resamples=100)
    assert not [p.name for p in out.iterdir() if p.stat().st_size == 0]
    assert not (out / "probability_of_improvement.csv").exists() and not (out / "paper_comparison.csv").exists()
    md = (out / "report.md").read_text()
    assert "No probability of improvement: no two algorithms share a task." in md
    links = re.findall(r"\]\(([^)]+)\)", md)
    assert links and all((out / link).exists() for link in links), [x for x in links if not (out / x).exists()]
    assert "apart and not comparable" in md


def test_a_nan_score_never_wins_a_row_and_is_counted_in_the_footnote():
    recs = records_of({("hopper-medium-replay", "bc"): {0: 10.0, 1: 12.0},
                        ("hopper-medium-replay", "iql"): {0: 50.0, 1: 52.0}})
    recs += [record("hopper-medium-replay", "bc", 2, float("nan")), record("hopper-medium-replay", "bc", 3, math.inf)]
    algos, groups = main_table_rows(select_runs(recs).cells)
    row = dict(groups[0][1])["hopper-medium-replay"]
    assert row["iql"].bold and not row["bc"].bold and row["bc"].n == 2 and row["bc"].scoreless == 2
    from bench.reports.report import render_main_markdown

    md = render_main_markdown(algos, groups, 0.05, False)
    assert "nan" not in md.lower() and "11.0 ± 1.4 ‡" in md
    assert "‡: runs without a finite score, excluded: hopper-medium-replay / BC: 2." in md


def test_holm_and_welch_with_nan_and_exact_ties():
    adjusted = st.holm_adjust([float("nan"), 0.01, 0.04])
    assert math.isnan(adjusted[0]) and adjusted[1:].tolist() == [0.02, 0.04]  # 2 tests, not 3; NaN stays NaN
    tied = {"a": [1.0, 1.0, 1.0], "b": [1.0, 1.0, 1.0], "c": [0.0, 0.1, 0.2]}
    for holm in (False, True):
        bold, p = st.bold_set(tied, holm=holm)
        assert bold == {"a", "b"} and math.isnan(p["b"])  # an exact tie keeps its bold, with or without Holm


def test_a_single_seed_cell_has_no_std_anywhere(tmp_path):
    r = record("hopper-medium-replay", "iw_sft_q", 0, 120.0)
    r.dataset["paper_comparable"] = True
    save_record(r, tmp_path / "res")
    (row,) = paper_comparison_rows(select_runs([r]).cells)
    assert row["ours_std"] is None and row["paper_in_ci"] is None
    build_report([tmp_path / "res"], tmp_path / "rep", n_resamples=100)
    for name in ("report.md", "main_table.md", "main_table.tex"):
        text = (tmp_path / "rep" / name).read_text()
        assert not re.search(r"\bnan\b", text.lower()), name
    assert "| 120.0 | 85.0 ± 4.1 | n/a (n < 2) |" in (tmp_path / "rep" / "report.md").read_text()


def test_latex_escape_escapes_each_character_once():
    assert latex_escape("a\\b") == r"a\textbackslash{}b"
    assert latex_escape("50%_x{y}^~&#$") == r"50\%\_x\{y\}\textasciicircum{}\textasciitilde{}\&\#\$"


def test_best_score_family_averages_raw_scores_and_the_poi_figure(tmp_path):
    for r in records_of(EQUAL):
        save_record(r, tmp_path / "res")
    save_record(record("hopper-medium-replay", "bc", 0, 18.2), tmp_path / "res" / "copy")  # a copied record
    written = build_report([tmp_path / "res"], tmp_path / "best", n_resamples=200, score="best")
    md = (tmp_path / "best" / "report.md").read_text()
    assert "score: the best evaluation during training" in md and "1 duplicate records" in md
    table = (tmp_path / "best" / "main_table.md").read_text()
    assert "Normalised score of the best evaluation during training" in table
    _, groups = main_table_rows(written["selection"].cells)
    medium_replay = dict(groups[0][1])
    assert medium_replay["average (2 datasets)"]["bc"].mean == pytest.approx(
        np.mean([np.mean(list(EQUAL[(e, "bc")].values())) for e in TASKS[:2]]))
    raw = (tmp_path / "best" / "scores.csv").read_text().splitlines()
    assert len(raw) == 1 + 46 and sum("duplicate of another record" in line for line in raw) == 1
    for name in ("probability_of_improvement.png", "probability_of_improvement.pdf", "performance_profiles.png"):
        assert (tmp_path / "best" / name).stat().st_size > 0
