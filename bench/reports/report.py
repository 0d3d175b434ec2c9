"""`bench report`: run records -> the paper's tables (LaTeX, Markdown, CSV), aggregate statistics, figures.

Plain data first (``select_runs``, ``main_table_rows``, ``score_matrices``, ``aggregate_rows``, ``improvement_matrix``,
``paper_comparison_rows``), renderers and figures on top, ``build_report`` to write everything with a ``report.md``
that links it. Aggregates follow rliable's definitions (``statistics``).
"""

from __future__ import annotations

import csv
import functools
import io
import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench.algorithms import ALGORITHMS, DISPLAY_NAMES
from bench.reports import statistics as st
from bench.reports.latex import latex_escape
from bench.reports.llm_table import budget_forcing_rows, load_llm_records, write_llm_tables
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


def table_order(envs) -> list[str]:
    """The datasets in the paper's row order (:func:`ordered_envs`, families flattened)."""
    return [e for _, group in ordered_envs(envs) for e in group]


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


def _caption(groups, alpha: float, holm: bool, score: str) -> str:
    """The main table's caption as text (Markdown shows it as it is; LaTeX through ``latex_escape``)."""
    n = _common_n(groups)
    test = f"one-sided Welch's t-test, p < {alpha}" + (", Holm-corrected" if holm else "")
    seeds = f"{n} seeds" if n else "the seeds marked (n=...)"
    text = (f"Normalised score of the {SCORES[score]}, mean ± sample std over {seeds}. Bold: the best mean and "
            f"every entry not significantly worse ({test}); *: a single run (no std, never bold); †: runs that "
            f"differ in data or versions, or in config with --mix-configs (see report.md). Average rows: the mean of "
            f"the dataset means.")
    excluded = _excluded_note(groups)
    if excluded:
        text += " ‡: runs without a finite score, excluded: " + "; ".join(excluded) + "."
    return text


def render_main_latex(algos, groups, alpha: float, holm: bool, score: str = "final") -> str:
    n = _common_n(groups)
    out = io.StringIO()
    out.write("\\begin{table}[t]\n\\centering\n\\small\n")
    out.write(f"\\caption{{{latex_escape(_caption(groups, alpha, holm, score))}}}\n\\label{{tab:main}}\n")
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
    return "\n".join(lines) + "\n\n" + _caption(groups, alpha, holm, score) + "\n"


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


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("s" if n != 1 else "")


