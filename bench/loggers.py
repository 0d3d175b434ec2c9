"""Where a run's numbers go while it trains: CSV, TensorBoard, Weights & Biases — one small interface.

A logger gets a run's statistics and scores at each log step (``SeedGroup`` reads them there, never inside a
training step, from a window of the loggers' own: a logger never changes a record), and at the end its final scores
and config. Adding one is one small class with the three methods of :class:`RunLogger` and an entry in ``LOGGERS``;
:class:`RunLoggers` runs a run's loggers through their life.

Resumed runs continue the same logged run: ``start(resume_step=N)`` is told the step of the checkpoint the run
resumed from. Files written past it by the killed process are discarded where the format allows it (the CSV drops
those rows; TensorBoard's ``purge_step``), and step N is logged again from the restored curve; W&B keeps
the run's id and the last step it logged beside the logs, so no step is logged twice.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class RunIdentity:
    """How a run is named in a logging tool: by (dataset, algorithm, seed, config hash), grouped by cell."""

    name: str  # the record's stem: <env>__<algo>__seed<N>__<config hash>
    env: str
    algo: str
    seed: int
    config_hash: str
    out: Path  # the run's --out folder

    @property
    def group(self) -> str:  # one cell of a sweep: every seed of (dataset, algorithm, config)
        return f"{self.env}/{self.algo}/{self.config_hash}"


class RunLogger(Protocol):
    def start(self, run: RunIdentity, config: dict, resume_step: int) -> None: ...

    def log(self, step: int, metrics: dict[str, float]) -> None: ...

    def finish(self, final: dict[str, float], ok: bool = True) -> None: ...  # ok=False: failed or interrupted


def _finite_numbers(metrics: dict) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "step"}


class CSVLogger:
    """``<out>/csv/<run>.csv`` in long form (step, metric, value): read back by ``bench report`` for curves."""

    def start(self, run: RunIdentity, config: dict, resume_step: int) -> None:
        self.path = run.out / "csv" / f"{run.name}.csv"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        kept = []
        if resume_step and self.path.exists():
            with open(self.path, newline="") as f:
                kept = [row for row in csv.DictReader(f) if int(row["step"]) < resume_step]
        with open(self.path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["step", "metric", "value"])
            writer.writerows([row["step"], row["metric"], row["value"]] for row in kept)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        with open(self.path, "a", newline="") as f:
            csv.writer(f).writerows([step, k, v] for k, v in _finite_numbers(metrics).items())

    def finish(self, final: dict[str, float], ok: bool = True) -> None:
        with open(self.path, "a", newline="") as f:
            csv.writer(f).writerows(["final", k, v] for k, v in _finite_numbers(final).items())


class TensorBoardLogger:
    """Event files under ``<out>/tb/<run>``; the final scores and the config as hyper-parameters at the end."""

    def start(self, run: RunIdentity, config: dict, resume_step: int) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as e:
            raise ImportError("--logger tensorboard needs TensorBoard: pip install -e '.[tracking]'") from e
        self.config = config
        # purge_step: a resumed run discards what the killed process wrote from the resume step on (a run that
        # starts afresh, everything an earlier attempt wrote)
        self.writer = SummaryWriter(log_dir=str(run.out / "tb" / run.name), purge_step=resume_step)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        for key, value in _finite_numbers(metrics).items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def finish(self, final: dict[str, float], ok: bool = True) -> None:
        if ok:
            hparams = {k: v if isinstance(v, (int, float, str, bool)) else json.dumps(v)
                       for k, v in _flat(self.config)}
            self.writer.add_hparams(hparams, {f"final/{k}": v for k, v in _finite_numbers(final).items()},
                                    run_name=".")
        self.writer.close()


class WandbLogger:
    """A W&B run named by the record, grouped by cell (project: $WANDB_PROJECT, default "bench"); a resumed run
    continues the same W&B run (its id is kept beside the logs). ``WANDB_MODE=offline`` needs no network."""

    def start(self, run: RunIdentity, config: dict, resume_step: int) -> None:
        try:
            import wandb
        except ImportError as e:
            raise ImportError("--logger wandb needs Weights & Biases: pip install -e '.[tracking]'") from e
        # a resumed run continues the W&B run of its checkpoint (id and last logged step in this marker); a run
        # that starts afresh is a new W&B run
        self.marker = run.out / "wandb" / f"{run.name}.json"
        self.marker.parent.mkdir(parents=True, exist_ok=True)
        seen = json.loads(self.marker.read_text()) if resume_step and self.marker.exists() else None
        self.id = seen["id"] if seen else hashlib.sha256(f"{run.out.resolve()}/{run.name}/{time.time_ns()}"
                                                          .encode()).hexdigest()[:24]
        self.last = seen["last"] if seen else 0
        self.marker.write_text(json.dumps({"id": self.id, "last": self.last}))
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "bench"), group=run.group, name=run.name,
                              id=self.id, resume="allow", config=config, dir=str(run.out), reinit="create_new",
                              job_type=run.algo)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        if step <= self.last:  # logged before the process that wrote it was killed
            return
        self.run.log(_finite_numbers(metrics), step=step)
        self.last = step
        self.marker.write_text(json.dumps({"id": self.id, "last": step}))

    def finish(self, final: dict[str, float], ok: bool = True) -> None:
        self.run.summary.update({f"final/{k}": v for k, v in _finite_numbers(final).items()})
        self.run.finish(exit_code=0 if ok else 1)


LOGGERS: dict[str, type] = {"csv": CSVLogger, "tensorboard": TensorBoardLogger, "wandb": WandbLogger}


class RunLoggers:
    """One run's loggers, by name (``LOGGERS``), through their life: started when training (re)starts, given the
    numbers of each log step, finished once. They only read: nothing they do changes the run."""

    def __init__(self, names: list[str], run: RunIdentity | None = None, config: dict | None = None):
        # names were checked when the run's config was resolved (RunConfig)
        self.loggers: list[RunLogger] = [LOGGERS[n]() for n in dict.fromkeys(names)]
        self.run, self.config, self.started = run, config or {}, False

    def __bool__(self) -> bool:
        return bool(self.loggers)

    def start(self, resume_step: int, resumed_point: dict | None) -> None:
        """Training starts after update ``resume_step``; a resumed run logs its checkpoint's curve point again (the
        loggers drop what the killed process wrote after it)."""
        self.started = True
        for logger in self.loggers:
            logger.start(self.run, self.config, resume_step)
            if resumed_point is not None:
                logger.log(resume_step, resumed_point)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        for logger in self.loggers:
            logger.log(step, metrics)

    def finish(self, final: dict, ok: bool = True) -> None:
        """The last word: the final scores, or (``ok`` False) that the run stopped without them."""
        if self.started:
            for logger in self.loggers:
                logger.finish(final, ok)
        self.started = False


def _flat(config: dict, prefix: str = ""):
    for k, v in config.items():
        if isinstance(v, dict):
            yield from _flat(v, f"{prefix}{k}/")
        else:
            yield f"{prefix}{k}", v


def read_csv_log(path: Path) -> dict[str, list[tuple[int, float]]]:
    """metric -> [(step, value)] of a CSV log (final values under step -1 are left out)."""
    out: dict[str, list[tuple[int, float]]] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            if row["step"] != "final":
                out.setdefault(row["metric"], []).append((int(row["step"]), float(row["value"])))
    return out
