"""The paper's Table 1 (reasoning accuracy, %) from `bench llm eval` records, beside the paper's own rows.

Records are ``*.llmeval.json`` files (one per model and task); rows are model names, columns AIME 2024, MATH500 and
GPQA Diamond; each of our cells carries its 95% Wilson interval and the number of items.
"""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path

from bench.reports.latex import latex_escape

TASK_COLUMNS = {"aime24": "AIME 2024", "math500": "MATH500", "gpqa_diamond": "GPQA Diamond"}
PAPER_LLM_SCORES = Path(__file__).with_name("paper_llm_scores.csv")
SUFFIX = ".llmeval.json"
LLM_RECORD_KEYS = {"name", "task", "n", "accuracy", "ci95", "config"}
# outputs counted wrong for a reason a reader should see beside the accuracy (bench/llm/answers.py)
GRADING_COUNTS = {"unreadable": "no answer found", "contradictory": "self-contradicting",
                  "grading_timeouts": "math-verify timed out"}


def load_llm_records(paths: list[Path], unreadable: list[tuple[Path, str]] | None = None) -> list[dict]:
    """Every ``*.llmeval.json`` under ``paths``; one that is damaged (not JSON, not an object) is appended to
    ``unreadable`` with the reason, and the others are read."""
    records = []
    for root in map(Path, paths):
        files = [root] if root.is_file() else sorted(root.rglob(f"*{SUFFIX}"))
        for f in files:
            if not f.name.endswith(SUFFIX):
                continue
            try:
                record = json.loads(f.read_text())
                if not isinstance(record, dict):
                    raise TypeError(f"it holds a JSON {type(record).__name__}, not an object")
                if missing := sorted(LLM_RECORD_KEYS - record.keys()):
                    raise TypeError(f"it lacks {', '.join(missing)}")
            except (OSError, ValueError, TypeError) as e:
                if unreadable is None:
                    raise
                unreadable.append((f, f"{type(e).__name__}: {e}"))
                continue
            records.append(record)
    return records


PAPER_PROTOCOL = "the paper's: s1's evaluation without budget forcing (prompt s1, thinking auto, greedy)"


def protocol(config: dict) -> str:
    """How an evaluation generated its answers, as the table labels its row: the question wording, the thinking
    budget (none, a number of tokens with its waits, or s1's auto) and greedy decoding."""
    budget = config.get("thinking_budget", 0)
    if budget == "auto":
        thinking = "thinking auto"
    elif budget:
        waits = config.get("num_waits", 0)
        thinking = f"thinking {budget} tokens" + (f", {waits} wait{'s' * (waits > 1)}" if waits else "")
    else:
        thinking = f"no budget forcing, {config.get('max_new_tokens')} tokens"
    k = config.get("samples", 1)
    decoding = "greedy" if k == 1 else f"pass@1 over {k} samples at temperature {config.get('temperature'):g}"
    return f"prompt {config.get('prompt', 'ours')}, {thinking}, {decoding}"


def llm_table_rows(records: list[dict]) -> list[dict]:
    """One row per model name and protocol (a budget series: one per budget): task -> {accuracy, low, high, n, k}
    in %, the newest record winning a duplicate."""
    rows: dict[tuple[str, str], dict] = {}
    for r in records:
        lo, hi = r["ci95"]
        how = protocol(r.get("config", {}))
        row = rows.setdefault((r["name"], how), {"model": r["name"], "paper": False, "protocol": how})
        row[r["task"]] = {"accuracy": 100 * r["accuracy"], "low": 100 * lo, "high": 100 * hi, "n": r["n"],
                          "k": r.get("k", 1), **{k: r.get(k, 0) for k in GRADING_COUNTS}}
    ours = list(rows.values())
    with open(PAPER_LLM_SCORES) as f:
        paper = [{"model": p["model"], "paper": True, "protocol": PAPER_PROTOCOL,
                  **{t: {"accuracy": float(p[t])} for t in TASK_COLUMNS}} for p in csv.DictReader(f)]
    return ours + paper


def _cell(c: dict | None, latex: bool) -> str:
    if c is None:
        return "--" if latex else "–"
    if "low" not in c:
        return f"{c['accuracy']:.1f}"
    if latex:
        return f"{c['accuracy']:.1f} {{\\scriptsize [{c['low']:.1f}, {c['high']:.1f}]}}"
    return f"{c['accuracy']:.1f} [{c['low']:.1f}, {c['high']:.1f}] (n={c['n']}" + \
        (f", k={c['k']})" if c.get("k", 1) > 1 else ")")