# -- aggregates (rliable's definitions, statistics.py) ------------------------------------------------------------
@dataclass
class ScoreMatrices:
    """Every counted run's score per (task, algorithm), and which algorithms the aggregates compare over which tasks.

    The compared task set is the one that gives the most (algorithm, task) cells: of the algorithms' own task sets,
    the one maximising |tasks| x the algorithms that have all of them (ties: more tasks). The algorithms that have
    them all are compared over them; an algorithm that lacks one of them is aggregated over its own tasks and shown
    apart, so a sparse algorithm never shrinks the others' task set. Every run is used; each task weighs the same
    whatever its number of runs (statistics.py)."""

    scores: dict[tuple[str, str], np.ndarray]  # (task, algo) -> the counted runs' scores, in seed order
    tasks: list[str]  # the compared task set, in the table's order
    compared: list[str]  # the algorithms that have every task of ``tasks``
    apart: list[str]  # the algorithms that lack one: each over its own tasks

    def tasks_of(self, algo: str) -> list[str]:
        return [t for t in self.task_order if (t, algo) in self.scores]

    @functools.cached_property
    def task_order(self) -> list[str]:
        return table_order(t for t, _ in self.scores)

    def matrix(self, algo: str, tasks: list[str]) -> np.ndarray:
        """(runs x tasks): each task's runs in its first rows, NaN below where it has fewer."""
        columns = [self.scores[(t, algo)] for t in tasks]
        m = np.full((max(len(c) for c in columns), len(tasks)), np.nan)
        for j, c in enumerate(columns):
            m[:len(c), j] = c
        return m

    @property
    def matrices(self) -> dict[str, np.ndarray]:
        """The compared algorithms' matrices over the compared tasks."""
        return {a: self.matrix(a, self.tasks) for a in self.compared}

    def shared(self, x: str, y: str) -> list[str]:
        """The tasks a comparison of ``x`` and ``y`` is made over: the compared set when both are compared, else
        every task both have."""
        if x in self.compared and y in self.compared:
            return self.tasks
        return [t for t in self.tasks_of(x) if (t, y) in self.scores]

    def runs(self, algo: str) -> int:
        """The runs behind the algorithm's aggregates: over the compared tasks, or its own when it is apart."""
        return sum(len(self.scores[(t, algo)]) for t in (self.tasks if algo in self.compared else self.tasks_of(algo)))

    def label(self, algo: str) -> str:
        """The algorithm's name and its runs, as tables and legends show it."""
        return f"{DISPLAY_NAMES.get(algo, algo)} ({_count(self.runs(algo), 'run')})"

    def describe(self) -> str:
        def name(a):
            return DISPLAY_NAMES.get(a, a)

        runs = ", ".join(f"{name(a)} {self.runs(a)}" for a in self.compared)
        text = (f"Aggregates compare {_count(len(self.compared), 'algorithm')} over the "
                f"{_count(len(self.tasks), 'task')} they all have ({', '.join(self.tasks)}), each task weighted "
                f"equally, every counted run used (runs: {runs}).")
        outside = {t: [a for a in self.compared if (t, a) in self.scores] for t in self.task_order
                   if t not in self.tasks}
        outside = {t: algos for t, algos in outside.items() if algos}
        if outside:
            text += " Tasks some of them also have, not in these aggregates: " + "; ".join(
                f"{t} ({', '.join(map(name, algos))})" for t, algos in outside.items()) + "."
        if self.apart:
            text += (" Algorithms that lack some of these tasks are aggregated over their own tasks, apart and not "
                     "comparable with the rows above: " + "; ".join(
                         f"{name(a)} ({_count(len(self.tasks_of(a)), 'task')}: {', '.join(self.tasks_of(a))})"
                         for a in self.apart) + ".")
        return text


def score_matrices(cells: dict[tuple[str, str], Cell]) -> ScoreMatrices:
    scores = {(e, a): np.asarray(c.scores, float)[np.argsort(c.seeds, kind="stable")]
              for (e, a), c in cells.items() if c.n}
    algos = ordered_algos(a for _, a in scores)
    own = {a: frozenset(t for t, b in scores if b == a) for a in algos}
    candidates = set(own.values())

    def coverage(tasks: frozenset) -> tuple[int, int, tuple]:
        return len(tasks) * sum(tasks <= own[a] for a in algos), len(tasks), tuple(sorted(tasks))

    best = max(candidates, key=coverage) if candidates else frozenset()
    return ScoreMatrices(scores, [t for t in table_order(t for t, _ in scores) if t in best],
                         [a for a in algos if best <= own[a]],
                         [a for a in algos if not best <= own[a]])


def _aggregate_row(algo: str, tasks: list[str], m: np.ndarray, compared: bool, n_resamples: int, seed: int) -> dict:
    counts = st.task_counts(m)
    row = {"algo": algo, "compared": compared, "tasks": len(tasks), "task_set": "; ".join(tasks),
           "runs": int(counts.sum()), "runs_per_task_min": int(counts.min()), "runs_per_task_max": int(counts.max())}
    for name, fn in st.AGGREGATES.items():
        point, lo, hi = st.aggregate_interval(m, fn, n_resamples=n_resamples, seed=seed)
        row.update({name: point, f"{name}_low": lo, f"{name}_high": hi})
    return row


