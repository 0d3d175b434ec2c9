"""One run end to end: RunConfig -> load -> curate -> fit -> evaluate -> RunRecord on disk.

The record is written when the run starts (status "running"), and again when it completes or fails; a run started
again with the same config skips a complete record and resumes from the checkpoint of an unfinished one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import platform
import re
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from bench.algorithms import get_algorithm
from bench.algorithms.context import DivergedError, DivergenceGuard, RunContext, Schedule, SeedGroup, TrainingError
from bench.algorithms.reference import reference_cache_dir, reference_policies, writable_reference_cache
from bench.configs import PRESET_DIR, load_preset
from bench.configs.domains import ConfigError, bounded, check_domains
from bench.datasets.sources import load_dataset_cached
from bench.evaluation import env_label, evaluate
from bench.locks import LockHeld, file_lock
from bench.loggers import LOGGERS, RunIdentity, RunLoggers
from bench.results.store import RunRecord, config_hash, read_record_or_set_aside, record_filename, save_record
from bench.specs import get_spec

# Eval seeds are kept apart from training seeds so evaluation never replays training randomness.
EVAL_SEED_OFFSET = 1_000_000


@dataclass
class RunConfig:
    env: str  # dataset name (bench datasets list)
    algo: str  # algorithm name
    seed: int = bounded(0, ge=0, lt=2**63)  # fixes torch, numpy, data order and evaluation seeds
    eval_every: int = bounded(2000, ge=1)  # gradient steps between evaluations
    eval_episodes: int = bounded(10, ge=1)  # episodes per evaluation during training
    final_eval_episodes: int = bounded(100, ge=1)  # episodes of the final evaluation (the reported score)
    eval_envs: int = bounded(10, ge=1)  # envs side by side in an evaluation: episodes run in waves of this many
    eval_workers: int = bounded(1, ge=1)  # processes sharing the waves (this one included); more only for free cores
    device: str = "auto"  # "auto" (CUDA when present), "cpu", "cuda", "cuda:1", ...
    threads: int = bounded(1, ge=1)  # torch threads; one per process is fastest when processes share the cores
    data_path: str | None = None  # read the dataset from this file/folder instead of the cache
    reference_data_path: str | None = None  # read the reference dataset (SFT family's reference_dataset) from here
    algo_config: dict = field(default_factory=dict)  # the algorithm's config fields, resolved
    loggers: list[str] = field(default_factory=list)  # where statistics go while it trains: csv, tensorboard, wandb
    log_every: int | None = None  # steps between the loggers' statistics (None: at the evaluations only)

    def __post_init__(self):
        check_domains(self)
        try:
            if self.device != "auto":
                torch.device(self.device)
        except RuntimeError:
            raise ConfigError("device", f"device={self.device!r} is no device: give auto (CUDA when present), cpu, "
                                        "cuda or cuda:N") from None
        if unknown := [n for n in self.loggers if n not in LOGGERS]:
            raise ValueError(f"unknown logger {', '.join(unknown)}; choose from {', '.join(LOGGERS)}")
        if self.log_every is not None and self.log_every < 1:
            raise ConfigError("log_every", f"log_every={self.log_every} is outside its domain: log_every must be "
                                           ">= 1 (or unset: log at the evaluations)")

    def hashed_part(self) -> dict:
        """What makes two runs the same experiment (device, threads and file locations do not)."""
        d = dataclasses.asdict(self)
        for k in ("seed", "device", "threads", "data_path", "reference_data_path", "eval_workers", "loggers",
                  "log_every"):
            d.pop(k)
        return d


_RUN_FIELDS = {f.name: f for f in dataclasses.fields(RunConfig)
               if f.name not in ("env", "algo", "seed", "algo_config")}


def run_field_names() -> set[str]:
    """Fields of RunConfig that --set may change."""
    return set(_RUN_FIELDS)


def algorithm_field_names(algo: str) -> set[str]:
    return {f.name for f in dataclasses.fields(get_algorithm(algo).Config)}


def overrides_for(algo: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """The overrides that name a field of ``algo``'s config or of the run: a grid applies each where it fits."""
    fields = algorithm_field_names(algo) | run_field_names()
    return {k: v for k, v in overrides.items() if k in fields}


def parse_value(text: str) -> Any:
    """'1e-4' -> 1e-4, 'true' -> True, '[90, 95]' -> [90, 95], 'abc' -> 'abc'."""
    value = yaml.safe_load(text)
    if isinstance(value, str):
        try:
            return float(value)  # YAML 1.1 reads 1e-4 (no dot) as a string
        except ValueError:
            return value
    return value


