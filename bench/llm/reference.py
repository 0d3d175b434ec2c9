"""`bench llm ref-logps`: one pass of pi_ref over the prepared data, per-token log-probs stored per example.

pi_ref is frozen, so its log-probs are computed once instead of keeping a second 32B model in memory during
training. Examples are split round-robin over the processes of an ``accelerate launch``; each process writes its own
shard (``shard-RRR-of-WWW.pt``: example id -> token hash and float32 log-probs of the loss tokens) and flushes it
every ``flush_every`` examples, so a killed pass resumes where it stopped. Reading merges all shards whatever the
number of processes that wrote them, and checks every example's token hash against the prepared data.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from bench.llm.data import LLMDataError, load_prepared
from bench.llm.logprobs import TokenLogProbs, collate

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def load_causal_lm(name: str, dtype: str = "bfloat16", device_map: str | None = None):
    from transformers import AutoModelForCausalLM

    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {sorted(DTYPES)}")
    return AutoModelForCausalLM.from_pretrained(name, dtype=DTYPES[dtype], device_map=device_map)


def distributed_state():
    """accelerate's process state; on a machine without CUDA it must be told so, or a `torchrun` of N CPU processes
    becomes N independent single-process runs."""
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def _save_atomic(obj, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


def compute_ref_logps(model: str, data: Path, out: Path, chunk_size: int = 1024, dtype: str = "bfloat16",
                      flush_every: int = 50) -> int:
    """Write this process's shard; returns how many examples it computed (skipping those already stored)."""
    state = distributed_state()
    examples, meta = load_prepared(data)
    out.mkdir(parents=True, exist_ok=True)
    shard = out / f"shard-{state.process_index:03d}-of-{state.num_processes:03d}.pt"
    stored = torch.load(shard, weights_only=True) if shard.exists() else {}
    todo = [e for i, e in enumerate(examples) if i % state.num_processes == state.process_index
            and stored.get(e["id"], {}).get("token_hash") != e["token_hash"]]
    if todo:
        scorer = TokenLogProbs(load_causal_lm(model, dtype), chunk_size).to(state.device).eval()
        with torch.inference_mode():
            for n, e in enumerate(todo, 1):
                batch = {k: v.to(state.device) for k, v in collate([e], meta["pad_token_id"]).items()}
                stored[e["id"]] = {"token_hash": e["token_hash"], "logps": scorer(**batch).float().cpu()}
                if n % flush_every == 0:
                    _save_atomic(stored, shard)
    _save_atomic(stored, shard)
    state.wait_for_everyone()
    if state.is_main_process:
        (out / "meta.json").write_text(json.dumps({"model": model, "dtype": dtype, "data": str(data),
                                                   "data_fingerprint": meta["fingerprint"]}, indent=2))
    return len(todo)


def load_ref_logps(folder: Path, examples: list[dict]) -> dict[str, torch.Tensor]:
    """Example id -> log pi_ref of its loss tokens, for every example (error naming the fix otherwise)."""
    folder = Path(folder)
    shards = sorted(folder.glob("shard-*.pt"))
    if not shards:
        raise LLMDataError(f"no reference log-probs in {folder}; run `bench llm ref-logps --out {folder}` first")
    wanted = {e["id"]: e["token_hash"] for e in examples}
    merged: dict[str, dict] = {}
    for s in shards:  # shards of earlier passes (other process counts, other data) may hold stale entries
        merged.update({k: v for k, v in torch.load(s, weights_only=True).items()
                       if wanted.get(k) == v["token_hash"]})
    stale = [e["id"] for e in examples
             if e["id"] not in merged or len(merged[e["id"]]["logps"]) != len(e["input_ids"]) - e["prompt_len"]]
    if stale:
        raise LLMDataError(f"{len(stale)} prepared example(s) (first {stale[0]}) have no matching reference log-probs "
                           f"in {folder}; run `bench llm ref-logps` again on the same prepared data")
    return {e["id"]: merged[e["id"]]["logps"] for e in examples}