def aggregate_rows(sm: ScoreMatrices, n_resamples: int = 2000, seed: int = 0) -> list[dict]:
    """Per algorithm: Mean, Median, IQM and optimality gap with 95% stratified-bootstrap percentile intervals; the
    compared algorithms over the compared tasks (``compared`` True), then each other one over its own tasks."""
    rows = [_aggregate_row(a, sm.tasks, m, True, n_resamples, seed) for a, m in sm.matrices.items()]
    return rows + [_aggregate_row(a, sm.tasks_of(a), sm.matrix(a, sm.tasks_of(a)), False, n_resamples, seed)
                   for a in sm.apart]


def improvement_matrix(sm: ScoreMatrices, n_resamples: int = 2000, seed: int = 0) -> list[dict]:
    """P(X > Y) with 95% intervals for every ordered pair of algorithms that share a task, over the tasks the pair
    is compared on (``ScoreMatrices.shared``), which each row names."""
    rows = []
    for x in sm.compared + sm.apart:
        for y in sm.compared + sm.apart:
            if x != y and (tasks := sm.shared(x, y)):
                p, lo, hi = st.probability_of_improvement_interval(sm.matrix(x, tasks), sm.matrix(y, tasks),
                                                                   n_resamples=n_resamples, seed=seed)
                rows.append({"algo": x, "other": y, "tasks": len(tasks), "task_set": "; ".join(tasks), "P": p,
                             "low": lo, "high": hi})
    return rows


def _ci(point: float, lo: float, hi: float, digits: int = 1) -> str:
    return f"{point:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]" if not math.isnan(lo) else f"{point:.{digits}f}"


def render_aggregate_latex(agg: list[dict], poi: list[dict], sm: ScoreMatrices, headline: str = HEADLINE) -> str:
    names = list(st.AGGREGATES)
    out = io.StringIO()
    out.write("\\begin{table}[t]\n\\centering\n\\small\n\\caption{" + latex_escape(
        "Aggregate normalised scores (rliable): point estimate [95% stratified-bootstrap percentile interval]. "
        "Median: of the per-task means; IQM: interquartile mean of all run × task scores, each task weighted "
        "equally; optimality gap: 100 - mean(min(score, 100)), lower is better. " + sm.describe())
        + "}\n\\label{tab:aggregate}\n\\begin{tabular}{l" + "c" * (len(names) + 1)
        + "}\n\\toprule\nAlgorithm & Tasks & " + " & ".join(names) + " \\\\\n\\midrule\n")
    for compared in (True, False):
        rows = [r for r in agg if r["compared"] == compared]
        if rows and not compared:
            out.write(f"\\midrule\n\\multicolumn{{{len(names) + 2}}}{{l}}{{\\textit{{Over their own tasks, not "
                      "comparable with the rows above}} \\\\\n")
        for r in rows:
            cis = [_ci(r[k], r[f"{k}_low"], r[f"{k}_high"]) for k in names]
            out.write(f"{latex_escape(sm.label(r['algo']))} & {r['tasks']} & " + " & ".join(cis) + " \\\\\n")
    rows = [r for r in poi if r["algo"] == headline]
    if rows:
        out.write(f"\\midrule\n\\multicolumn{{{len(names) + 2}}}{{l}}{{\\textit{{Probability of improvement "
                  f"{latex_escape(f'P({DISPLAY_NAMES.get(headline, headline)} > Y)')}, over the tasks both "
                  "have}} \\\\\n")
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


LINESTYLES = ["-", "--", ":", "-."]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]


def _styles(sns, algos: list[str]) -> dict[str, dict]:
    """Per algorithm of the report (all of them, so that each looks the same in every figure) a colour, a line style
    and a marker of its own: lines that coincide stay visible, and a greyscale print still tells them apart."""
    order = ordered_algos(algos)
    colors = sns.color_palette("tab10" if len(order) <= 10 else "husl", len(order))
    return {a: {"color": colors[i], "linestyle": LINESTYLES[i % len(LINESTYLES)], "marker": MARKERS[i % len(MARKERS)]}
            for i, a in enumerate(order)}


