"""`bench report`: run records -> the paper's tables (LaTeX, Markdown, CSV), aggregate statistics, figures.

Plain data first (``select_runs``, ``main_table_rows``, ``score_matrices``, ``aggregate_rows``, ``improvement_matrix``,
``paper_comparison_rows``), renderers and figures on top, ``build_report`` to write everything with a ``report.md``
that links it. Aggregates follow rliable's definitions (``statistics``).
"""

from __future__ import annotations

import csv
import io
import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench.algorithms import ALGORITHMS, DISPLAY_NAMES
from bench.reports import statistics as st
from bench.reports.latex import latex_escape
from bench.reports.llm_table import load_llm_records, write_llm_tables
from bench.results.store import RunRecord, load_records
from bench.specs import REPORT_FAMILY_ORDER, get_spec

ALGO_ORDER = list(ALGORITHMS)  # the registry's table order (Algorithm.order)
HEADLINE = "iw_sft_q"  # the algorithm whose probability of improvement over the others is reported
PAPER_SCORES = Path(__file__).with_name("paper_scores.csv")
_VERSION_KEYS = ("sft-rl-bench", "torch", "d3rlpy", "gymnasium", "mujoco", "minari")


SCORES = {"final": "final evaluation", "best": "best evaluation during training"}


@dataclass
class Cell:
    """The runs of one (dataset, algorithm) that the report counts: complete, with a finite score, one config."""

    env: str
    algo: str
    scores: list[float] = field(default_factory=list)  # the score of each run (see Selection.score)
    seeds: list[int] = field(default_factory=list)
    records: list[RunRecord] = field(default_factory=list)
    scoreless: int = 0  # complete runs without a finite score: excluded, counted in the footnotes
    other_configs: dict[str, int] = field(default_factory=dict)  # config hash -> runs left out (not this config)

    @property
    def n(self) -> int:
        return len(self.scores)

    @property
    def mean(self) -> float:
        return float(np.mean(self.scores))

    @property
    def std(self) -> float | None:
        """Sample std; None for a single run (never "± nan")."""
        return float(np.std(self.scores, ddof=1)) if self.n >= 2 else None

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


@dataclass
class Selection:
    """Which records the report counts, and every other one with the reason it is left out."""

    cells: dict[tuple[str, str], Cell]
    left_out: list[tuple[RunRecord, str]]  # (record, reason): failed, diverged, running, scoreless, other config
    duplicates: int  # records read more than once (the same env, algo, seed, config and data): counted once
    score: str  # "final" or "best"


def run_score(record: RunRecord, score: str = "final") -> float | None:
    """A run's score: its final evaluation, or (``best``) the best evaluation during training; None if not finite."""
    if score == "final":
        value = record.final.get("normalized_mean")
    else:
        seen = [p.get("normalized_mean") for p in record.curve]
        value = max((v for v in seen if v is not None and math.isfinite(v)), default=None)
    return float(value) if value is not None and math.isfinite(value) else None


def select_runs(records: list[RunRecord], score: str = "final", mix_configs: bool = False) -> Selection:
    """Records -> cells (DESIGN: never pool configs, never count a record twice, never count a run that failed,
    diverged or has no score). A cell whose runs used several configs keeps the config with the most runs (then the
    smallest hash) and lists the others, unless ``mix_configs``."""
    if score not in SCORES:
        raise ValueError(f"score must be one of {', '.join(SCORES)}, got {score!r}")
    seen, unique, left_out = set(), [], []
    for r in records:
        key = (r.env, r.algo, r.seed, r.config_hash, r.dataset.get("sha256"))
        if key not in seen:
            seen.add(key)
            unique.append(r)
    by_cell: dict[tuple[str, str], list[RunRecord]] = defaultdict(list)
    for r in unique:
        if r.status != "complete":
            why = (r.error or "").strip().splitlines()
            left_out.append((r, f"status {r.status}" + (f": {why[-1]}" if why else "")))
        else:
            by_cell[(r.env, r.algo)].append(r)
    cells = {}
    for (env, algo), runs in sorted(by_cell.items()):
        cell = cells[(env, algo)] = Cell(env, algo)
        counts = Counter(r.config_hash for r in runs)
        chosen = min(counts, key=lambda h: (-counts[h], h))
        for r in sorted(runs, key=lambda r: r.seed):
            if not mix_configs and r.config_hash != chosen:
                cell.other_configs[r.config_hash] = cell.other_configs.get(r.config_hash, 0) + 1
                left_out.append((r, f"config {r.config_hash}: the cell uses config {chosen} ({counts[chosen]} runs)"))
            elif (value := run_score(r, score)) is None:
                cell.scoreless += 1
                left_out.append((r, f"complete but no finite {SCORES[score]} score"))
            else:
                cell.scores.append(value)
                cell.seeds.append(r.seed)
                cell.records.append(r)
    cells = {k: c for k, c in cells.items() if c.n or c.scoreless}
    return Selection(cells, left_out, len(records) - len(unique), score)


