"""`bench report`: run records -> the paper's tables (LaTeX, Markdown, CSV), aggregate statistics, figures.

Plain data first (``collect_cells``, ``main_table_rows``, ``aggregate_rows``, ``paper_comparison_rows``), renderers
and figures on top, ``build_report`` to write everything with a ``report.md`` that links it.
"""

from __future__ import annotations

import csv
import io
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench.algorithms import DISPLAY_NAMES
from bench.reports import statistics as st
from bench.reports.llm_table import load_llm_records, write_llm_tables
from bench.results.store import RunRecord, load_records

ALGO_ORDER = ["bc", "bc_10", "bc_5", "awac", "td3_bc", "cql", "iql", "sft", "sft_q", "iw_sft_q"]
FAMILY_ORDER = ["Medium Replay", "Expert", "Ant-maze", "Kitchen"]
HEADLINE = "iw_sft_q"  # the algorithm whose probability of improvement over the others is reported
PAPER_SCORES = Path(__file__).with_name("paper_scores.csv")
_VERSION_KEYS = ("sft-rl-bench", "torch", "d3rlpy", "gymnasium", "mujoco", "minari")


@dataclass
class Cell:
    """All complete runs of one (dataset, algorithm)."""

    env: str
    algo: str
    scores: list[float] = field(default_factory=list)  # final normalised score of each run
    seeds: list[int] = field(default_factory=list)
    records: list[RunRecord] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.scores)

    @property
    def mean(self) -> float:
        return float(np.mean(self.scores))

    @property
    def std(self) -> float:
        return float(np.std(self.scores, ddof=1)) if self.n >= 2 else float("nan")

    def mixed(self) -> list[str]:
        """What differs between the runs of this cell and should not be averaged silently."""
        problems = []
        for label, values in (
            ("config", {r.config_hash for r in self.records}),
            ("dataset", {r.dataset.get("sha256") for r in self.records}),
            ("versions", {tuple(r.versions.get(k) for k in _VERSION_KEYS) for r in self.records}),
        ):
            if len(values) > 1:
                problems.append(f"{len(values)} different {label}s")
        if len(set(self.seeds)) < len(self.seeds):
            problems.append("repeated seeds")
        return problems


def family_of(env: str) -> str:
    from bench.specs import get_spec

    try:
        return get_spec(env).family
    except KeyError:
        return "Other"


def collect_cells(records: list[RunRecord]) -> dict[tuple[str, str], Cell]:
    cells: dict[tuple[str, str], Cell] = {}
    for r in records:
        score = r.final.get("normalized_mean")
        if r.status != "complete" or score is None:
            continue
        cell = cells.setdefault((r.env, r.algo), Cell(r.env, r.algo))
        cell.scores.append(float(score))
        cell.seeds.append(r.seed)
        cell.records.append(r)
    return cells


def ordered_algos(algos) -> list[str]:
    present = set(algos)
    return [a for a in ALGO_ORDER if a in present] + sorted(present - set(ALGO_ORDER))


def ordered_envs(envs) -> list[tuple[str, list[str]]]:
    """[(family, [datasets...])] in the paper's row order."""
    groups: dict[str, list[str]] = defaultdict(list)
    for env in sorted(set(envs)):
        groups[family_of(env)].append(env)
    families = [f for f in FAMILY_ORDER if f in groups] + sorted(set(groups) - set(FAMILY_ORDER))
    return [(f, groups[f]) for f in families]


# -- main table ---------------------------------------------------------------------------------------------------
@dataclass
class TableCell:
    mean: float | None
    std: float | None
    n: int
    bold: bool = False
    p_vs_best: float | None = None
    flags: list[str] = field(default_factory=list)


