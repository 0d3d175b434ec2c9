"""s1K-1.1 -> tokenised chat examples with the loss on the assistant turn only (REFERENCE §5).

Text of one example (s1's format), through the model's own chat template:
    user      = question
    assistant = "<|im_start|>think\\n" + trace + "\\n<|im_start|>answer\\n" + "Answer: " + attempt
The loss covers every token after the generation prompt ("<|im_start|>assistant\\n"): the trace, the answer and
the end-of-turn tokens. The prompt and the assistant part are tokenised separately and concatenated, so the
boundary is exact whatever the tokenizer merges across it.

Truncation policy (``--max-length``, default 20,000 tokens, the paper's block size): ``truncate`` keeps the first
max-length tokens (the prompt whole, the end of the trace and the answer cut — s1's behaviour); ``drop`` leaves
such examples out. A prompt alone longer than max-length is an error either way.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

THINK = "<|im_start|>think\n"
ANSWER = "<|im_start|>answer\n"
TRACES = {  # --traces -> (trace column, attempt column) of s1K / s1K-1.1
    "deepseek": ("deepseek_thinking_trajectory", "deepseek_attempt"),
    "gemini": ("gemini_thinking_trajectory", "gemini_attempt"),
}
S1K_ID = "simplescaling/s1K-1.1"
TABLE_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv")


class LLMDataError(ValueError):
    """A dataset or prepared folder that cannot be used; the message names the fix."""


def read_table(source: str | Path, allow: tuple[str, ...] = ("*.parquet", "*.jsonl", "*.json", "*.csv"),
               flag: str = "--source PATH") -> list[dict]:
    """Rows of a local table (jsonl/json/parquet/csv file, or a folder of them) or of a Hugging Face dataset id;
    ``flag`` is how the user passes a local file instead (named in the error when the download fails)."""
    path = Path(source)
    if not path.exists():
        path = _download_dataset(str(source), allow, flag)
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.suffix in TABLE_SUFFIXES)
    if not files:
        raise LLMDataError(f"no .jsonl/.json/.parquet/.csv file in {path}")
    import pandas as pd

    rows: list[dict] = []
    for f in files:
        if f.suffix == ".jsonl":
            rows += [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
        elif f.suffix == ".json":
            obj = json.loads(f.read_text())
            rows += obj if isinstance(obj, list) else obj.get("rows", [obj])
        elif f.suffix == ".parquet":
            rows += pd.read_parquet(f).to_dict("records")
        else:
            rows += pd.read_csv(f).to_dict("records")
    return rows


def _download_dataset(repo_id: str, allow: tuple[str, ...], flag: str) -> Path:
    if "/" not in repo_id:
        raise LLMDataError(f"{repo_id!r} is neither a file nor a folder nor a Hugging Face dataset id (owner/name)")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, repo_type="dataset", allow_patterns=list(allow)))
    except Exception as e:  # offline, gated, missing: all end in the same advice
        raise LLMDataError(f"could not fetch the Hugging Face dataset {repo_id} ({type(e).__name__}: {e}); download "
                           f"it on a machine with network access (and accepted terms, for gated sets) and pass the "
                           f"local file or folder with {flag}") from e


def s1_messages(row: dict, traces: str) -> tuple[dict, dict]:
    """The (user, assistant) messages of one s1K row in the s1 format."""
    trace_col, attempt_col = TRACES[traces]
    missing = [c for c in ("question", trace_col, attempt_col) if not isinstance(row.get(c), str)]
    if missing:
        raise LLMDataError(f"row has no text in column(s) {missing}; s1K-1.1 rows carry question, "
                           f"{trace_col} and {attempt_col} (choose the traces with --traces)")
    attempt = row[attempt_col].strip()
    if "Answer:" not in attempt:  # s1 adds the prefix only to an attempt that lacks it
        attempt = "Answer: " + attempt
    assistant = THINK + row[trace_col].strip() + "\n" + ANSWER + attempt
    return {"role": "user", "content": row["question"]}, {"role": "assistant", "content": assistant}


def token_hash(ids: list[int]) -> str:
    return hashlib.sha256(np.asarray(ids, dtype=np.int64).tobytes()).hexdigest()[:16]


def tokenize_example(tokenizer, user: dict, assistant: dict) -> tuple[list[int], int]:
    """(input_ids, prompt_len): tokens [prompt_len, len) carry the loss."""
    prompt = tokenizer.apply_chat_template([user], tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template([user, assistant], tokenize=False)
    if not full.startswith(prompt):
        raise LLMDataError("the chat template renders the user turn differently with and without the assistant turn; "
                           "the assistant-only loss mask cannot be placed — use a Qwen/ChatML-style template")
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    completion_ids = tokenizer(full[len(prompt):], add_special_tokens=False)["input_ids"]
    return prompt_ids + completion_ids, len(prompt_ids)


@dataclass(frozen=True)
class PrepareStats:
    examples: int
    dropped: int
    truncated: int
    tokens: dict[str, float]  # total tokens per example: mean, p50, p90, p99, max
    loss_tokens: int

    def lines(self) -> list[str]:
        t = self.tokens
        return [f"examples {self.examples} (dropped {self.dropped}, truncated {self.truncated})",
                f"tokens per example: mean {t['mean']:.0f}, p50 {t['p50']:.0f}, p90 {t['p90']:.0f}, "
                f"p99 {t['p99']:.0f}, max {t['max']:.0f} (before truncation)",
                f"loss tokens in all: {self.loss_tokens}"]


def prepare(source: str | Path, tokenizer_name: str, out: Path, traces: str = "deepseek", max_length: int = 22000,
            policy: str = "truncate", limit: int | None = None) -> PrepareStats:
    """Tokenise s1K(-1.1) rows into ``out/examples.jsonl`` and ``out/prepare.json``."""
    if traces not in TRACES:
        raise LLMDataError(f"unknown traces {traces!r}; choose one of {sorted(TRACES)}")
    if policy not in ("truncate", "drop"):
        raise LLMDataError(f"unknown truncation policy {policy!r}; choose truncate or drop")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_name)
    rows = read_table(source)[:limit]
    examples, raw_lengths, dropped, truncated = [], [], 0, 0
    for i, row in enumerate(rows):
        user, assistant = s1_messages(row, traces)
        ids, prompt_len = tokenize_example(tokenizer, user, assistant)
        raw_lengths.append(len(ids))
        if prompt_len >= max_length:
            raise LLMDataError(f"row {i}: the prompt alone has {prompt_len} tokens >= --max-length {max_length}")
        if len(ids) > max_length:
            if policy == "drop":
                dropped += 1
                continue
            ids, truncated = ids[:max_length], truncated + 1
        qid = hashlib.sha1(row["question"].encode()).hexdigest()[:8]
        examples.append({"id": f"{i:04d}-{qid}", "input_ids": ids, "prompt_len": prompt_len,
                         "token_hash": token_hash(ids)})
    if not examples:
        raise LLMDataError(f"no example left from {source} (all longer than --max-length {max_length}?)")
    lengths = np.asarray(raw_lengths, dtype=float)
    stats = PrepareStats(
        examples=len(examples), dropped=dropped, truncated=truncated,
        tokens={"mean": lengths.mean(), "p50": np.percentile(lengths, 50), "p90": np.percentile(lengths, 90),
                "p99": np.percentile(lengths, 99), "max": lengths.max()},
        loss_tokens=sum(len(e["input_ids"]) - e["prompt_len"] for e in examples))
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "examples.jsonl.tmp"
    tmp.write_text("".join(json.dumps(e) + "\n" for e in examples))
    tmp.replace(out / "examples.jsonl")
    meta = {"source": str(source), "tokenizer": tokenizer_name, "traces": traces, "max_length": max_length,
            "policy": policy, "pad_token_id": tokenizer.pad_token_id if tokenizer.pad_token_id is not None
            else tokenizer.eos_token_id, "fingerprint": data_fingerprint(examples),
            "stats": {"examples": stats.examples, "dropped": dropped, "truncated": truncated,
                      "tokens": stats.tokens, "loss_tokens": stats.loss_tokens}}
    (out / "prepare.json").write_text(json.dumps(meta, indent=2))
    return stats


def data_fingerprint(examples: list[dict]) -> str:
    return hashlib.sha256("".join(e["id"] + e["token_hash"] for e in examples).encode()).hexdigest()[:16]


def load_prepared(folder: Path) -> tuple[list[dict], dict]:
    """(examples, meta) written by :func:`prepare`."""
    folder = Path(folder)
    if not (folder / "examples.jsonl").exists() or not (folder / "prepare.json").exists():
        raise LLMDataError(f"{folder} holds no prepared examples; run `bench llm prepare --out {folder}` first")
    try:
        examples = [json.loads(line) for line in (folder / "examples.jsonl").read_text().splitlines()]
        meta = json.loads((folder / "prepare.json").read_text())
    except json.JSONDecodeError as e:
        raise LLMDataError(f"{folder} is corrupt ({e}); run `bench llm prepare --out {folder}` again") from e
    if data_fingerprint(examples) != meta.get("fingerprint"):
        raise LLMDataError(f"{folder}/examples.jsonl does not match its prepare.json; run `bench llm prepare` again")
    return examples, meta
