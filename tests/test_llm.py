"""bench.llm on a tiny random Qwen2 built locally: masking, weights, chunked log-probs, training, eval, grading."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench.llm import objectives as obj
from bench.llm.answers import grade_math, letter_of, read_math
from bench.llm.data import ANSWER, THINK, LLMDataError, load_prepared, prepare
from bench.llm.logprobs import TokenLogProbs, chunked_token_logps, collate
from bench.llm.smoke import make_inputs, synthetic_rows

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny model, the s1K-like file, the eval files, prepared data and reference log-probs (float32)."""
    from bench.llm.reference import compute_ref_logps

    root = tmp_path_factory.mktemp("llm")
    paths = make_inputs(root / "inputs", n_train=16, n_eval=6)
    prepare(paths["s1k"], str(paths["model"]), root / "prepared", max_length=256)
    compute_ref_logps(str(paths["model"]), root / "prepared", root / "ref", dtype="float32")
    return {**paths, "prepared": root / "prepared", "ref": root / "ref", "root": root}


def _tokenizer(tiny):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny["model"])


def _model(tiny, chunk_size=7):
    from bench.llm.reference import load_causal_lm

    torch.manual_seed(0)
    return TokenLogProbs(load_causal_lm(str(tiny["model"]), "float32"), chunk_size)


def test_prepare_puts_the_loss_on_the_assistant_turn_only(tiny):
    tok = _tokenizer(tiny)
    examples, meta = load_prepared(tiny["prepared"])
    rows = synthetic_rows(16)
    assert len(examples) == 16 and meta["stats"]["truncated"] == 0
    for e, row in zip(examples, rows, strict=True):
        prompt = tok.decode(e["input_ids"][:e["prompt_len"]])
        completion = tok.decode(e["input_ids"][e["prompt_len"]:])
        assert prompt.endswith("<|im_start|>assistant\n") and row["question"] in prompt
        assert THINK not in prompt and row["deepseek_thinking_trajectory"] not in prompt
        expected = (THINK + row["deepseek_thinking_trajectory"] + "\n" + ANSWER + "Answer: "
                    + row["deepseek_attempt"] + "<|im_end|>\n")
        assert completion == expected
    assert meta["stats"]["loss_tokens"] == sum(len(e["input_ids"]) - e["prompt_len"] for e in examples)


def test_prepare_traces_and_truncation_policies(tiny, tmp_path):
    gemini = prepare(tiny["s1k"], str(tiny["model"]), tmp_path / "g", traces="gemini", max_length=256)
    tok = _tokenizer(tiny)
    ex, _ = load_prepared(tmp_path / "g")
    assert gemini.examples == 16 and "The sum is" in tok.decode(ex[0]["input_ids"])
    examples, _ = load_prepared(tiny["prepared"])
    lengths = sorted(len(e["input_ids"]) for e in examples)
    cut = lengths[len(lengths) // 2]
    n_longer = sum(n > cut for n in lengths)
    stats = prepare(tiny["s1k"], str(tiny["model"]), tmp_path / "t", max_length=cut)
    truncated, _ = load_prepared(tmp_path / "t")
    assert stats.truncated == n_longer and max(len(e["input_ids"]) for e in truncated) == cut
    stats = prepare(tiny["s1k"], str(tiny["model"]), tmp_path / "d", max_length=cut, policy="drop")
    assert stats.dropped == n_longer and stats.examples == 16 - n_longer
    with pytest.raises(LLMDataError, match="prompt alone"):
        prepare(tiny["s1k"], str(tiny["model"]), tmp_path / "x", max_length=5)
    with pytest.raises(LLMDataError, match="bench llm prepare"):
        load_prepared(tmp_path / "missing")


def test_weight_variants_against_hand_values():
    lengths = torch.tensor([2, 3])
    logp = torch.tensor([-1.0, -2.0, -0.5, -3.0, -1.0])
    ref = torch.tensor([-1.5, -2.5, -0.5, -1.0, -2.0])
    rho = [0.5, 0.5, 0.0, -2.0, 1.0]
    # iw_sft: exp(mean rho) per sequence, capped at 16.
    w = obj.sequence_weights(logp, ref, lengths)
    assert torch.allclose(w, torch.tensor([math.exp(0.5), math.exp(-1.0 / 3)]))
    assert float(obj.sequence_weights(torch.tensor([0.0]), torch.tensor([-5.0]), torch.tensor([1]))) == 16.0
    # iw_sft_paper: 0.1 * sum log clip(ratio, 0.2, 1.8); log 1.8 = 0.5878, log 0.2 = -1.6094.
    sums = obj.clipped_log_ratio_sums(logp, ref, lengths)
    hand = [0.5 + 0.5, 0.0 + math.log(0.2) + math.log(1.8)]
    assert torch.allclose(sums, torch.tensor(hand))
    assert torch.allclose(obj.smoothed_weights(sums), torch.exp(0.1 * torch.tensor(hand)))
    assert float(obj.smoothed_weights(torch.tensor([1000.0]))) == pytest.approx(16.0)
    # iw_sft_token: clip(ratio, 0.2, 1.8) per token.
    tw = obj.token_weights(logp, ref)
    assert torch.allclose(tw, torch.tensor([min(math.exp(r), 1.8) if r > 0 else max(math.exp(r), 0.2) for r in rho]))
    # dispatch: per-token weights repeat the sequence weights.
    w_tok, w_rep = obj.objective_weights("iw_sft", logp, ref, lengths)
    assert torch.allclose(w_tok, torch.repeat_interleave(w, lengths)) and torch.equal(w_rep, w)
    assert obj.effective_sample_size(torch.tensor([1.0, 1.0, 0.0, 0.0])) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="iw_sft_token"):
        obj.objective_weights("ppo", logp, ref, lengths)


