"""What a run gives its training loop, in parts with one job each, and the one loop every algorithm trains with.

:class:`RunContext` (one seed's run: evaluator, log, loggers, progress, curve), :class:`Schedule` (evaluation and log
steps), :class:`WindowStatistics` (per-seed statistics on the device between reads), :class:`DivergenceGuard`,
and :class:`SeedGroup`: K >= 1 seeds trained as one model (K = 1 is a single run) with their checkpoint.
:func:`train` runs a :class:`Learner` on a :class:`BatchSource` under a group. The record's statistics and the
divergence checks are read at evaluation steps only, from their own window; loggers asking for more (``log_every``)
get a window of their own, so turning a logger on never changes a record.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from bench.algorithms.checkpoint import Checkpoint, Component
from bench.evaluation import EvalResult, Policy
from bench.loggers import RunLoggers


class TrainingError(RuntimeError):
    """Training cannot go on (NaN loss, ...). The message says what to change; the last checkpoint is kept."""


class DivergedError(TrainingError):
    """The run stopped training sanely (non-finite loss or parameters, a loss far above its early level, collapsed
    importance weights); its record gets status "diverged" and is never counted. ``seed``: the run's seed."""

    def __init__(self, message: str, seed: int):
        super().__init__(message)
        self.seed = seed

    def __reduce__(self):  # pickles (a Ray task's error travels to the driver)
        return type(self), (str(self), self.seed)


@dataclass
class RunContext:
    """One seed's run: what it reports and where (the group it trains in holds the device and the schedule)."""

    seed: int
    evaluate: Callable[[Policy], EvalResult] | None = None  # the run's evaluator; None = statistics only
    log: Callable[[str], None] = print
    loggers: RunLoggers = field(default_factory=lambda: RunLoggers([]))  # CSV / TensorBoard / W&B: read only
    progress: Callable[[int, int, float | None], None] | None = None  # (step, total, last score): a live bar
    curve: list[dict] = field(default_factory=list)  # one entry per evaluation step: statistics and scores
    info: dict = field(default_factory=dict)  # what the algorithm wants in the record (train_info)
    eval_seconds: float = 0.0  # time spent in evaluations during training (the record's timings.train_evals)

    def state_dict(self) -> dict:
        return {"curve": self.curve}

    def load_state_dict(self, state: dict) -> None:
        self.curve = state["curve"]


@dataclass(frozen=True)
class Schedule:
    """Which updates (1-based) are evaluation steps and which are log steps."""

    total_steps: int
    eval_every: int
    log_every: int | None = None  # statistics to the loggers between evaluations; None: at the evaluations only

    def evaluation_due(self, step: int) -> bool:
        return step % self.eval_every == 0 or step == self.total_steps

    def log_due(self, step: int) -> bool:
        return self.log_every is not None and step % self.log_every == 0


