#!/usr/bin/env bash
# The LLM job's checks on one GPU with a small real model, in under 10 minutes:
#
#   MODEL=/path/to/Qwen2.5-0.5B-Instruct OUT=/tmp/llmcheck bash scripts/llm_device_check.sh
#
# 1. (CPU) the LLM and grader tests;
# 2. (model) the loss mask under the model's own Qwen chat template;
# 3. (GPU + model) reference log-probs, step-0 weights equal 1 (iw_sft), the FSDP2 launch YAML with one process:
#    train 4 steps straight vs 2 steps, stop, resume to 4 (losses must agree), tied embeddings after reloading the
#    saved model and its config's dtype, the same launch with the model's configuration untied (an output head of
#    its own, as Qwen2.5-32B), budget-forcing token counts, and vLLM when it is installed.
# It runs on the CPU up to where it needs the GPU or the model, and says where it stopped. Results: $OUT/summary.txt.
set -uo pipefail
OUT=${OUT:-/tmp/llm_device_check}
mkdir -p "$OUT"
SUMMARY="$OUT/summary.txt"
: > "$SUMMARY"
say() { echo "$*" | tee -a "$SUMMARY"; }
check() {  # check NAME COMMAND...: run it, record ok / FAILED with its wall time
  local name=$1; shift
  local t0=$SECONDS
  if "$@" > "$OUT/$name.log" 2>&1; then say "ok      $name ($((SECONDS - t0)) s)"
  else say "FAILED  $name ($((SECONDS - t0)) s): see $OUT/$name.log"; fi
}

check cpu-tests python -m pytest -q tests/test_llm.py tests/test_grader.py

if [ -z "${MODEL:-}" ] || [ ! -d "${MODEL:-}" ]; then
  say "stopped: the remaining checks need a small local model, MODEL=/path/to/Qwen2.5-0.5B-Instruct (a folder)"
  exit 0
fi

# synthetic s1K-like rows and evaluation files (never GPQA items), from the suite's own generator
python - "$OUT" <<'EOF'
import sys
from pathlib import Path
from bench.llm.smoke import make_inputs
make_inputs(Path(sys.argv[1]) / "inputs", n_train=16, n_eval=4)
EOF
check prepare bench llm prepare --tokenizer "$MODEL" --source "$OUT/inputs/s1k.jsonl" --out "$OUT/data" \
  --max-length 512
check loss-mask python - "$MODEL" "$OUT/data" <<'EOF'
import sys
from pathlib import Path
from transformers import AutoTokenizer
from bench.llm.data import load_prepared
tok = AutoTokenizer.from_pretrained(sys.argv[1])
examples, _ = load_prepared(Path(sys.argv[2]))
for e in examples:
    prompt = tok.decode(e["input_ids"][:e["prompt_len"]])
    target = tok.decode(e["input_ids"][e["prompt_len"]:])
    assert prompt.endswith("<|im_start|>assistant\n"), prompt[-60:]
    assert target.startswith("<|im_start|>think") and "<|im_start|>answer" in target, target[:60]
print(f"{len(examples)} examples: the loss starts right after '<|im_start|>assistant\\n'")
EOF

if ! python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  say "stopped: the remaining checks need CUDA (this machine has none)"
  exit 0
fi

# step-0 weights: exactly 1 when pi_ref's log-probs come from the same forward as training's (float32 both);
# under the paper's precision (pi_ref in bf16 weights, training float32 master weights under bf16 autocast) the
# two forwards differ in norms, embeddings and the residual stream: that deviation is measured, not asserted
check ref-logps-fp32 bench llm ref-logps --model "$MODEL" --data "$OUT/data" --out "$OUT/ref32" --dtype float32
check ref-logps-bf16 bench llm ref-logps --model "$MODEL" --data "$OUT/data" --out "$OUT/ref"
COMMON=(--model "$MODEL" --data "$OUT/data" --ref-logps "$OUT/ref" --preset paper --set global_batch_size=2
        --set per_device_batch_size=1 --set save_every=2 --set save_model_each_epoch=false --set epochs=1)
check step0-fp32 bench llm train "${COMMON[@]}" --ref-logps "$OUT/ref32" --out "$OUT/step0-fp32" --set max_steps=1 \
  --set mixed_precision=no --set model_dtype=float32