def test_the_two_readings_of_appendix_c_against_hand_values():
    """Literal: w = exp(0.1 x sum_t clip); length-normalised: w = exp(a x mean_t clip); with the fractions of weights
    at the cap and at the floor, by hand."""
    lengths = torch.tensor([2, 3])
    sums = torch.tensor([1.0, math.log(0.2) + math.log(1.8)])  # the clipped log-ratio sums of the test above
    logp = torch.zeros(5)
    _, literal = obj.objective_weights("iw_sft_paper", logp, logp, lengths, sums)
    _, mean = obj.objective_weights("iw_sft_paper_mean", logp, logp, lengths, sums, mean_alpha=1.0)
    assert torch.allclose(literal, torch.tensor([math.exp(0.1), math.exp(0.1 * (math.log(0.2) + math.log(1.8)))]))
    assert torch.allclose(mean, torch.tensor([math.exp(0.5), math.exp((math.log(0.2) + math.log(1.8)) / 3)]))
    # a 10,000-token trace: the literal reading is at the cap (+0.003 per token) or ~0 (-0.01 per token) ...
    long = torch.tensor([10_000, 10_000])
    drift = torch.tensor([0.003 * 10_000, -0.01 * 10_000])
    _, lit = obj.objective_weights("iw_sft_paper", torch.zeros(20_000), torch.zeros(20_000), long, drift)
    assert float(lit[0]) == pytest.approx(16.0) and float(lit[1]) == pytest.approx(math.exp(-10))
    # ... the normalised one barely moves
    _, nor = obj.objective_weights("iw_sft_paper_mean", torch.zeros(20_000), torch.zeros(20_000), long, drift)
    assert torch.allclose(nor, torch.tensor([math.exp(0.003), math.exp(-0.01)]))
    # floors: every ratio at 0.2 -> 0.2^(0.1 |y|) literal, 0.2^a normalised, 1/16 for iw_sft
    floor = obj.weight_floor("iw_sft_paper", long)
    assert torch.allclose(floor, torch.full((2,), 0.2 ** 1000.0, dtype=torch.float64))
    assert float(obj.weight_floor("iw_sft_paper_mean", long)[0]) == pytest.approx(0.2)
    assert float(obj.weight_floor("iw_sft", long)[0]) == pytest.approx(1 / 16)
    all_low = torch.full((2,), 10_000 * math.log(0.2))
    _, low = obj.objective_weights("iw_sft_paper_mean", torch.zeros(20_000), torch.zeros(20_000), long, all_low)
    assert obj.bound_fractions(torch.cat([lit[:1], low]), torch.tensor([0.2, 0.2, 0.2]), 16.0) == \
        pytest.approx((1 / 3, 2 / 3))


def test_chunked_log_probs_equal_full_values_and_gradients():
    torch.manual_seed(0)
    hidden = torch.randn(23, 16, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(50, 16, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 50, (23,))
    full = torch.log_softmax(hidden @ weight.t(), -1).gather(-1, targets[:, None]).squeeze(-1)
    g_full = torch.autograd.grad((full * torch.arange(23)).sum(), (hidden, weight))
    chunked = chunked_token_logps(hidden, weight, targets, chunk_size=5)
    g_chunk = torch.autograd.grad((chunked * torch.arange(23)).sum(), (hidden, weight))
    assert torch.allclose(chunked.double(), full, atol=1e-6)
    for a, b in zip(g_chunk, g_full, strict=True):
        assert torch.allclose(a, b, atol=1e-5)


def test_token_log_probs_align_with_the_model_logits(tiny):
    """Packed, padded, chunked log-probs = log_softmax(logits)[t-1, token t] over exactly the loss tokens."""
    model = _model(tiny)
    examples, meta = load_prepared(tiny["prepared"])
    micro = [examples[0], examples[3]]
    assert len(micro[0]["input_ids"]) != len(micro[1]["input_ids"])
    packed = model(**collate(micro, meta["pad_token_id"]))
    expected = []
    for e in micro:
        ids = torch.tensor([e["input_ids"]])
        logp = torch.log_softmax(model.lm(input_ids=ids).logits[0].float(), -1)
        t = torch.arange(e["prompt_len"], len(e["input_ids"]))
        expected.append(logp[t - 1, ids[0, t]])
    assert torch.allclose(packed, torch.cat(expected), atol=1e-5)


def test_step_zero_weights_are_one_and_the_loss_and_gradient_equal_sft(tiny):
    from bench.llm.reference import load_ref_logps

    examples, meta = load_prepared(tiny["prepared"])
    ref = load_ref_logps(tiny["ref"], examples)
    micro = examples[:3]
    batch = collate(micro, meta["pad_token_id"])
    lengths = batch["lengths"] - batch["loss_start"]
    logp_ref = torch.cat([ref[e["id"]] for e in micro])
    grads = {}
    for objective in obj.OBJECTIVES:
        model = _model(tiny)
        logp = model(**batch)
        w_tok, w_rep = obj.objective_weights(objective, logp, logp_ref, lengths)
        assert torch.allclose(w_rep, torch.ones_like(w_rep), atol=1e-5), objective
        loss = obj.weighted_nll_sum(logp, w_tok) / lengths.sum()
        loss.backward()
        grads[objective] = (loss.item(), torch.cat([p.grad.flatten() for p in model.parameters()]))
    for objective in obj.OBJECTIVES[1:]:
        assert grads[objective][0] == pytest.approx(grads["sft"][0], rel=1e-5)
        assert torch.allclose(grads[objective][1], grads["sft"][1], atol=1e-5)


def test_gradient_checkpointing_changes_neither_loss_nor_gradient(tiny):
    examples, meta = load_prepared(tiny["prepared"])
    batch = collate(examples[:2], meta["pad_token_id"])
    results = []
    for checkpointing in (False, True):
        model = _model(tiny)
        if checkpointing:
            model.lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.train()
        loss = -model(**batch).mean()
        loss.backward()
        results.append((loss.item(), torch.cat([p.grad.flatten() for p in model.parameters()])))
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-6)
    assert torch.allclose(results[0][1], results[1][1], atol=1e-6)


def test_reference_pass_split_over_two_processes_equals_one(tiny, tmp_path):
    from bench.llm.reference import load_ref_logps

    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29534", "-m",
           "bench", "llm", "ref-logps", "--model", str(tiny["model"]), "--data", str(tiny["prepared"]), "--out",
           str(tmp_path / "ref2"), "--dtype", "float32"]
    done = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(list((tmp_path / "ref2").glob("shard-*-of-002.pt"))) == 2
    examples, _ = load_prepared(tiny["prepared"])
    one, two = load_ref_logps(tiny["ref"], examples), load_ref_logps(tmp_path / "ref2", examples)
    for e in examples:
        assert torch.allclose(one[e["id"]], two[e["id"]], atol=1e-6)


def test_a_killed_reference_pass_resumes_where_it_stopped(tiny, tmp_path, monkeypatch):
    from bench.llm.reference import compute_ref_logps, load_ref_logps

    forward, calls = TokenLogProbs.forward, []

    def dies_on_the_fifth(self, **batch):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return forward(self, **batch)

    monkeypatch.setattr(TokenLogProbs, "forward", dies_on_the_fifth)
    with pytest.raises(KeyboardInterrupt):
        compute_ref_logps(str(tiny["model"]), tiny["prepared"], tmp_path / "ref", dtype="float32", flush_every=2)
    monkeypatch.setattr(TokenLogProbs, "forward", forward)
    assert len(torch.load(next((tmp_path / "ref").glob("shard-*.pt")), weights_only=True)) == 4
    assert compute_ref_logps(str(tiny["model"]), tiny["prepared"], tmp_path / "ref", dtype="float32") == 16 - 4
    examples, _ = load_prepared(tiny["prepared"])
    resumed, full = load_ref_logps(tmp_path / "ref", examples), load_ref_logps(tiny["ref"], examples)
    assert all(torch.equal(resumed[e["id"]], full[e["id"]]) for e in examples)


