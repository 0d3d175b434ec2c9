"""`bench llm eval`: AIME 2024, MATH500 and GPQA Diamond with greedy decoding (REFERENCE §5).

Each task loads from a local file/folder (``--data task=PATH``) or its Hugging Face id (``--data aime24=s1``: s1's
``simplescaling/aime24_nofigures``). Prompts are the model's chat template with the question as the user turn, in
one of two wordings (``--prompt``): ``ours`` (math questions end with the request to box the final answer; GPQA
questions start with the request to end with "Answer: LETTER") or ``s1`` (the OpenAI simple-evals templates that
s1's evaluation tasks ``openai_math`` / ``aime24_nofigures`` / ``gpqa_diamond_openai`` are named after: a final
"Answer:" line instead of a box). Generation is greedy, by Transformers or vLLM (when installed), never past the
model's context length: each prompt's budget is clipped to what is left of it.

``--thinking-budget`` applies s1's budget forcing exactly as s1's code does it: after "<|im_start|>think" the model
thinks until it opens a turn or the budget is spent; while budget remains and ``--num-waits`` allows, "Wait" is
appended and it thinks on (the budget is checked before every "Wait"); then "<|im_start|>answer" is appended — with
"\nFinal Answer:" after it when the thinking ran out of budget — and the answer is generated. ``auto`` is the
protocol of s1's numbers without budget forcing: the thinking may fill the context less the prompt and the
``--answer-tokens`` kept for the answer.

Answers are read and graded by :mod:`bench.llm.answers` (self-contradicting outputs are wrong; math-verify
timeouts are counted apart). GPQA options are shuffled by a permutation derived from the question's id and
``--seed`` (the same on every run); an answer naming no single letter or option is wrong.

Output per task: ``TASK.jsonl`` (one line per item: id, gold, answer read, correct, grading status, generated
tokens, text) and ``TASK.llmeval.json``, a record `bench report` tabulates in the paper's Table 1 layout.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.llm.answers import ANSWER_MARK, LETTERS, Graded, grade_choice_output, grade_math_output
from bench.llm.data import LLMDataError, read_table

PROMPTS = ("ours", "s1")
MATH_TEMPLATES = {
    "ours": "{question}\n\nPlease reason step by step, and put your final answer within \\boxed{{}}.",
    "s1": ("Solve the following math problem step by step. The last line of your response should be of the form "
           "Answer: $ANSWER (without quotes) where $ANSWER is the answer to the problem.\n\n{question}\n\n"
           "Remember to put your answer on its own line after \"Answer:\", and you do not need to use a \\boxed "
           "command."),
}
GPQA_TEMPLATES = {
    "ours": ("Answer the following multiple choice question. The last line of your response should be of the "
             "form 'Answer: LETTER' where LETTER is one of ABCD.\n\n{question}\n\n{options}"),
    "s1": ("Answer the following multiple choice question. The last line of your response should be of the "
           "following format: 'Answer: $LETTER' (without quotes) where LETTER is one of ABCD. Think step by step "
           "before answering.\n\n{question}\n\n{options}"),
}
THINK_START = "<|im_start|>think"  # what s1 appends before thinking (the model writes the newline)
THINK_STOPS = ["<|im_start|>", "<|im_end|>"]  # thinking ends when the model opens a turn or ends its own
AFTER_LENGTH_STOP = "\nFinal Answer:"  # s1: appended after the answer mark when thinking ran out of budget


@dataclass(frozen=True)
class EvalItem:
    id: str
    question: str  # the user turn
    gold: str  # the answer (math) or the correct option's letter (choice)
    kind: str  # math | choice
    options: tuple[str, ...] = ()  # choice: the options in the order shown (A, B, C, D)


@dataclass(frozen=True)
class TaskSpec:
    title: str  # column title in the paper's Table 1
    hf_id: str
    files: tuple[str, ...]  # patterns fetched from the hub
    parse: Callable[[list[dict], int, str], list[EvalItem]]
    aliases: tuple[tuple[str, str], ...] = ()  # --data task=NAME shortcuts for known sources


def _math_items(rows: list[dict], seed: int, prompt: str) -> list[EvalItem]:
    items = []
    for i, r in enumerate(rows):
        q = r.get("problem", r.get("question"))
        if q is None or r.get("answer") is None:
            raise LLMDataError("a math task row needs 'problem' (or 'question') and 'answer' columns")
        rid = str(r.get("unique_id", r.get("id", i)))
        items.append(EvalItem(rid, MATH_TEMPLATES[prompt].format(question=str(q)), str(r["answer"]).strip(), "math"))
    return items


def shuffled_options(record_id: str, correct: str, incorrect: list[str], seed: int) -> tuple[list[str], str]:
    """Options in an order fixed by (record id, seed), and the correct option's letter."""
    digest = hashlib.sha256(f"{record_id}|{seed}".encode()).digest()
    order = np.random.default_rng(list(digest[:8])).permutation(4)
    options = [([correct] + incorrect)[k] for k in order]
    return options, LETTERS[int(np.flatnonzero(order == 0)[0])]