def collect_cells(records: list[RunRecord], score: str = "final", mix_configs: bool = False) -> dict:
    """The cells of :func:`select_runs` that have at least one counted run."""
    return {k: c for k, c in select_runs(records, score, mix_configs).cells.items() if c.n}


def family_of(env: str) -> str:
    try:
        return get_spec(env).family
    except KeyError:
        return "Other"


def ordered_algos(algos) -> list[str]:
    present = set(algos)
    return [a for a in ALGO_ORDER if a in present] + sorted(present - set(ALGO_ORDER))


def ordered_envs(envs) -> list[tuple[str, list[str]]]:
    """[(family, [datasets...])] in the paper's row order."""
    groups: dict[str, list[str]] = defaultdict(list)
    for env in sorted(set(envs)):
        groups[family_of(env)].append(env)
    families = [f for f in REPORT_FAMILY_ORDER if f in groups] + sorted(set(groups) - set(REPORT_FAMILY_ORDER))
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
    scoreless: int = 0  # runs excluded for having no finite score


def main_table_rows(cells: dict[tuple[str, str], Cell], alpha: float = 0.05,
                    holm: bool = False) -> tuple[list[str], list[tuple[str, list[tuple[str, dict]]]]]:
    """(algorithms, [(family, [(dataset, {algo: TableCell})])]) with the bold set decided per dataset; a family
    with several datasets ends with an "average" row (the mean of the dataset means, for an algorithm that has every
    dataset of the family), as CORL's tables do."""
    algos = ordered_algos(a for (_, a), c in cells.items() if c.n)
    groups = []
    for family, envs in ordered_envs(e for e, _ in cells):
        rows = []
        for env in envs:
            row_cells = {a: cells[(env, a)] for a in algos if (env, a) in cells}
            bold, pvals = st.bold_set({a: c.scores for a, c in row_cells.items() if c.n}, alpha, holm)
            rows.append((env, {a: TableCell(c.mean if c.n else None, c.std, c.n, a in bold, pvals.get(a), c.mixed(),
                                            c.scoreless) for a, c in row_cells.items()}))
        if len(envs) > 1:
            average = {a: TableCell(float(np.mean([row[a].mean for _, row in rows])), None, 0)
                       for a in algos if all(a in row and row[a].mean is not None for _, row in rows)}
            rows.append((f"average ({len(envs)} datasets)", average))
        groups.append((family, rows))
    return algos, groups


def _fmt(c: TableCell | None, common_n: int | None, bold_fmt, mark: str, excluded_mark: str) -> str:
    if c is None or c.mean is None:
        return "–" + (excluded_mark if c is not None and c.scoreless else "")
    text = f"{c.mean:.1f}" + (f" ± {c.std:.1f}" if c.std is not None else "")
    if c.bold:
        text = bold_fmt(text)
    if c.n and c.n != common_n:
        text += f" (n={c.n})"
    if c.n == 1:
        text += "*"
    if c.flags:
        text += mark
    if c.scoreless:
        text += excluded_mark
    return text


def _common_n(groups) -> int | None:
    ns = {c.n for _, rows in groups for _, row in rows for c in row.values() if c.n}
    return ns.pop() if len(ns) == 1 else None


def _excluded_note(groups) -> list[str]:
    return [f"{env} / {DISPLAY_NAMES.get(a, a)}: {c.scoreless}" for _, rows in groups for env, row in rows
            for a, c in row.items() if c.scoreless]