def test_reference_log_probs_are_checked_against_the_prepared_tokens(tiny, tmp_path):
    from bench.llm.reference import load_ref_logps

    examples, _ = load_prepared(tiny["prepared"])
    stale = [dict(examples[0], token_hash="0" * 16)] + examples[1:]
    with pytest.raises(LLMDataError, match="ref-logps"):
        load_ref_logps(tiny["ref"], stale)
    with pytest.raises(LLMDataError, match="ref-logps"):
        load_ref_logps(tmp_path, examples)


def _train_cfg(tiny, out, **kw):
    from bench.llm.train import LLMTrainConfig, load_preset

    fields = {**load_preset("cpu"), "model": str(tiny["model"]), "data": str(tiny["prepared"]),
              "ref_logps": str(tiny["ref"]), "out": str(out), "global_batch_size": 4, "learning_rate": 2e-3,
              "warmup_ratio": 0.1, "save_every": 2, "save_model_each_epoch": False, "epochs": 3, **kw}
    return LLMTrainConfig(**fields)


def test_training_lowers_the_loss_and_a_resumed_run_equals_an_uninterrupted_one(tiny, tmp_path):
    from bench.llm.train import read_log, train

    train(_train_cfg(tiny, tmp_path / "full", max_steps=8))
    full = read_log(tmp_path / "full")
    assert [r["step"] for r in full] == list(range(1, 9))
    assert full[-1]["nll"] < full[0]["nll"] - 0.5
    assert full[0]["weight_mean"] == pytest.approx(1.0, abs=1e-5) and full[0]["ess"] == pytest.approx(4.0)
    assert (tmp_path / "full" / "final" / "config.json").exists()

    train(_train_cfg(tiny, tmp_path / "resumed", max_steps=3))  # stops after step 3 (state saved at 2 and 3)
    train(_train_cfg(tiny, tmp_path / "resumed", max_steps=8))
    resumed = read_log(tmp_path / "resumed")
    assert [r["step"] for r in resumed] == list(range(1, 9))
    for a, b in zip(resumed, full, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5) and a["lr"] == pytest.approx(b["lr"])


@pytest.mark.parametrize("objective", ["iw_sft_paper", "iw_sft_paper_mean"])
def test_the_lagged_objectives_use_last_epochs_statistics(tiny, tmp_path, objective):
    """Epoch 0 weights are exactly 1 (q = pi_ref); from epoch 1 on they come from the model one epoch earlier; the
    log holds the fractions of weights at the cap and at the floor."""
    from bench.llm.train import read_log, train

    train(_train_cfg(tiny, tmp_path / "p", objective=objective, epochs=2, alpha=1.0, mean_alpha=20.0))
    log = read_log(tmp_path / "p")
    per_epoch = len(log) // 2
    assert all(r["weight_min"] == r["weight_max"] == 1.0 for r in log[:per_epoch])
    assert all(r["weight_capped_fraction"] == r["weight_floor_fraction"] == 0.0 for r in log[:per_epoch])
    assert any(r["weight_max"] != 1.0 for r in log[per_epoch:])
    assert all(0.0 <= r["weight_capped_fraction"] <= 1.0 and 0.0 <= r["weight_floor_fraction"] <= 1.0 for r in log)
    state = json.loads((tmp_path / "p" / "trainer_state.json").read_text())
    assert len(state["lagged"]) == 16


def test_weight_decay_spares_biases_and_norms_like_the_hf_trainer(tiny):
    from bench.llm.train import decay_groups

    model = _model(tiny)
    decay, no_decay = decay_groups(model, 1e-4)
    names = {id(p): n for n, p in model.named_parameters()}
    assert decay["weight_decay"] == 1e-4 and no_decay["weight_decay"] == 0.0
    assert {names[id(p)] for p in no_decay["params"]} == {n for n, p in model.named_parameters()
                                                           if p.ndim == 1}  # biases and RMSNorm weights
    assert any("bias" in names[id(p)] for p in no_decay["params"]) and any("norm" in names[id(p)]
                                                                            for p in no_decay["params"])
    assert all(p.ndim == 2 for p in decay["params"]) and len(decay["params"]) + len(no_decay["params"]) == \
        len(list(model.parameters()))


def test_deepspeed_batch_keys_are_set_before_prepare():
    """accelerate's DeepSpeedPlugin as the ZeRO-3 launch config builds it: its "auto" batch keys would make
    ``prepare()`` without a DataLoader raise; they are filled from the run's config, and a conflicting value is an
    error that names the fix."""
    from accelerate.utils import DeepSpeedPlugin

    from bench.llm.train import LLMTrainConfig, set_deepspeed_batch_keys

    plugin = DeepSpeedPlugin(zero_stage=3, offload_optimizer_device="cpu", offload_param_device="none",
                             gradient_accumulation_steps=1, gradient_clipping=1.0, zero3_init_flag=False)
    assert plugin.is_auto("train_micro_batch_size_per_gpu")
    set_deepspeed_batch_keys(plugin.deepspeed_config, LLMTrainConfig(), world=8, accum=1)
    assert not plugin.is_auto("train_micro_batch_size_per_gpu") and not plugin.is_auto("train_batch_size")
    assert (plugin.get_value("train_micro_batch_size_per_gpu"), plugin.get_value("train_batch_size"),
            plugin.get_value("gradient_accumulation_steps")) == (1, 8, 1)
    with pytest.raises(ValueError, match="gradient_accumulation_steps: 2"):
        set_deepspeed_batch_keys({"gradient_accumulation_steps": 1}, LLMTrainConfig(global_batch_size=16), 8, 2)


def test_tied_embeddings_survive_the_wrapper_and_the_saved_config_says_bf16(tiny, tmp_path):
    """Qwen2.5-0.5B..3B tie their head to the embeddings (the tiny model, as 7B..72B, does not)."""
    import shutil

    from transformers import AutoConfig, Qwen2ForCausalLM

    from bench.llm.reference import load_causal_lm
    from bench.llm.train import read_log, train

    tied = tmp_path / "tied"
    shutil.copytree(tiny["model"], tied)
    config = AutoConfig.from_pretrained(tied)
    config.tie_word_embeddings = True
    torch.manual_seed(0)
    Qwen2ForCausalLM(config).save_pretrained(tied)
    tiny = {**tiny, "model": tied}
    model = _model(tiny)
    assert model.lm.config.tie_word_embeddings
    model.lm.get_output_embeddings().weight = torch.nn.Parameter(model.lm.get_output_embeddings().weight.clone())
    assert model.get_output_embeddings().weight is not model.get_input_embeddings().weight  # untied, as FSDP2's
    model.tie_weights()  # loading leaves it until accelerate calls the prepared model's tie_weights
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight

    train(_train_cfg(tiny, tmp_path / "t", objective="sft", max_steps=2))
    assert len(read_log(tmp_path / "t")) == 2
    saved = tmp_path / "t" / "final"
    assert str(AutoConfig.from_pretrained(saved).dtype).removeprefix("torch.") == "bfloat16"
    reloaded = load_causal_lm(str(saved), "float32")
    assert reloaded.get_output_embeddings().weight.data_ptr() == reloaded.get_input_embeddings().weight.data_ptr()