def _gpqa_items(rows: list[dict], seed: int, prompt: str) -> list[EvalItem]:
    items = []
    for i, r in enumerate(rows):
        cols = ["Question", "Correct Answer", "Incorrect Answer 1", "Incorrect Answer 2", "Incorrect Answer 3"]
        if any(c not in r for c in cols):
            raise LLMDataError(f"a GPQA row needs the columns {cols} (the gpqa_diamond.csv layout)")
        rid = str(r.get("Record ID", i))
        options, gold = shuffled_options(rid, str(r["Correct Answer"]).strip(),
                                         [str(r[c]).strip() for c in cols[2:]], seed)
        body = "\n".join(f"{LETTERS[k]}) {o}" for k, o in enumerate(options))
        question = GPQA_TEMPLATES[prompt].format(question=str(r["Question"]).strip(), options=body)
        items.append(EvalItem(rid, question, gold, "choice", tuple(options)))
    return items


TASKS = {
    "aime24": TaskSpec("AIME 2024", "HuggingFaceH4/aime_2024", ("*.parquet", "*.jsonl"), _math_items,
                       (("s1", "simplescaling/aime24_nofigures"),)),
    "math500": TaskSpec("MATH500", "HuggingFaceH4/MATH-500", ("test.jsonl",), _math_items),
    "gpqa_diamond": TaskSpec("GPQA Diamond", "Idavidrein/gpqa", ("gpqa_diamond.csv",), _gpqa_items),
}


def load_task(name: str, source: str | None = None, seed: int = 0, limit: int | None = None,
              prompt: str = "ours") -> list[EvalItem]:
    if name not in TASKS:
        raise LLMDataError(f"unknown task {name!r}; choose from {', '.join(TASKS)}")
    if prompt not in PROMPTS:
        raise LLMDataError(f"unknown prompt {prompt!r}; choose from {', '.join(PROMPTS)}")
    spec = TASKS[name]
    source = dict(spec.aliases).get(source, source) if source else spec.hf_id
    return spec.parse(read_table(source, spec.files, f"--data {name}=PATH"), seed, prompt)[:limit]


def grade(item: EvalItem, completion: str) -> Graded:
    """The answer read from ``completion``, whether it is right, and how it was graded (bench.llm.answers)."""
    if item.kind == "choice":
        return grade_choice_output(completion, item.gold, item.options)
    return grade_math_output(completion, item.gold)