def _coerce(name: str, value: Any, default: Any) -> Any:
    if isinstance(default, bool) or default is None:
        return value
    if isinstance(default, int) and isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(default, float) and isinstance(value, int):
        return float(value)
    if isinstance(default, list) and default and isinstance(value, list):  # [90] and [90.0]: one config, one hash
        return [_coerce(name, v, default[0]) for v in value]
    if isinstance(default, (int, float, str)) and not isinstance(value, type(default)):
        raise ValueError(f"--set {name}={value!r}: expected {type(default).__name__}")
    return value


def resolve_config(env: str, algo: str, seed: int = 0, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Preset for (algo, env), then ``overrides`` (``--set``) on algorithm or run fields."""
    algo_cls = get_algorithm(algo)
    spec = get_spec(env)  # fails early on an unknown dataset
    algo_fields, run_fields = load_preset(algo, env, spec.family)
    preset_algo, preset_run = set(algo_fields), set(run_fields)
    defaults = algo_cls.Config()
    algo_names = algorithm_field_names(algo)
    for key, value in (overrides or {}).items():
        if key in algo_names:
            algo_fields[key] = value
        elif key in _RUN_FIELDS:
            run_fields[key] = value
        else:
            raise KeyError(f"--set {key}: not a field of {algo} ({', '.join(sorted(algo_names))}) nor of the run "
                           f"({', '.join(_RUN_FIELDS)})")
    for key in list(algo_fields):
        if key not in algo_names:
            raise KeyError(f"preset for {algo} names unknown field {key!r}")
        algo_fields[key] = _coerce(key, algo_fields[key], getattr(defaults, key))
    for key in list(run_fields):
        run_fields[key] = _coerce(key, run_fields[key], _RUN_FIELDS[key].default)

    def came_from(key: str) -> str:
        if key in (overrides or {}):
            return f"given as --set {key}={overrides[key]!r}"
        if key in preset_algo or key in preset_run:
            return f"from the preset {PRESET_DIR / f'{algo}.yaml'}"
        return f"the default of {algo_cls.Config.__name__ if key in algo_names else 'RunConfig'}"

    try:
        resolved = dataclasses.asdict(algo_cls.Config(**algo_fields))
        return RunConfig(env=env, algo=algo, seed=seed, algo_config=resolved, **run_fields)
    except ConfigError as e:
        raise ConfigError(e.field, f"{e} ({came_from(e.field)})") from None


def make_algorithm(cfg: RunConfig):
    """The algorithm of ``cfg`` with its resolved config."""
    algo_cls = get_algorithm(cfg.algo)
    return algo_cls(algo_cls.Config(**cfg.algo_config))


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        raise ValueError(f"device {device} was asked for but this process sees no GPU (CUDA_VISIBLE_DEVICES="
                         f"{visible!r}, torch {torch.__version__}, CUDA build {torch.version.cuda}); on a Ray "
                         "cluster leave --gpus-per-run unset (GPUs are then requested when the cluster has them) "
                         "or pass --gpus-per-run 1; elsewhere use --device auto or cpu")
    return torch.device(device)


def describe_device(device: torch.device, precision: str) -> dict:
    """What the record says about where a run trained."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = next((line.split(":", 1)[1].strip() for line in _cpuinfo() if line.startswith("model name")),
                    platform.processor() or platform.machine())
    return {"device": str(device), "name": name, "precision": precision, "torch_threads": torch.get_num_threads(),
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}


def _cpuinfo() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return []


def set_seed(seed: int) -> None:
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def record_path(cfg: RunConfig, out: Path) -> Path:
    """Where the record of ``cfg`` lives: named by (env, algo, seed, config hash)."""
    return Path(out) / record_filename(cfg.env, cfg.algo, cfg.seed, config_hash(cfg.hashed_part()))


@dataclass
class _Started:
    """One run between its start and its record: what training needs and what the record gets."""

    cfg: RunConfig
    record: RunRecord
    traj: Any
    used: dict  # the other datasets it trains on, by role (the SFT family's reference data)
    algo: Any
    ctx: RunContext
    evaluate: Any
    t_start: float


class OtherDataError(ValueError):
    """A complete record under a run's name was trained on other data than the run would use."""


def same_files(record: RunRecord, cfg: RunConfig) -> bool:
    """Whether ``record`` was trained from the files ``cfg`` names (``--data``, ``--reference-data``; None: the
    registered dataset) — the data path is not part of the config hash, so two such runs share a record name."""
    return all(record.config.get(k) == getattr(cfg, k) for k in ("data_path", "reference_data_path"))