def _per_dataset_lines(df, y: str, ylabel: str, every_algo: list[str], out: Path, stem: str,
                       title: str) -> list[str]:
    """One panel per dataset of ``df`` (dataset, algo, seed, step, ``y``): mean over seeds, ± 1 std shaded, one
    legend for all panels naming each algorithm's runs."""
    plt, sns = _plt()
    envs = table_order(df.dataset.unique())
    algos = ordered_algos(df.algo.unique())
    styles = _styles(sns, every_algo)
    cols = min(3, len(envs))
    nrows = math.ceil(len(envs) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(COLUMN_IN if cols == 1 else TEXT_IN, 1.9 * nrows + 0.5),
                             squeeze=False)
    for ax, env in zip(axes.flat, envs, strict=False):
        for algo, sub in df[df.dataset == env].groupby("algo"):
            stats = sub.groupby("step")[y].agg(["mean", "std"]).fillna(0).reset_index()
            ax.plot(stats["step"], stats["mean"], lw=1.2, ms=3, markevery=max(1, len(stats) // 6), **styles[algo])
            ax.fill_between(stats["step"], stats["mean"] - stats["std"], stats["mean"] + stats["std"],
                            color=styles[algo]["color"], alpha=0.15, lw=0)
        ax.set(title=env, xlabel="gradient step", ylabel=ylabel)
    for ax in list(axes.flat)[len(envs):]:
        ax.set_visible(False)
    runs = df.groupby("algo").apply(lambda g: len(g[["dataset", "seed"]].drop_duplicates()), include_groups=False)
    handles = [plt.Line2D([], [], lw=1.2, ms=3, label=f"{DISPLAY_NAMES.get(a, a)} ({_count(runs[a], 'run')})",
                          **styles[a]) for a in algos]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 4), frameon=False,
               bbox_to_anchor=(0.5, -0.02))
    fig.suptitle(title, fontsize=7, y=1.0)
    fig.tight_layout(rect=(0, 0.04 + 0.03 * math.ceil(len(handles) / 4), 1, 0.97))
    names = _save(fig, out, stem)
    plt.close(fig)
    return names


def plot_learning_curves(cells: dict[tuple[str, str], Cell], out: Path) -> list[str]:
    import pandas as pd

    rows = [{"dataset": e, "algo": a, "seed": r.seed, "step": p["step"], "score": p["normalized_mean"]}
            for (e, a), c in cells.items() for r in c.records for p in r.curve if p.get("normalized_mean") is not None]
    if not rows:
        return []
    return _per_dataset_lines(pd.DataFrame(rows), "score", "normalised score", ordered_algos(a for _, a in cells),
                              out, "learning_curves",
                              "Mean over seeds; shaded: ± 1 std over seeds")


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
                rows += [{"dataset": e, "algo": a, "seed": r.seed, "step": s, "loss": v}
                         for s, v in read_csv_log(path).get("loss", [])]
    if not rows:
        return []
    return _per_dataset_lines(pd.DataFrame(rows), "loss", "training loss", ordered_algos(a for _, a in cells), out,
                              "training_loss",
                              "Training loss from the CSV logs (mean over seeds; shaded: ± 1 std)")


def plot_aggregates(agg: list[dict], sm: ScoreMatrices, out: Path) -> list[str]:
    """The compared algorithms' aggregates with their intervals (those apart are in the table only)."""
    rows = [r for r in agg if r["compared"]]
    if not rows:
        return []
    plt, sns = _plt()
    names = list(st.AGGREGATES)
    fig, axes = plt.subplots(1, len(names), figsize=(TEXT_IN, 0.3 * len(rows) + 1.0), sharey=True)
    styles = _styles(sns, [r["algo"] for r in agg])
    for ax, name in zip(axes, names, strict=True):
        for i, r in enumerate(rows):
            lo, hi = r[f"{name}_low"], r[f"{name}_high"]
            if not math.isnan(lo):
                ax.plot([lo, hi], [i, i], lw=6, alpha=0.6, solid_capstyle="butt", color=styles[r["algo"]]["color"])
            ax.plot([r[name]], [i], "k|", ms=10)
        ax.set(title=name, xlabel="normalised score" + (" (lower is better)" if name == "Optimality gap" else ""),
               yticks=range(len(rows)), yticklabels=[sm.label(r["algo"]) for r in rows])
    fig.suptitle(f"Point estimate and 95% stratified-bootstrap interval over the {_count(len(sm.tasks), 'task')} the "
                 f"algorithms share", fontsize=7)
    fig.tight_layout()
    out_names = _save(fig, out, "aggregate_intervals")
    plt.close(fig)
    return out_names


