"""`bench sweep`: a grid of runs on local processes or a Ray cluster — resumable, nothing lost, nothing twice.

Every run writes its own record atomically, named by (dataset, algorithm, seed, config hash), so a sweep started
again skips complete records, resumes runs that left a checkpoint, and runs the rest. A failed run records its
error and does not stop the others; the summary lists done, skipped and failed runs, and the exit code says
whether all succeeded. Workers use one torch thread each (one process per core is fastest here). Seeds of a BC cell
run as one job that trains them as one batched model (``plan_jobs``).

Local executor: processes on this machine, one GPU each when it has GPUs; the BC reference policy a dataset and
seed need is trained once (the first run that needs it takes a file lock in the shared cache, the others wait and
load it). Ray executor: no shared file system is assumed. The driver decides what is complete from its own
``--out``; the reference policies are upstream tasks, one per (dataset, BC config) training its seeds together,
whose weights travel through Ray's object store to the fine-tuning runs and are written by the driver under
``<out>/references``; every run works in a scratch folder of its own and returns its finished record, which the
driver writes under ``--out``. Checkpoints go to ``--checkpoint-dir``: a worker that dies is retried by Ray and
resumes from its checkpoint when that folder is one every node can reach.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

import yaml

from bench.algorithms import get_algorithm
from bench.algorithms.bc import BCConfig
from bench.algorithms.context import DivergedError
from bench.configs import PRESET_DIR
from bench.results.store import RunRecord, config_hash, read_record, save_record, write_json_atomic
from bench.run import (
    OtherDataError,
    RunConfig,
    RunLocked,
    checkpointed_seed_sets,
    make_algorithm,
    overrides_for,
    record_path,
    resolve_config,
    resolve_device,
    run_seeds,
    same_files,
)

EXECUTORS = ("local", "ray")


GRID_DIR = PRESET_DIR / "grids"  # the paper's grids: --grid paper:table2, paper:table3, paper:figure1
RATES = PRESET_DIR / "rates.yaml"  # measured updates/s, for --dry-run's compute estimates
MEMORY = PRESET_DIR / "memory.yaml"  # measured peak memory per run, for --dry-run's memory estimates


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
        doc = read_grid_yaml(path)
        if "toy" in doc:
            raise ValueError(f"{path} is the toy bandit, not a grid of runs: run `bench sweep --grid {path}` "
                             "(it runs `bench toy`) or `bench toy`")
        required = ("blocks", "seeds") if "blocks" in doc else ("envs", "algos", "seeds")
        missing = [k for k in required if k not in doc]
        if missing:
            raise ValueError(f"{path}: missing {', '.join(missing)} (a grid needs envs, algos, seeds — or blocks of "
                             "envs and algos, and seeds; set optional)")
        seeds = doc["seeds"]
        if isinstance(seeds, int) and not isinstance(seeds, bool) and seeds >= 1:
            seed_list = list(range(seeds))
        elif isinstance(seeds, list) and seeds and all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
            seed_list = list(seeds)
        else:
            raise ValueError(f"{path}: seeds: {seeds!r} is neither a count (at least 1) nor a list of integer seeds")
        sets = doc.get("set") or {}
        if not isinstance(sets, dict):
            raise ValueError(f"{path}: set: {sets!r} is not a mapping of field: value (e.g. set: {{steps: 2000}})")
        blocks = None
        if "blocks" in doc:
            if not isinstance(doc["blocks"], list) or not all(isinstance(b, dict) and {"envs", "algos"} <= b.keys()
                                                              for b in doc["blocks"]):
                raise ValueError(f"{path}: blocks: {doc['blocks']!r} is not a list of {{envs: [...], algos: "
                                 "[...]}} mappings")
            blocks = [(_names(path, "envs", b["envs"]), _names(path, "algos", b["algos"])) for b in doc["blocks"]]
        envs = _names(path, "envs", doc["envs"]) if "envs" in doc else [e for b in blocks for e in b[0]]
        algos = _names(path, "algos", doc["algos"]) if "algos" in doc else \
            list(dict.fromkeys(a for b in blocks for a in b[1]))
        return cls(envs, algos, seed_list, dict(sets), blocks)

    def expand(self) -> list[RunConfig]:
        """One RunConfig per (env, algo, seed); an override applies to the runs whose algorithm has that field."""
        applied = {algo: overrides_for(algo, self.overrides) for algo in self.algos}
        unknown = [k for k in self.overrides if not any(k in a for a in applied.values())]
        if unknown:
            raise KeyError(f"--set {', '.join(unknown)}: not a field of any of {', '.join(self.algos)} nor of the run")
        cells = [(e, a) for envs, algos in self.blocks for e in envs for a in algos] if self.blocks else \
            [(e, a) for e in self.envs for a in self.algos]
        return [resolve_config(env, algo, seed, applied[algo]) for env, algo in cells for seed in self.seeds]


def _names(path, key: str, value) -> list[str]:
    """A grid's list of names; a single name (or "a,b" as on the command line) is a list too."""
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return list(value)
    raise ValueError(f"{path}: {key}: {value!r} is not a list of names (e.g. {key}: [hopper-medium-replay])")