def main_table_rows(cells: dict[tuple[str, str], Cell], alpha: float = 0.05,
                    holm: bool = False) -> tuple[list[str], list[tuple[str, list[tuple[str, dict]]]]]:
    """(algorithms, [(family, [(dataset, {algo: TableCell})])]) with the bold set decided per dataset."""
    algos = ordered_algos(a for _, a in cells)
    groups = []
    for family, envs in ordered_envs(e for e, _ in cells):
        rows = []
        for env in envs:
            row_cells = {a: cells[(env, a)] for a in algos if (env, a) in cells}
            bold, pvals = st.bold_set({a: c.scores for a, c in row_cells.items()}, alpha, holm)
            row = {}
            for a, c in row_cells.items():
                row[a] = TableCell(c.mean, None if c.n < 2 else c.std, c.n, a in bold, pvals.get(a), c.mixed())
            rows.append((env, row))
        groups.append((family, rows))
    return algos, groups


def _fmt(c: TableCell | None, common_n: int | None, bold_fmt, mark: str) -> str:
    if c is None:
        return "–"
    text = f"{c.mean:.1f}" + (f" ± {c.std:.1f}" if c.std is not None else "")
    if c.bold:
        text = bold_fmt(text)
    if c.n != common_n:
        text += f" (n={c.n})"
    if c.n < 2:
        text += "*"
    if c.flags:
        text += mark
    return text


def _common_n(groups) -> int | None:
    ns = {c.n for _, rows in groups for _, row in rows for c in row.values()}
    return ns.pop() if len(ns) == 1 else None


def latex_escape(text: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("#", r"\#"), ("_", r"\_"),
                 ("$", r"\$"), ("{", r"\{"), ("}", r"\}"), ("~", r"\textasciitilde{}"), ("^", r"\^{}")):
        text = text.replace(a, b)
    return text


def render_main_latex(algos, groups, alpha: float, holm: bool) -> str:
    n = _common_n(groups)
    test = f"one-sided Welch's t-test, $p < {alpha}$" + (", Holm-corrected" if holm else "")
    seeds = f"{n} seeds" if n else "seeds per cell as marked (n=...)"
    out = io.StringIO()
    out.write("\\begin{table}[t]\n\\centering\n\\small\n")
    out.write(f"\\caption{{Final normalised score, mean $\\pm$ sample std over {seeds}. Bold: the best mean and "
              f"every entry not significantly worse ({test}); *: fewer than 2 runs, never bold. "
              "$^\\dagger$: runs that differ in config, data or versions (see report.md).}\n\\label{tab:main}\n")
    out.write("\\begin{tabular}{l" + "c" * len(algos) + "}\n\\toprule\n")
    out.write("Dataset & " + " & ".join(latex_escape(DISPLAY_NAMES.get(a, a)) for a in algos) + " \\\\\n")
    for family, rows in groups:
        out.write(f"\\midrule\n\\multicolumn{{{len(algos) + 1}}}{{l}}{{\\textit{{{latex_escape(family)}}}}} \\\\\n")
        for env, row in rows:
            vals = [_fmt(row.get(a), n, lambda t: f"\\textbf{{{t}}}", "$^\\dagger$") for a in algos]
            vals = [v.replace("±", "$\\pm$") for v in vals]
            out.write(latex_escape(env) + " & " + " & ".join(vals) + " \\\\\n")
    out.write("\\bottomrule\n\\end{tabular}\n\\end{table}\n")
    return out.getvalue()


def render_main_markdown(algos, groups, alpha: float, holm: bool) -> str:
    n = _common_n(groups)
    lines = ["| Dataset | " + " | ".join(DISPLAY_NAMES.get(a, a) for a in algos) + " |",
             "|---|" + "---|" * len(algos)]
    for family, rows in groups:
        lines.append(f"| *{family}* |" + " |" * len(algos))
        for env, row in rows:
            lines.append(f"| {env} | " + " | ".join(_fmt(row.get(a), n, lambda t: f"**{t}**", " †")
                                                  for a in algos) + " |")
    test = f"one-sided Welch's t-test, p < {alpha}" + (", Holm-corrected" if holm else "")
    lines.append("")
    lines.append(f"Final normalised score, mean ± sample std over {f'{n} seeds' if n else 'n seeds per cell'}. "
                 f"Bold: best mean and every entry not significantly worse ({test}); *: fewer than 2 runs, never bold. "
                 "†: runs that differ in config, data or versions (listed in report.md).")
    return "\n".join(lines) + "\n"


