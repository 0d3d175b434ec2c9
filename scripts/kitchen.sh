#!/usr/bin/env bash
# The paper's Franka-kitchen fine-tuning experiment (Table 3) with its full protocol, then the report.
# Needs Minari's D4RL/kitchen/{partial,complete,mixed}-v2 in the Minari store (downloaded on first use with the
# `hub` extra: pip install -e ".[hub]"; or `minari download D4RL/kitchen/partial-v2` etc. where there is a network).
set -euo pipefail
seeds=${SEEDS:-3}
out=${OUT:-results/kitchen}
bench kitchen --seeds "$seeds" --out "$out" "$@"
bench report "$out" --out "${REPORT:-reports/kitchen}"
