"""`bench llm eval`: AIME 2024, MATH500 and GPQA Diamond with greedy decoding (REFERENCE §5).

Each task loads from a local file/folder (``--data task=PATH``) or its Hugging Face id. Prompts are the model's chat
template with the question as the user turn (our wording, in the constants below: math questions end with the
request to box the final answer; GPQA questions start with the request to end with "Answer: LETTER"). Generation is
greedy, by Transformers (always available) or vLLM (when installed). With ``--thinking-budget`` the s1 budget
forcing applies: the model thinks after "<|im_start|>think" until it stops or the budget is spent; "Wait" is
appended ``--num-waits`` times to make it think on; then "<|im_start|>answer" is appended and the answer generated.
Answers are extracted and graded by :mod:`bench.llm.answers`. GPQA options are shuffled by a permutation derived
from the question's id and ``--seed`` (the same on every run), and an answer naming no single letter is wrong.

Output per task: ``TASK.jsonl`` (one line per item: id, gold, extracted answer, correct, generated tokens, text) and
``TASK.llmeval.json``, a record `bench report` tabulates in the paper's Table 1 layout.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.llm.answers import ANSWER_MARK, LETTERS, extract_answer, extract_choice, grade_math
from bench.llm.data import LLMDataError, read_table

MATH_INSTRUCTION = "\n\nPlease reason step by step, and put your final answer within \\boxed{}."
GPQA_INSTRUCTION = ("Answer the following multiple choice question. The last line of your response should be of the "
                    "form 'Answer: LETTER' where LETTER is one of ABCD.\n\n")


@dataclass(frozen=True)
class EvalItem:
    id: str
    question: str  # the user turn
    gold: str  # the answer (math) or the correct option's letter (choice)
    kind: str  # math | choice


@dataclass(frozen=True)
class TaskSpec:
    title: str  # column title in the paper's Table 1
    hf_id: str
    files: tuple[str, ...]  # patterns fetched from the hub
    parse: Callable[[list[dict], int], list[EvalItem]]


def _math_items(rows: list[dict], seed: int) -> list[EvalItem]:
    items = []
    for i, r in enumerate(rows):
        q = r.get("problem", r.get("question"))
        if q is None or r.get("answer") is None:
            raise LLMDataError("a math task row needs 'problem' (or 'question') and 'answer' columns")
        rid = str(r.get("unique_id", r.get("id", i)))
        items.append(EvalItem(rid, str(q) + MATH_INSTRUCTION, str(r["answer"]).strip(), "math"))
    return items


def shuffled_options(record_id: str, correct: str, incorrect: list[str], seed: int) -> tuple[list[str], str]:
    """Options in an order fixed by (record id, seed), and the correct option's letter."""
    digest = hashlib.sha256(f"{record_id}|{seed}".encode()).digest()
    order = np.random.default_rng(list(digest[:8])).permutation(4)
    options = [([correct] + incorrect)[k] for k in order]
    return options, LETTERS[int(np.flatnonzero(order == 0)[0])]


def _gpqa_items(rows: list[dict], seed: int) -> list[EvalItem]:
    items = []
    for i, r in enumerate(rows):
        cols = ["Question", "Correct Answer", "Incorrect Answer 1", "Incorrect Answer 2", "Incorrect Answer 3"]
        if any(c not in r for c in cols):
            raise LLMDataError(f"a GPQA row needs the columns {cols} (the gpqa_diamond.csv layout)")
        rid = str(r.get("Record ID", i))
        options, gold = shuffled_options(rid, str(r["Correct Answer"]).strip(),
                                         [str(r[c]).strip() for c in cols[2:]], seed)
        body = "\n".join(f"{LETTERS[k]}) {o}" for k, o in enumerate(options))
        items.append(EvalItem(rid, GPQA_INSTRUCTION + str(r["Question"]).strip() + "\n\n" + body, gold, "choice"))
    return items


TASKS = {
    "aime24": TaskSpec("AIME 2024", "HuggingFaceH4/aime_2024", ("*.parquet", "*.jsonl"), _math_items),
    "math500": TaskSpec("MATH500", "HuggingFaceH4/MATH-500", ("test.jsonl",), _math_items),
    "gpqa_diamond": TaskSpec("GPQA Diamond", "Idavidrein/gpqa", ("gpqa_diamond.csv",), _gpqa_items),
}


