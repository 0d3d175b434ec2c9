"""Run records: one JSON file per run, written atomically, named by (env, algo, seed, config hash).

A record holds the resolved config, the dataset fingerprint, the learning curve, the final scores, timings, package
versions and a status ("running", "complete", "failed"). A sweep re-run skips records whose status is complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import tempfile
from dataclasses import MISSING, asdict, dataclass, field, fields
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

SCHEMA_VERSION = 1
_VERSIONED = ("sft-rl-bench", "torch", "numpy", "gymnasium", "mujoco", "d3rlpy", "minari", "transformers", "accelerate",
              "math-verify")


def package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def config_hash(config: dict) -> str:
    """Short stable hash of a JSON-able config (key order does not matter)."""
    blob = json.dumps(config, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:10]


def record_filename(env: str, algo: str, seed: int, chash: str) -> str:
    safe_env = re.sub(r"[^A-Za-z0-9_.-]+", "_", env)
    return f"{safe_env}__{algo}__seed{seed}__{chash}.json"


@dataclass
class RunRecord:
    env: str
    algo: str
    seed: int
    config: dict  # the resolved run config, algorithm config included
    config_hash: str
    status: str = "running"  # running | complete | failed
    dataset: dict = field(default_factory=dict)  # name, source, sha256, episodes, transitions, ...
    curve: list[dict] = field(default_factory=list)  # [{step, return_mean, normalized_mean, ...}]
    final: dict = field(default_factory=dict)  # final evaluation (EvalResult.to_dict())
    train_info: dict = field(default_factory=dict)  # what the algorithm reports (curation, weight stats, ...)
    timings: dict = field(default_factory=dict)  # seconds: load, train, eval, total
    versions: dict = field(default_factory=package_versions)
    host: dict = field(default_factory=lambda: {"machine": platform.machine(), "node": platform.node(),
                                                "cpus": os.cpu_count()})
    device: dict = field(default_factory=dict)  # where it trained: device, its name, precision, CUDA_VISIBLE_DEVICES
    error: str | None = None
    schema_version: int = SCHEMA_VERSION

    @property
    def filename(self) -> str:
        return record_filename(self.env, self.algo, self.seed, self.config_hash)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> RunRecord:
        """A record from its JSON; a field of the wrong kind (``final: null``, a string for the curve) raises
        TypeError naming it."""
        if not isinstance(d, dict):
            raise TypeError(f"a record is a JSON object, not {type(d).__name__}")
        for f in fields(cls):
            kind = {dict: dict, list: list}.get(f.default_factory) if f.default_factory is not MISSING else None
            if kind is not None and f.name in d and not isinstance(d[f.name], kind):
                raise TypeError(f"its {f.name} is {type(d[f.name]).__name__}, not a JSON {kind.__name__}")
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in known})


def write_json_atomic(path: Path, obj: dict) -> None:
    """Write JSON to a temporary file in the same folder, fsync, then rename: readers see old or new, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=1, default=_json_default, allow_nan=True)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _json_default(o):
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def save_record(record: RunRecord, out_dir: Path) -> Path:
    path = Path(out_dir) / record.filename
    write_json_atomic(path, record.to_dict())
    return path


def read_record(path: Path) -> RunRecord:
    with open(path) as f:
        return RunRecord.from_dict(json.load(f))


def read_record_or_set_aside(path: Path, log) -> RunRecord | None:
    """The record at ``path``; None when there is none, or when it is damaged (cut short, not a record): then it is
    moved aside to ``<name>.corrupt`` and ``log`` says so, so the run is done again instead of stopping a sweep."""
    try:
        return read_record(path)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError) as e:
        aside = path.with_name(path.name + ".corrupt")
        os.replace(path, aside)
        log(f"warning: the record {path} is damaged ({type(e).__name__}: {e}); moved aside to {aside}, running it "
            "again")
        return None


RECORD_KEYS = {"env", "algo", "seed", "config_hash"}


def load_records(paths: list[Path], others: list[Path] | None = None
                 ) -> tuple[list[RunRecord], list[tuple[Path, str]]]:
    """Every run record under the given folders or files; unreadable ones are returned with the reason.

    A record is a JSON object with a record's keys. Other JSON beside the records (W&B's run files and the W&B
    logger's run markers, an array, ``null``) is not a record: it is passed over, and appended to ``others`` when
    given; the suite's own ``*.refs.json`` and ``*.llmeval.json`` are not looked at. A file that is not JSON at all
    (a record cut short) is unreadable."""
    records, bad = [], []
    for root in map(Path, paths):
        files = [root] if root.is_file() else sorted(f for f in root.rglob("*.json")
                                                     if not f.name.endswith((".llmeval.json", ".refs.json")))
        for f in files:
            try:
                with open(f) as handle:
                    data = json.load(handle)
                if not (isinstance(data, dict) and data.keys() >= RECORD_KEYS):  # another tool's JSON
                    if others is not None:
                        others.append(f)
                    continue
                records.append(RunRecord.from_dict(data))
            except (OSError, ValueError, TypeError) as e:
                bad.append((f, f"{type(e).__name__}: {e}"))
    return records, bad


def records_frame(records: list[RunRecord]):
    """One row per run: env, algo, seed, status, final scores, steps, dataset sha256 — a pandas DataFrame."""
    import pandas as pd

    rows = [{
        "env": r.env, "algo": r.algo, "seed": r.seed, "status": r.status, "config_hash": r.config_hash,
        "normalized_mean": r.final.get("normalized_mean"), "return_mean": r.final.get("return_mean"),
        "eval_episodes": len(r.final.get("returns", [])), "steps": r.config.get("steps"),
        "dataset_sha256": r.dataset.get("sha256"), "train_s": r.timings.get("train"),
    } for r in records]
    return pd.DataFrame(rows)