def main_table_csv(algos, groups) -> str:
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(["family", "dataset", "algo", "n", "mean", "std", "bold", "p_vs_best", "flags"])
    for family, rows in groups:
        for env, row in rows:
            for a in algos:
                if (c := row.get(a)) is not None:
                    w.writerow([family, env, a, c.n, c.mean, "" if c.std is None else c.std, c.bold,
                                "" if c.p_vs_best is None else c.p_vs_best, "; ".join(c.flags)])
    return out.getvalue()


# -- aggregates ---------------------------------------------------------------------------------------------------
def aggregate_rows(cells: dict[tuple[str, str], Cell], n_resamples: int = 2000, seed: int = 0) -> list[dict]:
    """Per algorithm: mean, median, IQM over its datasets with stratified-bootstrap 95% intervals."""
    rows = []
    for a in ordered_algos(al for _, al in cells):
        by_task = [c.scores for (e, al), c in sorted(cells.items()) if al == a]
        row = {"algo": a, "tasks": len(by_task), "runs": sum(map(len, by_task))}
        for name, fn in st.AGGREGATES.items():
            point, lo, hi = st.stratified_interval(by_task, fn, n_resamples=n_resamples, seed=seed)
            row.update({name: point, f"{name}_low": lo, f"{name}_high": hi})
        rows.append(row)
    return rows


def improvement_rows(cells: dict[tuple[str, str], Cell], headline: str = HEADLINE, n_resamples: int = 2000,
                     seed: int = 0) -> list[dict]:
    """P(headline > other) averaged over the datasets both ran on, with a 95% interval."""
    rows = []
    for other in ordered_algos(al for _, al in cells):
        if other == headline:
            continue
        envs = sorted(e for (e, al) in cells if al == headline and (e, other) in cells)
        if not envs:
            continue
        p, lo, hi = st.probability_of_improvement_interval(
            [cells[(e, headline)].scores for e in envs], [cells[(e, other)].scores for e in envs],
            n_resamples=n_resamples, seed=seed)
        rows.append({"algo": headline, "other": other, "tasks": len(envs), "P": p, "low": lo, "high": hi})
    return rows


def _ci(point: float, lo: float, hi: float) -> str:
    return f"{point:.1f} [{lo:.1f}, {hi:.1f}]" if not math.isnan(lo) else f"{point:.1f}"


def render_aggregate_latex(agg: list[dict], poi: list[dict]) -> str:
    out = io.StringIO()
    out.write("\\begin{table}[t]\n\\centering\n\\small\n\\caption{Aggregate normalised scores over datasets: "
              "point estimate [95\\% stratified-bootstrap interval]. IQM: interquartile mean of all runs.}\n"
              "\\label{tab:aggregate}\n\\begin{tabular}{lcccc}\n\\toprule\n"
              "Algorithm & Tasks & Mean & Median & IQM \\\\\n\\midrule\n")
    for r in agg:
        cis = [_ci(r[k], r[f"{k}_low"], r[f"{k}_high"]) for k in ("Mean", "Median", "IQM")]
        out.write(f"{latex_escape(DISPLAY_NAMES.get(r['algo'], r['algo']))} & {r['tasks']} & "
                  + " & ".join(cis) + " \\\\\n")
    if poi:
        out.write("\\midrule\n\\multicolumn{5}{l}{\\textit{Probability of improvement "
                  f"P({latex_escape(DISPLAY_NAMES.get(poi[0]['algo'], poi[0]['algo']))} $>$ Y)}}}} \\\\\n")
        for r in poi:
            ci = f"{r['P']:.2f} [{r['low']:.2f}, {r['high']:.2f}]" if not math.isnan(r["low"]) else f"{r['P']:.2f}"
            out.write(f"Y = {latex_escape(DISPLAY_NAMES.get(r['other'], r['other']))} & {r['tasks']} & "
                      f"\\multicolumn{{3}}{{c}}{{{ci}}} \\\\\n")
    out.write("\\bottomrule\n\\end{tabular}\n\\end{table}\n")
    return out.getvalue()


