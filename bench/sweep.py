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
import os
import sys
import time
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

import yaml

from bench.configs import PRESET_DIR
from bench.results.store import config_hash, read_record
from bench.run import RunConfig, overrides_for, record_path, resolve_config

EXECUTORS = ("local", "ray")


GRID_DIR = PRESET_DIR / "grids"  # the paper's grids: --grid paper:table2, paper:table3, paper:figure1
RATES = PRESET_DIR / "rates.yaml"  # measured updates/s, for --dry-run's compute estimates


@dataclass
class Grid:
    envs: list[str]
    algos: list[str]
    seeds: list[int]
    overrides: dict = field(default_factory=dict)  # --set key=value, applied to every run that has the field
    blocks: list[tuple[list[str], list[str]]] | None = None  # (envs, algos) products instead of envs x algos

    @classmethod
    def from_yaml(cls, path: Path | str) -> Grid:
        """A grid file, or ``paper:<name>`` for one of the paper's (bench/configs/grids/<name>.yaml)."""
        doc = yaml.safe_load(grid_path(path).read_text()) or {}
        if "toy" in doc:
            raise ValueError(f"{path} is the toy bandit, not a grid of runs: run `bench sweep --grid {path}` "
                             "(it runs `bench toy`) or `bench toy`")
        required = ("blocks", "seeds") if "blocks" in doc else ("envs", "algos", "seeds")
        missing = [k for k in required if k not in doc]
        if missing:
            raise ValueError(f"{path}: missing {', '.join(missing)} (a grid needs envs, algos, seeds — or blocks of "
                             "envs and algos, and seeds; set optional)")
        seeds = doc["seeds"]
        seed_list = list(range(seeds)) if isinstance(seeds, int) else [int(s) for s in seeds]
        blocks = [(list(b["envs"]), list(b["algos"])) for b in doc["blocks"]] if "blocks" in doc else None
        envs = doc.get("envs") or [e for b in blocks for e in b[0]]
        algos = doc.get("algos") or list(dict.fromkeys(a for b in blocks for a in b[1]))
        return cls(list(envs), list(algos), seed_list, dict(doc.get("set") or {}), blocks)

    def expand(self) -> list[RunConfig]:
        """One RunConfig per (env, algo, seed); an override applies to the runs whose algorithm has that field."""
        applied = {algo: overrides_for(algo, self.overrides) for algo in self.algos}
        unknown = [k for k in self.overrides if not any(k in a for a in applied.values())]
        if unknown:
            raise KeyError(f"--set {', '.join(unknown)}: not a field of any of {', '.join(self.algos)} nor of the run")
        cells = [(e, a) for envs, algos in self.blocks for e in envs for a in algos] if self.blocks else \
            [(e, a) for e in self.envs for a in self.algos]
        return [resolve_config(env, algo, seed, applied[algo]) for env, algo in cells for seed in self.seeds]


def grid_path(path: Path | str) -> Path:
    """``paper:<name>`` -> the package's grid file; anything else is a path."""
    text = str(path)
    if not text.startswith("paper:"):
        return Path(path)
    found = GRID_DIR / f"{text.removeprefix('paper:')}.yaml"
    if not found.exists():
        raise ValueError(f"unknown paper grid {text!r}; choose one of "
                         + ", ".join(f"paper:{p.stem}" for p in sorted(GRID_DIR.glob("*.yaml"))))
    return found


# -- compute estimates (bench sweep --dry-run) ----------------------------------------------------------------------
def rate_key(algo: str, algo_config: dict) -> str:
    """The entry of rates.yaml that times one update of this algorithm's config."""
    if "batch_unit" in algo_config:  # BC
        return f"bc/{algo_config['batch_unit']}/{algo_config['batch_size']}/{algo_config['precision']}"
    if "bc_steps" in algo_config:  # the SFT family's fine-tuning step
        kind = "iw_sft" if algo_config["importance_weighted"] else "sft"
        return f"{kind}/{algo_config['batch_size']}/{algo_config['precision']}"
    return f"{algo}/{algo_config['batch_size']}"


