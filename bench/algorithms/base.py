"""The one interface every algorithm implements, native or d3rlpy-backed.

An algorithm is a class with a config dataclass (``Config``) and two methods:
- ``curate(trajectories) -> Curated``: which episodes it trains on (BC: all; SFT: the top 10%; ...);
- ``fit(trajectories, curated, ctx) -> Policy``: train, calling ``ctx.step(...)`` as it goes.
``run.py`` calls exactly these and never asks which kind of algorithm it runs.
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from bench.algorithms.checkpoint import Checkpoint, Component
from bench.datasets.curation import Curated
from bench.datasets.trajectories import Trajectories
from bench.evaluation import EvalResult, Policy
from bench.loggers import RunIdentity, RunLogger


class TrainingError(RuntimeError):
    """Training cannot go on (NaN loss, ...). The message says what to change; the last checkpoint is kept."""


class DivergedError(TrainingError):
    """The run stopped training sanely (non-finite loss or parameters, a loss far above its early level, collapsed
    importance weights); its record gets status "diverged" and is never counted. ``seed``: the run's seed."""

    def __init__(self, message: str, seed: int):
        super().__init__(message)
        self.seed = seed


@dataclass
class RunContext:
    """What the run gives an algorithm: seed, device, evaluation and checkpoint cadence, progress output.

    A training loop calls :meth:`resume` once with the state it must restore (modules, optimisers, schedulers,
    generators: one :class:`~bench.algorithms.checkpoint.Checkpoint` for all of it) and :meth:`step` after every
    update with its statistics as tensors on the training device. The context accumulates them there and reads
    them back only at an evaluation (or log) step, so a training step never waits for the device; a window's
    statistics are its means, except names ending in ``_min`` / ``_max`` (its minimum / maximum) and host numbers
    (its latest value, e.g. the learning rate).
    """

    seed: int
    device: torch.device
    total_steps: int
    evaluate: Callable[[Policy], EvalResult] | None  # the run's evaluator; None = statistics only, no scores
    eval_every: int
    checkpoint_path: Path | None = None
    log: Callable[[str], None] = print
    curve: list[dict] = field(default_factory=list)  # one entry per evaluation step: statistics and scores
    info: dict = field(default_factory=dict)  # what the algorithm wants in the record (train_info)
    datasets: dict[str, Trajectories] = field(default_factory=dict)  # by role: Algorithm.datasets_used()
    eval_seconds: float = 0.0  # time spent in evaluations during training (the record's timings.train_evals)
    fix: str = "lower the learning rate"  # what a diverged run's message advises (run.py names the real fields)
    loss_factor: float = 0.0  # diverged when a window's loss > first + loss_factor * max(|first|, 1); 0 = off
                              # (first: the loss of the run's first update)
    min_ess_fraction: float = 0.0  # diverged when every step of a window has ESS / batch below this; 0 = off
    log_every: int | None = None  # steps between reads of the statistics for the loggers (None: eval_every)
    loggers: list[RunLogger] = field(default_factory=list)  # CSV / TensorBoard / W&B (bench.loggers)
    identity: RunIdentity | None = None  # how the loggers name the run
    config: dict = field(default_factory=dict)  # the run's resolved config, for the loggers
    progress: Callable[[int, int, float | None], None] | None = None  # (step, total, last score): a live bar
    _first_loss: float | None = None  # the loss of the first update: the "early level" of loss_factor
    _first_loss_t: torch.Tensor | None = None  # ... on the device until the first evaluation step reads it
    _t0: float = field(default_factory=time.time)
    _first_step: int = 0
    _window_start: int = 1  # the first update of the current statistics window
    _window: dict[str, torch.Tensor] = field(default_factory=dict)  # statistics since the last evaluation step
    _window_steps: int = 0
    _host_window: dict[str, float] = field(default_factory=dict)  # host numbers: the latest value of each
    _checkpoint: Checkpoint | None = None
    _logging: bool = False  # the loggers were started (begin) and not finished

    def resume(self, **components: Component) -> int:
        """Register the loop's state and restore it (and this context's curve) from the last checkpoint.

        Returns the step the checkpoint was written after (0 without one); the loop continues with the next.
        Call it right before the update loop: it also starts the steps/s clock.
        """
        self._checkpoint = Checkpoint(self.checkpoint_path, {**components, "run": self})
        start = self._checkpoint.restore()
        if start:
            self.log(f"resumed from {self.checkpoint_path} at step {start}")
            self.info["resumed_from_step"] = start  # the record says the run was resumed, and from where
        self.begin(start)
        return start

    def begin(self, start: int) -> None:
        """Training (re)starts after update ``start``: the steps/s clock and the loggers start; a resumed run logs
        its checkpoint's curve point again (the loggers drop what the killed process wrote after it)."""
        self._first_step, self._window_start, self._t0 = start, start + 1, time.time()
        self._logging = True
        for logger in self.loggers:
            logger.start(self.identity, self.config, start)
            if start and self.curve and self.curve[-1]["step"] == start:
                logger.log(start, self.curve[-1])

    def finish_logging(self, final: dict, ok: bool = True) -> None:
        """The loggers' last word: the final scores, or (``ok`` False) that the run stopped without them."""
        if self._logging:
            for logger in self.loggers:
                logger.finish(final, ok)
        self._logging = False

    def watch(self, loss_factor: float, min_ess_fraction: float = 0.0) -> None:
        """Divergence limits from the algorithm's config (see the fields of the same names)."""
        self.loss_factor, self.min_ess_fraction = loss_factor, min_ess_fraction

    def state_dict(self) -> dict:
        return {"curve": self.curve, "first_loss": self._first_loss}

    def load_state_dict(self, state: dict) -> None:
        self.curve, self._first_loss = state["curve"], state["first_loss"]

    def due(self, step: int) -> bool:
        """Whether update ``step`` (1-based) is an evaluation step, where statistics are read and checkpoints made."""
        return step % self.eval_every == 0 or step == self.total_steps

    def _log_due(self, step: int) -> bool:
        return bool(self.loggers) and self.log_every is not None and step % self.log_every == 0

    def step(self, step: int, policy: Policy | None, stats: Mapping[str, torch.Tensor]) -> None:
        """Call after update ``step`` with its statistics (``loss`` among them, device tensors).

        Between evaluation steps this only adds them up on the device. At an evaluation step it reads the window's
        statistics (one transfer), stops a run whose loss is not finite, evaluates ``policy``, logs and checkpoints.
        """
        if self._first_loss is None and self._first_loss_t is None:
            self._first_loss_t = stats["loss"].detach().clone()
        self._accumulate(stats)
        if self.progress is not None and step % 20 == 0:  # host-side counting only
            self.progress(step, self.total_steps, None)
        evaluation = self.due(step)
        if not evaluation and not self._log_due(step):
            return
        window = self._read_window()
        self._check_sane(f"steps {self._window_start}-{step}", step, window, policy)
        self._window_start = step + 1
        elapsed = time.time() - self._t0
        rate = (step - self._first_step) / max(elapsed, 1e-9)
        if not evaluation:  # a log step between evaluations: statistics to the loggers only
            for logger in self.loggers:
                logger.log(step, {**window, "steps_per_s": rate})
            return
        eta = (self.total_steps - step) / max(rate, 1e-9)
        line = f"step {step}/{self.total_steps} | {rate:.1f} steps/s | loss {window['loss']:.3f}"
        point = {"step": step, **window, "time": elapsed}
        if self.evaluate is not None:
            t0 = time.time()
            result = self.evaluate(policy)
            self.eval_seconds += time.time() - t0
            point.update(return_mean=result.return_mean, normalized_mean=result.normalized_mean)
            score = f"{result.normalized_mean:.1f}" if result.normalized_mean is not None else "n/a"
            line += f" | return {result.return_mean:.1f} | score {score}"
        self.curve.append(point)
        self.log(f"{line} | ETA {eta:.0f}s")
        if self.progress is not None:
            self.progress(step, self.total_steps, point.get("normalized_mean"))
        if self._checkpoint is not None and step != self.total_steps:
            self._checkpoint.save(step)
        for logger in self.loggers:  # after the checkpoint: a resumed run never logs a step twice
            logger.log(step, {**point, "steps_per_s": rate})

    def _check_sane(self, steps: str, step: int, window: dict[str, float], policy: Policy | None) -> None:
        """Raise DivergedError when the window ``steps`` (since the last evaluation step) shows the run no longer
        trains."""
        advice = f"{self.fix}. A changed config is a new run (another config hash): it starts afresh"
        bad = [f"{k} = {v}" for k, v in window.items() if not math.isfinite(v)]
        if bad:
            raise DivergedError(f"diverged at step {step}: {', '.join(bad)} over {steps}; {advice}", self.seed)
        if isinstance(policy, torch.nn.Module) and not torch.stack([p.isfinite().all()
                                                                      for p in policy.parameters()]).all():
            raise DivergedError(f"diverged at step {step}: the policy's parameters are no longer finite; {advice}",
                                self.seed)
        if self._first_loss is None:
            self._first_loss = float(self._first_loss_t)
        if self.loss_factor > 0:
            limit = self._first_loss + self.loss_factor * max(abs(self._first_loss), 1.0)
            if window["loss"] > limit:
                raise DivergedError(
                    f"diverged at step {step}: the loss is {window['loss']:.4g} over {steps}, above {limit:.4g} "
                    f"(first update's {self._first_loss:.4g} + divergence_factor {self.loss_factor:g} x "
                    f"max(|first|, 1)); {advice}", self.seed)
        ess = window.get("ess_fraction_max")
        if ess is not None and ess < self.min_ess_fraction:
            raise DivergedError(
                f"diverged at step {step}: the importance weights collapsed — ESS / batch below min_ess_fraction "
                f"{self.min_ess_fraction:g} at every step of {steps} (at most {ess:.3g}); {advice}", self.seed)

    def _accumulate(self, stats: Mapping[str, torch.Tensor | float]) -> None:
        for name, value in stats.items():
            if not isinstance(value, torch.Tensor):  # a host number (the learning rate): its latest value
                self._host_window[name] = float(value)
                continue
            value = value.detach()
            if name not in self._window:
                self._window[name] = value.clone()
            elif name.endswith("_min"):
                self._window[name] = torch.minimum(self._window[name], value)
            elif name.endswith("_max"):
                self._window[name] = torch.maximum(self._window[name], value)
            else:
                self._window[name] = self._window[name] + value
        self._window_steps += 1

    def _read_window(self) -> dict[str, float]:
        names = list(self._window)
        values = torch.stack([self._window[n].float() for n in names]).tolist() if names else []
        window = {n: v if n.endswith(("_min", "_max")) else v / self._window_steps
                  for n, v in zip(names, values, strict=True)}
        window.update(self._host_window)
        self._window, self._window_steps, self._host_window = {}, 0, {}
        return window