def _caption(groups, alpha: float, holm: bool, score: str, markdown: bool) -> str:
    n = _common_n(groups)
    test = (f"one-sided Welch's t-test, p < {alpha}" if markdown else f"one-sided Welch's t-test, $p < {alpha}$") \
        + (", Holm-corrected" if holm else "")
    seeds = f"{n} seeds" if n else "the seeds marked (n=...)"
    pm, dagger, ddagger = ("±", "†", "‡") if markdown else ("$\\pm$", "$^\\dagger$", "$^\\ddagger$")
    text = (f"Normalised score of the {SCORES[score]}, mean {pm} sample std over {seeds}. Bold: the best mean and "
            f"every entry not significantly worse ({test}); *: a single run (no std, never bold); {dagger}: runs "
            f"that differ in data or versions, or in config with --mix-configs (see report.md). Average rows: the "
            f"mean of the dataset means.")
    excluded = _excluded_note(groups)
    if excluded:
        text += f" {ddagger}: runs without a finite score, excluded: " + "; ".join(excluded) + "."
    return text


def render_main_latex(algos, groups, alpha: float, holm: bool, score: str = "final") -> str:
    n = _common_n(groups)
    out = io.StringIO()
    out.write("\\begin{table}[t]\n\\centering\n\\small\n")
    out.write(f"\\caption{{{latex_escape(_caption(groups, alpha, holm, score, True))}}}\n\\label{{tab:main}}\n"
              .replace(latex_escape("±"), "$\\pm$").replace("†", "$^\\dagger$").replace("‡", "$^\\ddagger$"))
    out.write("\\begin{tabular}{l" + "c" * len(algos) + "}\n\\toprule\n")
    out.write("Dataset & " + " & ".join(latex_escape(DISPLAY_NAMES.get(a, a)) for a in algos) + " \\\\\n")
    for family, rows in groups:
        out.write(f"\\midrule\n\\multicolumn{{{len(algos) + 1}}}{{l}}{{\\textit{{{latex_escape(family)}}}}} \\\\\n")
        for env, row in rows:
            vals = [_fmt(row.get(a), n, lambda t: f"\\textbf{{{t}}}", "$^\\dagger$", "$^\\ddagger$") for a in algos]
            vals = [v.replace("±", "$\\pm$") for v in vals]
            label = latex_escape(env) if not env.startswith("average") else f"\\textit{{{latex_escape(env)}}}"
            out.write(label + " & " + " & ".join(vals) + " \\\\\n")
    out.write("\\bottomrule\n\\end{tabular}\n\\end{table}\n")
    return out.getvalue()


def render_main_markdown(algos, groups, alpha: float, holm: bool, score: str = "final") -> str:
    n = _common_n(groups)
    lines = ["| Dataset | " + " | ".join(DISPLAY_NAMES.get(a, a) for a in algos) + " |",
             "|---|" + "---|" * len(algos)]
    for family, rows in groups:
        lines.append(f"| *{family}* |" + " |" * len(algos))
        for env, row in rows:
            label = env if not env.startswith("average") else f"*{env}*"
            lines.append(f"| {label} | " + " | ".join(_fmt(row.get(a), n, lambda t: f"**{t}**", " †", " ‡")
                                                    for a in algos) + " |")
    return "\n".join(lines) + "\n\n" + _caption(groups, alpha, holm, score, True) + "\n"


def main_table_csv(algos, groups) -> str:
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(["family", "dataset", "algo", "n", "mean", "std", "bold", "p_vs_best", "flags", "excluded_scoreless"])
    for family, rows in groups:
        for env, row in rows:
            for a in algos:
                if (c := row.get(a)) is not None:
                    w.writerow([family, env, a, c.n, "" if c.mean is None else c.mean,
                                "" if c.std is None else c.std, c.bold,
                                "" if c.p_vs_best is None else c.p_vs_best, "; ".join(c.flags), c.scoreless])
    return out.getvalue()


def raw_scores_rows(records: list[RunRecord], selection: Selection) -> list[dict]:
    """Every record read, one row each: its score and whether (and why not) the report counts it."""
    why = {id(r): reason for r, reason in selection.left_out}
    counted = {id(r) for c in selection.cells.values() for r in c.records}
    rows = []
    for r in records:
        value = run_score(r, selection.score) if r.status == "complete" else None
        reason = "counted" if id(r) in counted else why.get(id(r), "duplicate of another record (counted once)")
        rows.append({"env": r.env, "algo": r.algo, "seed": r.seed, "config_hash": r.config_hash,
                     "status": r.status, "score": "" if value is None else value, "counted": id(r) in counted,
                     "reason": reason})
    return rows