# -- comparison with the paper ------------------------------------------------------------------------------------
def load_paper_scores() -> dict[tuple[str, str], tuple[float, float | None]]:
    lines = [ln for ln in PAPER_SCORES.read_text().splitlines() if not ln.startswith("#")]
    return {(r["dataset"], r["algo"]): (float(r["mean"]), float(r["std"]) if r["std"] else None)
            for r in csv.DictReader(lines)}


def paper_comparison_rows(cells: dict[tuple[str, str], Cell]) -> list[dict]:
    """Our mean ± std beside the paper's, for runs on exactly the paper's data (never generated look-alikes)."""
    paper = load_paper_scores()
    rows = []
    for (env, algo), cell in sorted(cells.items()):
        if (env, algo) not in paper or not all(r.dataset.get("paper_comparable") for r in cell.records):
            continue
        p_mean, p_std = paper[(env, algo)]
        lo, hi = st.mean_confidence_interval(cell.scores) if cell.n >= 2 else (float("nan"), float("nan"))
        rows.append({"dataset": env, "algo": algo, "n": cell.n, "ours_mean": cell.mean,
                     "ours_std": cell.std, "ci_low": lo, "ci_high": hi, "paper_mean": p_mean, "paper_std": p_std,
                     "paper_in_ci": None if cell.n < 2 else bool(lo <= p_mean <= hi)})
    return rows


# -- figures ------------------------------------------------------------------------------------------------------
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="paper")
    return plt, sns


def _save(fig, out: Path, stem: str) -> list[str]:
    names = []
    for ext in ("pdf", "png"):
        fig.savefig(out / f"{stem}.{ext}", dpi=150, bbox_inches="tight")
        names.append(f"{stem}.{ext}")
    return names


def plot_learning_curves(cells: dict[tuple[str, str], Cell], out: Path) -> list[str]:
    import pandas as pd

    rows = [{"dataset": e, "algorithm": DISPLAY_NAMES.get(a, a), "seed": r.seed, "step": p["step"],
             "score": p["normalized_mean"]}
            for (e, a), c in cells.items() for r in c.records for p in r.curve if p.get("normalized_mean") is not None]
    if not rows:
        return []
    plt, sns = _plt()
    df = pd.DataFrame(rows)
    envs = sorted(df.dataset.unique())
    cols = min(3, len(envs))
    fig, axes = plt.subplots(math.ceil(len(envs) / cols), cols, figsize=(4 * cols, 3 * math.ceil(len(envs) / cols)),
                             squeeze=False)
    order = [DISPLAY_NAMES.get(a, a) for a in ordered_algos(a for _, a in cells)]
    palette = dict(zip(order, sns.color_palette("tab10", len(order)), strict=True))
    for ax, env in zip(axes.flat, envs, strict=False):
        sub = df[df.dataset == env]
        sns.lineplot(data=sub, x="step", y="score", hue="algorithm", errorbar="sd", ax=ax, palette=palette,
                     hue_order=[a for a in order if a in set(sub.algorithm)])
        ax.set(title=env, xlabel="gradient step", ylabel="normalised score")
        ax.legend(fontsize=6)
    for ax in list(axes.flat)[len(envs):]:
        ax.set_visible(False)
    fig.tight_layout()
    names = _save(fig, out, "learning_curves")
    plt.close(fig)
    return names


def plot_aggregates(agg: list[dict], out: Path) -> list[str]:
    if not agg:
        return []
    plt, _ = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(10, 0.45 * len(agg) + 1.2), sharey=True)
    labels = [DISPLAY_NAMES.get(r["algo"], r["algo"]) for r in agg]
    for ax, name in zip(axes, ("Mean", "Median", "IQM"), strict=True):
        for i, r in enumerate(agg):
            lo, hi = r[f"{name}_low"], r[f"{name}_high"]
            if not math.isnan(lo):
                ax.plot([lo, hi], [i, i], lw=6, alpha=0.5, solid_capstyle="butt")
            ax.plot([r[name]], [i], "k|", ms=12)
        ax.set(title=name, xlabel="normalised score", yticks=range(len(agg)), yticklabels=labels)
    fig.tight_layout()
    names = _save(fig, out, "aggregate_intervals")
    plt.close(fig)
    return names