def plot_performance_profiles(sm: ScoreMatrices, out: Path, n_resamples: int = 2000) -> list[str]:
    if not sm.compared:
        return []
    plt, sns = _plt()
    matrices = sm.matrices
    everything = np.concatenate([m[~np.isnan(m)] for m in matrices.values()])
    taus = np.linspace(min(0.0, everything.min()), max(100.0, everything.max()), 101)
    fig, ax = plt.subplots(figsize=(COLUMN_IN, 2.4))
    styles = _styles(sns, sm.compared + sm.apart)
    for a, m in matrices.items():
        profile, lo, hi = st.performance_profile_band(m, taus, n_resamples=n_resamples)
        ax.plot(taus, profile, label=sm.label(a), lw=1.2, ms=3, markevery=10, **styles[a])
        if not np.isnan(lo).all():
            ax.fill_between(taus, lo, hi, color=styles[a]["color"], alpha=0.2, lw=0)
    ax.set(xlabel=r"normalised score $\tau$", ylabel=r"fraction of runs with score $> \tau$",
           title=f"{_count(len(sm.tasks), 'task')}; bands: 95% stratified-bootstrap intervals")
    ax.legend(fontsize=6)
    fig.tight_layout()
    names = _save(fig, out, "performance_profiles")
    plt.close(fig)
    return names


def plot_improvement_matrix(poi: list[dict], sm: ScoreMatrices, out: Path) -> list[str]:
    """P(row > column) with its 95% interval in each cell; a pair compared over other tasks than the compared set
    says over how many."""
    if not poi:
        return []
    plt, sns = _plt()
    algos = [a for a in sm.compared + sm.apart if any(r["algo"] == a for r in poi)]
    grid = np.full((len(algos), len(algos)), np.nan)
    text = np.full(grid.shape, "", dtype=object)
    for r in poi:
        i, j = algos.index(r["algo"]), algos.index(r["other"])
        grid[i, j] = r["P"]
        text[i, j] = f"{r['P']:.2f}" + (f"\n[{r['low']:.2f}, {r['high']:.2f}]" if not math.isnan(r["low"]) else "") \
            + (f"\n{_count(r['tasks'], 'task')}" if r["tasks"] != len(sm.tasks) else "")
    labels = [sm.label(a) for a in algos]
    size = max(COLUMN_IN, 0.75 * len(algos) + 1.2)
    fig, ax = plt.subplots(figsize=(size, size * 0.85))
    sns.heatmap(grid, annot=text, fmt="", vmin=0, vmax=1, cmap="vlag", center=0.5, xticklabels=labels,
                yticklabels=labels, ax=ax, cbar_kws={"label": "P(row > column)"}, annot_kws={"fontsize": 5})
    ax.set(xlabel="Y", ylabel="X", title=f"Probability of improvement P(X > Y) [95% interval], over the "
                                          f"{_count(len(sm.tasks), 'task')} shared unless marked")
    fig.tight_layout()
    names = _save(fig, out, "probability_of_improvement")
    plt.close(fig)
    return names