# -- aggregates (rliable's definitions, statistics.py) ------------------------------------------------------------
@dataclass
class ScoreMatrices:
    """Per algorithm a (runs x tasks) matrix over the tasks every compared algorithm has, each task weighted
    equally. Where an algorithm has more runs on some tasks than others, every task contributes the same number of
    runs: the smallest it has on any common task (its lowest seeds)."""

    tasks: list[str]  # the common task set, in the table's order
    matrices: dict[str, np.ndarray]  # algo -> (runs x tasks)
    left_out: dict[str, list[str]]  # task -> the algorithms that lack it (why it is not in the common set)
    dropped_runs: dict[str, int]  # algo -> runs not used so that every task has the same number

    def describe(self) -> str:
        runs = ", ".join(f"{DISPLAY_NAMES.get(a, a)} {m.shape[0]}" for a, m in self.matrices.items())
        text = (f"Aggregates cover the {len(self.tasks)} tasks every algorithm has, each weighted equally "
                f"(runs per task: {runs}).")
        if any(self.dropped_runs.values()):
            text += (" Where an algorithm has more runs on some tasks than on others, each task contributes its "
                     "lowest seeds up to the smallest count (runs not used: " + ", ".join(
                         f"{DISPLAY_NAMES.get(a, a)} {n}" for a, n in self.dropped_runs.items() if n) + ").")
        if self.left_out:
            text += " Tasks left out (the algorithms that lack them): " + "; ".join(
                f"{t} ({', '.join(DISPLAY_NAMES.get(a, a) for a in algos)})" for t, algos in self.left_out.items())
            text += "."
        return text


def score_matrices(cells: dict[tuple[str, str], Cell], algos: list[str] | None = None) -> ScoreMatrices:
    algos = algos or ordered_algos(a for _, a in cells)
    envs = [e for _, group in ordered_envs(e for e, _ in cells) for e in group]
    tasks = [e for e in envs if all((e, a) in cells for a in algos)]
    left_out = {e: [a for a in algos if (e, a) not in cells] for e in envs if e not in tasks}
    matrices, dropped = {}, {}
    for a in algos:
        if not tasks:
            continue
        k = min(cells[(e, a)].n for e in tasks)
        columns = [np.asarray(cells[(e, a)].scores, float)[np.argsort(cells[(e, a)].seeds, kind="stable")][:k]
                   for e in tasks]
        matrices[a] = np.stack(columns, axis=1)
        dropped[a] = sum(cells[(e, a)].n for e in tasks) - k * len(tasks)
    return ScoreMatrices(tasks, matrices, left_out, dropped)


def aggregate_rows(sm: ScoreMatrices, n_resamples: int = 2000, seed: int = 0) -> list[dict]:
    """Per algorithm: Mean, Median, IQM and optimality gap over the common tasks, with 95% stratified-bootstrap
    percentile intervals."""
    rows = []
    for a, m in sm.matrices.items():
        row = {"algo": a, "tasks": m.shape[1], "runs_per_task": m.shape[0]}
        for name, fn in st.AGGREGATES.items():
            point, lo, hi = st.aggregate_interval(m, fn, n_resamples=n_resamples, seed=seed)
            row.update({name: point, f"{name}_low": lo, f"{name}_high": hi})
        rows.append(row)
    return rows


def improvement_matrix(sm: ScoreMatrices, n_resamples: int = 2000, seed: int = 0) -> list[dict]:
    """P(X > Y) for every ordered pair of algorithms over the common tasks, with 95% intervals."""
    rows = []
    for x, mx in sm.matrices.items():
        for y, my in sm.matrices.items():
            if x != y:
                p, lo, hi = st.probability_of_improvement_interval(mx, my, n_resamples=n_resamples, seed=seed)
                rows.append({"algo": x, "other": y, "tasks": mx.shape[1], "P": p, "low": lo, "high": hi})
    return rows


def _ci(point: float, lo: float, hi: float, digits: int = 1) -> str:
    return f"{point:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]" if not math.isnan(lo) else f"{point:.{digits}f}"