def test_two_processes_give_the_loss_of_one(tiny, tmp_path):
    """torch distributed over gloo, 2 processes of 1 example each vs 1 process accumulating 2 micro-batches."""
    common = ["llm", "train", "--model", str(tiny["model"]), "--data", str(tiny["prepared"]), "--ref-logps",
              str(tiny["ref"]), "--preset", "cpu", "--set", "global_batch_size=2", "--set", "max_steps=3",
              "--set", "learning_rate=2e-3", "--set", "save_model_each_epoch=false"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = [sys.executable, "-m", "bench", *common, "--out", str(tmp_path / "one")]
    two = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
           "-m", "bench", *common, "--out", str(tmp_path / "two")]
    for cmd in (one, two):
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
    from bench.llm.train import read_log

    a, b = read_log(tmp_path / "one"), read_log(tmp_path / "two")
    assert json.loads((tmp_path / "two" / "config.json").read_text())["world_size"] == 2
    assert len(a) == len(b) == 3
    for x, y in zip(a, b, strict=True):
        assert x["loss"] == pytest.approx(y["loss"], rel=1e-5) and x["weight_mean"] == pytest.approx(y["weight_mean"])


def test_answer_extraction_and_grading_on_hand_made_outputs():
    """A few classic cases (the full hand-made set with human verdicts is tests/grader_cases.py)."""
    def answer(text):
        return read_math(text)[0]

    assert answer("think... \\boxed{3} no <|im_start|>answer\nAnswer: \\boxed{\\frac{1}{2}}") == "\\frac{1}{2}"
    assert answer("<|im_start|>think\nthe answer is \\boxed{7}\n<|im_start|>answer\nAnswer: 204.") == "204"
    assert answer("\\boxed{a} then \\boxed{\\sqrt{\\frac{2}{3}}}") == "\\sqrt{\\frac{2}{3}}"
    assert answer("Answer: 12\nAnswer: 13") == "13"
    assert answer("I do not know") is None and answer("\\boxed{unclosed") is None
    assert grade_math("204", "204") and not grade_math("205", "204")
    assert grade_math("0.5", "\\frac{1}{2}") and grade_math("\\dfrac{1}{2}", "1/2")
    assert grade_math("(x+1)^2", "x^2+2x+1") and grade_math("\\frac{\\sqrt{3}}{2}", "\\sqrt{3}/2")
    assert not grade_math(None, "1") and not grade_math("\\frac{1}{3}", "0.3")
    for text, letter in [("B", "B"), ("(C)", "C"), ("D) 42", "D"), ("\\text{A}", "A"), ("option b", "B")]:
        assert letter_of(text) == letter, text
    for text in [None, "", "E", "A or B", "42"]:
        assert letter_of(text) is None, text


def test_gpqa_options_are_shuffled_deterministically_and_unreadable_answers_are_wrong(tiny):
    from bench.llm.answers import Graded
    from bench.llm.evaluate import grade, load_task

    items = load_task("gpqa_diamond", str(tiny["gpqa_diamond"]), seed=0)
    again = load_task("gpqa_diamond", str(tiny["gpqa_diamond"]), seed=0)
    other = load_task("gpqa_diamond", str(tiny["gpqa_diamond"]), seed=1)
    assert [i.question for i in items] == [i.question for i in again]
    assert [i.question for i in items] != [i.question for i in other]
    golds = {load_task("gpqa_diamond", str(tiny["gpqa_diamond"]), seed=s)[0].gold for s in range(20)}
    assert len(golds) > 1  # the correct option's position varies with the seed
    item = items[0]
    correct_text = item.question.split(f"\n{item.gold}) ")[1].split("\n")[0]
    assert correct_text.isdigit()
    assert grade(item, f"<|im_start|>answer\nAnswer: {item.gold}") == Graded(item.gold, True, "graded")
    assert grade(item, "<|im_start|>answer\nI cannot decide") == Graded(None, False, "unreadable")
    # the answer given as the correct option's text, not its letter
    assert grade(item, f"<|im_start|>answer\nAnswer: {correct_text}") == Graded(item.gold, True, "graded")


class ScriptedGenerator:
    """Our generator interface with scripted rounds, so the token accounting of budget forcing is exact: round k of
    every prompt writes ``script[k]`` tokens (one character each), cut by the budget it is given."""

    def __init__(self, script):
        self.script, self.calls = list(script), []

    def generate(self, prompts, max_new_tokens, stop, min_tokens=0, temperature=0.0, seed=0):
        from bench.llm.evaluate import Generation

        self.calls.append(list(max_new_tokens))
        want = self.script.pop(0) if stop != ["<|im_end|>"] else 3
        return [Generation("x" * min(want, m), min(want, m), want > m) for m in max_new_tokens]


@pytest.mark.parametrize("script,budget,waits,calls,out", [
    # stops on its own twice, then the budget cuts round 3: two Waits, "Final Answer:" after the answer mark
    ([4, 4, 9], 10, 2, [[10], [6], [2], [3]],
     "<|im_start|>thinkxxxxWaitxxxxWaitxx\n<|im_start|>answer\nFinal Answer:xxx"),
    # the budget is spent when round 1 stops on its own: no "Wait" (checked before each one), no "Final Answer:"
    ([10], 10, 3, [[10], [3]], "<|im_start|>thinkxxxxxxxxxx<|im_start|>answerxxx"),
    # the budget cuts the first round: no Wait at all
    ([50], 10, 2, [[10], [3]], "<|im_start|>thinkxxxxxxxxxx\n<|im_start|>answer\nFinal Answer:xxx"),
    # no waits asked: one round, then the answer
    ([2], 10, 0, [[10], [3]], "<|im_start|>thinkxx<|im_start|>answerxxx"),
])
def test_budget_forcing_follows_s1_token_for_token(script, budget, waits, calls, out):
    from bench.llm.evaluate import budget_forced_generate

    gen = ScriptedGenerator(script)
    assert budget_forced_generate(gen, ["p"], budget, waits, answer_tokens=3) == [out]
    assert gen.calls == calls