def figure_captions(sm: ScoreMatrices, n_resamples: int) -> dict[str, str]:
    """What each figure shows, for report.md (by file stem)."""
    return {
        "learning_curves": "Normalised score of the evaluations during training, per dataset: mean over seeds, "
                           "shaded ± 1 std; the legend gives each algorithm's runs over all datasets.",
        "training_loss": "Training loss from the CSV logs (`--logger csv`), per dataset: mean over seeds, shaded "
                         "± 1 std.",
        "aggregate_intervals": f"Mean, Median, IQM and optimality gap of the {len(sm.compared)} algorithms compared "
                               f"over the {_count(len(sm.tasks), 'task')} they share (runs in the labels), with 95% "
                               f"stratified-bootstrap intervals ({n_resamples} resamples); algorithms on other "
                               "tasks are in the table above only.",
        "performance_profiles": f"Fraction of runs scoring above each threshold, each of the {len(sm.tasks)} "
                                "shared tasks weighted equally, with 95% bootstrap bands.",
        "probability_of_improvement": "P(row > column): the chance that a run of the row's algorithm beats one of "
                                      "the column's on a task, averaged over tasks, with its 95% interval; a cell "
                                      "marked with a number of tasks compares that pair over the tasks both have.",
    }


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
    llm_records = load_llm_records(paths, unreadable)
    if not cells and not llm_records:
        reasons = Counter(reason.split(":")[0] for _, reason in selection.left_out)
        raise ValueError(f"no complete run records with a score under {', '.join(map(str, paths))} "
                         f"({len(records)} records read, {len(unreadable)} unreadable; left out: "
                         f"{dict(reasons) or 'none'})")
    llm_md = _llm_section(write_llm_tables(llm_records, out), _budget_forcing(budget_forcing_rows(llm_records),
                                                                                out)) if llm_records else None
    if not cells:
        (out / "report.md").write_text("# Results\n" + llm_md)
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
               + plot_aggregates(agg, sm, out) + plot_performance_profiles(sm, out)
               + plot_improvement_matrix(poi, sm, out))
    for stem in figure_captions(sm, n_resamples):  # a figure this report has not drawn is not left from an older one
        for ext in ("png", "pdf"):
            if f"{stem}.{ext}" not in figures:
                (out / f"{stem}.{ext}").unlink(missing_ok=True)
    (out / "report.md").write_text(_report_markdown(records, unreadable, selection, algos, groups, alpha, holm, sm,
                                                    agg, poi, comparison, figures, n_resamples)
                                   + (llm_md or ""))
    return {"records": len(records) + len(llm_records), "unreadable": unreadable, "not_records": not_records,
            "cells": len(cells), "figures": figures, "out": out, "selection": selection}