def load_task(name: str, source: str | None = None, seed: int = 0, limit: int | None = None) -> list[EvalItem]:
    if name not in TASKS:
        raise LLMDataError(f"unknown task {name!r}; choose from {', '.join(TASKS)}")
    spec = TASKS[name]
    return spec.parse(read_table(source or spec.hf_id, spec.files, f"--data {name}=PATH"), seed)[:limit]


def grade(item: EvalItem, completion: str) -> tuple[str | None, bool]:
    """(extracted answer, correct)."""
    answer = extract_answer(completion)
    if item.kind == "choice":
        letter = extract_choice(answer)
        return letter, letter == item.gold
    return answer, grade_math(answer, item.gold)


def wilson_interval(correct: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """95% Wilson score interval of a binomial proportion (well behaved at 0 and n, unlike the normal one)."""
    if n == 0:
        return 0.0, 1.0
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    # The bounds are exactly 0 at 0 correct and 1 at n (rounding would leave 1e-17 outside).
    return (0.0 if correct == 0 else centre - half), (1.0 if correct == n else centre + half)


class _Generator:
    tokenizer: object

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])


class TransformersGenerator(_Generator):
    """Greedy batched generation with Transformers; returns continuations cut at the first stop string."""

    def __init__(self, model: str, dtype: str = "bfloat16", batch_size: int = 8, device: str | None = None):
        import torch
        from transformers import AutoTokenizer

        from bench.llm.reference import load_causal_lm

        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.tokenizer = AutoTokenizer.from_pretrained(model)
        self.tokenizer.padding_side = "left"
        self.model = load_causal_lm(model, dtype).to(self.device).eval()
        self.batch_size = batch_size
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None \
            else self.tokenizer.eos_token_id

    def generate(self, prompts: list[str], max_new_tokens: list[int], stop: list[str]) -> list[str]:
        import torch

        outs: list[str] = []
        for s in range(0, len(prompts), self.batch_size):
            chunk, budget = prompts[s:s + self.batch_size], max(max_new_tokens[s:s + self.batch_size])
            enc = self.tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
            with torch.inference_mode():
                ids = self.model.generate(**enc, do_sample=False, max_new_tokens=max(budget, 1),
                                          stop_strings=stop or None, tokenizer=self.tokenizer,
                                          pad_token_id=self.pad_id)
            for row, limit in zip(ids[:, enc["input_ids"].shape[1]:], max_new_tokens[s:s + self.batch_size],
                                  strict=True):
                row = [t for t in row[:limit].tolist() if t != self.pad_id]
                outs.append(cut_at_stop(self.tokenizer.decode(row, skip_special_tokens=False), stop))
        return outs


class VLLMGenerator(_Generator):
    """Greedy generation with vLLM (tensor parallel over the visible GPUs)."""

    def __init__(self, model: str, dtype: str = "bfloat16", tensor_parallel_size: int = 1, max_model_len: int = 32768):
        from transformers import AutoTokenizer
        from vllm import LLM

        self.tokenizer = AutoTokenizer.from_pretrained(model)
        self.llm = LLM(model=model, dtype=dtype, tensor_parallel_size=tensor_parallel_size,
                       max_model_len=max_model_len)

    def generate(self, prompts: list[str], max_new_tokens: list[int], stop: list[str]) -> list[str]:
        from vllm import SamplingParams

        params = [SamplingParams(temperature=0.0, max_tokens=max(m, 1), stop=stop or None,
                                 skip_special_tokens=False) for m in max_new_tokens]
        return [o.outputs[0].text for o in self.llm.generate(prompts, params)]


def cut_at_stop(text: str, stop: list[str]) -> str:
    cut = min([i for i in (text.find(s) for s in stop) if i >= 0], default=len(text))
    return text[:cut]