def test_budget_forcing_on_the_tiny_model(tiny):
    from bench.llm.answers import ANSWER_MARK
    from bench.llm.evaluate import THINK_STOPS, TransformersGenerator, budget_forced_generate

    gen = TransformersGenerator(str(tiny["model"]), dtype="float32", batch_size=2)
    thinking_tokens, rounds = [0, 0], []
    generate = gen.generate

    def counted(prompts, max_new_tokens, stop, min_tokens=0, **sampling):  # the real model; counts what it writes
        outs = generate(prompts, max_new_tokens, stop, min_tokens, **sampling)
        if stop == THINK_STOPS:
            rounds.append([o.length_stop for o in outs])
            for k, o in enumerate(outs):
                thinking_tokens[k if len(outs) == 2 else 0] += o.tokens
        return outs

    gen.generate = counted
    prompts = [gen.tokenizer.apply_chat_template([{"role": "user", "content": q}], tokenize=False,
                                                 add_generation_prompt=True) for q in ("What is 2 + 3?", "1 + 1?")]
    outs = budget_forced_generate(gen, prompts, thinking_budget=10, num_waits=2, answer_tokens=5)
    assert all(n <= 10 for n in thinking_tokens)  # the generator's own count: never past the budget
    for out in outs:
        assert out.startswith("<|im_start|>think") and out.count(ANSWER_MARK) >= 1
        assert out.split(ANSWER_MARK)[0].count("Wait") <= 2
    assert rounds and all(len(r) >= 1 for r in rounds)


def test_generation_budgets_never_pass_the_context_length(tiny):
    from bench.llm.evaluate import TransformersGenerator, clip_max_tokens, context_length

    assert clip_max_tokens([100, 32700, 32768], [32768, 32768, 5], 32768) == [32668, 68, 0]
    gen = TransformersGenerator(str(tiny["model"]), dtype="float32", batch_size=2)
    assert gen.context == context_length(str(tiny["model"])) > 0
    prompt = "hello " * 10
    n = gen.count_tokens(prompt)
    (out,) = gen.generate([prompt], [10 * gen.context], [])
    assert out.tokens <= gen.context - n and out.length_stop


def test_eval_writes_items_and_records_that_report_tabulates(tiny, tmp_path):
    from bench.llm.evaluate import evaluate
    from bench.reports.report import build_report

    records = evaluate(str(tiny["model"]), ["aime24", "gpqa_diamond"], tmp_path / "eval",
                       sources={"aime24": str(tiny["aime24"]), "gpqa_diamond": str(tiny["gpqa_diamond"])},
                       backend="transformers", max_new_tokens=8, dtype="float32", name="tiny")
    for r in records:
        lines = [json.loads(x) for x in (tmp_path / "eval" / f"{r['task']}.jsonl").read_text().splitlines()]
        assert len(lines) == r["n"] == 6
        assert r["accuracy"] == sum(x["correct"] for x in lines) / 6
        assert r["ci95"][0] <= r["accuracy"] <= r["ci95"][1]
    written = build_report([tmp_path / "eval"], tmp_path / "report")
    table = (tmp_path / "report" / "llm_table.md").read_text()
    assert written["cells"] == 0 and "| tiny |" in table and "iw-SFT (paper) | 66.7 | 94.8 | 64.1" in table
    assert "(n=6)" in table and "\\toprule" in (tmp_path / "report" / "llm_table.tex").read_text()
    assert "| tiny | " in table and " | prompt ours, no budget forcing, 8 tokens, greedy |" in table  # its protocol
    assert "iw-SFT (paper) | 66.7 | 94.8 | 64.1 | the paper's: s1's evaluation without budget forcing" in table
    unreadable = {r["task"]: r["unreadable"] for r in records}  # a random tiny model answers nothing readable
    assert all(n > 0 for n in unreadable.values())
    assert f"- tiny, AIME 2024: {unreadable['aime24']} no answer found" in table


def test_wilson_interval_matches_scipy():
    from scipy.stats import binomtest

    from bench.llm.evaluate import wilson_interval

    for k, n in [(0, 30), (20, 30), (30, 30), (467, 500)]:
        ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
        assert wilson_interval(k, n) == pytest.approx((ci.low, ci.high), abs=1e-9)


def test_smoke_command_runs_end_to_end(tmp_path):
    from typer.testing import CliRunner

    from bench.cli import app

    result = CliRunner().invoke(app, ["llm", "smoke", "--out", str(tmp_path / "smoke"), "--steps", "12"])
    assert result.exit_code == 0, result.output
    assert "nll" in result.output and (tmp_path / "smoke" / "eval" / "aime24.llmeval.json").exists()
    report = tmp_path / "smoke" / "report"  # the budget series on the trained tiny model, as the paper's Figure 2
    assert (report / "budget_forcing.png").stat().st_size > 0 and "budget forcing" in (report / "report.md").read_text()
    rows = (report / "budget_forcing.csv").read_text().splitlines()
    assert len(rows) == 1 + 4 and rows[0].startswith("task,title,model,budget,thinking_tokens_mean")


def test_no_gpqa_item_is_in_the_repository():
    """GPQA's authors ask that its questions never appear online: no GPQA data file is tracked, and no tracked
    file carries GPQA's answer columns with content (the synthetic rows are made at run time)."""
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True).stdout.split()
    assert files, "not a git checkout"
    data = [f for f in files if f.endswith((".csv", ".json", ".jsonl", ".parquet", ".tsv", ".txt"))]
    assert not [f for f in data if "gpqa" in f.lower()]
    for f in data:
        text = (REPO / f).read_text(errors="ignore")
        assert "Incorrect Answer 1" not in text, f


def test_answer_prefix_only_when_the_attempt_lacks_it():
    from bench.llm.data import s1_messages

    row = {"question": "q", "deepseek_thinking_trajectory": "t", "deepseek_attempt": "The result is 5."}
    assert s1_messages(row, "deepseek")[1]["content"].endswith(ANSWER + "Answer: The result is 5.")
    row["deepseek_attempt"] = "We find the value.\n\nAnswer: 5"
    content = s1_messages(row, "deepseek")[1]["content"]
    assert content.count("Answer:") == 1 and content.endswith(ANSWER + "We find the value.\n\nAnswer: 5")