def _same_data(record: RunRecord, cfg: RunConfig) -> bool:
    """Whether ``record`` was trained on the data ``cfg`` would use: the same files, or files whose content hashes
    the same (loaded only then)."""
    if same_files(record, cfg):
        return True
    used = {"": (cfg.env, cfg.data_path, record.dataset.get("sha256"))}
    for role, name in make_algorithm(cfg).datasets_used().items():
        used[role] = (name, cfg.reference_data_path, record.dataset.get(role, {}).get("sha256"))
    return all(load_dataset_cached(get_spec(name), data).fingerprint() == sha for name, data, sha in used.values())


def _existing(cfg: RunConfig, out: Path, force: bool, log) -> RunRecord | None:
    """The complete record of ``cfg`` if there is one (and --force is not given). Raises OtherDataError when the
    record under its name was trained on other data: that is another run's record, never this one's."""
    path = record_path(cfg, out)
    existing = None if force else read_record_or_set_aside(path, log)
    if existing is None or existing.status != "complete":
        return None
    if not _same_data(existing, cfg):
        def files(c: dict | RunConfig) -> str:
            get = c.get if isinstance(c, dict) else lambda k: getattr(c, k)
            named = [f"{flag} {get(k)}" for k, flag in (("data_path", "--data"),
                                                        ("reference_data_path", "--reference-data")) if get(k)]
            return ", ".join(named) or "the registered dataset"
        raise OtherDataError(f"{path} is complete but was trained on other data ({files(existing.config)}; this run: "
                             f"{files(cfg)}); it is not this run's record: write this run elsewhere (--out) or "
                             "replace that record (--force)")
    log(f"{path} is complete; skipping (pass --force to run again)")
    return existing


def checkpoint_folder(out: Path, checkpoint_dir: Path | None) -> Path:
    """Where unfinished runs keep their checkpoints: ``checkpoint_dir``, or ``<out>/checkpoints``."""
    return Path(checkpoint_dir) if checkpoint_dir is not None else Path(out) / "checkpoints"


def _start(cfg: RunConfig, out: Path, log, reference_cache: Path) -> _Started:
    path = record_path(cfg, out)
    torch.set_num_threads(cfg.threads)
    set_seed(cfg.seed)
    spec = get_spec(cfg.env)
    record = RunRecord(env=cfg.env, algo=cfg.algo, seed=cfg.seed, config=dataclasses.asdict(cfg),
                       config_hash=config_hash(cfg.hashed_part()))
    t_start = time.time()
    # A dataset that cannot be loaded is an input error, not a failed run: it leaves no record behind.
    traj = load_dataset_cached(spec, cfg.data_path)
    spec = spec.with_dataset_metadata(traj.metadata)
    if spec.env_id is None:
        raise ValueError(f"dataset {cfg.env} names no evaluation environment; it cannot be evaluated")
    record.dataset = {**_fingerprint(cfg.env, spec, traj), "obs_dim": traj.obs_dim, "act_dim": traj.act_dim,
                      "eval_env": env_label(spec.env_id), "eval_env_spec": spec.env_id, "score": spec.score,
                      "ref_min_score": spec.ref_min_score, "ref_max_score": spec.ref_max_score,
                      "paper_comparable": spec.paper_comparable}
    algo = make_algorithm(cfg)  # a bad config: no record
    used = {}  # the other datasets the algorithm trains on (the SFT family's reference data), loaded here too
    for role, name in algo.datasets_used().items():
        other_spec = get_spec(name)
        used[role] = load_dataset_cached(other_spec, cfg.reference_data_path if role == "reference" else None)
        record.dataset[role] = _fingerprint(name, other_spec, used[role])
    if cfg.reference_data_path is not None and "reference" not in used:
        raise ValueError(f"--reference-data was given but {cfg.algo} on {cfg.env} trains on no reference dataset "
                         "(only the SFT family with reference_dataset set does)")
    if algo.reference_bc() is not None:
        writable_reference_cache(reference_cache)  # checked before the record exists: a mistake, not a failed run
    record.timings["load"] = time.time() - t_start
    record.device = describe_device(resolve_device(cfg.device), algo.precision())
    save_record(record, out)

    def evaluate_policy(policy, episodes: int = cfg.eval_episodes):
        return evaluate(policy, spec.env_id, episodes, cfg.seed + EVAL_SEED_OFFSET,
                        spec.ref_min_score, spec.ref_max_score, cfg.eval_envs, spec.score, cfg.eval_workers)

    identity = RunIdentity(path.stem, cfg.env, cfg.algo, cfg.seed, record.config_hash, Path(out))
    ctx = RunContext(seed=cfg.seed, evaluate=evaluate_policy, log=lambda m: log(f"[{cfg.env} {cfg.algo} seed "
                                                                                 f"{cfg.seed}] {m}"),
                     loggers=RunLoggers(cfg.loggers, identity, record.config),
                     progress=_progress_of(log, f"{cfg.env} {cfg.algo} seed {cfg.seed}"))
    return _Started(cfg, record, traj, used, algo, ctx, evaluate_policy, t_start)


