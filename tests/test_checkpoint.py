"""The one checkpoint mechanism: resume bit-identically, across devices, atomically, with clear errors."""

from __future__ import annotations

import errno

import numpy as np
import pytest
import torch
from conftest import seed_group

from bench.algorithms.checkpoint import Checkpoint, GlobalRNG
from bench.algorithms.policy import GaussianMLPPolicy


def _loop(device: torch.device):
    """A small training loop's state: policy, fused Adam, scheduler, a device generator and a numpy generator."""
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(5, 2, hidden=16, layers=2).to(device)
    optim = torch.optim.Adam(policy.parameters(), lr=1e-2, fused=True)
    sched = torch.optim.lr_scheduler.LambdaLR(optim, lambda k: 1.0 / (1 + k))
    components = {"policy": policy, "optim": optim, "sched": sched,
                  "generator": torch.Generator(device=device).manual_seed(1), "rng": np.random.default_rng(2)}
    return components


def _train(components, steps: int, device: torch.device) -> None:
    data = torch.arange(200 * 7, dtype=torch.float32, device=device).reshape(200, 7).sin()
    for _ in range(steps):
        rows = torch.randint(200, (16,), generator=components["generator"], device=device)
        rows = rows + int(components["rng"].integers(0, 1))  # the numpy draw must be restored too
        loss = -components["policy"].log_prob(data[rows, :5], data[rows, 5:]).mean()
        components["optim"].zero_grad()
        loss.backward()
        components["optim"].step()
        components["sched"].step()


def _params(components) -> list[torch.Tensor]:
    return [p.detach().cpu().clone() for p in components["policy"].parameters()]


def _resumes_identically(tmp_path, save_device: torch.device, load_device: torch.device, tag=None) -> None:
    reference = _loop(save_device)
    _train(reference, 10, save_device)
    written = _loop(save_device)
    _train(written, 5, save_device)
    Checkpoint(tmp_path / "c.pt", written).save(5)
    resumed = _loop(load_device)
    assert Checkpoint(tmp_path / "c.pt", resumed).restore() == 5
    _train(resumed, 5, load_device)
    assert resumed["sched"].last_epoch == 10
    assert resumed["optim"].state[next(resumed["policy"].parameters())]["step"].device.type == load_device.type
    for a, b in zip(_params(reference), _params(resumed), strict=True):
        if save_device == load_device:
            assert torch.equal(a, b)
        else:  # another device's generator stream and rounding: the same training, not the same bits
            assert torch.isfinite(b).all() and a.shape == b.shape


def test_a_checkpoint_resumes_bit_identically(tmp_path):
    _resumes_identically(tmp_path, torch.device("cpu"), torch.device("cpu"))


def test_a_checkpoint_written_on_a_gpu_resumes_on_a_cpu_only_machine(tmp_path):
    """Every tensor of the file is tagged "cuda:0", as torch.save tags a GPU run's tensors; the loader reads it to
    the CPU (map_location semantics), so a GPU run's checkpoint resumes here — bit-identically."""
    from torch import serialization

    entry = (0, lambda storage: "cuda:0", lambda storage, location: None)
    serialization._package_registry.insert(0, entry)  # torch.save tags every storage "cuda:0" while it is there
    try:
        components = _loop(torch.device("cpu"))
        _train(components, 5, torch.device("cpu"))
        Checkpoint(tmp_path / "c.pt", components).save(5)
    finally:
        serialization._package_registry.remove(entry)
    import io

    payload = torch.load(tmp_path / "c.pt", weights_only=True)["payload"]  # the checksummed state inside
    with pytest.raises(RuntimeError, match="CUDA"):  # what a loader without map_location="cpu" meets here
        torch.load(io.BytesIO(payload), weights_only=True)
    reference = _loop(torch.device("cpu"))
    _train(reference, 10, torch.device("cpu"))
    resumed = _loop(torch.device("cpu"))
    assert Checkpoint(tmp_path / "c.pt", resumed).restore() == 5
    _train(resumed, 5, torch.device("cpu"))
    for a, b in zip(_params(reference), _params(resumed), strict=True):
        assert torch.equal(a, b)


@pytest.mark.cuda
def test_checkpoints_move_between_cpu_and_cuda(tmp_path):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    for save, load in ((cpu, cuda), (cuda, cpu), (cuda, cuda)):
        _resumes_identically(tmp_path, save, load)


def test_global_rng_and_the_runs_curves_are_components(tmp_path):
    group = seed_group([0, 1], 4, eval_every=2, checkpoint=tmp_path / "run.pt")
    assert group.resume({"rng": GlobalRNG()}) == 0
    np.random.seed(3)
    torch.manual_seed(3)
    for step in (1, 2):
        group.step(step, {"loss": torch.tensor([float(step), 10.0 * step])}, lambda k: None)
    expected = (np.random.rand(), torch.rand(1).item())
    np.random.seed(99)
    torch.manual_seed(99)
    again = seed_group([0, 1], 4, eval_every=2, checkpoint=tmp_path / "run.pt")
    assert again.resume({"rng": GlobalRNG()}) == 2
    assert [r.curve for r in again.runs] == [r.curve for r in group.runs]
    assert [r.curve[0]["loss"] for r in again.runs] == [1.5, 15.0]
    assert again.guard.first_loss == [1.0, 10.0] and again.runs[1].info["resumed_from_step"] == 2
    assert (np.random.rand(), torch.rand(1).item()) == expected


