"""Every native training step is deterministic by construction: it runs under torch.use_deterministic_algorithms(True),
calls none of the ops that PyTorch runs nondeterministically (or refuses) on CUDA, and two runs give the same bits.

The flag's checks are device-specific (on a CPU index_add_ passes it), so the op names are read with torch.profiler
and compared with PyTorch's list for CUDA (``torch.use_deterministic_algorithms``' docstring): a step that grew an
``index_add_`` or a differentiated ``gather`` fails here without a GPU.
"""

from __future__ import annotations

import pytest
import torch
from conftest import seed_group
from torch.profiler import ProfilerActivity, profile

from bench.algorithms.bc import BCConfig, train_bc
from bench.algorithms.sft import IWSFTQ, SFTQ
from bench.datasets.curation import all_episodes
from bench.datasets.sources import load_dataset
from bench.specs import get_spec

# Nondeterministic on CUDA (atomics), or refused there under the flag, forward or in their backward.
CUDA_NONDETERMINISTIC = {
    "aten::index_add", "aten::index_add_", "aten::scatter_add", "aten::scatter_add_", "aten::scatter",
    "aten::scatter_", "aten::scatter_reduce", "aten::scatter_reduce_", "aten::index_put_", "aten::_index_put_impl_",
    "aten::put_", "aten::index_copy_", "aten::histc", "aten::bincount", "aten::embedding_dense_backward",
    "aten::index_select_backward", "aten::gather_backward", "aten::median", "aten::kthvalue",
    "aten::nll_loss_forward", "aten::nll_loss_backward"}


COMPILE_TIME = {"entire_frame_compile", "backend_compile"}  # torch.compile tracing: runs on example tensors once


def _step_ops(events) -> set[str]:
    """The ops the training ran, not those torch.compile traced while compiling it."""
    ops = set()
    for e in events:
        parent, compiling = e.cpu_parent, False
        while parent is not None and not compiling:
            compiling, parent = parent.name in COMPILE_TIME, parent.cpu_parent
        if not compiling:
            ops.add(e.name)
    return ops


@pytest.fixture(scope="module")
def traj():
    return load_dataset(get_spec("hopper-mini-replay"))


def _bc(batch_unit):
    def fit(traj, group, cache):
        cfg = BCConfig(steps=group.schedule.total_steps, batch_unit=batch_unit,
                       batch_size=128 if batch_unit == "transitions" else 8)
        return train_bc(traj, all_episodes(traj), cfg, group)
    return fit


def _sft(algo_cls, **kw):
    def fit(traj, group, cache):
        from bench.algorithms.reference import reference_policies

        cfg = algo_cls.Config(steps=group.schedule.total_steps, warmup_steps=1, batch_size=16, bc_steps=3,
                              bc_batch_size=8, **kw)
        algo = algo_cls(cfg)
        group.references = [p for p, _ in reference_policies(traj, algo.reference_bc(), group.seeds, group.device,
                                                             lambda m: None, cache)]
        return algo.fit(traj, algo.curate(traj), group)
    return fit


CASES = {"bc": _bc("transitions"), "bc (trajectories)": _bc("trajectories"), "sft_q": _sft(SFTQ),
         "iw_sft_q": _sft(IWSFTQ), "iw_sft_q (static shapes)": _sft(IWSFTQ, static_shapes=True),
         "iw_sft_q (compiled)": _sft(IWSFTQ, static_shapes=True, compile=True)}


@pytest.mark.parametrize("seeds", [[0], [0, 1]])
@pytest.mark.parametrize("case", list(CASES))
def test_every_native_step_is_deterministic(traj, tmp_path, case, seeds):
    results = []
    torch.use_deterministic_algorithms(True)
    try:
        for attempt in range(2):
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                policies = CASES[case](traj, seed_group(seeds, steps=6), tmp_path / f"cache{attempt}")
            results.append([torch.cat([p.detach().reshape(-1) for p in policy.parameters()]) for policy in policies])
            used = _step_ops(prof.events())
            assert not used & CUDA_NONDETERMINISTIC, sorted(used & CUDA_NONDETERMINISTIC)
    finally:
        torch.use_deterministic_algorithms(False)
    assert len(results[0]) == len(seeds)
    for a, b in zip(*results, strict=True):
        assert torch.equal(a, b)  # bit for bit, reference policy and fine-tuning both
