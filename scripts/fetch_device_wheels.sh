#!/usr/bin/env bash
# Download, on a machine with PyPI access, the wheels scripts/device_check.sh installs on the GPU machine: its image
# has python3.12 with torch + CUDA, h5py, pandas, scipy, seaborn, transformers, accelerate, tensorboard, but no
# MuJoCo, gymnasium, d3rlpy, Minari, and no network. Writes device_wheels/ (git-ignored, ~40 MB), which travels with
# the check (the device tool's `carry`). Usage: bash scripts/fetch_device_wheels.sh [python-version]
set -euo pipefail
cd "$(dirname "$0")/.."
py="${1:-3.12}"
out=device_wheels
rm -rf "$out" && mkdir -p "$out"
# --no-deps with the full list: the dependencies the image lacks, never torch or numpy (the image has them, and a
# torch from PyPI would be a multi-GB CUDA build)
packages=(
  mujoco==3.1.6 gymnasium==1.0.0 d3rlpy==2.8.1 minari==0.5.4 gymnasium-robotics==1.3.1
  absl-py etils glfw pyopengl cloudpickle farama-notifications gym-notices imageio jinja2 markupsafe pettingzoo
  click colorama dataclasses-json marshmallow typing-inspect mypy-extensions structlog scikit-learn joblib
  threadpoolctl typer annotated-doc pydantic pydantic-core typing-inspection annotated-types rich markdown-it-py mdurl
  pygments shellingham pytest pluggy iniconfig
)
pip download --quiet --no-deps --only-binary=:all: --python-version "$py" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d "$out" "${packages[@]}"
# gym 0.26.2 (d3rlpy imports it) is published as source only: build its pure-Python wheel here
pip wheel --quiet --no-deps --no-build-isolation -w "$out" gym==0.26.2 2>/dev/null || pip wheel --quiet --no-deps -w "$out" gym==0.26.2
du -sh "$out"
ls "$out" | wc -l