def _fingerprint(name: str, spec, traj) -> dict:
    """What the record says about one dataset a run used: which data exactly, and (a file) where it came from."""
    return {"name": name, "source": spec.source, "sha256": traj.fingerprint(), "episodes": traj.num_episodes,
            "transitions": traj.num_transitions,
            "file": traj.metadata.get("file")}  # a D4RL file: its sha256 and where it came from


def _progress_of(log, label: str):
    """The live progress callback of an interactive ``log`` (one with a ``progress(label, step, total, score)``
    method, as ``bench run`` passes in a terminal); None for plain line output."""
    progress = getattr(log, "progress", None)
    return None if progress is None else (lambda step, total, score: progress(label, step, total, score))


def _divergence_fix(cfg: RunConfig) -> str:
    """The advice a diverged run of ``cfg`` gives, naming its algorithm's own learning-rate fields (those in use)."""
    rates = [k for k in get_algorithm(cfg.algo).learning_rate_fields if cfg.algo_config[k]]
    sets = " ".join(f"--set {k}={cfg.algo_config[k] / 10:g}" for k in rates)
    return f"lower {' / '.join(rates)} (e.g. {sets})"


def _complete(run_: _Started, policy, curated, train_seconds: float, log) -> None:
    cfg, record = run_.cfg, run_.record
    record.timings["train"] = train_seconds  # evaluations during training included
    record.timings["train_evals"] = run_.ctx.eval_seconds
    record.curve = run_.ctx.curve
    record.train_info = {"curation": curated.description, **run_.ctx.info}
    t0 = time.time()
    final = run_.evaluate(policy, cfg.final_eval_episodes)
    record.timings["final_eval"] = time.time() - t0
    record.final = final.to_dict()
    run_.ctx.loggers.finish(record.final)
    record.status = "complete"
    score = f"{final.normalized_mean:.1f} ± {final.normalized_std:.1f}" if final.normalized_mean is not None \
        else "n/a"
    log(f"[{cfg.env} {cfg.algo} seed {cfg.seed}] final: return {final.return_mean:.1f} ± "
        f"{final.return_std:.1f}, normalised score {score} over {cfg.final_eval_episodes} episodes")


def _end(run_: _Started, out: Path, error: BaseException | None) -> None:
    """Write the record: complete, or failed / diverged / interrupted with ``error``."""
    record = run_.record
    if error is not None:
        record.curve = run_.ctx.curve  # up to the stop
        record.train_info = {**record.train_info, **run_.ctx.info}
        record.status = ("interrupted" if isinstance(error, KeyboardInterrupt) else
                         "diverged" if isinstance(error, DivergedError) else "failed")
        record.error = "".join(traceback.format_exception(error))
        if isinstance(error, OSError) and error.errno == errno.ENOSPC:
            record.error = f"disk full: {error}\n{record.error}"
    record.timings["total"] = time.time() - run_.t_start
    if record.status != "complete":
        run_.ctx.loggers.finish({}, ok=False)
    save_record(record, out)


def _remove_checkpoint(path: Path) -> None:
    """Delete a finished run's checkpoint, and the checkpoints folder once it is empty."""
    if path.exists():
        path.unlink()
        if not any(path.parent.iterdir()):
            path.parent.rmdir()


class RunLocked(RuntimeError):
    """Another process is running this record's config right now."""