def estimate(configs: list[RunConfig], rates: dict) -> list[tuple[RunConfig, float | None, str]]:
    """(config, estimated seconds on the machine of rates.yaml or None, how) per run. The SFT family's reference BC
    is counted once per (dataset, seed, BC config), with the first run that needs it. ``rates``: rates.yaml."""
    per_update, episode_s = rates["updates_per_s"], rates["episode_s"]
    seen_references, out = set(), []
    for cfg in configs:
        a = cfg.algo_config
        key = rate_key(cfg.algo, a)
        if key not in per_update:
            out.append((cfg, None, f"no measured rate for {key}"))
            continue
        seconds = a["steps"] / per_update[key]
        how = f"{a['steps']} x {key}"
        if "bc_steps" in a:
            ref = (cfg.env, cfg.seed, a["bc_steps"], a["bc_batch_size"], a["bc_batch_unit"], a["bc_precision"],
                   a["reference_dataset"])
            ref_key = f"bc/{a['bc_batch_unit']}/{a['bc_batch_size']}/{a['bc_precision']}"
            if ref not in seen_references and ref_key in per_update:
                seen_references.add(ref)
                seconds += a["bc_steps"] / per_update[ref_key]
                how += f" + reference {a['bc_steps']} x {ref_key}"
        episodes = (a["steps"] // cfg.eval_every) * cfg.eval_episodes + cfg.final_eval_episodes
        out.append((cfg, seconds + episodes * episode_s, how + f" + {episodes} evaluation episodes"))
    return out


def dry_run(configs: list[RunConfig], out: Path) -> str:
    """What a sweep would do: every run, whether it is complete, and the compute it needs."""
    rates = yaml.safe_load(RATES.read_text())
    lines, todo, missing, complete = [], 0.0, 0, 0
    for cfg, seconds, how in estimate(configs, rates):
        done = is_complete(cfg, out)
        complete += done
        cost = "?" if seconds is None else f"{seconds / 60:.1f} min"
        lines.append(f"{cfg.env:<28} {cfg.algo:<9} seed {cfg.seed}  {'complete' if done else 'to run':<8}  "
                     f"{cost:>10}  ({how})")
        if not done:
            todo += seconds or 0.0
            missing += seconds is None
    lines.append(f"{len(configs)} runs: {complete} complete, {len(configs) - complete} to run; about "
                 f"{todo / 3600:.1f} core-hours at the rates in {RATES.name} ({rates['machine']})"
                 + (f"; {missing} runs without a measured rate not counted" if missing else ""))
    return "\n".join(lines)


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


def execute(cfg_dicts: list[dict], out: str, shared=None, gpu: str | None = None) -> list[dict]:
    """Run one job (one config, or seeds of one cell batched) in this process; never raises (errors go to the
    records and the summary). ``shared``: a Manager dict for the driver's live bars (None: plain log lines).
    ``gpu``: the GPU this job may see (this process is fresh, so CUDA is not initialised yet)."""
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    from bench.algorithms.base import DivergedError
    from bench.run import RunLocked, record_path, run_seeds

    cfgs = [RunConfig(**c) for c in cfg_dicts]
    labels = [f"{c.env} {c.algo} seed {c.seed}" for c in cfgs]
    algos = {label: c.algo for label, c in zip(labels, cfgs, strict=True)}
    t0 = time.time()
    try:
        records = (run_seeds(cfgs, Path(out)) if shared is None
                   else run_seeds(cfgs, Path(out), log=_SharedProgress(shared)))
        seconds = (time.time() - t0) / len(cfgs)
        return [{"label": label, "algo": algos[label], "status": r.status, "seconds": seconds,
                 "score": r.final.get("normalized_mean")} for label, r in zip(labels, records, strict=True)]
    except RunLocked as e:  # another process runs it: never start it twice
        return [{"label": label, "algo": algos[label], "status": "running elsewhere", "seconds": 0.0,
                 "error": str(e)} for label in labels]
    except BaseException as e:  # noqa: BLE001 - a sweep outlives any one run
        # each run as its record says (a batched group's other seeds may have completed on their own)
        seconds, rows = (time.time() - t0) / len(cfgs), []
        for label, cfg in zip(labels, cfgs, strict=True):
            record = read_record(path) if (path := record_path(cfg, Path(out))).exists() else None
            if record is not None and record.status == "complete":
                rows.append({"label": label, "algo": cfg.algo, "status": "complete", "seconds": seconds,
                             "score": record.final.get("normalized_mean")})
            else:
                rows.append({"label": label, "algo": cfg.algo, "seconds": seconds, "error": f"{type(e).__name__}: {e}",
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
    """The sweep's progress lines; the ETA adds up the mean time of each remaining run's algorithm so far (the
    overall mean for an algorithm not seen yet), shared out over the workers."""

    def __init__(self, algos: list[str], workers: int, log):
        self.remaining, self.workers, self.log = Counter(algos), max(workers, 1), log
        self.total, self.finished, self.t0 = len(algos), 0, time.time()
        self.seconds: dict[str, list[float]] = {}

    def tick(self, result: dict) -> None:
        self.finished += 1
        algo = result["algo"]
        self.remaining[algo] -= 1
        self.seconds.setdefault(algo, []).append(result["seconds"])
        overall = sum(map(sum, self.seconds.values())) / sum(map(len, self.seconds.values()))
        left = sum(n * (sum(self.seconds[a]) / len(self.seconds[a]) if a in self.seconds else overall)
                   for a, n in self.remaining.items())
        elapsed = time.time() - self.t0
        score = f", score {result['score']:.1f}" if result.get("score") is not None else ""
        self.log(f"[sweep] {self.finished}/{self.total} | {result['label']}: {result['status']} "
                 f"in {result['seconds']:.0f}s{score} | elapsed {elapsed:.0f}s | ETA {left / self.workers:.0f}s")


def visible_gpus() -> list[str]:
    """The GPUs this process may use: CUDA_VISIBLE_DEVICES when set, else every CUDA device torch sees."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [g.strip() for g in listed.split(",") if g.strip() and g.strip() != "-1"]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def run_sweep(configs: list[RunConfig], out: Path, executor: str = "local", workers: int | None = None,
              ray_address: str | None = None, gpus_per_run: float = 0.0,
              log=lambda m: print(m, file=sys.stderr, flush=True), live=None, runs_per_gpu: int = 1) -> Summary:
    """Run every config not yet complete; returns the summary (never raises for a failed run).

    ``live``: an object with ``grid(done, total)`` and ``progress(label, step, total, score)`` (``bench sweep`` in
    a terminal): the local executor's workers then report their steps to it instead of printing lines.
    On a machine with GPUs the local executor pins each run to one (``CUDA_VISIBLE_DEVICES``, round-robin), with
    ``runs_per_gpu`` runs sharing a GPU; without GPUs nothing changes."""
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
    gpus = visible_gpus() if executor == "local" else []
    slots = [g for g in gpus for _ in range(runs_per_gpu)]
    workers = workers or len(slots) or os.cpu_count() or 1
    if slots:
        log(f"[sweep] {len(gpus)} GPUs ({', '.join(gpus)}), {runs_per_gpu} run(s) per GPU")
    progress = _Progress([c.algo for c in todo], min(workers, max(len(todo), 1)), log)
    runner = _run_local if executor == "local" else _run_ray
    jobs = [[dataclasses.asdict(c) for c in job] for job in plan_jobs(todo, workers)]
    if len(jobs) < len(todo):
        log(f"[sweep] {len(todo)} runs as {len(jobs)} jobs (seeds of BC cells trained as one batched model)")
    if live is not None:
        live.grid(0, len(todo))
    for results in runner(jobs, str(out), workers, ray_address, gpus_per_run, live, slots):
        for result in results:
            progress.tick(result)
            (summary.done if result["status"] == "complete" else summary.failed).append(result)
        if live is not None:
            live.grid(progress.finished, len(todo))
    return summary


def _run_local(jobs: list[list[dict]], out: str, workers: int, _address, _gpus, live=None, slots=()):
    """Jobs on ``workers`` processes; with GPU ``slots`` (a GPU id per concurrent run) each job gets a free slot's
    GPU, in a fresh process (so CUDA starts on that GPU), and at most len(slots) jobs run at once."""
    if not jobs:
        return
    free = list(slots)[:workers] if slots else [None] * workers
    with contextlib.ExitStack() as stack:
        shared = None
        if live is not None:  # workers write their steps here; this process draws them
            shared = stack.enter_context(get_context("spawn").Manager()).dict()
        # spawn: a fresh interpreter per worker, so no torch/OpenMP state is inherited through fork
        pool = stack.enter_context(ProcessPoolExecutor(max_workers=min(len(free), len(jobs)),
                                                       mp_context=get_context("spawn"),
                                                       max_tasks_per_child=1 if slots else None))
        queue, running = list(jobs), {}
        while queue or running:
            while queue and free:
                slot = free.pop(0)
                running[pool.submit(execute, queue.pop(0), out, shared, slot)] = slot
            finished, _ = wait(running, timeout=0.5 if shared is not None else None, return_when=FIRST_COMPLETED)
            if shared is not None:
                for label, (step, total, score) in shared.items():
                    live.progress(label, step, total, score)
            for f in finished:
                free.append(running.pop(f))
                yield f.result()


def _run_ray(jobs: list[list[dict]], out: str, workers: int, address: str | None, gpus: float, _live=None,
             _slots=()):
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