def _budget_forcing(rows: list[dict], out: Path) -> str:
    """The paper's Figure 2 (budget_forcing.png/.pdf: per task, accuracy against the mean thinking tokens, one line
    per model over its budgets, the unforced point apart) and its values (budget_forcing.csv); the Markdown that
    shows them, or nothing without a budget series."""
    _write_csv(out / "budget_forcing.csv", rows)
    for ext in ("png", "pdf"):
        (out / f"budget_forcing.{ext}").unlink(missing_ok=True)
    if not rows:
        return ""
    plt, sns = _plt()
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    models = list(dict.fromkeys(r["model"] for r in rows))
    colors = dict(zip(models, sns.color_palette("tab10", len(models)), strict=True))
    fig, axes = plt.subplots(1, len(tasks), figsize=(COLUMN_IN if len(tasks) == 1 else TEXT_IN, 2.3), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        for k, model in enumerate(models):
            mine = [r for r in rows if r["task"] == task and r["model"] == model]
            forced = [r for r in mine if r["budget"] not in (0, "auto")]
            style = {"color": colors[model], "linestyle": LINESTYLES[k % len(LINESTYLES)],
                     "marker": MARKERS[k % len(MARKERS)]}
            if forced:
                x = [r["thinking_tokens_mean"] for r in forced]
                ax.plot(x, [r["accuracy"] for r in forced], lw=1.2, ms=4, label=model, **style)
                ax.fill_between(x, [r["low"] for r in forced], [r["high"] for r in forced], color=colors[model],
                                alpha=0.15, lw=0)
            for r in (r for r in mine if r["budget"] in (0, "auto")):
                ax.errorbar([r["thinking_tokens_mean"]], [r["accuracy"]], yerr=[[r["accuracy"] - r["low"]],
                            [r["high"] - r["accuracy"]]], color=colors[model], marker="*", ms=8, ls="none",
                            label=f"{model}, no budget forcing")
        ax.set(title=next(r for r in rows if r["task"] == task)["title"], xlabel="average thinking tokens",
               ylabel="accuracy (%)")
    axes[0][0].legend(fontsize=5)
    fig.suptitle("Budget forcing: accuracy (95% interval) against the thinking tokens used", fontsize=7)
    fig.tight_layout()
    names = _save(fig, out, "budget_forcing")
    plt.close(fig)
    return ("\n### Budget forcing (the paper's Figure 2)\n\n" f"![budget forcing]({names[1]})\n\n"
            "Per task, accuracy against the average number of thinking tokens the answers used, one line per model "
            "over its thinking budgets (shaded: 95% interval), a star for the model without budget forcing. Values: "
            "[budget_forcing.csv](budget_forcing.csv); figure: [png](budget_forcing.png), "
            "[pdf](budget_forcing.pdf).\n")


def _llm_section(table_md: str, figure_md: str) -> str:
    return ("\n## Reasoning (LLM)\n\n" + table_md + "\nAccuracy (%) with its 95% interval (Wilson; for pass@1 over "
            "k samples a t interval over items), items n (and samples k) per cell, each row's protocol beside it; "
            "rows marked (paper) are the paper's Table 1. Files: [llm_table.tex](llm_table.tex), "
            "[llm_table.md](llm_table.md), [llm_table.csv](llm_table.csv).\n" + figure_md)


def _write_csv(path: Path, rows: list[dict]) -> None:
    """``rows`` as CSV; no rows: no file (an older report's is removed), report.md says why."""
    if not rows:
        path.unlink(missing_ok=True)
        return
    with open(path, "w", newline="") as f:
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
    for compared in (True, False):
        rows = [r for r in agg if r["compared"] == compared]
        if rows and not compared:
            lines.append("| *over their own tasks, not comparable with the rows above* |" + " |" * (len(names) + 2))
        for r in rows:
            per_task = str(r["runs_per_task_min"]) if r["runs_per_task_min"] == r["runs_per_task_max"] else \
                f"{r['runs_per_task_min']}–{r['runs_per_task_max']}"
            lines.append(f"| {sm.label(r['algo'])} | {r['tasks']} | {per_task} | "
                         + " | ".join(_ci(r[k], r[f"{k}_low"], r[f"{k}_high"]) for k in names) + " |")
    headline = [r for r in poi if r["algo"] == HEADLINE]
    if headline:
        lines += ["", f"Probability of improvement of {DISPLAY_NAMES.get(HEADLINE)} (95% interval), over the tasks "
                  "both have:", ""]
        lines += [f"- over {DISPLAY_NAMES.get(r['other'], r['other'])}: {_ci(r['P'], r['low'], r['high'], 2)} "
                  f"({_count(r['tasks'], 'task')})" for r in headline]
    every_pair = ("Every pair's probability of improvement: [probability_of_improvement.csv]"
                  "(probability_of_improvement.csv) and its figure." if poi else
                  "No probability of improvement: no two algorithms share a task.")
    lines += ["", "rliable's definitions (Agarwal et al. 2021), each task weighted equally and every counted run used: "
              "Mean and Median of the per-task means, IQM of all run × task scores (a task with fewer runs weighs "
              "each of them more), optimality gap 100 - mean(min(score, 100)); 95% percentile intervals of a "
              f"stratified bootstrap ({n_resamples} resamples, each task's runs resampled within it, as many as it "
              f"has). {every_pair} Files: [aggregate_table.tex](aggregate_table.tex), [aggregate.csv](aggregate.csv).",
              "",
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
    captions = figure_captions(sm, n_resamples)
    lines += ["", "## Figures", ""] + [f"- [{f}]({f}) ([pdf]({f.removesuffix('.png')}.pdf)): "
                                       f"{captions[f.removesuffix('.png')]}" for f in figures if f.endswith(".png")]
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
