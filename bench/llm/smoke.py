"""`bench llm smoke`: the whole LLM pipeline on a tiny random Qwen2 model built locally, on CPU, offline.

The tokenizer is a byte-level BPE trained on the synthetic corpus, with ChatML special tokens and a Qwen-style chat
template; the data are synthetic s1K-like rows (arithmetic questions with a "trace" and an "attempt") and synthetic
evaluation sets in the AIME/MATH500 and GPQA file layouts. Nothing here is downloaded or copied from a real dataset.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

CHAT_TEMPLATE = (
    "{% if messages[0]['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def synthetic_rows(n: int, seed: int = 0) -> list[dict]:
    """s1K-1.1-shaped rows: question, deepseek/gemini thinking trajectories and attempts."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        a, b = (int(x) for x in rng.integers(1, 50, size=2))
        trace = f"We add {a} and {b}. {a} plus {b} is {a + b}. Wait, check: {a + b} minus {b} is {a}. Correct."
        rows.append({"question": f"What is {a} + {b}?", "solution": str(a + b),
                     "deepseek_thinking_trajectory": trace, "deepseek_attempt": f"\\boxed{{{a + b}}}",
                     "gemini_thinking_trajectory": trace.replace("We add", "Add"),
                     "gemini_attempt": f"The sum is \\boxed{{{a + b}}}"})
    return rows


def synthetic_gpqa_rows(n: int, seed: int = 0) -> list[dict]:
    """Rows in the gpqa_diamond.csv column layout with made-up arithmetic questions (never real GPQA items)."""
    rng = np.random.default_rng(seed + 1)
    rows = []
    for i in range(n):
        a, b = (int(x) for x in rng.integers(1, 50, size=2))
        rows.append({"Record ID": f"synthetic-{i}", "Question": f"Which number equals {a} + {b}?",
                     "Correct Answer": str(a + b), "Incorrect Answer 1": str(a + b + 1),
                     "Incorrect Answer 2": str(a + b - 1), "Incorrect Answer 3": str(a + b + 2)})
    return rows


def build_tokenizer(corpus: list[str], vocab_size: int = 512):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_tiny_model(folder: Path, corpus: list[str], seed: int = 0, hidden: int = 64, layers: int = 2,
                     tied: bool = False) -> Path:
    """A random Qwen2 causal LM (~0.1M parameters) and its tokenizer, saved in Hugging Face format. Untied (an output
    head of its own) by default, as Qwen2.5-7B..72B; ``tied`` as Qwen2.5-0.5B..3B."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tokenizer = build_tokenizer(corpus)
    torch.manual_seed(seed)
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=4096, tie_word_embeddings=tied,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    Qwen2ForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def make_inputs(folder: Path, n_train: int = 32, n_eval: int = 8, seed: int = 0, tied: bool = False) -> dict[str, Path]:
    """The tiny model (untied unless ``tied``), the s1K-like training file and the evaluation files, under
    ``folder``."""
    from bench.llm.data import ANSWER, THINK

    folder.mkdir(parents=True, exist_ok=True)
    rows = synthetic_rows(n_train, seed)
    corpus = [r["question"] + THINK + r["deepseek_thinking_trajectory"] + ANSWER + r["deepseek_attempt"]
              for r in rows] + ["Answer the following multiple choice question. Please reason step by step, and "
                                "put your final answer within \\boxed{}. A) B) C) D) Which number equals"]
    paths = {"model": build_tiny_model(folder / "tiny-qwen2", corpus, seed, tied=tied)}
    paths["s1k"] = folder / "s1k.jsonl"
    paths["s1k"].write_text("".join(json.dumps(r) + "\n" for r in rows))
    evals = synthetic_rows(n_eval, seed + 100)
    paths["aime24"] = folder / "aime24.jsonl"
    paths["aime24"].write_text("".join(json.dumps({"id": i, "problem": r["question"], "answer": r["solution"]}) + "\n"
                                       for i, r in enumerate(evals)))
    import pandas as pd

    paths["gpqa_diamond"] = folder / "gpqa_diamond.csv"
    pd.DataFrame(synthetic_gpqa_rows(n_eval, seed)).to_csv(paths["gpqa_diamond"], index=False)
    return paths


def smoke(out: Path, steps: int = 20, objective: str = "iw_sft", seed: int = 0, thinking_budget: int = 24,
          num_waits: int = 1, budgets: tuple[int, ...] = (8, 16, 32)) -> dict:
    """prepare -> ref-logps -> train -> eval on the tiny model, then a budget-forcing series of the trained model at
    ``budgets`` and without forcing, reported as the paper's Figure 2 (``out/report/budget_forcing.png``); returns
    timings and the final loss and accuracies."""
    from bench.llm.data import prepare
    from bench.llm.evaluate import evaluate, evaluate_budget_series
    from bench.llm.reference import compute_ref_logps
    from bench.llm.train import LLMTrainConfig, read_log, train
    from bench.reports.report import build_report

    out = Path(out)
    timings, t0 = {}, time.perf_counter()
    paths = make_inputs(out / "inputs", seed=seed)
    timings["build"] = time.perf_counter() - t0
    stats = prepare(paths["s1k"], str(paths["model"]), out / "prepared", max_length=256)
    timings["prepare"] = time.perf_counter() - t0 - sum(timings.values())
    compute_ref_logps(str(paths["model"]), out / "prepared", out / "ref-logps", dtype="float32")
    timings["ref_logps"] = time.perf_counter() - t0 - sum(timings.values())
    cfg = LLMTrainConfig(model=str(paths["model"]), data=str(out / "prepared"), ref_logps=str(out / "ref-logps"),
                         out=str(out / "train"), objective=objective, epochs=-(-steps * 4 // stats.examples),
                         max_steps=steps, learning_rate=1e-3, warmup_ratio=0.1, global_batch_size=4,
                         mixed_precision="no", gradient_checkpointing=False, save_every=10, seed=seed, log_every=5,
                         save_model_each_epoch=False)
    train(cfg)
    log = read_log(Path(cfg.out))
    timings["train"] = time.perf_counter() - t0 - sum(timings.values())
    model_dir = Path(cfg.out) / "final"
    records = evaluate(str(model_dir), ["aime24", "gpqa_diamond"], out / "eval",
                       sources={"aime24": str(paths["aime24"]), "gpqa_diamond": str(paths["gpqa_diamond"])},
                       backend="transformers", max_new_tokens=48, thinking_budget=thinking_budget,
                       num_waits=num_waits, answer_tokens=12, seed=seed, dtype="float32", name=f"tiny-{objective}")
    timings["eval"] = time.perf_counter() - t0 - sum(timings.values())
    evaluate_budget_series(str(model_dir), ["aime24"], out / "budgets", [0, *budgets],
                           sources={"aime24": str(paths["aime24"])}, backend="transformers", max_new_tokens=48,
                           num_waits=num_waits, answer_tokens=12, seed=seed, dtype="float32", name=f"tiny-{objective}")
    build_report([out / "budgets"], out / "report")
    timings["budget_series"] = time.perf_counter() - t0 - sum(timings.values())
    return {"timings": timings, "first_nll": log[0]["nll"], "last_nll": log[-1]["nll"], "steps": len(log),
            "accuracy": {r["task"]: r["accuracy"] for r in records}, "model": str(model_dir)}