@contextlib.contextmanager
def _held(cfgs: list[RunConfig], out: Path):
    """Hold the lock beside each config's record (``<record>.lock``, ``bench.locks``) while this process works on it.

    A second process asking for a record that is held does not wait: it raises RunLocked at once, naming the
    process that holds it (a run can take hours; waiting would hide that the work is already being done). The lock
    files are gone when the run ends, whatever its outcome; records never match ``*.lock``.
    """
    with contextlib.ExitStack() as stack:
        for cfg in sorted(cfgs, key=lambda c: c.seed):  # one order everywhere: two groups cannot deadlock
            try:
                stack.enter_context(file_lock(record_path(cfg, out).with_suffix(".lock"), wait=False))
            except LockHeld as e:
                raise RunLocked(f"{record_path(cfg, out).name} is being run right now by {e.holder}; wait for it "
                                f"to finish (the same command then skips it) or stop that process") from None
        yield


def run(cfg: RunConfig, out: Path = Path("results"), force: bool = False,
        log=lambda msg: print(msg, file=sys.stderr, flush=True), checkpoint_dir: Path | None = None,
        reference_cache: Path | None = None) -> RunRecord:
    """Run ``cfg`` and write its record under ``out``; returns the record (also when it was already complete).
    Checkpoints go to ``checkpoint_dir`` (default ``<out>/checkpoints``). The SFT family's reference policies come
    from (or are trained into) ``reference_cache`` (default: this machine's, ``reference_cache_dir()``).

    Raises RunLocked when another process is running the same config into the same folder."""
    return run_seeds([cfg], out, force, log, checkpoint_dir, reference_cache)[0]


def run_seeds(cfgs: list[RunConfig], out: Path = Path("results"), force: bool = False,
              log=lambda msg: print(msg, file=sys.stderr, flush=True), checkpoint_dir: Path | None = None,
              reference_cache: Path | None = None) -> list[RunRecord]:
    """Several seeds of one (dataset, algorithm, config): one record per seed, as separate :func:`run` calls write.

    When the algorithm batches seeds (``batches_seeds``) and two or more are left, they train as one batched model
    (K policies with stacked weights, one batched matmul per layer: ``benchmarks/batched_seeds.py``), which gives each
    seed the policy of its separate run up to float rounding; otherwise they run one after another. A seed that
    diverges stops its group; the others then train again one at a time and the first DivergedError is raised.
    """
    if len({config_hash(c.hashed_part()) for c in cfgs}) > 1 or len({c.seed for c in cfgs}) < len(cfgs):
        raise ValueError("run_seeds needs configs that differ only in their (distinct) seeds")
    records = {c.seed: r for c in cfgs if (r := _existing(c, out, force, log)) is not None}
    pending = [c for c in cfgs if c.seed not in records]
    groups = [pending] if len(pending) > 1 and get_algorithm(pending[0].algo).batches_seeds else \
        [[c] for c in pending]
    for group in groups:
        try:
            records.update(_run_held(group, out, force, log, checkpoint_dir, reference_cache))
        except DivergedError as diverged:
            if len(group) == 1:
                raise
            others = [c for c in group if c.seed != diverged.seed]
            log(f"seed {diverged.seed} diverged; training seeds {[c.seed for c in others]} again without it, one "
                "at a time")
            for c in others:
                with contextlib.suppress(DivergedError):  # its own record says so; the first one is raised
                    records.update(_run_held([c], out, force, log, checkpoint_dir, reference_cache))
            raise
    return [records[c.seed] for c in cfgs]


def _run_held(cfgs: list[RunConfig], out: Path, force: bool, log, checkpoint_dir: Path | None,
              reference_cache: Path | None) -> dict[int, RunRecord]:
    """Hold the seeds' locks, skip what finished meanwhile, and train the rest as one group."""
    with _held(cfgs, out):
        done = {c.seed: r for c in cfgs if (r := _existing(c, out, force, log)) is not None}  # finished meanwhile
        todo = [c for c in cfgs if c.seed not in done]
        return done | (_run_group(todo, out, force, log, checkpoint_dir, reference_cache) if todo else {})


def _cell_stem(cfg: RunConfig, out: Path) -> tuple[str, str]:
    """The parts of ``cfg``'s record name before and after ``__seed<N>__``: its cell without the seed."""
    head, _, tail = record_path(cfg, out).stem.partition(f"__seed{cfg.seed}__")
    return head, tail


def group_checkpoint(cfgs: list[RunConfig], out: Path, checkpoint_dir: Path | None) -> Path:
    """Where the seeds ``cfgs`` trained as one group keep their checkpoint (one seed: the record's name)."""
    head, tail = _cell_stem(cfgs[0], out)
    stem = f"{head}__seed{cfgs[0].seed}__{tail}" if len(cfgs) == 1 else \
        f"{head}__{tail}__seeds{'-'.join(str(c.seed) for c in cfgs)}"
    return checkpoint_folder(out, checkpoint_dir) / f"{stem}.pt"