def render_aggregate_latex(agg: list[dict], poi: list[dict], sm: ScoreMatrices, headline: str = HEADLINE) -> str:
    names = list(st.AGGREGATES)
    out = io.StringIO()
    out.write("\\begin{table}[t]\n\\centering\n\\small\n\\caption{" + latex_escape(
        "Aggregate normalised scores (rliable): point estimate [95% stratified-bootstrap percentile interval]. "
        "Median: of the per-task means; IQM: interquartile mean of all run x task scores; optimality gap: "
        "100 - mean(min(score, 100)), lower is better. " + sm.describe()) + "}\n\\label{tab:aggregate}\n"
        "\\begin{tabular}{l" + "c" * (len(names) + 1) + "}\n\\toprule\nAlgorithm & Tasks & " + " & ".join(names)
        + " \\\\\n\\midrule\n")
    for r in agg:
        cis = [_ci(r[k], r[f"{k}_low"], r[f"{k}_high"]) for k in names]
        out.write(f"{latex_escape(DISPLAY_NAMES.get(r['algo'], r['algo']))} & {r['tasks']} & "
                  + " & ".join(cis) + " \\\\\n")
    rows = [r for r in poi if r["algo"] == headline]
    if rows:
        out.write(f"\\midrule\n\\multicolumn{{{len(names) + 2}}}{{l}}{{\\textit{{Probability of improvement "
                  f"P({latex_escape(DISPLAY_NAMES.get(headline, headline))} $>$ Y)}}}} \\\\\n")
        for r in rows:
            out.write(f"Y = {latex_escape(DISPLAY_NAMES.get(r['other'], r['other']))} & {r['tasks']} & "
                      f"\\multicolumn{{{len(names)}}}{{c}}{{{_ci(r['P'], r['low'], r['high'], 2)}}} \\\\\n")
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
        if not cell.n or (env, algo) not in paper or not all(r.dataset.get("paper_comparable") for r in cell.records):
            continue
        p_mean, p_std = paper[(env, algo)]
        lo, hi = st.mean_confidence_interval(cell.scores) if cell.n >= 2 else (None, None)
        rows.append({"dataset": env, "algo": algo, "n": cell.n, "ours_mean": cell.mean, "ours_std": cell.std,
                     "ci_low": lo, "ci_high": hi, "paper_mean": p_mean, "paper_std": p_std,
                     "paper_in_ci": None if cell.n < 2 else bool(lo <= p_mean <= hi)})
    return rows


# -- figures (column width: 3.3 in; several panels: 6.9 in, the text width of a two-column paper) ------------------
COLUMN_IN, TEXT_IN = 3.3, 6.9


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="paper", font_scale=0.8)
    return plt, sns


def _save(fig, out: Path, stem: str) -> list[str]:
    names = []
    for ext in ("pdf", "png"):
        fig.savefig(out / f"{stem}.{ext}", dpi=200, bbox_inches="tight")
        names.append(f"{stem}.{ext}")
    return names


def _palette(sns, algos: list[str]) -> dict[str, tuple]:
    return dict(zip([DISPLAY_NAMES.get(a, a) for a in algos], sns.color_palette("tab10", len(algos)), strict=True))


def _per_dataset_lines(df, y: str, ylabel: str, algos: list[str], out: Path, stem: str, title: str) -> list[str]:
    """One panel per dataset of ``df`` (dataset, algorithm, seed, step, ``y``): mean over seeds, ± 1 std shaded,
    one legend for all panels."""
    plt, sns = _plt()
    envs = sorted(df.dataset.unique())
    cols = min(3, len(envs))
    nrows = math.ceil(len(envs) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(COLUMN_IN if cols == 1 else TEXT_IN, 1.9 * nrows + 0.4),
                             squeeze=False)
    palette = _palette(sns, algos)
    for ax, env in zip(axes.flat, envs, strict=False):
        sub = df[df.dataset == env]
        sns.lineplot(data=sub, x="step", y=y, hue="algorithm", errorbar="sd", ax=ax, palette=palette,
                     hue_order=[a for a in palette if a in set(sub.algorithm)], legend=False)
        ax.set(title=env, xlabel="gradient step", ylabel=ylabel)
    for ax in list(axes.flat)[len(envs):]:
        ax.set_visible(False)
    handles = [plt.Line2D([], [], color=c, label=name) for name, c in palette.items() if name in set(df.algorithm)]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), frameon=False,
               bbox_to_anchor=(0.5, -0.02))
    fig.suptitle(title, fontsize=7, y=1.0)
    fig.tight_layout(rect=(0, 0.06, 1, 0.97))
    names = _save(fig, out, stem)
    plt.close(fig)
    return names