def render_llm_markdown(rows: list[dict]) -> str:
    lines = ["| Model | " + " | ".join(TASK_COLUMNS.values()) + " | Protocol |",
             "|---" * (len(TASK_COLUMNS) + 2) + "|"]
    lines += [f"| {r['model']} | " + " | ".join(_cell(r.get(t), False) for t in TASK_COLUMNS) + f" | {r['protocol']} |"
              for r in rows]
    notes = [f"- {r['model']}, {TASK_COLUMNS[t]}: "
             + ", ".join(f"{r[t][k]} {what}" for k, what in GRADING_COUNTS.items() if r[t].get(k))
             for r in rows for t in TASK_COLUMNS if t in r and any(r[t].get(k) for k in GRADING_COUNTS)]
    if notes:
        lines += ["", "Counted wrong (of n):", *notes]
    return "\n".join(lines) + "\n"


def render_llm_latex(rows: list[dict]) -> str:
    marks = {p: "abcdefghijklmnopqrstuvwxyz"[i] for i, p in enumerate(dict.fromkeys(r["protocol"] for r in rows))}
    body = [f"{latex_escape(r['model'])}$^{{{marks[r['protocol']]}}}$ & "
            + " & ".join(_cell(r.get(t), True) for t in TASK_COLUMNS) + r" \\" for r in rows]
    protocols = "; ".join(f"$^{{{m}}}$ {latex_escape(p)}" for p, m in marks.items())
    return "\n".join([r"\begin{table}[t]", r"\centering", r"\begin{tabular}{l" + "c" * len(TASK_COLUMNS) + "}",
                      r"\toprule", "Model & " + " & ".join(TASK_COLUMNS.values()) + r" \\", r"\midrule", *body,
                      r"\bottomrule", r"\end{tabular}",
                      r"\caption{Accuracy (\%); brackets: 95\% interval (Wilson; for pass@1 over k samples, a t "
                      r"interval over items). Rows marked (paper) are the numbers reported by Qin \& Springenberg "
                      r"(2025). Protocols: " + protocols + "}",
                      r"\label{tab:llm}", r"\end{table}"]) + "\n"


def llm_table_csv(rows: list[dict]) -> str:
    header = ["model", "source", "protocol"] + [f"{t}{s}" for t in TASK_COLUMNS for s in ("", "_low", "_high", "_n")]
    lines = [",".join(header)]
    for r in rows:
        vals = [r["model"], "paper" if r["paper"] else "ours", r["protocol"]]
        for t in TASK_COLUMNS:
            c = r.get(t) or {}
            vals += [f"{c[k]:.4g}" if k in c else "" for k in ("accuracy", "low", "high", "n")]
        lines.append(",".join(f'"{v}"' if "," in v else v for v in vals))
    return "\n".join(lines) + "\n"


def budget_forcing_rows(records: list[dict]) -> list[dict]:
    """The paper's Figure 2 as data: per (task, model, thinking budget) the accuracy (%, with its interval) and the
    mean thinking tokens its answers used; budget 0 is the model without budget forcing. Only models evaluated at
    two or more budgets (a series: `bench llm eval --thinking-budgets`)."""
    rows = [{"task": r["task"], "title": r.get("title", r["task"]), "model": r["name"],
             "budget": r["config"].get("thinking_budget", 0),
             "thinking_tokens_mean": r.get("thinking_tokens_mean"), "waits_mean": r.get("waits_mean"),
             "accuracy": 100 * r["accuracy"], "low": 100 * r["ci95"][0], "high": 100 * r["ci95"][1], "n": r["n"]}
            for r in records if r.get("thinking_tokens_mean") is not None]
    budgets = defaultdict(set)
    for r in rows:
        budgets[r["model"]].add(r["budget"])
    return sorted((r for r in rows if len(budgets[r["model"]]) > 1),
                  key=lambda r: (r["task"], r["model"], r["thinking_tokens_mean"]))


def write_llm_tables(records: list[dict], out: Path) -> str:
    """Write llm_table.{md,tex,csv}; returns the Markdown table."""
    rows = llm_table_rows(records)
    md = render_llm_markdown(rows)
    (out / "llm_table.md").write_text(md)
    (out / "llm_table.tex").write_text(render_llm_latex(rows))
    (out / "llm_table.csv").write_text(llm_table_csv(rows))
    return md