def checkpointed_seed_sets(cfg: RunConfig, out: Path, checkpoint_dir: Path | None) -> list[tuple[int, ...]]:
    """The seed sets of ``cfg``'s cell (same dataset, algorithm, config) that have a checkpoint: a batched group's
    or a single run's (the names :func:`group_checkpoint` gives)."""
    head, tail = map(re.escape, _cell_stem(cfg, out))
    named = re.compile(rf"{head}__{tail}__seeds(\d+(?:-\d+)*)|{head}__seed(\d+)__{tail}")
    return [tuple(int(x) for x in (m.group(1) or m.group(2)).split("-"))
            for path in checkpoint_folder(out, checkpoint_dir).glob("*.pt") if (m := named.fullmatch(path.stem))]


def _run_group(cfgs: list[RunConfig], out: Path, force: bool, log, checkpoint_dir: Path | None,
               reference_cache: Path | None) -> dict[int, RunRecord]:
    """Seeds of one cell trained as one group (the caller holds their locks): every seed's record is written, also
    when training stops; the error is raised after. A seed that diverges fails the others with it (their records say
    why they stopped)."""
    reference_cache = reference_cache or reference_cache_dir()
    runs = [_start(c, out, log, reference_cache) for c in cfgs]
    first = runs[0]
    ckpt = group_checkpoint(cfgs, out, checkpoint_dir)
    if force:
        ckpt.unlink(missing_ok=True)
    seeds = {c.seed for c in cfgs}
    for other in checkpointed_seed_sets(first.cfg, out, checkpoint_dir):
        # another grouping of some of these seeds (this process holds their locks, so nobody trains from it now):
        # it cannot be resumed by this group; its seeds start afresh here and the file goes
        if set(other) != seeds and set(other) & seeds:
            stale = group_checkpoint([dataclasses.replace(first.cfg, seed=s) for s in other], out, checkpoint_dir)
            log(f"warning: {stale} holds seeds {list(other)} trained together; this run trains seeds "
                f"{sorted(seeds)}: seeds {sorted(set(other) & seeds)} start afresh here and that checkpoint is "
                "removed")
            stale.unlink(missing_ok=True)
    schedule = Schedule(first.cfg.algo_config["steps"], first.cfg.eval_every, first.cfg.log_every)
    group = SeedGroup([r.ctx for r in runs], resolve_device(first.cfg.device), schedule, ckpt,
                      DivergenceGuard(fix=_divergence_fix(first.cfg)))
    error = None
    try:
        t0 = time.time()
        group.references = _references(runs, group, reference_cache)
        curated = first.algo.curate(first.traj)
        policies = first.algo.fit(first.traj, curated, group)
        seconds = (time.time() - t0) / len(runs)  # a batched training's time, shared
        for r, policy in zip(runs, policies, strict=True):
            _complete(r, policy, curated, seconds, log)
            if len(runs) > 1:
                r.record.train_info["batched_seeds"] = [c.seed for c in cfgs]
    except BaseException as e:
        error = e
        raise
    finally:
        for r in runs:
            own = None if r.record.status == "complete" else error
            if isinstance(error, DivergedError) and r.cfg.seed != error.seed:
                own = TrainingError(f"stopped with its batched group: seed {error.seed} diverged")
            _end(r, out, own)
        if error is None or isinstance(error, DivergedError):  # a diverged run restarted would diverge again
            _remove_checkpoint(ckpt)
    return {r.cfg.seed: r.record for r in runs}


def _references(runs: list[_Started], group: SeedGroup, cache: Path) -> list | None:
    """Each seed's reference policy pi_ref when the algorithm fine-tunes one (None otherwise), on the reference
    dataset it names or its own; every record notes which (``train_info.reference``)."""
    first = runs[0]
    bc = first.algo.reference_bc()
    if bc is None:
        return None
    data = first.used.get("reference", first.traj)
    if (data.obs_dim, data.act_dim) != (first.traj.obs_dim, first.traj.act_dim):
        raise ValueError(f"the reference dataset {data.name} has observation/action sizes "
                         f"{(data.obs_dim, data.act_dim)}, the fine-tuning data "
                         f"{(first.traj.obs_dim, first.traj.act_dim)}")
    found = reference_policies(data, bc, group.seeds, group.device, group.log, cache)
    for r, (_, info) in zip(runs, found, strict=True):
        r.ctx.info["reference"] = info
    return [policy for policy, _ in found]