def read_grid_yaml(path: Path | str) -> dict:
    """The mapping of a grid file (``paper:<name>`` or a path); one line naming the file when it is missing or not
    a YAML mapping."""
    where = grid_path(path)
    try:
        doc = yaml.safe_load(where.read_text())
    except OSError as e:
        raise ValueError(f"--grid {path}: cannot read it ({e.strerror or e})") from None
    except yaml.YAMLError as e:
        raise ValueError(f"--grid {path}: not YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(doc, dict):
        raise ValueError(f"--grid {path}: a grid file is a YAML mapping (envs, algos, seeds, set), not "
                         f"{type(doc).__name__}")
    return doc


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
def reference_of(cfg: RunConfig) -> tuple[str, str | None, dict] | None:
    """The reference policy a run fine-tunes from, as (dataset, its data file, BC config); None outside the SFT
    family. pi_ref is trained once per (this, seed): by the dry run's count and by the Ray executor alike."""
    algo = make_algorithm(cfg)
    if (bc := algo.reference_bc()) is None:
        return None
    other = algo.datasets_used().get("reference")
    dataset, data_path = (other, cfg.reference_data_path) if other else (cfg.env, cfg.data_path)
    return dataset, data_path, dataclasses.asdict(bc)


def _reference_key(reference: tuple[str, str | None, dict]) -> str:
    return json.dumps(list(reference), sort_keys=True)


def estimate(configs: list[RunConfig], rates: dict) -> list[tuple[RunConfig, float | None, str]]:
    """(config, estimated seconds on the machine of rates.yaml or None, how) per run. The SFT family's reference BC
    is counted once per (dataset, seed, BC config), with the first run that needs it. ``rates``: rates.yaml."""
    per_update, episode_s = rates["updates_per_s"], rates["episode_s"]
    seen_references, out = set(), []
    for cfg in configs:
        a = cfg.algo_config
        key = make_algorithm(cfg).rate_key()
        if key not in per_update:
            out.append((cfg, None, f"no measured rate for {key}"))
            continue
        seconds = a["steps"] / per_update[key]
        how = f"{a['steps']} x {key}"
        if (reference := reference_of(cfg)) is not None:
            bc = reference[2]
            ref, ref_key = (_reference_key(reference), cfg.seed), get_algorithm("bc")(BCConfig(**bc)).rate_key()
            if ref not in seen_references and ref_key in per_update:
                seen_references.add(ref)
                seconds += bc["steps"] / per_update[ref_key]
                how += f" + reference {bc['steps']} x {ref_key}"
        episodes = (a["steps"] // cfg.eval_every) * cfg.eval_episodes + cfg.final_eval_episodes
        out.append((cfg, seconds + episodes * episode_s, how + f" + {episodes} evaluation episodes"))
    return out


def job_memory_gb(algo: str, seeds: int, table: dict) -> float | None:
    """Peak host memory (GB) of one job — ``seeds`` seeds of ``algo`` trained as one group — on D4RL's largest data
    (the last size of memory.yaml, 2M transitions); a group of K seeds between its 1- and 5-seed measurements,
    linearly; an algorithm not measured as the one memory.yaml likens it to. None: neither."""
    peak, like = table["peak_gb"], table.get("like", {})

    def measured(key: str) -> float | None:
        found = peak.get(key, peak.get(like.get(key, "")))
        return None if found is None else found[-1]

    if (one := measured(algo)) is None:
        return None
    if seeds == 1:
        return one
    if (five := measured(f"{algo}*5")) is None:
        return None
    return one + (five - one) * (seeds - 1) / 4


def machine_memory_gb() -> float:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30


def memory_summary(jobs: list[list[RunConfig]], workers: int, table: dict, machine_gb: float) -> list[str]:
    """The dry run's memory lines: the largest job, what ``workers`` jobs at once need, and — when that is more than
    90% of ``machine_gb`` — how many workers fit."""
    per_job = sorted((m for job in jobs if (m := job_memory_gb(job[0].algo, len(job), table)) is not None),
                     reverse=True)
    if not per_job:
        return []
    at_once = sum(per_job[:workers])
    lines = [f"memory: up to {per_job[0]:.1f} GB per job on data up to {table['transitions'][-1] / 1e6:g}M "
             f"transitions ({MEMORY.name}, {table['machine']}); {workers} workers: up to {at_once:.1f} GB at once, "
             f"this machine has {machine_gb:.1f} GB"]
    if at_once > 0.9 * machine_gb:
        fits = max(k for k in range(len(per_job) + 1) if sum(per_job[:k]) <= 0.9 * machine_gb)
        lines.append(f"warning: {workers} workers may run out of memory: use --workers {max(fits, 1)}")
    return lines


def dry_run(configs: list[RunConfig], out: Path, workers: int | None = None) -> str:
    """What a sweep would do: every run, whether it is complete, the compute it needs, and the memory its jobs need
    with ``workers`` of them at once (default: one per core)."""
    rates = yaml.safe_load(RATES.read_text())
    lines, todo, missing, complete, to_run = [], 0.0, 0, 0, []
    for cfg, seconds, how in estimate(configs, rates):
        done = is_complete(cfg, out)
        complete += done
        if not done:
            to_run.append(cfg)
        cost = "?" if seconds is None else f"{seconds / 60:.1f} min"
        lines.append(f"{cfg.env:<28} {cfg.algo:<9} seed {cfg.seed}  {'complete' if done else 'to run':<8}  "
                     f"{cost:>10}  ({how})")
        if not done:
            todo += seconds or 0.0
            missing += seconds is None
    lines.append(f"{len(configs)} runs: {complete} complete, {len(configs) - complete} to run; about "
                 f"{todo / 3600:.1f} core-hours at the rates in {RATES.name} ({rates['machine']})"
                 + (f"; {missing} runs without a measured rate not counted" if missing else ""))
    workers = workers or os.cpu_count() or 1
    lines += memory_summary(plan_jobs(to_run, workers), workers, yaml.safe_load(MEMORY.read_text()),
                            machine_memory_gb())
    return "\n".join(lines)


def is_complete(cfg: RunConfig, out: Path) -> bool:
    """Whether ``cfg``'s record is complete and from the files it names (else its worker decides: the same data
    skips, other data refuses)."""
    try:
        record = read_record(record_path(cfg, out))
    except (OSError, ValueError, TypeError):
        return False
    return record.status == "complete" and same_files(record, cfg)


def plan_jobs(configs: list[RunConfig], workers: int, out: Path | None = None,
              checkpoint_dir: Path | None = None) -> list[list[RunConfig]]:
    """Jobs for the workers: the seeds of a batchable cell (same dataset, algorithm and config) form one job that
    trains them as one batched model; other runs are one job each. While there are fewer jobs than workers, the
    largest group is split in two so no core idles. Seeds whose group left a checkpoint under ``out`` (an
    interrupted sweep, perhaps with other --workers) stay that group, so it resumes."""
    groups: dict[tuple, list[RunConfig]] = {}
    singles: list[list[RunConfig]] = []
    for cfg in configs:
        if get_algorithm(cfg.algo).batches_seeds:
            groups.setdefault((cfg.env, cfg.algo, config_hash(cfg.hashed_part())), []).append(cfg)
        else:
            singles.append([cfg])
    resumable, splittable = [], []
    for cell in groups.values():
        by_seed = {c.seed: c for c in cell}
        for seeds in checkpointed_seed_sets(cell[0], out, checkpoint_dir) if out is not None else []:
            if len(seeds) > 1 and all(s in by_seed for s in seeds):
                resumable.append([by_seed.pop(s) for s in seeds])
        if by_seed:
            splittable.append(list(by_seed.values()))
    jobs = splittable + singles
    while len(jobs) + len(resumable) < workers and (largest := max(jobs, key=len, default=[])) and len(largest) > 1:
        jobs.remove(largest)
        jobs += [largest[:len(largest) // 2], largest[len(largest) // 2:]]
    return resumable + jobs


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


def execute(cfg_dicts: list[dict], out: str, shared=None, gpu: str | None = None,
            checkpoint_dir: str | None = None, reference_cache: Path | None = None) -> list[dict]:
    """Run one job (one config, or seeds of one cell batched) in this process; never raises (errors go to the
    records and the summary). ``shared``: a Manager dict for the driver's live bars (None: plain log lines).
    ``gpu``: the GPU this job may see (this process is fresh, so CUDA is not initialised yet). ``reference_cache``:
    where the reference policies are (default: this machine's cache; a Ray task's scratch folder)."""
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    cfgs = [RunConfig(**c) for c in cfg_dicts]
    labels = [f"{c.env} {c.algo} seed {c.seed}" for c in cfgs]
    algos = {label: c.algo for label, c in zip(labels, cfgs, strict=True)}
    ckpt = None if checkpoint_dir is None else Path(checkpoint_dir)
    t0 = time.time()
    try:
        log = {} if shared is None else {"log": _SharedProgress(shared)}
        records = run_seeds(cfgs, Path(out), checkpoint_dir=ckpt, reference_cache=reference_cache, **log)
        seconds = (time.time() - t0) / len(cfgs)
        return [{"label": label, "algo": algos[label], "status": r.status, "seconds": seconds,
                 "score": r.final.get("normalized_mean")} for label, r in zip(labels, records, strict=True)]
    except RunLocked as e:  # another process runs it: never start it twice
        return [{"label": label, "algo": algos[label], "status": "running elsewhere", "seconds": 0.0,
                 "error": str(e)} for label in labels]
    except OtherDataError as e:  # its name holds another run's record: nothing was trained, nothing overwritten
        return [{"label": label, "algo": algos[label], "status": "failed", "seconds": 0.0, "error": str(e)}
                for label in labels]
    except BaseException as e:  # noqa: BLE001 - a sweep outlives any one run
        # each run as its record says (a batched group's other seeds may have completed on their own)
        seconds, rows = (time.time() - t0) / len(cfgs), []
        for label, cfg in zip(labels, cfgs, strict=True):
            try:
                record = read_record(record_path(cfg, Path(out)))
            except (OSError, ValueError, TypeError):  # none, or damaged: this run failed
                record = None
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
    elsewhere: list[dict] = field(default_factory=list)  # being run by another process (another sweep): not failed

    @property
    def ok(self) -> bool:
        return not self.failed

    def text(self) -> str:
        lines = [f"sweep: {len(self.done)} done, {len(self.skipped)} skipped (complete), {len(self.failed)} failed "
                 "or diverged" + (f", {len(self.elsewhere)} being run by another process (run the same command "
                                  "again once it is done)" if self.elsewhere else "")]
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
              ray_address: str | None = None, gpus_per_run: float | None = None,
              log=lambda m: print(m, file=sys.stderr, flush=True), live=None, runs_per_gpu: int = 1,
              checkpoint_dir: Path | None = None) -> Summary:
    """Run every config not yet complete; returns the summary (never raises for a failed run).

    ``live``: an object with ``grid(done, total)`` and ``progress(label, step, total, score)`` (``bench sweep`` in
    a terminal): the local executor's workers then report their steps to it instead of printing lines.
    On a machine with GPUs the local executor pins each run to one (``CUDA_VISIBLE_DEVICES``, round-robin), with
    ``runs_per_gpu`` runs sharing a GPU; without GPUs nothing changes. On Ray, ``gpus_per_run`` None requests
    1 / ``runs_per_gpu`` GPU per run when the cluster has GPUs (0 otherwise). ``checkpoint_dir``: where unfinished
    runs keep checkpoints (default ``<out>/checkpoints``; on a cluster, a folder every node can write)."""
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
    jobs = [[dataclasses.asdict(c) for c in job] for job in plan_jobs(todo, workers, Path(out), checkpoint_dir)]
    if len(jobs) < len(todo):
        log(f"[sweep] {len(todo)} runs as {len(jobs)} jobs (seeds of BC cells trained as one batched model)")
    if live is not None:
        live.grid(0, len(todo))
    ckpt = str(Path(checkpoint_dir if checkpoint_dir is not None else Path(out) / "checkpoints").resolve())
    if executor == "local":
        batches = _run_local(jobs, str(out), workers, live, slots, ckpt)
    else:
        batches = _run_ray(jobs, Path(out), workers, ray_address, gpus_per_run, runs_per_gpu, ckpt, log)
    for results in batches:
        for result in results:
            progress.tick(result)
            {"complete": summary.done, "running elsewhere": summary.elsewhere}.get(result["status"],
                                                                                 summary.failed).append(result)
        if live is not None:
            live.grid(progress.finished, len(todo))
    return summary


def _run_local(jobs: list[list[dict]], out: str, workers: int, live, slots, checkpoint_dir: str):
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
                                                       max_tasks_per_child=1 if slots else None,
                                                       initializer=_exit_with_driver, initargs=(os.getpid(),)))
        queue, running = list(jobs), {}
        while queue or running:
            while queue and free:
                slot = free.pop(0)
                running[pool.submit(execute, queue.pop(0), out, shared, slot, checkpoint_dir)] = slot
            finished, _ = wait(running, timeout=0.5 if shared is not None else None, return_when=FIRST_COMPLETED)
            if shared is not None:
                for label, (step, total, score) in shared.items():
                    live.progress(label, step, total, score)
            for f in finished:
                free.append(running.pop(f))
                yield f.result()


def _exit_with_driver(driver: int) -> None:
    """In each local worker: exit as soon as the driver is gone (killed, even with SIGKILL), instead of idling on
    forever with the data it loaded; its runs' checkpoints and records stay, and the next sweep resumes them."""
    def watch() -> None:
        while os.getppid() == driver:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-driver", daemon=True).start()


def reference_groups(jobs: list[list[dict]]) -> dict[str, dict]:
    """The reference policies the jobs' fine-tuning runs need, grouped by (dataset, data file, BC config): {group id:
    {"key", "dataset", "data_path", "bc", "seeds"}}; each job's runs name their group in ``_reference_group``."""
    groups: dict[str, dict] = {}
    for job in jobs:
        for c in job:
            cfg = RunConfig(**c)
            if (reference := reference_of(cfg)) is None:
                continue
            key = _reference_key(reference)
            gid = hashlib.sha256(key.encode()).hexdigest()[:16]
            dataset, data_path, bc = reference
            group = groups.setdefault(gid, {"key": key, "dataset": dataset, "data_path": data_path, "bc": bc,
                                            "seeds": []})
            if cfg.seed not in group["seeds"]:
                group["seeds"].append(cfg.seed)
            c["_reference_group"] = gid
    return groups


def train_references(dataset: str, data_path: str | None, bc: dict, seeds: list[int]) -> dict:
    """A Ray task: pi_ref of each seed for (dataset, BC config), trained together as one batched model in a scratch
    folder of its own; returns {seed: {"key", "state" (the weights file's bytes), "info"}}."""
    from bench.algorithms.reference import reference_policies
    from bench.datasets.sources import load_dataset_cached
    from bench.specs import get_spec

    with _scratch() as scratch:
        traj = load_dataset_cached(get_spec(dataset), data_path)
        found = reference_policies(traj, BCConfig(**bc), seeds, resolve_device("auto"),
                                   lambda m: print(m, file=sys.stderr, flush=True), scratch / "reference")
        where = {"node": platform.node(), "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}
        return {seed: {"key": info["key"], "state": Path(info["path"]).read_bytes(),
                       "info": {**{k: v for k, v in info.items() if k != "path"}, **where}}
                for seed, (_, info) in zip(seeds, found, strict=True)}


def execute_remote(cfg_dicts: list[dict], checkpoint_dir: str, references: dict | None) -> dict:
    """A Ray task: one job in a scratch folder of its own (no shared file system assumed). The reference policies
    it needs (``references``: what ``train_references`` returned) go into its scratch folder, which its runs are
    given as their reference cache, so they load them instead of training; returns the job's summary rows and its
    finished records (the driver writes them)."""
    cfgs = [{k: v for k, v in c.items() if k != "_reference_group"} for c in cfg_dicts]
    with _scratch() as scratch:
        cache = scratch / "reference"
        cache.mkdir()
        for entry in (references or {}).values():
            (cache / f"{entry['key']}.pt").write_bytes(entry["state"])
        gpus = os.environ.get("CUDA_VISIBLE_DEVICES")
        if gpus and not _cuda_available():
            print(f"[sweep] Ray gave this job GPU {gpus} but torch sees no CUDA device: training on the CPU",
                  file=sys.stderr, flush=True)
        rows = [{**row, "worker_dir": str(scratch)}
                for row in execute(cfgs, str(scratch / "records"), checkpoint_dir=checkpoint_dir,
                                   reference_cache=cache)]
        records = []
        for c in cfgs:
            path = record_path(RunConfig(**c), scratch / "records")
            if path.exists():
                records.append(read_record(path).to_dict())
        return {"rows": rows, "records": records}


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


@contextlib.contextmanager
def _scratch():
    """A fresh working folder for one Ray task — its cwd while it runs — removed afterwards."""
    folder, cwd = Path(tempfile.mkdtemp(prefix="bench-task-")), os.getcwd()
    os.chdir(folder)
    try:
        yield folder
    finally:
        os.chdir(cwd)
        shutil.rmtree(folder, ignore_errors=True)


RAY_MAX_RETRIES = 3  # a task whose worker died (node lost, OOM kill) runs again; it resumes from a reachable checkpoint


def _run_ray(jobs: list[list[dict]], out: Path, workers: int, address: str | None, gpus: float | None,
             runs_per_gpu: int, checkpoint_dir: str, log):
    if not jobs:
        return
    try:
        import ray
    except ImportError as e:
        raise ValueError("the ray executor needs Ray: pip install -e '.[ray]' (or pip install ray)") from e
    started_here = not ray.is_initialized()
    if started_here and address:
        ray.init(address=address, log_to_driver=True)
    elif started_here:
        _start_loopback_ray(ray, workers)
    try:
        if gpus is None:  # GPUs when the cluster has them: Ray otherwise hides every GPU from the tasks
            gpus = 1.0 / runs_per_gpu if ray.cluster_resources().get("GPU", 0) > 0 else 0.0
        log(f"[sweep] Ray: {gpus:g} GPU and 1 CPU per run; records written by this driver under {out}; "
            f"checkpoints in {checkpoint_dir}")
        options = {"num_cpus": 1, "num_gpus": gpus, "max_retries": RAY_MAX_RETRIES}
        groups = reference_groups(jobs)
        references = {gid: _reference_ref(ray, group, out, options, log) for gid, group in groups.items()}
        remote = ray.remote(execute_remote).options(**options)
        group_of, job_of = {}, {}  # each task -> the reference group its runs fine-tune from (None: none), its job
        for job in jobs:
            gid = next((c["_reference_group"] for c in job if "_reference_group" in c), None)
            ref = remote.remote(job, checkpoint_dir, None if gid is None else references[gid])
            group_of[ref], job_of[ref] = gid, job
        pending, stored = list(group_of), set()
        while pending:
            finished, pending = ray.wait(pending, num_returns=1)
            for ref in finished:
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayError as e:  # its upstream task or its worker failed for good
                    result = _lost_job(job_of[ref], e)
                else:
                    if (gid := group_of[ref]) is not None and gid not in stored:  # its upstream task has finished
                        stored.add(gid)
                        _store_references(ray.get(references[gid]), out, groups[gid])
                for record in result["records"]:
                    save_record(RunRecord.from_dict(record), out)
                yield result["rows"]
    finally:
        if started_here:
            ray.shutdown()


def _start_loopback_ray(ray, workers: int) -> None:
    """A local Ray cluster whose GCS, raylet, workers and driver listen on 127.0.0.1 only: nobody who reaches this
    host can submit tasks to the sweep. Ray (2.60) swaps a loopback ``_node_ip_address`` for the host's address and
    then listens on every interface, except where it runs without multi-node clusters (Windows and macOS by
    default); that switch is read when the node starts, so the cluster starts with it off."""
    from ray._private import ray_constants

    multi_node = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=True, _node_ip_address="127.0.0.1")
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = multi_node


def _lost_job(job: list[dict], error: BaseException) -> dict:
    """The rows and records of a Ray task that never returned: each run failed (or diverged, when the cause did) with
    the reason — the reference policy its upstream task could not train, or what became of its worker — as the
    local executor records them; the rest of the sweep goes on."""
    cause = error
    while getattr(cause, "cause", None) is not None:  # RayTaskError(...) wraps what the task raised
        cause = cause.cause
    status = "diverged" if isinstance(cause, DivergedError) else "failed"
    where = ("the reference policy it fine-tunes from could not be trained (upstream task)"
             if "train_references" in str(getattr(error, "function_name", "")) + str(error)
             else "its task failed on the cluster")
    reason = f"{where}: {type(cause).__name__}: {cause}"
    rows, records = [], []
    for c in job:
        cfg = RunConfig(**{k: v for k, v in c.items() if k != "_reference_group"})
        rows.append({"label": f"{cfg.env} {cfg.algo} seed {cfg.seed}", "algo": cfg.algo, "status": status,
                     "seconds": 0.0, "error": reason})
        records.append(RunRecord(env=cfg.env, algo=cfg.algo, seed=cfg.seed, config=dataclasses.asdict(cfg),
                                 config_hash=config_hash(cfg.hashed_part()), status=status, error=reason).to_dict())
    return {"rows": rows, "records": records}


def _reference_ref(ray, group: dict, out: Path, options: dict, log):
    """The object-store reference to a group's pi_ref weights: from ``<out>/references`` when the driver wrote them
    before (a restarted sweep), else an upstream task that trains them."""
    index = _reference_index(out).get(group["key"], {})
    files = {s: out / "references" / f"{index[str(s)]['key']}.pt" for s in group["seeds"] if str(s) in index}
    if len(files) == len(group["seeds"]) and all(f.exists() for f in files.values()):
        log(f"[sweep] reference policies of {group['dataset']} seeds {group['seeds']} from {out / 'references'}")
        return ray.put({s: {**index[str(s)], "state": f.read_bytes()} for s, f in files.items()})
    log(f"[sweep] training the reference policies of {group['dataset']} seeds {group['seeds']} once (upstream task)")
    return ray.remote(train_references).options(**options).remote(group["dataset"], group["data_path"],
                                                                   group["bc"], group["seeds"])


def _reference_index(out: Path) -> dict:
    path = out / "references" / "index.refs.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _store_references(found: dict, out: Path, group: dict) -> None:
    """The driver keeps the weights of a group's reference policies under ``<out>/references`` (one file per seed
    and an index), so a restarted sweep need not train them again."""
    folder = out / "references"
    folder.mkdir(parents=True, exist_ok=True)
    for entry in found.values():
        target = folder / f"{entry['key']}.pt"
        if not target.exists():
            tmp = target.with_name(target.name + ".part")
            tmp.write_bytes(entry["state"])
            os.replace(tmp, target)
    index = _reference_index(out)
    index.setdefault(group["key"], {}).update(
        {str(seed): {"key": e["key"], "info": e["info"]} for seed, e in found.items()})
    write_json_atomic(folder / "index.refs.json", index)