def test_a_tampered_saved_state_runs_no_code_on_resume(tiny, tmp_path):
    """The schedule is kept as JSON, not as a pickle accelerate would load with code allowed: a
    `custom_checkpoint_0.pkl` that would run a command, or a sharded state's DCP metadata that names anything but its
    record classes, is refused in one line before anything is loaded. Without it the run resumes to the log of an
    uninterrupted one."""
    import pickle

    from conftest import RunsCode

    from bench.llm.train import read_log, train

    train(_train_cfg(tiny, tmp_path / "full", max_steps=4))
    out = tmp_path / "resumed"
    train(_train_cfg(tiny, out, max_steps=2))
    state = out / json.loads((out / "trainer_state.json").read_text())["state_dir"]
    pwned = tmp_path / "pwned"
    for tampered, message in [
            (state / "custom_checkpoint_0.pkl",
             r"custom_checkpoint_0\.pkl was not written by bench \(it keeps no pickled objects in a state\)"),
            (state / "pytorch_model_fsdp_0" / ".metadata",
             r"pytorch_model_fsdp_0/\.metadata is not a checkpoint's metadata \(it names posix\.system\)")]:
        tampered.parent.mkdir(exist_ok=True)
        tampered.write_bytes(pickle.dumps(RunsCode(f"touch {pwned}")))
        with pytest.raises(LLMDataError, match=message + r"; it was not loaded, nothing ran"):
            train(_train_cfg(tiny, out, max_steps=4))
        assert not pwned.exists()
        tampered.unlink()
    train(_train_cfg(tiny, out, max_steps=4))
    assert [r["loss"] for r in read_log(out)] == pytest.approx([r["loss"] for r in read_log(tmp_path / "full")],
                                                                 rel=1e-5)


def test_the_metadata_of_a_real_sharded_state_passes_the_check(tiny, tmp_path):
    import torch.distributed.checkpoint as dcp

    from bench.llm.train import check_state_runs_no_code

    model = _model(tiny)
    state = {"model": model.state_dict(), "optimizer": {"step": torch.tensor(3), "lr": 1e-5, "note": "x"},
             "bf16": torch.zeros(3, dtype=torch.bfloat16)}
    dcp.save(state, checkpoint_id=tmp_path / "state" / "pytorch_model_fsdp_0")
    assert (tmp_path / "state" / "pytorch_model_fsdp_0" / ".metadata").exists()
    check_state_runs_no_code(tmp_path / "state")  # raises on anything it refuses
    loaded = {"model": _model(tiny).state_dict(), "optimizer": {"step": torch.tensor(0), "lr": 0.0, "note": ""},
              "bf16": torch.ones(3, dtype=torch.bfloat16)}
    dcp.load(loaded, checkpoint_id=tmp_path / "state" / "pytorch_model_fsdp_0")
    assert torch.equal(loaded["model"]["lm.model.embed_tokens.weight"], state["model"]["lm.model.embed_tokens.weight"])


def _fsdp2_cpu_config(tmp_path, port: int) -> Path:
    """The shipped FSDP2 launch config on 2 CPU processes: float32, parameters not offloaded (offload needs CUDA)."""
    import yaml

    cfg = yaml.safe_load((REPO / "bench" / "llm" / "accelerate" / "fsdp2_8gpu.yaml").read_text())
    cfg.update(num_processes=2, use_cpu=True, mixed_precision="no", main_process_port=port)
    cfg["fsdp_config"]["fsdp_offload_params"] = False
    path = tmp_path / "fsdp2_cpu.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_fsdp2_on_two_processes_trains_saves_and_resumes_to_the_losses_of_one(tiny, tmp_path):
    """accelerate's FSDP2 path (the shipped config: decoder layers, embeddings and the UNTIED output head each an FSDP
    unit, sharded state) on 2 CPU processes over gloo: 2 steps, a sharded state saved, then resumed to step 4 — the
    losses of one process without FSDP, and a final model that reloads with its weights."""
    from bench.llm.reference import load_causal_lm
    from bench.llm.train import read_log

    common = ["llm", "train", "--model", str(tiny["model"]), "--data", str(tiny["prepared"]), "--ref-logps",
              str(tiny["ref"]), "--preset", "cpu", "--set", "global_batch_size=2", "--set", "learning_rate=2e-3",
              "--set", "save_every=2", "--set", "save_model_each_epoch=false", "--set", "mixed_precision=no",
              "--set", "save_dtype=float32", "--set", "chunk_size=16"]  # several chunks, a different count per rank
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    accelerate = str(Path(sys.executable).parent / "accelerate")
    launch = [accelerate, "launch", "--config_file", str(_fsdp2_cpu_config(tmp_path, 29547)), "-m", "bench", *common,
              "--out", str(tmp_path / "fsdp")]
    for cmd in ([sys.executable, "-m", "bench", *common, "--set", "max_steps=4", "--out", str(tmp_path / "one")],
                [*launch, "--set", "max_steps=2"], [*launch, "--set", "max_steps=4"]):
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "resumed from" in done.stdout + done.stderr
    config = json.loads((tmp_path / "fsdp" / "config.json").read_text())
    assert config["world_size"] == 2
    state = tmp_path / "fsdp" / json.loads((tmp_path / "fsdp" / "trainer_state.json").read_text())["state_dir"]
    assert list(state.rglob(".metadata"))  # a sharded (torch.distributed.checkpoint) state, not a full copy
    one, fsdp = read_log(tmp_path / "one"), read_log(tmp_path / "fsdp")
    assert [r["step"] for r in fsdp] == [1, 2, 3, 4]
    for a, b in zip(one, fsdp, strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4) and b["lr"] == pytest.approx(a["lr"])
    single, sharded = (load_causal_lm(str(tmp_path / run / "final"), "float32") for run in ("one", "fsdp"))
    assert not sharded.config.tie_word_embeddings
    for (name, a), (_, b) in zip(single.state_dict().items(), sharded.state_dict().items(), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5, msg=name)


def test_the_reference_pass_on_two_processes_gives_the_log_probs_of_one(tiny, tmp_path):
    """The launch of the FSDP2 test (2 CPU processes, the untied tiny model): each process computes its share of the
    examples; merged, they are the single-process pass's log-probs."""
    from bench.llm.reference import load_ref_logps

    accelerate = str(Path(sys.executable).parent / "accelerate")
    done = subprocess.run([accelerate, "launch", "--config_file", str(_fsdp2_cpu_config(tmp_path, 29549)), "-m",
                           "bench", "llm", "ref-logps", "--model", str(tiny["model"]), "--data", str(tiny["prepared"]),
                           "--out", str(tmp_path / "ref2"), "--dtype", "float32"],
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "ref2").glob("shard-*.pt")) == ["shard-000-of-002.pt",
                                                                              "shard-001-of-002.pt"]
    examples = load_prepared(tiny["prepared"])[0]
    one, two = load_ref_logps(tiny["ref"], examples), load_ref_logps(tmp_path / "ref2", examples)
    assert one.keys() == two.keys() and len(one) == len(examples)
    for key in one:
        torch.testing.assert_close(two[key], one[key], rtol=1e-5, atol=1e-6)