def plot_learning_curves(cells: dict[tuple[str, str], Cell], out: Path) -> list[str]:
    import pandas as pd

    rows = [{"dataset": e, "algorithm": DISPLAY_NAMES.get(a, a), "seed": r.seed, "step": p["step"],
             "score": p["normalized_mean"]}
            for (e, a), c in cells.items() for r in c.records for p in r.curve if p.get("normalized_mean") is not None]
    if not rows:
        return []
    return _per_dataset_lines(pd.DataFrame(rows), "score", "normalised score", ordered_algos(a for _, a in cells),
                              out, "learning_curves", "Mean over seeds; shaded: ± 1 std over seeds")


def csv_logs(paths: list[Path]) -> dict[str, Path]:
    """Record stem -> its CSV log (``--logger csv`` writes ``<out>/csv/<record>.csv``) under the given folders."""
    return {p.stem: p for root in map(Path, paths) if root.is_dir() for p in root.rglob("csv/*.csv")}


def plot_training_curves(cells: dict[tuple[str, str], Cell], logs: dict[str, Path], out: Path) -> list[str]:
    """Training loss at the resolution the runs logged it (``--logger csv``, ``--log-every``): mean ± 1 std over
    seeds, per dataset."""
    import pandas as pd

    from bench.loggers import read_csv_log

    rows = []
    for (e, a), c in cells.items():
        for r in c.records:
            if (path := logs.get(r.filename.removesuffix(".json"))) is not None:
                rows += [{"dataset": e, "algorithm": DISPLAY_NAMES.get(a, a), "seed": r.seed, "step": s, "loss": v}
                         for s, v in read_csv_log(path).get("loss", [])]
    if not rows:
        return []
    return _per_dataset_lines(pd.DataFrame(rows), "loss", "training loss", ordered_algos(a for _, a in cells), out,
                              "training_loss", "Training loss from the CSV logs (mean over seeds; shaded: ± 1 std)")


def plot_aggregates(agg: list[dict], out: Path) -> list[str]:
    if not agg:
        return []
    plt, sns = _plt()
    names = list(st.AGGREGATES)
    fig, axes = plt.subplots(1, len(names), figsize=(TEXT_IN, 0.3 * len(agg) + 0.9), sharey=True)
    labels = [DISPLAY_NAMES.get(r["algo"], r["algo"]) for r in agg]
    colors = list(_palette(sns, [r["algo"] for r in agg]).values())
    for ax, name in zip(axes, names, strict=True):
        for i, r in enumerate(agg):
            lo, hi = r[f"{name}_low"], r[f"{name}_high"]
            if not math.isnan(lo):
                ax.plot([lo, hi], [i, i], lw=6, alpha=0.6, solid_capstyle="butt", color=colors[i])
            ax.plot([r[name]], [i], "k|", ms=10)
        ax.set(title=name + (" (lower is better)" if name == "Optimality gap" else ""), xlabel="normalised score",
               yticks=range(len(agg)), yticklabels=labels)
    fig.suptitle("Point estimate and 95% stratified-bootstrap interval", fontsize=7)
    fig.tight_layout()
    out_names = _save(fig, out, "aggregate_intervals")
    plt.close(fig)
    return out_names


def plot_performance_profiles(sm: ScoreMatrices, out: Path, n_resamples: int = 2000) -> list[str]:
    if not sm.matrices:
        return []
    plt, sns = _plt()
    everything = np.concatenate([m.ravel() for m in sm.matrices.values()])
    taus = np.linspace(min(0.0, everything.min()), max(100.0, everything.max()), 101)
    fig, ax = plt.subplots(figsize=(COLUMN_IN, 2.4))
    for (a, m), color in zip(sm.matrices.items(), _palette(sns, list(sm.matrices)).values(), strict=True):
        profile, lo, hi = st.performance_profile_band(m, taus, n_resamples=n_resamples)
        ax.plot(taus, profile, label=DISPLAY_NAMES.get(a, a), color=color)
        if not np.isnan(lo).all():
            ax.fill_between(taus, lo, hi, color=color, alpha=0.2, lw=0)
    ax.set(xlabel=r"normalised score $\tau$", ylabel=r"fraction of runs with score $> \tau$",
           title=f"{len(sm.tasks)} tasks; bands: 95% stratified-bootstrap intervals")
    ax.legend(fontsize=6)
    fig.tight_layout()
    names = _save(fig, out, "performance_profiles")
    plt.close(fig)
    return names


