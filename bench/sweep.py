"""`bench sweep`: a grid of runs on local processes or a Ray cluster — resumable, nothing lost, nothing twice.

Every run writes its own record atomically, named by (dataset, algorithm, seed, config hash), so a sweep started
again skips complete records, resumes runs that left a checkpoint, and runs the rest. A failed run records its
error and does not stop the others; the summary lists done, skipped and failed runs, and the exit code says
whether all succeeded. Workers use one torch thread each (one process per core is fastest here). Seeds of a BC cell
run as one job that trains them as one batched model (``plan_jobs``). The BC reference
policy a dataset and seed need is trained once: the first run that needs it takes a file lock, the others wait and
load it from the cache.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

import yaml

from bench.results.store import config_hash, read_record
from bench.run import RunConfig, overrides_for, record_path, resolve_config

EXECUTORS = ("local", "ray")


@dataclass
class Grid:
    envs: list[str]
    algos: list[str]
    seeds: list[int]
    overrides: dict = field(default_factory=dict)  # --set key=value, applied to every run that has the field

    @classmethod
    def from_yaml(cls, path: Path) -> Grid:
        doc = yaml.safe_load(Path(path).read_text()) or {}
        missing = [k for k in ("envs", "algos", "seeds") if k not in doc]
        if missing:
            raise ValueError(f"{path}: missing {', '.join(missing)} (a grid needs envs, algos, seeds; set optional)")
        seeds = doc["seeds"]
        seed_list = list(range(seeds)) if isinstance(seeds, int) else [int(s) for s in seeds]
        return cls(list(doc["envs"]), list(doc["algos"]), seed_list, dict(doc.get("set") or {}))

    def expand(self) -> list[RunConfig]:
        """One RunConfig per (env, algo, seed); an override applies to the runs whose algorithm has that field."""
        applied = {algo: overrides_for(algo, self.overrides) for algo in self.algos}
        unknown = [k for k in self.overrides if not any(k in a for a in applied.values())]
        if unknown:
            raise KeyError(f"--set {', '.join(unknown)}: not a field of any of {', '.join(self.algos)} nor of the run")
        return [resolve_config(env, algo, seed, applied[algo])
                for env in self.envs for algo in self.algos for seed in self.seeds]


def is_complete(cfg: RunConfig, out: Path) -> bool:
    path = record_path(cfg, out)
    try:
        return path.exists() and read_record(path).status == "complete"
    except (OSError, ValueError, TypeError):
        return False


def plan_jobs(configs: list[RunConfig], workers: int) -> list[list[RunConfig]]:
    """Jobs for the workers: the seeds of a batchable cell (same dataset, algorithm and config) form one job that
    trains them as one batched model; other runs are one job each. While there are fewer jobs than workers, the
    largest group is split in two so no core idles."""
    from bench.run import batchable

    groups: dict[tuple, list[RunConfig]] = {}
    singles: list[list[RunConfig]] = []
    for cfg in configs:
        if batchable(cfg):
            groups.setdefault((cfg.env, cfg.algo, config_hash(cfg.hashed_part())), []).append(cfg)
        else:
            singles.append([cfg])
    jobs = list(groups.values()) + singles
    while len(jobs) < workers and (largest := max(jobs, key=len, default=[])) and len(largest) > 1:
        jobs.remove(largest)
        jobs += [largest[:len(largest) // 2], largest[len(largest) // 2:]]
    return jobs


class _SharedProgress:
    """A worker's ``log`` when the driver shows live bars: its runs' steps (and last lines) go into a dict the
    driver reads (a multiprocessing Manager's), instead of onto the terminal under the bars."""

    def __init__(self, shared):
        self.shared = shared

    def __call__(self, message: str) -> None:
        pass  # every number of a line is in the records; the driver's bars show the progress

    def progress(self, label: str, step: int, total: int, score: float | None) -> None:
        old = self.shared.get(label, (0, total, None))
        self.shared[label] = (step, total, score if score is not None else old[2])


def execute(cfg_dicts: list[dict], out: str, shared=None) -> list[dict]:
    """Run one job (one config, or seeds of one cell batched) in this process; never raises (errors go to the
    records and the summary). ``shared``: a Manager dict for the driver's live bars (None: plain log lines)."""
    from bench.algorithms.base import DivergedError
    from bench.run import RunLocked, record_path, run_seeds

    cfgs = [RunConfig(**c) for c in cfg_dicts]
    labels = [f"{c.env} {c.algo} seed {c.seed}" for c in cfgs]
    t0 = time.time()
    try:
        records = (run_seeds(cfgs, Path(out)) if shared is None
                   else run_seeds(cfgs, Path(out), log=_SharedProgress(shared)))
        seconds = (time.time() - t0) / len(cfgs)
        return [{"label": label, "status": r.status, "seconds": seconds, "score": r.final.get("normalized_mean")}
                for label, r in zip(labels, records, strict=True)]
    except RunLocked as e:  # another process runs it: never start it twice
        return [{"label": label, "status": "running elsewhere", "seconds": 0.0, "error": str(e)} for label in labels]
    except BaseException as e:  # noqa: BLE001 - a sweep outlives any one run
        # each run as its record says (a batched group's other seeds may have completed on their own)
        seconds, rows = (time.time() - t0) / len(cfgs), []
        for label, cfg in zip(labels, cfgs, strict=True):
            record = read_record(path) if (path := record_path(cfg, Path(out))).exists() else None
            if record is not None and record.status == "complete":
                rows.append({"label": label, "status": "complete", "seconds": seconds,
                             "score": record.final.get("normalized_mean")})
            else:
                rows.append({"label": label, "seconds": seconds, "error": f"{type(e).__name__}: {e}",
                             "status": "diverged" if isinstance(e, DivergedError) else "failed"})
        return rows


@dataclass
class Summary:
    done: list[dict] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[dict] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed

    def text(self) -> str:
        lines = [f"sweep: {len(self.done)} done, {len(self.skipped)} skipped (complete), {len(self.failed)} failed "
                 "or diverged"]
        lines += [f"  {f['status']}: {f['label']}: {f['error']}" for f in self.failed]
        return "\n".join(lines)


class _Progress:
    def __init__(self, total: int, log):
        self.total, self.finished, self.t0, self.log = total, 0, time.time(), log

    def tick(self, result: dict) -> None:
        self.finished += 1
        elapsed = time.time() - self.t0
        eta = elapsed / self.finished * (self.total - self.finished)
        score = f", score {result['score']:.1f}" if result.get("score") is not None else ""
        self.log(f"[sweep] {self.finished}/{self.total} | {result['label']}: {result['status']} "
                 f"in {result['seconds']:.0f}s{score} | elapsed {elapsed:.0f}s | ETA {eta:.0f}s")


def run_sweep(configs: list[RunConfig], out: Path, executor: str = "local", workers: int | None = None,
              ray_address: str | None = None, gpus_per_run: float = 0.0,
              log=lambda m: print(m, file=sys.stderr, flush=True), live=None) -> Summary:
    """Run every config not yet complete; returns the summary (never raises for a failed run).

    ``live``: an object with ``grid(done, total)`` and ``progress(label, step, total, score)`` (``bench sweep`` in
    a terminal): the local executor's workers then report their steps to it instead of printing lines."""
    import os

    if executor not in EXECUTORS:
        raise ValueError(f"unknown executor {executor!r}; choose one of {', '.join(EXECUTORS)}")
    summary = Summary()
    todo = []
    for cfg in configs:
        if is_complete(cfg, out):
            summary.skipped.append(f"{cfg.env} {cfg.algo} seed {cfg.seed}")
        else:
            todo.append(cfg)
    log(f"[sweep] {len(configs)} runs: {len(summary.skipped)} complete, {len(todo)} to run ({executor})")
    progress = _Progress(len(todo), log)
    workers = workers or os.cpu_count() or 1
    runner = _run_local if executor == "local" else _run_ray
    jobs = [[dataclasses.asdict(c) for c in job] for job in plan_jobs(todo, workers)]
    if len(jobs) < len(todo):
        log(f"[sweep] {len(todo)} runs as {len(jobs)} jobs (seeds of BC cells trained as one batched model)")
    if live is not None:
        live.grid(0, len(todo))
    for results in runner(jobs, str(out), workers, ray_address, gpus_per_run, live):
        for result in results:
            progress.tick(result)
            (summary.done if result["status"] == "complete" else summary.failed).append(result)
        if live is not None:
            live.grid(progress.finished, len(todo))
    return summary


def _run_local(jobs: list[list[dict]], out: str, workers: int, _address, _gpus, live=None):
    if not jobs:
        return
    with contextlib.ExitStack() as stack:
        shared = None
        if live is not None:  # workers write their steps here; this process draws them
            shared = stack.enter_context(get_context("spawn").Manager()).dict()
        # spawn: a fresh interpreter per worker, so no torch/OpenMP state is inherited through fork
        pool = stack.enter_context(ProcessPoolExecutor(max_workers=min(workers, len(jobs)),
                                                       mp_context=get_context("spawn")))
        pending = {pool.submit(execute, job, out, shared) for job in jobs}
        while pending:
            finished, pending = wait(pending, timeout=0.5 if shared is not None else None,
                                     return_when=FIRST_COMPLETED)
            if shared is not None:
                for label, (step, total, score) in shared.items():
                    live.progress(label, step, total, score)
            for f in finished:
                yield f.result()


def _run_ray(jobs: list[list[dict]], out: str, workers: int, address: str | None, gpus: float, _live=None):
    if not jobs:
        return
    try:
        import ray
    except ImportError as e:
        raise ValueError("the ray executor needs Ray: pip install -e '.[ray]' (or pip install ray)") from e
    started_here = not ray.is_initialized()
    if started_here:
        kwargs = {"address": address} if address else {"num_cpus": workers, "include_dashboard": False}
        ray.init(log_to_driver=True, **kwargs)
    remote = ray.remote(num_cpus=1, num_gpus=gpus)(execute)
    try:
        pending = [remote.remote(job, out) for job in jobs]
        while pending:
            finished, pending = ray.wait(pending, num_returns=1)
            for ref in finished:
                yield ray.get(ref)
    finally:
        if started_here:
            ray.shutdown()