def test_token_and_sequence_normalisation_by_hand():
    """Sequences of 1 and 3 loss tokens, -log p = [2 | 1, 1, 4], weights [1 | 2, 2, 2]. tokens: (2 + 12) / 4 = 3.5
    (the caller divides by 4 tokens); sequence: (2 / 1 + 12 / 3) / 2 = 3 (the caller divides by 2 sequences)."""
    logp = -torch.tensor([2.0, 1.0, 1.0, 4.0])
    w_tok, lengths = torch.tensor([1.0, 2.0, 2.0, 2.0]), torch.tensor([1, 3])
    assert float(obj.weighted_nll_sum(logp, w_tok, lengths, "tokens")) / 4 == pytest.approx(3.5)
    assert float(obj.weighted_nll_sum(logp, w_tok, lengths, "sequence")) / 2 == pytest.approx(3.0)
    with pytest.raises(ValueError, match="unknown loss normalization 'batch'"):
        obj.weighted_nll_sum(logp, w_tok, lengths, "batch")


def test_sequence_normalisation_trains_and_two_processes_give_the_loss_of_one(tiny, tmp_path):
    """The per-sequence mean over a global batch split across 2 processes (gloo) and micro-batches equals the one
    of a single process; its logged loss is that mean, its nll the token mean."""
    common = ["llm", "train", "--model", str(tiny["model"]), "--data", str(tiny["prepared"]), "--ref-logps",
              str(tiny["ref"]), "--preset", "cpu", "--set", "global_batch_size=4", "--set", "max_steps=2",
              "--set", "learning_rate=2e-3", "--set", "save_model_each_epoch=false",
              "--set", "loss_normalization=sequence"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for cmd in ([sys.executable, "-m", "bench", *common, "--out", str(tmp_path / "one")],
                [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29557",
                 "-m", "bench", *common, "--out", str(tmp_path / "two")]):
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
    from bench.llm.train import read_log

    one, two = read_log(tmp_path / "one"), read_log(tmp_path / "two")
    for a, b in zip(one, two, strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5) and b["nll"] == pytest.approx(a["nll"], rel=1e-5)
    # step 1's weights are 1: the loss is the mean over sequences of their token means, the nll the token mean
    assert one[0]["loss"] != one[0]["nll"] and one[0]["loss"] == pytest.approx(one[0]["nll"], rel=0.05)


def test_training_runs_with_its_cpu_threads_and_restores_the_callers(tiny, tmp_path, monkeypatch):
    """accelerate launch leaves each process one thread; a process gets this node's cores / its processes (or
    cpu_threads), and the caller's count comes back."""
    import bench.llm.train as llm_train

    seen = []
    real = llm_train._train
    monkeypatch.setattr(llm_train, "_train", lambda cfg: seen.append(torch.get_num_threads()) or real(cfg))
    before = torch.get_num_threads()
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    llm_train.train(_train_cfg(tiny, tmp_path / "auto", max_steps=1, cpu_threads=0))
    llm_train.train(_train_cfg(tiny, tmp_path / "three", max_steps=1, cpu_threads=3))
    assert seen == [max(1, os.cpu_count()), 3] and torch.get_num_threads() == before


def test_auto_thinking_budget_forces_thinking_then_an_answer_that_fits_the_context():
    """s1's protocol without budget forcing, with room for the answer: thinking starts forced, may fill the context
    less the prompt, the marks and --answer-tokens; a trace that runs out gets "Final Answer:" and a non-empty
    answer, and everything fits the model's context. Without it (a bare 100-token limit) the answer would be 0."""
    from bench.llm.evaluate import AFTER_LENGTH_STOP, THINK_START, auto_thinking_budgets, budget_forced_generate

    class Endless(ScriptedGenerator):  # thinks for ever; one character is one token
        context = 100

        def count_tokens(self, text):
            return len(text)

    gen, prompts = Endless([10_000]), ["p" * 10, "q" * 30]
    marks = len(THINK_START + "\n" + "<|im_start|>answer" + AFTER_LENGTH_STOP)
    budgets = auto_thinking_budgets(gen, prompts, answer_tokens=3)
    assert budgets == [100 - 10 - marks - 3, 100 - 30 - marks - 3]
    outs = budget_forced_generate(gen, prompts, budgets, num_waits=0, answer_tokens=3)
    for prompt, budget, out in zip(prompts, budgets, outs, strict=True):
        assert out == THINK_START + "x" * budget + "\n<|im_start|>answer" + AFTER_LENGTH_STOP + "xxx"
        assert len(prompt) + len(out) <= gen.context
    assert gen.calls == [budgets, [3, 3]]


def test_a_thinking_budget_that_is_neither_a_number_nor_auto_is_one_line(tiny, tmp_path):
    from typer.testing import CliRunner

    from bench.cli import app

    result = CliRunner().invoke(app, ["llm", "eval", "--model", str(tiny["model"]), "--tasks", "aime24", "--data",
                                      f"aime24={tiny['aime24']}", "--thinking-budget", "lots", "--out",
                                      str(tmp_path)])
    assert result.exit_code == 2 and "--thinking-budget 'lots': give 0 (off), a number" in result.output


def test_pass_at_1_interval_by_hand():
    """Per-item pass rates [1, 0.5, 0, 1]: mean 0.625, sample std 0.4787, t(0.975, 3) = 3.1824: half 0.7618, so the
    interval is clipped to [0, 1]; [0.5 x 3, 0.75 x 3]: 0.625 -/+ t(0.975, 5) 0.1369 / sqrt(6)."""
    from bench.llm.evaluate import pass_at_1_interval

    lo, hi = pass_at_1_interval([1.0, 0.5, 0.0, 1.0])
    assert (lo, hi) == (0.0, 1.0)  # 0.625 -/+ 0.762, clipped
    lo, hi = pass_at_1_interval([0.5] * 3 + [0.75] * 3)
    mean, sd = 0.625, 0.13693063937629152
    half = 2.5705818366147395 * sd / 6 ** 0.5  # scipy.stats.t.ppf(0.975, 5)
    assert lo == pytest.approx(mean - half) and hi == pytest.approx(mean + half)


def test_k_sampled_answers_give_pass_at_1_reproducibly(tiny, tmp_path):
    """3 answers per item at temperature 1 with the tiny model: every item holds its 3 graded samples, pass@1 is the
    mean of the items' pass rates, the table shows n and k, the same seed gives the same samples and greedy decoding
    with several samples is refused."""
    from bench.llm.evaluate import evaluate

    def run(out):
        return evaluate(str(tiny["model"]), ["aime24"], out, sources={"aime24": str(tiny["aime24"])},
                        backend="transformers", max_new_tokens=6, dtype="float32", name="tiny", samples=3,
                        temperature=1.0, seed=5)

    (record,) = run(tmp_path / "a")
    lines = [json.loads(x) for x in (tmp_path / "a" / "aime24.jsonl").read_text().splitlines()]
    assert record["k"] == 3 and record["n"] == len(lines) == 6 and record["config"]["samples"] == 3
    assert all(len(x["samples"]) == 3 and x["correct"] == sum(s["correct"] for s in x["samples"]) / 3 for x in lines)
    assert record["accuracy"] == pytest.approx(sum(x["correct"] for x in lines) / 6)
    texts = [[s["completion"] for s in x["samples"]] for x in lines]
    assert any(len(set(t)) > 1 for t in texts)  # sampled, not greedy
    run(tmp_path / "b")
    again = [json.loads(x) for x in (tmp_path / "b" / "aime24.jsonl").read_text().splitlines()]
    assert [[s["completion"] for s in x["samples"]] for x in again] == texts
    from bench.reports.llm_table import llm_table_rows, render_llm_markdown

    table = render_llm_markdown(llm_table_rows([record]))
    assert "(n=6, k=3)" in table and "pass@1 over 3 samples at temperature 1" in table
    with pytest.raises(ValueError, match="a temperature > 0 for more than one sample"):
        evaluate(str(tiny["model"]), ["aime24"], tmp_path / "c", sources={"aime24": str(tiny["aime24"])},
                 samples=2)


class ThinkingScript:
    """A generator over the tiny model's tokenizer whose thinking is known: each thinking round writes 6 tokens and
    stops on its own (one character is one token), an unforced answer thinks 20 tokens, every answer says 7."""

    context = 4096

    def __init__(self, tokenizer):
        self.tokenizer, self.calls = tokenizer, 0

    def count_tokens(self, text):
        return len(text)

    def generate(self, prompts, max_new_tokens, stop, min_tokens=0, temperature=0.0, seed=0):
        from bench.llm.evaluate import THINK_STOPS, Generation

        self.calls += 1
        if stop == THINK_STOPS:
            return [Generation("x" * min(6, m), min(6, m), m < 6) for m in max_new_tokens]
        unforced = "<|im_start|>think" + "y" * 20 + "<|im_start|>answer\nAnswer: \\boxed{7}"
        return [Generation("Answer: \\boxed{7}", 17, False) if p.endswith(("<|im_start|>answer", "Final Answer:"))
                else Generation(unforced, len(unforced), False) for p in prompts]


def test_a_budget_series_records_thinking_tokens_and_waits_and_draws_figure_2(tiny, tmp_path):
    """Budgets 4, 8 and 16 with one Wait: 4 thinking tokens (cut, no Wait), 8 (6, Wait, 2 cut), 12 (6, Wait, 6);
    without forcing the model's own 20. Records, the figure's CSV and a resumed series agree."""
    import csv

    from transformers import AutoTokenizer

    from bench.llm.evaluate import evaluate_budget_series
    from bench.reports.report import build_report

    gen = ThinkingScript(AutoTokenizer.from_pretrained(tiny["model"]))
    series = dict(sources={"aime24": str(tiny["aime24"])}, num_waits=1, answer_tokens=20, name="scripted", gen=gen)
    records = evaluate_budget_series("scripted", ["aime24"], tmp_path / "series", [0, 4, 8, 16], **series)
    assert [(r["config"]["thinking_budget"], r["thinking_tokens_mean"], r["waits_mean"]) for r in records] == [
        (0, 20.0, 0.0), (4, 4.0, 0.0), (8, 8.0, 1.0), (16, 12.0, 1.0)]
    items = [json.loads(x) for x in (tmp_path / "series" / "budget-8" / "aime24.jsonl").read_text().splitlines()]
    assert all(x["thinking_tokens"] == 8 and x["waits"] == 1 for x in items) and len(items) == 6
    assert records[1]["thinking_tokens_quantiles"] == {"p10": 4.0, "p50": 4.0, "p90": 4.0}
    calls = gen.calls
    assert evaluate_budget_series("scripted", ["aime24"], tmp_path / "series", [0, 4, 8, 16], **series) == records
    assert gen.calls == calls  # every budget was done: nothing generated again
    build_report([tmp_path / "series"], tmp_path / "report")
    with open(tmp_path / "report" / "budget_forcing.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["budget"], float(r["thinking_tokens_mean"]), float(r["waits_mean"])) for r in rows] == [
        ("4", 4.0, 0.0), ("8", 8.0, 1.0), ("16", 12.0, 1.0), ("0", 20.0, 0.0)]
    for row, record in zip(rows, records[1:] + records[:1], strict=True):
        assert float(row["accuracy"]) == pytest.approx(100 * record["accuracy"])
    assert (tmp_path / "report" / "budget_forcing.png").stat().st_size > 0


def test_damaged_llm_files_are_named_and_the_rest_is_kept(tiny, tmp_path):
    """A budget series redoes the one budget whose record was cut short (the others are read back, not generated);
    bench report lists a damaged evaluation record as unreadable and tabulates the rest; a damaged
    trainer_state.json stops training in one line naming it, the saved state beside it untouched."""
    from transformers import AutoTokenizer
    from typer.testing import CliRunner

    from bench.cli import app
    from bench.llm.evaluate import evaluate_budget_series
    from bench.llm.train import train

    gen = ThinkingScript(AutoTokenizer.from_pretrained(tiny["model"]))
    series = dict(sources={"aime24": str(tiny["aime24"])}, num_waits=1, answer_tokens=20, name="scripted", gen=gen)
    first = evaluate_budget_series("scripted", ["aime24"], tmp_path / "series", [4, 8], **series)
    damaged = tmp_path / "series" / "budget-8" / "aime24.llmeval.json"
    kept = (tmp_path / "series" / "budget-4" / "aime24.llmeval.json").read_bytes()
    damaged.write_text(damaged.read_text()[:50])
    calls = gen.calls
    again = evaluate_budget_series("scripted", ["aime24"], tmp_path / "series", [4, 8], **series)
    assert gen.calls > calls and json.loads(damaged.read_text())["thinking_tokens_mean"] == 8.0
    assert (tmp_path / "series" / "budget-4" / "aime24.llmeval.json").read_bytes() == kept
    assert [r["accuracy"] for r in again] == [r["accuracy"] for r in first]

    damaged.write_text("[1, 2]")
    result = CliRunner().invoke(app, ["report", str(tmp_path / "series"), "--out", str(tmp_path / "report")])
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output
    assert f"skipped unreadable record {damaged}: TypeError: it holds a JSON list, not an object" in result.output
    assert "| scripted | " in (tmp_path / "report" / "llm_table.md").read_text()

    out = tmp_path / "train"
    train(_train_cfg(tiny, out, max_steps=2))
    state = out / "trainer_state.json"
    state.write_text(state.read_text()[:20])
    saved = sorted(p.name for p in (out / "state-2").iterdir())
    with pytest.raises(LLMDataError, match=r"trainer_state\.json is damaged \(JSONDecodeError.*Move it aside"):
        train(_train_cfg(tiny, out, max_steps=4))
    assert sorted(p.name for p in (out / "state-2").iterdir()) == saved
