"""`bench report` on synthetic records with known values."""

import shutil
import subprocess

import numpy as np
import pytest
from scipy import stats

from bench.reports import statistics as st
from bench.reports.report import build_report, collect_cells, main_table_rows, paper_comparison_rows
from bench.results.store import RunRecord, save_record


def record(env, algo, seed, score, *, comparable=False, config_hash="h", steps=100):
    r = RunRecord(env=env, algo=algo, seed=seed, config={"algo_config": {"steps": steps}}, config_hash=config_hash,
                  status="complete")
    r.final = {"normalized_mean": float(score), "returns": [score]}
    r.dataset = {"sha256": "abc", "paper_comparable": comparable}
    r.curve = [{"step": s, "normalized_mean": score * s / steps} for s in (steps // 2, steps)]
    return r


def write(tmp_path, rows, **kw):
    for env, algo, scores in rows:
        for seed, s in enumerate(scores):
            save_record(record(env, algo, seed, s, **kw), tmp_path)


def test_welch_pvalues_match_scipy_and_the_bold_set():
    cells = {"a": [10, 11, 12], "b": [10.5, 11.5, 12.5], "c": [0, 1, 2], "d": [50.0]}
    bold, p = st.bold_set(cells)
    assert bold == {"a", "b"}  # b is best; a is tied with it; c clearly loses; d has 1 run: never bold
    assert p["a"] == pytest.approx(stats.ttest_ind([10, 11, 12], [10.5, 11.5, 12.5], equal_var=False,
                                                   alternative="less").pvalue)
    assert p["c"] < 0.05 and "d" not in p


def test_holm_by_hand_and_its_effect_on_bold():
    np.testing.assert_allclose(st.holm_adjust([0.01, 0.04, 0.03]), [0.03, 0.06, 0.06])
    best = np.array([10.0, 11, 12, 13, 14])
    near = best - 2.09  # one-sided Welch p = 0.035 against best
    cells = {"best": best, "x": near, "y": near + 1e-9}
    raw_p = stats.ttest_ind(near, best, equal_var=False, alternative="less").pvalue
    assert 0.025 < raw_p < 0.05
    assert st.bold_set(cells)[0] == {"best"}
    assert st.bold_set(cells, holm=True)[0] == {"best", "x", "y"}  # 2 comparisons: adjusted p ~ 0.07


def test_iqm_matches_scipy_trim_mean():
    x = np.random.default_rng(0).normal(size=(7, 5))
    assert st.aggregate_iqm(x) == pytest.approx(stats.trim_mean(x.ravel(), 0.25))


def test_stratified_bootstrap_interval_contains_the_truth():
    rng = np.random.default_rng(1)
    tasks = rng.normal(50, 10, (10, 10))  # 10 runs x 10 tasks
    point, lo, hi = st.aggregate_interval(tasks, st.aggregate_mean, n_resamples=1000)
    assert lo < 50 < hi and lo < point < hi and hi - lo < 10
    x, y = rng.normal(1, 1, (10, 8)), rng.normal(0, 1, (10, 8))
    p, lo, hi = st.probability_of_improvement_interval(x, y, n_resamples=500)
    truth = stats.norm.cdf(1 / np.sqrt(2))  # P(X > Y) for X ~ N(1, 1), Y ~ N(0, 1)
    assert lo < truth < hi
    assert st.probability_of_improvement(np.array([[1.0], [2]]), np.array([[2.0], [0]])) == pytest.approx(
        (0 + 1 + 0.5 + 1) / 4)
    # the Mann-Whitney U statistic over n m, as scipy computes it (ties count one half)
    a, b = rng.integers(0, 4, (6, 1)).astype(float), rng.integers(0, 4, (5, 1)).astype(float)
    u = stats.mannwhitneyu(a[:, 0], b[:, 0], alternative="greater").statistic
    assert st.probability_of_improvement(a, b) == pytest.approx(u / 30)


def test_table_means_stds_and_groups(tmp_path):
    write(tmp_path, [("hopper-medium-replay", "bc", [1, 2, 3]), ("hopper-medium-replay", "iw_sft_q", [5, 6, 7]),
                     ("hopper-expert", "bc", [100, 102, 104]), ("minari:bench/x/y-v0", "awac", [3, 3.5])])
    from bench.results.store import load_records

    algos, groups = main_table_rows(collect_cells(load_records([tmp_path])[0]))
    assert algos == ["bc", "awac", "iw_sft_q"]  # the paper's column order
    assert [f for f, _ in groups] == ["Medium Replay", "Expert", "Other"]
    hmr = dict(groups[0][1])["hopper-medium-replay"]
    assert hmr["bc"].mean == pytest.approx(2.0) and hmr["bc"].std == pytest.approx(1.0)
    assert hmr["iw_sft_q"].bold and not hmr["bc"].bold


def test_paper_values_go_to_the_right_cells_and_never_to_generated_data(tmp_path):
    write(tmp_path, [("hopper-medium-replay", "iw_sft_q", [84, 85, 86]), ("walker2d-expert", "bc", [90, 91])],
          comparable=True)
    write(tmp_path / "gen", [("minari:bench/hopper/medium-replay-v0", "iw_sft_q", [10, 11])])
    from bench.results.store import load_records

    rows = paper_comparison_rows(collect_cells(load_records([tmp_path])[0]))
    by_key = {(r["dataset"], r["algo"]): r for r in rows}
    assert set(by_key) == {("hopper-medium-replay", "iw_sft_q"), ("walker2d-expert", "bc")}
    assert by_key[("hopper-medium-replay", "iw_sft_q")]["paper_mean"] == 85.0
    assert by_key[("hopper-medium-replay", "iw_sft_q")]["paper_std"] == 4.1
    assert by_key[("hopper-medium-replay", "iw_sft_q")]["paper_in_ci"] is True
    assert by_key[("walker2d-expert", "bc")]["paper_mean"] == 107.5
    assert by_key[("walker2d-expert", "bc")]["paper_in_ci"] is False


def test_full_report_writes_everything_flags_mixed_cells_and_compiles(tmp_path):
    res = tmp_path / "results"
    write(res, [("hopper-medium-replay", a, s) for a, s in
                (("bc", [20, 22, 21]), ("sft", [70, 75, 72]), ("iw_sft_q", [80, 84, 83]), ("iql", [90, 60, 88]))])
    save_record(record("hopper-medium-replay", "bc", 7, 30.0, config_hash="other"), res)  # mixed configs
    (res / "broken.json").write_text("{not json")
    written = build_report([res], tmp_path / "rep", n_resamples=200)
    out = tmp_path / "rep"
    assert [p.name for p, _ in written["unreadable"]] == ["broken.json"]
    md = (out / "report.md").read_text()
    assert "hopper-medium-replay / bc: uses config h (3 runs); left out: other (1 runs)" in md
    assert "broken.json" in md
    table = (out / "main_table.md").read_text()
    assert "**81.0 ± 2.1**" in table or "**82.3 ± 2.1**" in table
    for name in ("main_table.tex", "aggregate_table.tex", "main_table.csv", "aggregate.csv", "scores.csv",
                 "learning_curves.png", "aggregate_intervals.pdf", "performance_profiles.png",
                 "probability_of_improvement.png", "probability_of_improvement.pdf"):
        assert (out / name).stat().st_size > 0
    from PIL import Image

    for png in out.glob("*.png"):
        with Image.open(png) as im:
            im.verify()
    if shutil.which("pdflatex") is None or shutil.which("pdftotext") is None:
        pytest.skip("pdflatex or pdftotext not installed (apt install texlive-latex-recommended poppler-utils): "
                    "LaTeX compile not checked")
    proc = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "tables.tex"], cwd=out,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:]
    text = subprocess.run(["pdftotext", "tables.pdf", "-"], cwd=out, capture_output=True, text=True,
                          check=True).stdout
    flat = " ".join(text.split())  # the caption's lines joined
    for phrase in ("t-test, p < 0.05", "or in config with --mix-configs", "run × task",
                   "mean ± sample std", "P(iw-SFT(Q) > Y)", "hopper-medium-replay"):
        assert phrase in flat, (phrase, flat[:3000])
    assert "¡" not in flat and "¿" not in flat and "–mix-configs" not in flat