check step0-weights-equal-1 python -c "
import json; r = json.loads(open('$OUT/step0-fp32/log.jsonl').readline())
assert r['weight_min'] == r['weight_max'] == 1.0, r; print(r)"
check step0-paper-precision bench llm train "${COMMON[@]}" --out "$OUT/step0-paper" --set max_steps=1
python -c "
import json; r = json.loads(open('$OUT/step0-paper/log.jsonl').readline())
print(f\"measured  step-0 weights under the paper's precision: [{r['weight_min']:.6f}, {r['weight_max']:.6f}]\")" \
  2>/dev/null | tee -a "$SUMMARY"

FSDP=bench/llm/accelerate/fsdp2_8gpu.yaml
check fsdp2-straight accelerate launch --config_file "$FSDP" --num_processes 1 -m bench llm train "${COMMON[@]}" \
  --out "$OUT/straight" --set max_steps=4
check fsdp2-first-half accelerate launch --config_file "$FSDP" --num_processes 1 -m bench llm train "${COMMON[@]}" \
  --out "$OUT/resumed" --set max_steps=2
check fsdp2-resumed accelerate launch --config_file "$FSDP" --num_processes 1 -m bench llm train "${COMMON[@]}" \
  --out "$OUT/resumed" --set max_steps=4
check fsdp2-resume-equal python -c "
import json
a = [json.loads(l)['loss'] for l in open('$OUT/straight/log.jsonl')]
b = [json.loads(l)['loss'] for l in open('$OUT/resumed/log.jsonl')]
print('straight', a); print('resumed ', b)
assert len(a) == len(b) == 4 and all(abs(x - y) <= 1e-3 * max(1.0, abs(x)) for x, y in zip(a, b))"
check tied-after-reload python - "$MODEL" "$OUT/straight/final" <<'EOF'
import json, sys
from pathlib import Path
import torch
from transformers import AutoModelForCausalLM
base = AutoModelForCausalLM.from_pretrained(sys.argv[1])
saved = AutoModelForCausalLM.from_pretrained(sys.argv[2], dtype=torch.float32)
config = json.loads((Path(sys.argv[2]) / "config.json").read_text())
assert config["dtype"] == "bfloat16", config["dtype"]
if base.config.tie_word_embeddings:
    assert saved.get_output_embeddings().weight.data_ptr() == saved.get_input_embeddings().weight.data_ptr()
    moved = (saved.get_input_embeddings().weight - base.get_input_embeddings().weight.float()).abs().max()
    print(f"tied; the trained embedding moved by {float(moved):.2e}")
EOF
# the same FSDP2 launch with an UNTIED output head, as Qwen2.5-7B..72B have (the model's configuration untied,
# random weights; sft needs no reference log-probs): the head is an FSDP2 unit of its own
python - "$MODEL" "$OUT/untied-model" <<'EOF'
import sys
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
config = AutoConfig.from_pretrained(sys.argv[1])
config.tie_word_embeddings = False
AutoModelForCausalLM.from_config(config).save_pretrained(sys.argv[2])
AutoTokenizer.from_pretrained(sys.argv[1]).save_pretrained(sys.argv[2])
EOF
check fsdp2-untied-head accelerate launch --config_file "$FSDP" --num_processes 1 -m bench llm train \
  "${COMMON[@]}" --model "$OUT/untied-model" --objective sft --out "$OUT/untied" --set max_steps=2
check budget-forcing bench llm eval --model "$MODEL" --tasks aime24 --data "aime24=$OUT/inputs/aime24.jsonl" \
  --out "$OUT/eval-bf" --backend transformers --thinking-budget 64 --num-waits 2 --answer-tokens 16 --limit 4
check budget-forcing-tokens python - "$MODEL" "$OUT/eval-bf/aime24.jsonl" <<'EOF'
import json, sys
from transformers import AutoTokenizer
tok = AutoTokenizer.from_pretrained(sys.argv[1])
for line in open(sys.argv[2]):
    text = json.loads(line)["completion"]
    thinking = text.split("<|im_start|>answer")[0].removeprefix("<|im_start|>think")
    pieces = thinking.split("Wait")
    n = sum(len(tok(p, add_special_tokens=False)["input_ids"]) for p in pieces)
    print(f"thinking tokens {n} (budget 64), waits {len(pieces) - 1}, final answer forced: {'Final Answer:' in text}")
    assert n <= 64 + len(pieces) and len(pieces) - 1 <= 2  # re-tokenising may merge a token at each seam
EOF
if python -c "import vllm" 2>/dev/null; then
  check vllm bench llm eval --model "$MODEL" --tasks aime24 --data "aime24=$OUT/inputs/aime24.jsonl" \
    --out "$OUT/eval-vllm" --backend vllm --limit 4 --max-new-tokens 256
else
  say "skipped vllm: not installed"
fi
say "done: $SUMMARY"
