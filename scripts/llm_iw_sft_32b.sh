#!/usr/bin/env bash
# iw-SFT of Qwen2.5-32B-Instruct on s1K-1.1 (paper §4.1, Appendix C) on one node of 8 x 80 GB GPUs:
# prepare -> ref-logps -> train -> eval -> report. Every stage resumes when the script is run again.
#
#   pip install -e ".[llm,hub]"          # plus `pip install vllm` for fast evaluation, `deepspeed` for CONFIG=deepspeed
#   huggingface-cli login                # GPQA Diamond is gated: accept its terms on the hub first
#   OBJECTIVE=iw_sft scripts/llm_iw_sft_32b.sh
#
# Variables: MODEL, DATA (s1K-1.1 id or local file), OBJECTIVE (sft | iw_sft | iw_sft_paper |
# iw_sft_paper_mean | iw_sft_token),
# CONFIG (fsdp2 | deepspeed), OUT, MAX_LENGTH (block size, the authors' code: 22000), GPUS.
set -euo pipefail
MODEL=${MODEL:-Qwen/Qwen2.5-32B-Instruct}
DATA=${DATA:-simplescaling/s1K-1.1}
OBJECTIVE=${OBJECTIVE:-iw_sft}
CONFIG=${CONFIG:-fsdp2}
OUT=${OUT:-results/llm/qwen2.5-32b-$OBJECTIVE}
MAX_LENGTH=${MAX_LENGTH:-22000}
GPUS=${GPUS:-8}
HERE=$(cd "$(dirname "$0")/.." && pwd)
case $CONFIG in
  fsdp2) ACCEL=$HERE/bench/llm/accelerate/fsdp2_8gpu.yaml ;;
  deepspeed) ACCEL=$HERE/bench/llm/accelerate/deepspeed_zero3_offload_8gpu.yaml ;;
  *) echo "CONFIG must be fsdp2 or deepspeed" >&2; exit 2 ;;
esac

bench llm prepare --tokenizer "$MODEL" --source "$DATA" --out "$OUT/data" --max-length "$MAX_LENGTH"

REF=()
if [ "$OBJECTIVE" != sft ]; then
  # pi_ref in bf16 fits one GPU (65.5 GB); the examples are split over the GPUs, no sharding needed.
  accelerate launch --multi_gpu --num_processes "$GPUS" -m bench llm ref-logps --model "$MODEL" --data "$OUT/data" \
    --out "$OUT/ref-logps"
  REF=(--ref-logps "$OUT/ref-logps")
fi

accelerate launch --config_file "$ACCEL" --num_processes "$GPUS" -m bench llm train --model "$MODEL" \
  --data "$OUT/data" "${REF[@]}" --out "$OUT/train" --objective "$OBJECTIVE" --preset paper

# The paper's protocol (s1's evaluation without budget forcing): s1's prompts and AIME file, thinking forced to start
# and given the context less the prompt and the answer's tokens (--thinking-budget auto), greedy. vLLM at
# tensor-parallel $GPUS (the Transformers backend would spread the 32B model over the GPUs layer by layer: correct
# but hours slower); the engine runs at the model's 32,768-token context.
PROTOCOL=(--tasks aime24,math500,gpqa_diamond --data aime24=s1 --prompt s1 --thinking-budget auto --backend vllm
          --tensor-parallel-size "$GPUS")
bench llm eval --model "$OUT/train/final" --name "Qwen2.5-32B $OBJECTIVE (ours)" --out "$OUT/eval/trained" \
  "${PROTOCOL[@]}"
bench llm eval --model "$MODEL" --name "Qwen2.5-32B-Instruct (ours)" --out "$OUT/eval/base" "${PROTOCOL[@]}"
bench report "$OUT/eval" --out "$OUT/report"
echo "table: $OUT/report/llm_table.md"
