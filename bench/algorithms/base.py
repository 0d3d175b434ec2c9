"""The one interface every algorithm implements, native or d3rlpy-backed.

An algorithm is a class with a config dataclass (``Config``) and two methods:
- ``curate(trajectories) -> Curated``: which episodes it trains on (BC: all; SFT: the top 10%; ...);
- ``fit(trajectories, curated, ctx) -> Policy``: train, calling ``ctx.step(...)`` as it goes.
``run.py`` calls exactly these and never asks which kind of algorithm it runs.
"""

from __future__ import annotations

import math
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from bench.datasets.curation import Curated
from bench.datasets.trajectories import Trajectories
from bench.evaluation import EvalResult, Policy


class TrainingError(RuntimeError):
    """Training cannot go on (NaN loss, ...). The message says what to change; the last checkpoint is kept."""


@dataclass
class RunContext:
    """What the run gives an algorithm: seed, device, evaluation and checkpoint cadence, progress output."""

    seed: int
    device: torch.device
    total_steps: int
    evaluate: Callable[[Policy], EvalResult] | None  # the run's evaluator; None = progress only, no curve
    eval_every: int
    checkpoint_path: Path | None = None
    log: Callable[[str], None] = print
    curve: list[dict] = field(default_factory=list)
    info: dict = field(default_factory=dict)  # what the algorithm wants in the record (train_info)
    _t0: float = field(default_factory=time.time)
    _first_step: int = 0

    def resume(self) -> dict[str, Any] | None:
        """The algorithm's state from the last checkpoint, or None; restores the learning curve too.

        Algorithms call it right before their update loop, which also starts the steps/s clock.
        """
        self._t0 = time.time()
        if self.checkpoint_path is None or not self.checkpoint_path.exists():
            return None
        state = torch.load(self.checkpoint_path, map_location=self.device, weights_only=False)
        self.curve = state.pop("_curve")
        self._first_step = state["step"]
        self.log(f"resumed from {self.checkpoint_path} at step {state['step']}")
        return state

    def step(self, step: int, policy: Policy, loss: float, state: Callable[[], dict]) -> None:
        """Call after each update ``step`` (1-based): checks the loss, evaluates and checkpoints when due."""
        if not math.isfinite(loss):
            raise TrainingError(f"the loss became {loss} at step {step}; lower the learning rate "
                                "(--set learning_rate=...) and run again — it resumes from the last checkpoint")
        if step % self.eval_every != 0 and step != self.total_steps:
            return
        elapsed = time.time() - self._t0
        rate = (step - self._first_step) / max(elapsed, 1e-9)
        eta = (self.total_steps - step) / max(rate, 1e-9)
        line = f"step {step}/{self.total_steps} | {rate:.1f} steps/s | loss {loss:.3f}"
        if self.evaluate is not None:
            result = self.evaluate(policy)
            self.curve.append({"step": step, "loss": loss, "return_mean": result.return_mean,
                               "normalized_mean": result.normalized_mean, "time": elapsed})
            score = f"{result.normalized_mean:.1f}" if result.normalized_mean is not None else "n/a"
            line += f" | return {result.return_mean:.1f} | score {score}"
        self.log(f"{line} | ETA {eta:.0f}s")
        if self.checkpoint_path is not None and step != self.total_steps:
            self._save({**state(), "step": step, "_curve": self.curve})

    def _save(self, state: dict) -> None:
        self.checkpoint_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.checkpoint_path.with_suffix(".tmp")
        torch.save(state, tmp)
        os.replace(tmp, self.checkpoint_path)


class Algorithm(ABC):
    name: ClassVar[str]
    Config: ClassVar[type]

    def __init__(self, config: Any):
        self.config = config

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