def plot_improvement_matrix(poi: list[dict], out: Path) -> list[str]:
    if not poi:
        return []
    plt, sns = _plt()
    algos = list(dict.fromkeys(r["algo"] for r in poi))
    grid = np.full((len(algos), len(algos)), np.nan)
    for r in poi:
        grid[algos.index(r["algo"]), algos.index(r["other"])] = r["P"]
    labels = [DISPLAY_NAMES.get(a, a) for a in algos]
    fig, ax = plt.subplots(figsize=(COLUMN_IN, COLUMN_IN * 0.85))
    sns.heatmap(grid, annot=True, fmt=".2f", vmin=0, vmax=1, cmap="vlag", center=0.5, xticklabels=labels,
                yticklabels=labels, ax=ax, cbar_kws={"label": "P(row > column)"}, annot_kws={"fontsize": 6})
    ax.set(xlabel="Y", ylabel="X", title=f"Probability of improvement P(X > Y), {poi[0]['tasks']} tasks")
    fig.tight_layout()
    names = _save(fig, out, "probability_of_improvement")
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
                 n_resamples: int = 2000, score: str = "final", mix_configs: bool = False) -> dict:
    """Read every record under ``paths`` and write the report to ``out``; returns what was written."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    not_records: list[Path] = []
    records, unreadable = load_records(paths, not_records)
    selection = select_runs(records, score, mix_configs)
    cells = {k: c for k, c in selection.cells.items() if c.n}
    llm_records = load_llm_records(paths)
    if not cells and not llm_records:
        reasons = Counter(reason.split(":")[0] for _, reason in selection.left_out)
        raise ValueError(f"no complete run records with a score under {', '.join(map(str, paths))} "
                         f"({len(records)} records read, {len(unreadable)} unreadable; left out: "
                         f"{dict(reasons) or 'none'})")
    llm_md = write_llm_tables(llm_records, out) if llm_records else None
    if not cells:
        (out / "report.md").write_text("# Results\n" + _llm_section(llm_md))
        return {"records": len(llm_records), "unreadable": unreadable, "not_records": not_records, "cells": 0,
                "figures": [], "out": out}
    algos, groups = main_table_rows(selection.cells, alpha, holm)
    (out / "main_table.tex").write_text(render_main_latex(algos, groups, alpha, holm, score))
    (out / "main_table.md").write_text(render_main_markdown(algos, groups, alpha, holm, score))
    (out / "main_table.csv").write_text(main_table_csv(algos, groups))
    _write_csv(out / "scores.csv", raw_scores_rows(records, selection))
    sm = score_matrices(cells)
    agg = aggregate_rows(sm, n_resamples)
    poi = improvement_matrix(sm, n_resamples)
    (out / "aggregate_table.tex").write_text(render_aggregate_latex(agg, poi, sm))
    _write_csv(out / "aggregate.csv", agg)
    _write_csv(out / "probability_of_improvement.csv", poi)
    comparison = paper_comparison_rows(cells)
    _write_csv(out / "paper_comparison.csv", comparison)
    (out / "tables.tex").write_text(STANDALONE)
    figures = (plot_learning_curves(cells, out) + plot_training_curves(cells, csv_logs(paths), out)
               + plot_aggregates(agg, out) + plot_performance_profiles(sm, out) + plot_improvement_matrix(poi, out))
    (out / "report.md").write_text(_report_markdown(records, unreadable, selection, algos, groups, alpha, holm, sm,
                                                    agg, poi, comparison, figures, n_resamples)
                                   + (_llm_section(llm_md) if llm_md else ""))
    return {"records": len(records) + len(llm_records), "unreadable": unreadable, "not_records": not_records,
            "cells": len(cells), "figures": figures, "out": out, "selection": selection}


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


def _report_markdown(records, unreadable, selection: Selection, algos, groups, alpha, holm, sm: ScoreMatrices,
                     agg, poi, comparison, figures, n_resamples) -> str:
    cells = {k: c for k, c in selection.cells.items() if c.n}
    lines = ["# Results", "", f"{len(records)} run records read; {sum(c.n for c in cells.values())} runs counted "
             f"in {len(cells)} (dataset, algorithm) cells; score: the {SCORES[selection.score]}"
             + (" (the maximum over training's evaluations: optimistic, as CORL's \"best\")"
                if selection.score == "best" else "") + ".", "", "## Main table", "",
             render_main_markdown(algos, groups, alpha, holm, selection.score),
             "Files: [main_table.tex](main_table.tex) (booktabs; compile [tables.tex](tables.tex)), "
             "[main_table.md](main_table.md), [main_table.csv](main_table.csv); every record's score: "
             "[scores.csv](scores.csv).", ""]
    flagged = [(k, c.mixed()) for k, c in sorted(cells.items()) if c.mixed()]
    if flagged:
        lines += ["### Flagged cells (†)", ""] + [f"- {e} / {a}: {', '.join(p)}" for (e, a), p in flagged] + [""]
    other = [(k, c.other_configs) for k, c in sorted(selection.cells.items()) if c.other_configs]
    if other:
        lines += ["### Cells with runs of other configs (not pooled; --mix-configs pools them)", ""]
        lines += [f"- {e} / {a}: uses config {c.records[0].config_hash if c.records else '-'} ({c.n} runs); left "
                  f"out: " + ", ".join(f"{h} ({n} runs)" for h, n in configs.items())
                  for (e, a), configs in other for c in [selection.cells[(e, a)]]] + [""]
    names = list(st.AGGREGATES)
    lines += ["## Aggregate statistics", "", sm.describe(), "",
              "| Algorithm | Tasks | Runs per task | " + " | ".join(names) + " |",
              "|---|---|---|" + "---|" * len(names)]
    for r in agg:
        lines.append(f"| {DISPLAY_NAMES.get(r['algo'], r['algo'])} | {r['tasks']} | {r['runs_per_task']} | "
                     + " | ".join(_ci(r[k], r[f"{k}_low"], r[f"{k}_high"]) for k in names) + " |")
    headline = [r for r in poi if r["algo"] == HEADLINE]
    if headline:
        lines += ["", f"Probability of improvement of {DISPLAY_NAMES.get(HEADLINE)} (95% interval):", ""]
        lines += [f"- over {DISPLAY_NAMES.get(r['other'], r['other'])}: {_ci(r['P'], r['low'], r['high'], 2)}"
                  for r in headline]
    lines += ["", "rliable's definitions (Agarwal et al. 2021): Median of the per-task means, IQM of all run x task "
              "scores, optimality gap 100 - mean(min(score, 100)); 95% percentile intervals of a stratified "
              f"bootstrap ({n_resamples} resamples, runs resampled within each task). Every pair's probability of "
              "improvement: [probability_of_improvement.csv](probability_of_improvement.csv) and its figure. Files: "
              "[aggregate_table.tex](aggregate_table.tex), [aggregate.csv](aggregate.csv).", "",
              "## Comparison with the paper", ""]
    if comparison:
        lines += ["| Dataset | Algorithm | n | Ours | Paper | Paper in our 95% CI |", "|---|---|---|---|---|---|"]
        for r in comparison:
            paper = f"{r['paper_mean']:.1f}" + (f" ± {r['paper_std']:.1f}" if r["paper_std"] is not None else "")
            ours = f"{r['ours_mean']:.1f}" + (f" ± {r['ours_std']:.1f}" if r["ours_std"] is not None else "")
            inside = {None: "n/a (n < 2)", True: "yes", False: "no"}[r["paper_in_ci"]]
            lines.append(f"| {r['dataset']} | {DISPLAY_NAMES.get(r['algo'], r['algo'])} | {r['n']} | {ours} | "
                         f"{paper} | {inside} |")
    else:
        lines.append("No records on the paper's datasets (generated datasets are never compared with the paper).")
    lines += ["", "## Figures", ""] + [f"- [{f}]({f})" for f in figures if f.endswith(".png")]
    lines += ["", "## Provenance", ""]
    for (e, a), c in sorted(cells.items()):
        steps = sorted({str(r.config.get("algo_config", {}).get("steps")) for r in c.records})
        versions = sorted({", ".join(f"{k} {r.versions.get(k)}" for k in _VERSION_KEYS) for r in c.records})
        lines.append(f"- {e} / {a}: seeds {sorted(c.seeds)}; steps {', '.join(steps)}; {' | '.join(versions)}")
    if selection.left_out or unreadable or selection.duplicates:
        lines += ["", "## Not included", ""]
        lines += [f"- {r.env} / {r.algo} / seed {r.seed} ({r.config_hash}): {reason}"
                  for r, reason in selection.left_out]
        lines += [f"- {p}: unreadable ({why})" for p, why in unreadable]
        if selection.duplicates:
            lines.append(f"- {selection.duplicates} duplicate records (same dataset, algorithm, seed, config and "
                         "data; e.g. a copied folder): each counted once")
    return "\n".join(lines) + "\n"