class Algorithm(ABC):
    """An algorithm and what the suite says about it. A concrete subclass that sets ``name`` registers itself
    (``registered()``): the CLI's help, ``bench algorithms``, the unknown-name message, the report's columns and the
    README's list are all read from these class attributes, so adding an algorithm is its class and its preset."""

    name: ClassVar[str]  # what users type (--algo)
    Config: ClassVar[type]  # its config dataclass (fields = what --set and the presets may change)
    display_name: ClassVar[str]  # how tables print it ("iw-SFT(Q)")
    order: ClassVar[int]  # its column in tables: the paper's Table 2 order, baselines before the SFT family
    family: ClassVar[str]  # "native" (PyTorch, bench/algorithms) or "d3rlpy" (d3rlpy's update in our loop)
    summary: ClassVar[str]  # one line: what it trains on and how

    _registry: ClassVar[dict[str, type[Algorithm]]] = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "name" not in cls.__dict__:  # a shared base (D3rlpyAlgorithm): not an algorithm users can name
            return
        missing = [a for a in ("Config", "display_name", "order", "family", "summary") if not hasattr(cls, a)]
        if missing:
            raise TypeError(f"algorithm {cls.__name__} ({cls.name!r}) must set {', '.join(missing)}")
        if cls.family not in ("native", "d3rlpy"):
            raise TypeError(f"algorithm {cls.name!r}: family must be 'native' or 'd3rlpy', got {cls.family!r}")
        if (other := Algorithm._registry.get(cls.name)) is not None and other.__qualname__ != cls.__qualname__:
            raise TypeError(f"two algorithms are named {cls.name!r}: {other.__qualname__} and {cls.__qualname__}")
        Algorithm._registry[cls.name] = cls

    @staticmethod
    def registered() -> list[type[Algorithm]]:
        """Every registered algorithm, in table order."""
        return sorted(Algorithm._registry.values(), key=lambda c: (c.order, c.name))

    def __init__(self, config: Any):
        self.config = config

    def datasets_used(self) -> dict[str, str]:
        """Datasets the run trains on besides its own, by role (the SFT family's ``{"reference": name}``);
        ``run.py`` loads each, records its fingerprint and hands it over as ``ctx.datasets[role]``."""
        return {}

    @abstractmethod
    def curate(self, trajectories: Trajectories) -> Curated: ...

    @abstractmethod
    def fit(self, trajectories: Trajectories, curated: Curated, ctx: RunContext) -> Policy: ...

    def can_batch_seeds(self) -> bool:
        """Whether :meth:`fit_seeds` trains several seeds as one batched model."""
        return False

    def fit_seeds(self, trajectories: Trajectories, curated: Curated, ctxs: list[RunContext],
                  checkpoint_path: Path | None = None) -> list[Policy]:
        """One policy per context (seed), trained together; the same policies as :meth:`fit` per seed."""
        raise NotImplementedError(f"{self.name} trains one seed at a time")