def test_a_checkpoint_of_other_components_is_refused_with_the_fix(tmp_path):
    Checkpoint(tmp_path / "c.pt", {"policy": torch.nn.Linear(2, 2)}).save(3)
    with pytest.raises(ValueError, match=r"holds \['policy'\], this run needs \['optim', 'policy'\]; delete it"):
        Checkpoint(tmp_path / "c.pt", {"policy": torch.nn.Linear(2, 2), "optim": GlobalRNG()}).restore()


class _FullDisk:
    """A file on a full disk: a write stores a few bytes, then fails with ENOSPC."""

    def __init__(self, f):
        self.f = f

    def write(self, data):
        self.f.write(bytes(data[:100]))
        raise OSError(errno.ENOSPC, "No space left on device")

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


def fill_disk_after(monkeypatch, good_writes: int) -> None:
    """Simulated full disk: checkpoint files opened after the first ``good_writes`` fail with ENOSPC."""
    import os

    real, opened = os.fdopen, []

    def fdopen(fd, *args, **kwargs):
        f = real(fd, *args, **kwargs)
        opened.append(fd)
        return f if len(opened) <= good_writes else _FullDisk(f)

    monkeypatch.setattr("bench.algorithms.checkpoint.os.fdopen", fdopen)


def test_a_failed_write_leaves_no_temporary_file_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    component = {"policy": torch.nn.Linear(2, 2)}
    Checkpoint(tmp_path / "c.pt", component).save(1)
    before = (tmp_path / "c.pt").read_bytes()
    fill_disk_after(monkeypatch, 0)
    with pytest.raises(OSError, match=r"no space left in .* it needs [\d,]+ bytes and [\d,]+ are free") as e:
        Checkpoint(tmp_path / "c.pt", component).save(2)
    assert e.value.errno == errno.ENOSPC and "run the same command again" in str(e.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pt"]
    assert (tmp_path / "c.pt").read_bytes() == before


def test_temporary_files_have_unique_names(tmp_path, monkeypatch):
    import tempfile

    from bench.algorithms import checkpoint

    names = []
    real_mkstemp = tempfile.mkstemp

    def record_name(**kwargs):
        fd, name = real_mkstemp(**kwargs)
        names.append(name)
        return fd, name

    monkeypatch.setattr(checkpoint.tempfile, "mkstemp", record_name)
    for step in (1, 2):
        Checkpoint(tmp_path / "c.pt", {"policy": torch.nn.Linear(2, 2)}).save(step)
    assert len(set(names)) == 2 and all(n != str(tmp_path / "c.pt") for n in names)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pt"]


@pytest.mark.cuda
def test_training_steps_never_wait_for_the_gpu(tmp_path):
    """Between evaluation steps no native training step synchronises with the GPU: torch's sync debug mode raises
    on any synchronising CUDA call (an .item(), a data-dependent shape, a blocking copy) during steps 3..12."""
    from bench.algorithms.bc import BCConfig, train_bc
    from bench.algorithms.context import RunContext, Schedule, SeedGroup
    from bench.algorithms.reference import reference_policies
    from bench.algorithms.sft import IWSFTQ
    from bench.datasets.curation import all_episodes
    from bench.datasets.sources import load_dataset
    from bench.specs import get_spec

    traj = load_dataset(get_spec("hopper-mini-replay"))
    cuda = torch.device("cuda")

    class Strict(SeedGroup):
        def step(self, step, stats, policy):
            torch.cuda.set_sync_debug_mode(0)
            super().step(step, stats, policy)
            torch.cuda.set_sync_debug_mode("error" if 2 <= step < 12 else 0)

    def group(seeds):
        return Strict([RunContext(seed=s, log=lambda m: None) for s in seeds], cuda, Schedule(13, 13))

    try:
        for seeds in ([0], [0, 1]):
            for unit in ("transitions", "trajectories"):
                train_bc(traj, all_episodes(traj), BCConfig(steps=13, batch_unit=unit, batch_size=64), group(seeds))
            for static in (False, True):
                algo = IWSFTQ(IWSFTQ.Config(steps=13, batch_size=64, bc_steps=2, bc_batch_size=32,
                                            static_shapes=static))
                g = group(seeds)
                g.references = [p for p, _ in reference_policies(traj, algo.reference_bc(), seeds, cuda,
                                                                 lambda m: None, tmp_path / "cache")]
                algo.fit(traj, algo.curate(traj), g)
    finally:
        torch.cuda.set_sync_debug_mode(0)