def plot_performance_profiles(cells: dict[tuple[str, str], Cell], out: Path) -> list[str]:
    if not cells:
        return []
    plt, _ = _plt()
    all_scores = np.concatenate([c.scores for c in cells.values()])
    taus = np.linspace(min(0.0, all_scores.min()), max(100.0, all_scores.max()), 201)
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    for a in ordered_algos(al for _, al in cells):
        scores = np.concatenate([c.scores for (e, al), c in cells.items() if al == a])
        ax.plot(taus, st.performance_profile(scores, taus), label=DISPLAY_NAMES.get(a, a))
    ax.set(xlabel=r"normalised score $\tau$", ylabel=r"fraction of runs with score $> \tau$")
    ax.legend(fontsize=6)
    fig.tight_layout()
    names = _save(fig, out, "performance_profiles")
    plt.close(fig)
    return names


# -- everything ---------------------------------------------------------------------------------------------------
STANDALONE = """\\documentclass{article}
\\usepackage[utf8]{inputenc}
\\usepackage{booktabs}
\\usepackage[margin=1.5cm,landscape]{geometry}
\\begin{document}
\\input{main_table.tex}
\\input{aggregate_table.tex}
\\end{document}
"""


def build_report(paths: list[Path], out: Path, alpha: float = 0.05, holm: bool = False,
                 n_resamples: int = 2000) -> dict:
    """Read every record under ``paths`` and write the report to ``out``; returns what was written."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    records, unreadable = load_records(paths)
    cells = collect_cells(records)
    llm_records = load_llm_records(paths)
    if not cells and not llm_records:
        raise ValueError(f"no complete run records under {', '.join(map(str, paths))} "
                         f"({len(records)} records read, {len(unreadable)} unreadable)")
    llm_md = write_llm_tables(llm_records, out) if llm_records else None
    if not cells:
        (out / "report.md").write_text("# Results\n" + _llm_section(llm_md))
        return {"records": len(llm_records), "unreadable": unreadable, "cells": 0, "figures": [], "out": out}
    algos, groups = main_table_rows(cells, alpha, holm)
    (out / "main_table.tex").write_text(render_main_latex(algos, groups, alpha, holm))
    (out / "main_table.md").write_text(render_main_markdown(algos, groups, alpha, holm))
    (out / "main_table.csv").write_text(main_table_csv(algos, groups))
    agg = aggregate_rows(cells, n_resamples)
    poi = improvement_rows(cells, n_resamples=n_resamples)
    (out / "aggregate_table.tex").write_text(render_aggregate_latex(agg, poi))
    _write_csv(out / "aggregate.csv", agg)
    _write_csv(out / "probability_of_improvement.csv", poi)
    comparison = paper_comparison_rows(cells)
    _write_csv(out / "paper_comparison.csv", comparison)
    (out / "tables.tex").write_text(STANDALONE)
    figures = plot_learning_curves(cells, out) + plot_aggregates(agg, out) + plot_performance_profiles(cells, out)
    (out / "report.md").write_text(_report_markdown(records, unreadable, cells, algos, groups, alpha, holm, agg, poi,
                                                    comparison, figures, n_resamples)
                                   + (_llm_section(llm_md) if llm_md else ""))
    return {"records": len(records) + len(llm_records), "unreadable": unreadable, "cells": len(cells),
            "figures": figures, "out": out}


def _llm_section(table_md: str) -> str:
    return ("\n## Reasoning (LLM)\n\n" + table_md + "\nAccuracy (%), greedy decoding, 95% Wilson interval and items "
            "per cell; rows marked (paper) are the paper's Table 1. Files: [llm_table.tex](llm_table.tex), "
            "[llm_table.md](llm_table.md), [llm_table.csv](llm_table.csv).\n")


def _write_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        if rows:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)


def _report_markdown(records, unreadable, cells, algos, groups, alpha, holm, agg, poi, comparison, figures,
                     n_resamples) -> str:
    lines = ["# Results", "", f"{len(records)} run records read; {sum(c.n for c in cells.values())} complete runs "
             f"in {len(cells)} (dataset, algorithm) cells.", "", "## Main table", "",
             render_main_markdown(algos, groups, alpha, holm),
             "Files: [main_table.tex](main_table.tex) (booktabs; compile [tables.tex](tables.tex)), "
             "[main_table.md](main_table.md), [main_table.csv](main_table.csv).", ""]
    flagged = [(k, c.mixed()) for k, c in sorted(cells.items()) if c.mixed()]
    if flagged:
        lines += ["### Flagged cells (†)", ""] + [f"- {e} / {a}: {', '.join(p)}" for (e, a), p in flagged] + [""]
    lines += ["## Aggregate statistics", "", "| Algorithm | Tasks | Runs | Mean | Median | IQM |",
              "|---|---|---|---|---|---|"]
    for r in agg:
        lines.append(f"| {DISPLAY_NAMES.get(r['algo'], r['algo'])} | {r['tasks']} | {r['runs']} | "
                     + " | ".join(_ci(r[k], r[f"{k}_low"], r[f"{k}_high"]) for k in ("Mean", "Median", "IQM")) + " |")
    if poi:
        lines += ["", f"Probability of improvement of {DISPLAY_NAMES.get(HEADLINE)} (95% interval):", ""]
        lines += [f"- over {DISPLAY_NAMES.get(r['other'], r['other'])} on {r['tasks']} datasets: "
                  + (f"{r['P']:.2f} [{r['low']:.2f}, {r['high']:.2f}]" if not math.isnan(r["low"]) else f"{r['P']:.2f}")
                  for r in poi]
    lines += ["", "Intervals: 95% percentile intervals of a stratified bootstrap (scipy.stats.bootstrap, "
              f"{n_resamples} resamples). Files: [aggregate_table.tex](aggregate_table.tex), "
              "[aggregate.csv](aggregate.csv), "
              "[probability_of_improvement.csv](probability_of_improvement.csv).", "",
              "## Comparison with the paper", ""]
    if comparison:
        lines += ["| Dataset | Algorithm | n | Ours | Paper | Paper in our 95% CI |", "|---|---|---|---|---|---|"]
        for r in comparison:
            paper = f"{r['paper_mean']:.1f}" + (f" ± {r['paper_std']:.1f}" if r["paper_std"] is not None else "")
            inside = {None: "n/a (n < 2)", True: "yes", False: "no"}[r["paper_in_ci"]]
            lines.append(f"| {r['dataset']} | {DISPLAY_NAMES.get(r['algo'], r['algo'])} | {r['n']} | "
                         f"{r['ours_mean']:.1f} ± {r['ours_std']:.1f} | {paper} | {inside} |")
    else:
        lines.append("No records on the paper's datasets (generated datasets are never compared with the paper).")
    lines += ["", "## Figures", ""] + [f"- [{f}]({f})" for f in figures if f.endswith(".png")]
    lines += ["", "## Provenance", ""]
    for (e, a), c in sorted(cells.items()):
        steps = sorted({str(r.config.get("algo_config", {}).get("steps")) for r in c.records})
        versions = sorted({", ".join(f"{k} {r.versions.get(k)}" for k in _VERSION_KEYS) for r in c.records})
        lines.append(f"- {e} / {a}: seeds {sorted(c.seeds)}; steps {', '.join(steps)}; {' | '.join(versions)}")
    failed = [r for r in records if r.status != "complete"]
    if failed or unreadable:
        lines += ["", "## Not included", ""]
        lines += [f"- {r.env} / {r.algo} / seed {r.seed}: status {r.status}" for r in failed]
        lines += [f"- {p}: unreadable ({why})" for p, why in unreadable]
    return "\n".join(lines) + "\n"