def wilson_interval(correct: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """95% Wilson score interval of a binomial proportion (well behaved at 0 and n, unlike the normal one)."""
    if n == 0:
        return 0.0, 1.0
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    # The bounds are exactly 0 at 0 correct and 1 at n (rounding would leave 1e-17 outside).
    return (0.0 if correct == 0 else centre - half), (1.0 if correct == n else centre + half)


def pass_at_1_interval(per_item: list[float], confidence: float = 0.95) -> tuple[float, float]:
    """Interval of pass@1 over k samples per item: the items are the independent units, so the Student-t interval
    of the mean of their per-item pass rates, clipped to [0, 1] (k = 1 uses :func:`wilson_interval`)."""
    from scipy import stats

    x = np.asarray(per_item, float)
    if len(x) < 2:
        return 0.0, 1.0
    half = stats.t.ppf(0.5 + confidence / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
    return max(0.0, float(x.mean() - half)), min(1.0, float(x.mean() + half))


@dataclass(frozen=True)
class Generation:
    text: str  # the continuation, cut before the first stop string
    tokens: int  # tokens generated (a stop string's tokens included, as vLLM counts them)
    length_stop: bool  # it stopped because its token budget (or the context) ran out


def clip_max_tokens(prompt_tokens: list[int], requested: list[int], context: int) -> list[int]:
    """Each prompt's generation budget, never past the model's context length (0: the prompt fills it)."""
    return [max(min(r, context - p), 0) for p, r in zip(prompt_tokens, requested, strict=True)]


def context_length(model: str) -> int:
    """The longest sequence the model was built for (``max_position_embeddings``; Qwen2.5: 32,768)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model)
    return int(getattr(config, "max_position_embeddings", None) or getattr(config, "max_sequence_length", 32768))


class _Generator:
    tokenizer: object
    context: int

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])


class TransformersGenerator(_Generator):
    """Greedy batched generation with Transformers; a model larger than one GPU is spread over all visible GPUs
    (``device_map="auto"``), which is slow but correct — use vLLM for the 32B model."""

    def __init__(self, model: str, dtype: str = "bfloat16", batch_size: int = 8, device: str | None = None):
        import torch
        from transformers import AutoTokenizer

        from bench.llm.reference import load_causal_lm

        self.tokenizer = AutoTokenizer.from_pretrained(model)
        self.tokenizer.padding_side = "left"
        self.context = context_length(model)
        if device is None and torch.cuda.device_count() > 1:
            self.model = load_causal_lm(model, dtype, device_map="auto").eval()
            self.device = self.model.device
        else:
            self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
            self.model = load_causal_lm(model, dtype).to(self.device).eval()
        self.batch_size = batch_size
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None \
            else self.tokenizer.eos_token_id

    def generate(self, prompts: list[str], max_new_tokens: list[int], stop: list[str],
                 min_tokens: int = 0, temperature: float = 0.0, seed: int = 0) -> list[Generation]:
        import torch

        sampling = {"do_sample": True, "temperature": temperature, "top_p": 1.0, "top_k": 0} if temperature > 0 \
            else {"do_sample": False}
        outs: list[Generation] = []
        for s in range(0, len(prompts), self.batch_size):
            chunk = prompts[s:s + self.batch_size]
            enc = self.tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False)
            limits = clip_max_tokens(enc["attention_mask"].sum(1).tolist(), max_new_tokens[s:s + self.batch_size],
                                     self.context)
            if max(limits) == 0:
                outs += [Generation("", 0, True) for _ in chunk]
                continue
            enc = enc.to(self.device)
            torch.manual_seed(seed + s)  # sampling: each batch of prompts its own draws, the same on a rerun
            with torch.inference_mode():
                ids = self.model.generate(**enc, **sampling, max_new_tokens=max(limits),
                                          min_new_tokens=min_tokens or None, stop_strings=stop or None,
                                          tokenizer=self.tokenizer, pad_token_id=self.pad_id)
            for row, limit in zip(ids[:, enc["input_ids"].shape[1]:], limits, strict=True):
                row = [t for t in row[:limit].tolist() if t != self.pad_id]
                text = self.tokenizer.decode(row, skip_special_tokens=False)
                cut = cut_at_stop(text, stop)
                outs.append(Generation(cut, len(row), len(row) >= limit and cut == text))
        return outs


class VLLMGenerator(_Generator):
    """Greedy generation with vLLM (tensor parallel over ``tensor_parallel_size`` GPUs). The engine's length is the
    model's context (vLLM refuses a longer one); each request's ``max_tokens`` is clipped to what its prompt
    leaves."""

    def __init__(self, model: str, dtype: str = "bfloat16", tensor_parallel_size: int = 1):
        from transformers import AutoTokenizer
        from vllm import LLM

        self.tokenizer = AutoTokenizer.from_pretrained(model)
        self.context = context_length(model)
        self.llm = LLM(model=model, dtype=dtype, tensor_parallel_size=tensor_parallel_size,
                       max_model_len=self.context)

    def generate(self, prompts: list[str], max_new_tokens: list[int], stop: list[str],
                 min_tokens: int = 0, temperature: float = 0.0, seed: int = 0) -> list[Generation]:
        from vllm import SamplingParams

        budgets = clip_max_tokens([self.count_tokens(p) for p in prompts], max_new_tokens, self.context)
        todo = [k for k, b in enumerate(budgets) if b > 0]
        params = [SamplingParams(temperature=temperature, top_p=1.0, seed=seed + k if temperature > 0 else None,
                                 max_tokens=budgets[k], min_tokens=min(min_tokens, budgets[k]), stop=stop or None,
                                 skip_special_tokens=False) for k in todo]
        outs = [Generation("", 0, True) for _ in prompts]
        for k, o in zip(todo, self.llm.generate([prompts[k] for k in todo], params), strict=True):
            done = o.outputs[0]
            outs[k] = Generation(done.text, len(done.token_ids), done.finish_reason == "length")
        return outs


def cut_at_stop(text: str, stop: list[str]) -> str:
    cut = min([i for i in (text.find(s) for s in stop) if i >= 0], default=len(text))
    return text[:cut]


def auto_thinking_budgets(gen, prompts: list[str], answer_tokens: int) -> list[int]:
    """s1's ``max_tokens_thinking=auto`` (its reported numbers without budget forcing), with room kept for the
    answer: each prompt's thinking may use the model's context less the prompt, the marks budget forcing appends
    and ``answer_tokens`` — so a trace that runs out still gets "Final Answer:" and an answer."""
    marks = gen.count_tokens(THINK_START + "\n" + ANSWER_MARK + AFTER_LENGTH_STOP)
    return [max(gen.context - gen.count_tokens(p) - marks - answer_tokens, 1) for p in prompts]


class Completion(str):
    """A completion's text, with the thinking tokens the model generated for it (forced "Wait"s and marks not
    counted) and the "Wait"s budget forcing appended."""

    thinking_tokens: int
    waits: int

    def __new__(cls, text: str, thinking_tokens: int, waits: int) -> Completion:
        self = super().__new__(cls, text)
        self.thinking_tokens, self.waits = thinking_tokens, waits
        return self


def budget_forced_generate(gen, prompts: list[str], thinking_budget: int | list[int], num_waits: int,
                           answer_tokens: int, temperature: float = 0.0, seed: int = 0) -> list[Completion]:
    """s1's budget forcing; returns each completion after its prompt: think ... Wait ... <|im_start|>answer ...

    Every generated thinking token counts against ``thinking_budget`` (one for all prompts, or one each); "Wait" is
    appended only while budget remains (it is checked before each one), so thinking never exceeds the budget; a
    round cut by the budget ends the thinking, and "Final Answer:" then follows the answer mark (s1's
    lm-evaluation-harness does the same).
    """
    completions = [THINK_START] * len(prompts)
    left = list(thinking_budget) if isinstance(thinking_budget, list) else [thinking_budget] * len(prompts)
    thought, waits = [0] * len(prompts), [0] * len(prompts)
    out_of_budget = [False] * len(prompts)
    active = list(range(len(prompts)))
    for round_ in range(num_waits + 1):
        if not active:
            break
        outs = gen.generate([prompts[i] + completions[i] for i in active], [left[i] for i in active], THINK_STOPS,
                            min_tokens=1 if round_ else 0,  # s1: a forced continuation writes at least a token
                            temperature=temperature, seed=seed + 7919 * round_)
        still = []
        for i, o in zip(active, outs, strict=True):
            completions[i] += o.text
            left[i] -= o.tokens
            thought[i] += o.tokens
            out_of_budget[i] = o.length_stop
            if not o.length_stop and left[i] > 0 and round_ < num_waits:
                completions[i] += "Wait"
                waits[i] += 1
                still.append(i)
        active = still
    for i, c in enumerate(completions):
        completions[i] = (c + ("" if c.endswith("\n") else "\n") + ANSWER_MARK + AFTER_LENGTH_STOP
                          if out_of_budget[i] else c + ANSWER_MARK)
    answers = gen.generate([p + c for p, c in zip(prompts, completions, strict=True)],
                           [answer_tokens] * len(prompts), ["<|im_end|>"], temperature=temperature, seed=seed + 104729)
    return [Completion(c + a.text, thought[i], waits[i]) for i, (c, a) in enumerate(zip(completions, answers,
                                                                                      strict=True))]


def thinking_tokens(gen, completion: str) -> int:
    """Thinking tokens of a completion: as generated under budget forcing, else those of what precedes the answer
    mark (all of it when there is none)."""
    if isinstance(completion, Completion):
        return completion.thinking_tokens
    thinking = completion.split(ANSWER_MARK)[0].removeprefix(THINK_START)
    return gen.count_tokens(thinking)


def evaluate(model: str, tasks: list[str], out: Path, sources: dict[str, str] | None = None, backend: str = "auto",
             max_new_tokens: int = 32768, thinking_budget: int | str = 0, num_waits: int = 0, answer_tokens: int = 512,
             seed: int = 0, limit: int | None = None, batch_size: int = 8, dtype: str = "bfloat16",
             tensor_parallel_size: int = 1, name: str | None = None, prompt: str = "ours", samples: int = 1,
             temperature: float = 0.0, gen=None) -> list[dict]:
    """Evaluate one model on the tasks; writes per-item JSONL and one record per task; returns the records.
    ``thinking_budget``: 0 (no budget forcing), thinking tokens, or "auto" (:func:`auto_thinking_budgets`).
    ``samples`` > 1 draws that many answers per item at ``temperature`` (sample k seeded ``seed + k``) and reports
    pass@1, the mean over items of each item's fraction of right answers, with :func:`pass_at_1_interval`. ``gen``:
    a generator already loaded (a budget series evaluates one model many times)."""
    if thinking_budget != "auto" and not (isinstance(thinking_budget, int) and thinking_budget >= 0):
        raise ValueError(f"thinking_budget {thinking_budget!r}: give 0 (off), a number of tokens, or auto")
    if samples < 1 or temperature < 0 or (samples > 1 and temperature == 0):
        raise ValueError(f"samples={samples}, temperature={temperature}: give samples >= 1, and a temperature > 0 "
                         "for more than one sample (greedy decoding gives the same answer every time)")
    from bench.results.store import package_versions, write_json_atomic

    sources = sources or {}
    # fail on bad data before loading a model
    items = {t: load_task(t, sources.get(t), seed, limit, prompt) for t in tasks}
    gen = gen or _generator(model, backend, dtype, batch_size, tensor_parallel_size)
    tokenizer = gen.tokenizer
    out.mkdir(parents=True, exist_ok=True)
    records = []
    for task, task_items in items.items():
        t0 = time.perf_counter()
        prompts = [tokenizer.apply_chat_template([{"role": "user", "content": it.question}], tokenize=False,
                                                 add_generation_prompt=True) for it in task_items]
        drawn = [_complete(gen, prompts, thinking_budget, num_waits, answer_tokens, max_new_tokens, temperature,
                           seed + k) for k in range(samples)]
        lines, statuses = [], Counter()
        for i, it in enumerate(task_items):
            tries = []
            for completions in drawn:
                graded = grade(it, completions[i])
                statuses[graded.status] += 1
                tries.append({"extracted": graded.answer, "correct": graded.correct, "status": graded.status,
                              "generated_tokens": gen.count_tokens(completions[i]),
                              "thinking_tokens": thinking_tokens(gen, completions[i]),
                              "waits": getattr(completions[i], "waits", 0), "completion": str(completions[i])})
            line = {"id": it.id, "gold": it.gold, **tries[0]} if samples == 1 else \
                {"id": it.id, "gold": it.gold, "correct": sum(t["correct"] for t in tries) / samples, "samples": tries}
            lines.append(line)
        (out / f"{task}.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
        n, correct = len(task_items), sum(line["correct"] for line in lines)
        thought = [t["thinking_tokens"] for line in lines for t in line.get("samples", [line])]
        waits = [t["waits"] for line in lines for t in line.get("samples", [line])]
        interval = wilson_interval(correct, n) if samples == 1 else pass_at_1_interval([x["correct"] for x in lines])
        record = {"kind": "llm_eval", "model": model, "name": name or Path(model).name, "task": task,
                  "title": TASKS[task].title, "n": n, "k": samples, "correct": correct,
                  "unreadable": statuses["unreadable"], "contradictory": statuses["contradictory"],
                  "grading_timeouts": statuses["timeout"], "accuracy": correct / n if n else 0.0,
                  "ci95": list(interval), "thinking_tokens_mean": float(np.mean(thought)) if thought else 0.0,
                  "thinking_tokens_quantiles": {f"p{q}": float(np.percentile(thought, q)) if thought else 0.0
                                                for q in (10, 50, 90)},
                  "waits_mean": float(np.mean(waits)) if waits else 0.0,
                  "config": {"backend": type(gen).__name__, "max_new_tokens": max_new_tokens,
                             "thinking_budget": thinking_budget, "num_waits": num_waits,
                             "answer_tokens": answer_tokens, "seed": seed, "limit": limit, "prompt": prompt,
                             "samples": samples, "temperature": temperature,
                             "source": sources.get(task) or TASKS[task].hf_id, "dtype": dtype},
                  "seconds": time.perf_counter() - t0, "versions": package_versions()}
        write_json_atomic(out / f"{task}.llmeval.json", record)
        records.append(record)
    return records


def budget_folder(out: Path, budget: int | str) -> Path:
    """Where a budget series keeps the records of one thinking budget (0: without budget forcing)."""
    return Path(out) / f"budget-{budget or 'none'}"


def evaluate_budget_series(model: str, tasks: list[str], out: Path, budgets: list[int | str], gen=None,
                           **options) -> list[dict]:
    """The paper's Figure 2: the model evaluated at each thinking budget (0 = without budget forcing, "auto"), one
    folder of records per budget under ``out`` (:func:`budget_folder`). A budget whose records are all there is not
    evaluated again, so a series resumes where it stopped. ``options``: those of :func:`evaluate`."""
    records = []
    for budget in budgets:
        folder = budget_folder(out, budget)
        if (done := _read_records([folder / f"{task}.llmeval.json" for task in tasks])) is not None:
            records += done
            continue
        if gen is None:
            gen = _generator(model, options.get("backend", "auto"), options.get("dtype", "bfloat16"),
                             options.get("batch_size", 8), options.get("tensor_parallel_size", 1))
        records += evaluate(model, tasks, folder, thinking_budget=budget, gen=gen, **options)
    return records


def _read_records(paths: list[Path]) -> list[dict] | None:
    """The records at ``paths``; None when one is missing, or damaged (named on stderr: its budget is redone)."""
    records = []
    for path in paths:
        try:
            records.append(json.loads(path.read_text()))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            print(f"{path} is damaged ({type(e).__name__}: {e}); evaluating its budget again", file=sys.stderr)
            return None
    return records


def _complete(gen, prompts: list[str], thinking_budget: int | str, num_waits: int, answer_tokens: int,
              max_new_tokens: int, temperature: float, seed: int) -> list[str]:
    """One completion per prompt under the evaluation's protocol (greedy, or sampled with ``seed``)."""
    if thinking_budget == "auto":
        return budget_forced_generate(gen, prompts, auto_thinking_budgets(gen, prompts, answer_tokens), num_waits,
                                      answer_tokens, temperature, seed)
    if thinking_budget:
        return budget_forced_generate(gen, prompts, thinking_budget, num_waits, answer_tokens, temperature, seed)
    eos = gen.tokenizer.eos_token or "<|im_end|>"
    return [g.text for g in gen.generate(prompts, [max_new_tokens] * len(prompts), [eos], temperature=temperature,
                                         seed=seed)]


def _generator(model: str, backend: str, dtype: str, batch_size: int, tp: int):
    if backend not in ("auto", "transformers", "vllm"):
        raise ValueError(f"unknown backend {backend!r}; choose auto, transformers or vllm")
    if backend in ("auto", "vllm"):
        try:
            import vllm  # noqa: F401
        except ImportError:
            if backend == "vllm":
                raise ImportError("--backend vllm needs vLLM: pip install vllm (CUDA machines only)") from None
        else:
            return VLLMGenerator(model, dtype, tp)
    return TransformersGenerator(model, dtype, batch_size)