class WindowStatistics:
    """Per-seed statistics of the updates since the last read, added up on the device.

    A statistic is a (K,) tensor (one value per seed) or a host number shared by the seeds (the learning rate). A
    window reads as its means, except names ending in ``_min`` / ``_max`` (its minimum / maximum) and host numbers
    (the latest value). Reading is one transfer for every statistic of every seed.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._sums: dict[str, torch.Tensor] = {}
        self._host: dict[str, float] = {}
        self._steps = 0

    def add(self, stats: Mapping[str, torch.Tensor | float]) -> None:
        for name, value in stats.items():
            if not isinstance(value, torch.Tensor):
                self._host[name] = float(value)
                continue
            value = value.detach()
            if name not in self._sums:
                self._sums[name] = value.clone()
            elif name.endswith("_min"):
                self._sums[name] = torch.minimum(self._sums[name], value)
            elif name.endswith("_max"):
                self._sums[name] = torch.maximum(self._sums[name], value)
            else:
                self._sums[name] = self._sums[name] + value
        self._steps += 1

    def read(self, seeds: int) -> list[dict[str, float]]:
        """One dict per seed, and a fresh window."""
        names = list(self._sums)
        values = torch.stack([self._sums[n].float().reshape(seeds) for n in names]).T.tolist() if names \
            else [[] for _ in range(seeds)]
        windows = [{n: v if n.endswith(("_min", "_max")) else v / self._steps for n, v in zip(names, row, strict=True)}
                   | self._host for row in values]
        self.reset()
        return windows


@dataclass
class DivergenceGuard:
    """Stops a run whose evaluation window shows it no longer trains: a non-finite statistic or parameter, a loss
    far above its first update's, or importance weights that collapsed. Limits from the algorithm's config."""

    loss_factor: float = 0.0  # diverged when a window's loss > first + loss_factor * max(|first|, 1); 0 = off
    min_ess_fraction: float = 0.0  # diverged when every step of a window has ESS / batch below this; 0 = off
    fix: str = "lower the learning rate"  # what the message advises (run.py names the algorithm's real fields)
    first_loss: list[float] | None = None  # each seed's first-update loss: the "early level" of loss_factor
    _first_loss_t: torch.Tensor | None = None  # ... on the device until the first evaluation step reads it

    def observe(self, stats: Mapping[str, torch.Tensor | float]) -> None:
        if self.first_loss is None and self._first_loss_t is None:
            self._first_loss_t = stats["loss"].detach().clone()

    def state_dict(self) -> dict:
        return {"first_loss": self.first_loss}

    def load_state_dict(self, state: dict) -> None:
        self.first_loss = state["first_loss"]

    def check(self, step: int, steps: str, seed: int, k: int, window: dict[str, float], policy: Policy) -> None:
        """Raise DivergedError when seed ``seed`` (the k-th of its group) no longer trains over window ``steps``."""
        advice = f"{self.fix}. A changed config is a new run (another config hash): it starts afresh"
        bad = [f"{name} = {v}" for name, v in window.items() if not math.isfinite(v)]
        if bad:
            raise DivergedError(f"diverged at step {step}: {', '.join(bad)} over {steps}; {advice}", seed)
        if isinstance(policy, torch.nn.Module) and not torch.stack([p.isfinite().all()
                                                                      for p in policy.parameters()]).all():
            raise DivergedError(f"diverged at step {step}: the policy's parameters are no longer finite; {advice}",
                                seed)
        if self.first_loss is None:
            self.first_loss = self._first_loss_t.float().reshape(-1).tolist()
        first = self.first_loss[k]
        if self.loss_factor > 0:
            limit = first + self.loss_factor * max(abs(first), 1.0)
            if window["loss"] > limit:
                raise DivergedError(
                    f"diverged at step {step}: the loss is {window['loss']:.4g} over {steps}, above {limit:.4g} "
                    f"(first update's {first:.4g} + divergence_factor {self.loss_factor:g} x max(|first|, 1)); "
                    f"{advice}", seed)
        ess = window.get("ess_fraction_max")
        if ess is not None and ess < self.min_ess_fraction:
            raise DivergedError(
                f"diverged at step {step}: the importance weights collapsed — ESS / batch below min_ess_fraction "
                f"{self.min_ess_fraction:g} at every step of {steps} (at most {ess:.3g}); {advice}", seed)


@dataclass
class SeedGroup:
    """K >= 1 seeds of one config trained together as one model; K = 1 is a single run.

    A loop calls :meth:`resume` once with its state (modules, optimisers, schedulers, generators) and :meth:`step`
    after every update with per-seed statistics ((K,) device tensors). The group keeps every seed's statistics on
    the device and reads them at evaluation steps only, where it checks for divergence, evaluates each seed's policy,
    extends each seed's curve and checkpoints everything — every seed's curve included — in one file.
    """

    runs: list[RunContext]
    device: torch.device
    schedule: Schedule
    checkpoint_path: Path | None = None  # None: never saved, nothing restored
    guard: DivergenceGuard = field(default_factory=DivergenceGuard)
    references: list[Any] | None = None  # each seed's reference policy pi_ref, resolved before fit (SFT family)
    _record: WindowStatistics = field(default_factory=WindowStatistics)
    _logged: WindowStatistics | None = None  # the loggers' own window (log_every), or None
    _checkpoint: Checkpoint | None = None
    _window_start: int = 1
    _first_step: int = 0
    _t0: float = 0.0

    @property
    def seeds(self) -> list[int]:
        return [run.seed for run in self.runs]

    def watch(self, loss_factor: float, min_ess_fraction: float = 0.0) -> None:
        """Divergence limits from the algorithm's config (see :class:`DivergenceGuard`)."""
        self.guard.loss_factor, self.guard.min_ess_fraction = loss_factor, min_ess_fraction

    def log(self, message: str) -> None:
        self.runs[0].log(message)

    def resume(self, components: dict[str, Component]) -> int:
        """Register the loop's state and restore it (and every seed's curve) from the last checkpoint. Returns the
        step the checkpoint was written after (0 without one); every seed's record notes it. Call it right before the
        update loop: it also starts the steps/s clock and the loggers."""
        runs = {f"run{k}": run for k, run in enumerate(self.runs)}
        self._checkpoint = Checkpoint(self.checkpoint_path, {**components, "guard": self.guard, **runs})
        start = self._checkpoint.restore()
        if (discarded := self._checkpoint.discarded) is not None:
            self.log(f"warning: {discarded}")
            for run in self.runs:
                run.info["checkpoint_discarded"] = discarded
        if start:
            what = "" if len(self.runs) == 1 else f"{len(self.runs)} batched seeds "
            self.log(f"resumed {what}from {self.checkpoint_path} at step {start}")
            for run in self.runs:
                run.info["resumed_from_step"] = start  # the record says the run was resumed, and from where
        self._first_step, self._window_start, self._t0 = start, start + 1, time.time()
        if self.schedule.log_every is not None and any(run.loggers for run in self.runs):
            self._logged = WindowStatistics()
        for run in self.runs:
            resumed = start and run.curve and run.curve[-1]["step"] == start
            run.loggers.start(start, run.curve[-1] if resumed else None)
        return start

    def step(self, step: int, stats: Mapping[str, torch.Tensor | float], policy: Callable[[int], Policy]) -> None:
        """After update ``step``: add up its statistics; at an evaluation step read, check, evaluate ``policy(k)``
        of every seed k, checkpoint and log; at a log step hand the loggers their window."""
        self.guard.observe(stats)
        self._record.add(stats)
        if self._logged is not None:
            self._logged.add(stats)
        if step % 20 == 0:  # host-side counting only
            for run in self.runs:
                if run.progress is not None:
                    run.progress(step, self.schedule.total_steps, None)
        if self.schedule.evaluation_due(step):
            self._evaluate(step, policy)
        elif self._logged is not None and self.schedule.log_due(step):
            rate = self._rate(step)
            for run, window in zip(self.runs, self._logged.read(len(self.runs)), strict=True):
                run.loggers.log(step, {**window, "steps_per_s": rate})

    def _rate(self, step: int) -> float:
        return (step - self._first_step) / max(time.time() - self._t0, 1e-9)

    def _evaluate(self, step: int, policy: Callable[[int], Policy]) -> None:
        windows = self._record.read(len(self.runs))
        if self._logged is not None:
            self._logged.reset()  # at an evaluation step the loggers get the curve's point
        steps = f"steps {self._window_start}-{step}"
        policies = [policy(k) for k in range(len(self.runs))]
        for k, (run, window) in enumerate(zip(self.runs, windows, strict=True)):
            self.guard.check(step, steps, run.seed, k, window, policies[k])
        self._window_start = step + 1
        elapsed, rate = time.time() - self._t0, self._rate(step)
        total = self.schedule.total_steps
        eta = (total - step) / max(rate, 1e-9)
        for run, window, pol in zip(self.runs, windows, policies, strict=True):
            line = f"step {step}/{total} | {rate:.1f} steps/s | loss {window['loss']:.3f}"
            point = {"step": step, **window, "time": elapsed}
            if run.evaluate is not None:
                t0 = time.time()
                result = run.evaluate(pol)
                run.eval_seconds += time.time() - t0
                point.update(return_mean=result.return_mean, normalized_mean=result.normalized_mean)
                score = f"{result.normalized_mean:.1f}" if result.normalized_mean is not None else "n/a"
                line += f" | return {result.return_mean:.1f} | score {score}"
            run.curve.append(point)
            run.log(f"{line} | ETA {eta:.0f}s")
            if run.progress is not None:
                run.progress(step, total, point.get("normalized_mean"))
        if self._checkpoint is not None and step != total:
            self._checkpoint.save(step)
        for run in self.runs:  # after the checkpoint: a resumed run never logs a step twice
            run.loggers.log(step, {**run.curve[-1], "steps_per_s": rate})


class Learner(Protocol):
    """An algorithm's trainable state and its update rule, for K seeds at once."""

    def components(self) -> dict[str, Component]: ...  # what a checkpoint must hold to continue bit-identically

    def update(self, batch: Any) -> Mapping[str, torch.Tensor | float]: ...  # one step; (K,) statistics

    def policy(self, k: int) -> Policy: ...  # seed k's policy as it is now


class BatchSource(Protocol):
    """Where a learner's batches come from: one draw per seed per step, each seed with its own generator."""

    def components(self) -> dict[str, Component]: ...  # the generators

    def sample(self) -> Any: ...


def train(group: SeedGroup, learner: Learner, batches: BatchSource) -> list[Policy]:
    """The training loop of every algorithm: resume, then draw, update and report until the schedule's last step.
    Returns each seed's policy."""
    start = group.resume({**learner.components(), **batches.components()})
    for step in range(start + 1, group.schedule.total_steps + 1):
        group.step(step, learner.update(batches.sample()), learner.policy)
    return [learner.policy(k) for k in range(len(group.runs))]