def budget_forced_generate(gen, prompts: list[str], thinking_budget: int, num_waits: int,
                           answer_tokens: int) -> list[str]:
    """s1 budget forcing; returns each completion after its prompt: think ... Wait ... <|im_start|>answer ...

    Thinking stops at "<|im_start|>" (the model opening its answer) or "<|im_end|>"; every generated thinking token
    counts against ``thinking_budget``, so the total never exceeds it.
    """
    think_stop = ["<|im_start|>", "<|im_end|>"]
    completions = ["<|im_start|>think\n"] * len(prompts)
    used = [0] * len(prompts)
    for round_ in range(num_waits + 1):
        left = [max(thinking_budget - u, 0) for u in used]
        texts = gen.generate([p + c for p, c in zip(prompts, completions, strict=True)], left, think_stop)
        for i, t in enumerate(texts):
            used[i] += gen.count_tokens(t) if t else 0
            completions[i] += t + ("Wait" if round_ < num_waits else "")
    answers_prompt = [c.rstrip() + "\n" + ANSWER_MARK + "\n" for c in completions]
    answers = gen.generate([p + c for p, c in zip(prompts, answers_prompt, strict=True)],
                           [answer_tokens] * len(prompts), ["<|im_end|>"])
    return [c + a for c, a in zip(answers_prompt, answers, strict=True)]


def evaluate(model: str, tasks: list[str], out: Path, sources: dict[str, str] | None = None, backend: str = "auto",
             max_new_tokens: int = 32768, thinking_budget: int = 0, num_waits: int = 0, answer_tokens: int = 512,
             seed: int = 0, limit: int | None = None, batch_size: int = 8, dtype: str = "bfloat16",
             tensor_parallel_size: int = 1, name: str | None = None) -> list[dict]:
    """Evaluate one model on the tasks; writes per-item JSONL and one record per task; returns the records."""
    from bench.results.store import package_versions, write_json_atomic

    sources = sources or {}
    items = {t: load_task(t, sources.get(t), seed, limit) for t in tasks}  # fail on bad data before loading a model
    gen = _generator(model, backend, dtype, batch_size, tensor_parallel_size, max_new_tokens)
    tokenizer = gen.tokenizer
    out.mkdir(parents=True, exist_ok=True)
    records = []
    for task, task_items in items.items():
        t0 = time.perf_counter()
        prompts = [tokenizer.apply_chat_template([{"role": "user", "content": it.question}], tokenize=False,
                                                 add_generation_prompt=True) for it in task_items]
        if thinking_budget:
            completions = budget_forced_generate(gen, prompts, thinking_budget, num_waits, answer_tokens)
        else:
            eos = tokenizer.eos_token or "<|im_end|>"
            completions = gen.generate(prompts, [max_new_tokens] * len(prompts), [eos])
        lines, correct, unreadable = [], 0, 0
        for it, text in zip(task_items, completions, strict=True):
            answer, ok = grade(it, text)
            correct += ok
            unreadable += answer is None
            lines.append({"id": it.id, "gold": it.gold, "extracted": answer, "correct": ok,
                          "generated_tokens": gen.count_tokens(text), "completion": text})
        (out / f"{task}.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
        n = len(task_items)
        record = {"kind": "llm_eval", "model": model, "name": name or Path(model).name, "task": task,
                  "title": TASKS[task].title, "n": n, "correct": correct, "unreadable": unreadable,
                  "accuracy": correct / n if n else 0.0, "ci95": list(wilson_interval(correct, n)),
                  "config": {"backend": type(gen).__name__, "max_new_tokens": max_new_tokens,
                             "thinking_budget": thinking_budget, "num_waits": num_waits,
                             "answer_tokens": answer_tokens, "seed": seed, "limit": limit,
                             "source": sources.get(task) or TASKS[task].hf_id, "dtype": dtype},
                  "seconds": time.perf_counter() - t0, "versions": package_versions()}
        write_json_atomic(out / f"{task}.llmeval.json", record)
        records.append(record)
    return records


def _generator(model: str, backend: str, dtype: str, batch_size: int, tp: int, max_len: int):
    if backend not in ("auto", "transformers", "vllm"):
        raise ValueError(f"unknown backend {backend!r}; choose auto, transformers or vllm")
    if backend in ("auto", "vllm"):
        try:
            import vllm  # noqa: F401
        except ImportError:
            if backend == "vllm":
                raise ImportError("--backend vllm needs vLLM: pip install vllm (CUDA machines only)") from None
        else:
            return VLLMGenerator(model, dtype, tp, max_len + 4096)  # room for the prompt
    return TransformersGenerator(model, dtype, batch_size)
