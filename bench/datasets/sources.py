"""Dataset sources: D4RL v2 HDF5 files, Minari datasets (local store, path or hub) and the embedded dataset.

Each loader returns `Trajectories`; metadata carries ``env_id`` and the reference scores where the data has them.
D4RL files are verified against their published sha256 and downloaded from mirrors with resume (``download``).
Offline, a missing dataset fails at once with what is missing, where we looked and what to do.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import zipfile
import zlib
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from bench.datasets.download import VerifiedCache, cache_lock, download_file, known_files, sha256_of
from bench.datasets.trajectories import DatasetError, Trajectories
from bench.locks import FolderError, writable_folder
from bench.specs import DatasetSpec

EMBEDDED_DIR = Path(__file__).parent / "embedded"
NETWORK_TIMEOUT_S = 5.0


def cache_dir() -> Path:
    """Where downloaded D4RL files live: $BENCH_DATA_DIR, else ~/.cache/bench/d4rl."""
    return Path(os.environ.get("BENCH_DATA_DIR", Path.home() / ".cache" / "bench" / "d4rl"))


def minari_root() -> Path:
    from minari.storage import get_dataset_path

    return Path(get_dataset_path())


def offline_reason(url: str) -> str | None:
    """Why ``url`` cannot be reached right now (None if it can), decided within a few seconds."""
    if os.environ.get("BENCH_OFFLINE") == "1" or os.environ.get("HF_HUB_OFFLINE") == "1":
        return "offline mode is set (BENCH_OFFLINE=1 or HF_HUB_OFFLINE=1)"
    parsed = urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        socket.create_connection((parsed.hostname, port), timeout=NETWORK_TIMEOUT_S).close()
    except OSError as e:
        return f"cannot reach {parsed.hostname}: {e}"
    return None


# -- D4RL HDF5 ----------------------------------------------------------------------------------------------------
CACHE_FIX = "run `bench datasets verify` (it moves a damaged file aside) and load again to download it afresh"
DATA_FIX = "this is the file given with --data: repair or regenerate it, or pass another file"


def read_d4rl_hdf5(path: Path, name: str = "unnamed", metadata: dict | None = None,
                   fix: str = DATA_FIX) -> Trajectories:
    """Read a file in D4RL's layout: observations, actions, rewards, terminals, timeouts [, next_observations].

    A file that is not one — keys missing, arrays of different lengths, no rows, non-finite values — fails with
    the file, the array and ``fix`` (what to do about this file: a cached download and a --data file differ)."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            missing = [k for k in ("observations", "actions", "rewards", "terminals") if k not in f]
            if missing:
                raise DatasetError(f"{path} is not a D4RL dataset file: keys {missing} are missing "
                                   f"(found {sorted(f.keys())}); {fix}")
            arrays = {k: f[k][:] for k in ("observations", "actions", "rewards", "terminals", "timeouts",
                                           "next_observations") if k in f}
    except OSError as e:
        raise DatasetError(f"cannot read {path} as HDF5 ({e}); the file is corrupt or incomplete: {fix}") from e
    n = len(arrays["rewards"])
    if n == 0:
        raise DatasetError(f"{path} holds no transitions (its 'rewards' array has 0 rows); {fix}")
    for key, array in arrays.items():
        if len(array) != n:
            raise DatasetError(f"{path}: array '{key}' has {len(array)} rows but 'rewards' has {n}; the file is "
                               f"damaged or not in D4RL's layout: {fix}")
        if array.dtype.kind == "f" and not (finite := np.isfinite(array)).all():
            row = int(np.argwhere(~finite)[0][0])
            raise DatasetError(f"{path}: array '{key}' has {int((~finite).sum())} non-finite values (the first in "
                               f"row {row}); {fix}")
    return Trajectories.from_flat(
        observations=arrays["observations"], actions=arrays["actions"], rewards=arrays["rewards"],
        terminals=arrays["terminals"], timeouts=arrays.get("timeouts", np.zeros(n, bool)),
        next_observations=arrays.get("next_observations"), name=name, metadata={"path": str(path), **(metadata or {})},
    )


def load_d4rl(spec: DatasetSpec, data_path: Path | None = None) -> Trajectories:
    """A D4RL v2 file: from ``data_path``, or the cache (verified against its published sha256), or downloaded
    into the cache from the first mirror that serves the published file (``download``)."""
    meta = {"source": "d4rl", "env_id": spec.env_id,
            "ref_min_score": spec.ref_min_score, "ref_max_score": spec.ref_max_score}
    known = known_files().get(spec.location)
    if data_path is not None:
        path = Path(data_path)
        if not path.exists():
            raise DatasetError(f"--data {data_path} does not exist")
        sha = sha256_of(path)  # a file the user chose is used as it is; the record says whether it is D4RL's own
        meta["file"] = {"name": path.name, "sha256": sha, "source": str(path.resolve()),
                        "published_sha256": known.sha256 if known else None,
                        "matches_published": bool(known and sha == known.sha256)}
        return read_d4rl_hdf5(path, spec.name, meta)
    if known is None:
        raise DatasetError(f"{spec.location} has no published checksum; add it to a table named by "
                           "BENCH_D4RL_CHECKSUMS (url or file name, bytes, sha256) or pass --data PATH")
    path, verified = cache_dir() / spec.location, VerifiedCache(cache_dir())
    meta["file"] = {"name": spec.location, **fetch_d4rl(spec), "matches_published": True}
    traj = read_d4rl_hdf5(path, spec.name, meta, CACHE_FIX)
    before = verified.remember_arrays(path, traj.fingerprint())
    if before is None or before == traj.fingerprint():
        return traj
    # the arrays differ from those read when the file was verified, though its size and mtime did not change
    print(f"{path}: the data read from it differ from what it held when it was verified (changed in place?); "
          "checking its sha256 again", file=sys.stderr, flush=True)
    try:
        verified.verify(path, known, rehash=True)
    except DatasetError as e:  # it was moved aside: fetch the published file again
        print(f"{e}; downloading it again", file=sys.stderr, flush=True)
        meta["file"] = {"name": spec.location, **fetch_d4rl(spec), "matches_published": True}
        traj = read_d4rl_hdf5(path, spec.name, meta, CACHE_FIX)
        verified.remember_arrays(path, traj.fingerprint())
    return traj  # (a published file whose arrays hash otherwise: the reading code changed; the new hash is kept)


def fetch_d4rl(spec: DatasetSpec) -> dict:
    """Make sure the cache holds the published file of ``spec``: {sha256, source} (source: the URL it came from).

    A cached file is verified (hashed once, then remembered by size and mtime); one that fails is moved aside and
    downloaded again.
    """
    known = known_files()[spec.location]
    path, verified = cache_dir() / spec.location, VerifiedCache(cache_dir())
    try:  # the lock, the verification memo and a download are all written there
        writable_folder(cache_dir(), f"BENCH_DATA_DIR={cache_dir()}" if "BENCH_DATA_DIR" in os.environ
                        else f"the dataset cache {cache_dir()}", "set BENCH_DATA_DIR to a folder you can write")
    except FolderError as e:
        if path.exists():  # a read-only copy is read through --data, which writes nothing beside it
            raise DatasetError(f"dataset {spec.name}: {e}, or pass --data {path} to read that file as it "
                               "is") from None
        raise DatasetError(f"dataset {spec.name} is not in the cache ({path}) and cannot be downloaded there: {e}, "
                           f"or pass --data PATH to a copy of {spec.location}") from None
    with cache_lock(path, lambda m: print(m, file=sys.stderr, flush=True)):  # one downloader; the others wait
        if path.exists():
            try:
                seen = verified.verify(path, known)
                return {"sha256": seen["sha256"], "source": seen["url"] or "cache"}
            except DatasetError as e:
                print(f"{e}; downloading it again", file=sys.stderr, flush=True)
        try:
            url = download_file(path, known, offline_reason)
        except DatasetError as e:
            raise DatasetError(
                f"dataset {spec.name} is not in the cache ({path}) and the download failed: {e}. "
                f"Copy {spec.location} into {cache_dir()} (or set BENCH_DATA_DIR), pass --data PATH, "
                "or use --env hopper-mini-replay, which ships with the suite."
            ) from e
        verified.remember(path, known.sha256, url)
        return {"sha256": known.sha256, "source": url}


# -- Minari -------------------------------------------------------------------------------------------------------
def _minari_metadata(dataset) -> dict:
    meta = dict(dataset.storage.metadata)
    env_spec = meta.get("eval_env_spec") or meta.get("env_spec")
    env_id = json.loads(env_spec)["id"] if isinstance(env_spec, str) else None
    return {"source": "minari", "minari_id": meta.get("dataset_id"), "env_id": env_id, "env_spec": env_spec,
            "ref_min_score": meta.get("ref_min_score"), "ref_max_score": meta.get("ref_max_score")}


def read_minari(dataset, name: str) -> Trajectories:
    """Minari episodes (T+1 observations each) -> aligned Trajectories."""
    episodes = ({"observations": ep.observations, "actions": ep.actions, "rewards": ep.rewards,
                 "terminations": ep.terminations, "truncations": ep.truncations}
                for ep in dataset.iterate_episodes())
    return Trajectories.from_episodes(list(episodes), name=name, metadata=_minari_metadata(dataset))


def load_minari(spec: DatasetSpec, data_path: Path | None = None) -> Trajectories:
    import minari

    if data_path is not None:
        path = Path(data_path)
        path = path / "data" if (path / "data").is_dir() else path
        if not (path / "metadata.json").exists():
            raise DatasetError(f"--data {data_path} is not a Minari dataset folder (no metadata.json in it or in "
                               "its data/ sub-folder)")
        return _read_minari_folder(lambda: minari.MinariDataset(path), path, spec.name, DATA_FIX)
    local = ensure_minari(spec.location)
    fix = (f"download it again (`minari download {spec.location}` where there is a network, into "
           f"{minari_root()}) after deleting {local}")
    return _read_minari_folder(lambda: minari.load_dataset(spec.location), local, spec.name, fix)


def _read_minari_folder(open_dataset, path: Path, name: str, fix: str) -> Trajectories:
    """Read a Minari dataset; a damaged one (metadata, episodes) fails naming the folder and ``fix``."""
    try:
        return read_minari(open_dataset(), name)
    except DatasetError:
        raise
    except (ValueError, KeyError, TypeError, OSError) as e:  # json, h5py and Minari's own checks
        raise DatasetError(f"the Minari dataset at {path} cannot be read ({type(e).__name__}: {e}); its "
                           f"metadata.json or episode file is damaged: {fix}") from e


def ensure_minari(dataset_id: str) -> Path:
    """The local folder of a Minari dataset, downloaded from the hub first when it is not in the store."""
    import minari

    local = minari_root() / dataset_id
    if not (local / "data").is_dir():
        url = "https://huggingface.co"
        reason = offline_reason(url)
        if reason:
            raise DatasetError(
                f"Minari dataset {dataset_id} is not in the local store ({local}) and cannot be downloaded: "
                f"{reason}. Download it where there is a network (`minari download {dataset_id}`) and copy it "
                f"there (or set MINARI_DATASETS_PATH), pass --data PATH, or use --env hopper-mini-replay."
            )
        try:
            minari.download_dataset(dataset_id)
        except (ImportError, ModuleNotFoundError) as e:
            raise DatasetError(f"downloading Minari datasets needs: pip install 'minari[hf]' ({e})") from e
        except Exception as e:  # the hub client raises many kinds; all mean the same to the user
            raise DatasetError(f"download of Minari dataset {dataset_id} failed: {e}") from e
    return local


def fetch(spec: DatasetSpec) -> str:
    """Put ``spec``'s data on disk ahead of time (download it if needed); a line saying what is where."""
    if spec.source == "d4rl":
        got = fetch_d4rl(spec)
        return f"{spec.name}: {cache_dir() / spec.location} (sha256 {got['sha256'][:16]}..., from {got['source']})"
    if spec.source == "minari":
        return f"{spec.name}: {ensure_minari(spec.location)}"
    if spec.source == "concat":
        from bench.specs import get_spec

        return "\n".join(fetch(get_spec(name)) for name in spec.location.split(","))
    return f"{spec.name}: ships with the package ({EMBEDDED_DIR / spec.location})"


def verify_cache() -> list[tuple[str, str]]:
    """Every D4RL file in the cache hashed again and checked against its published sha256: (file, verdict).

    A file that fails is moved aside (as when it is loaded); partial downloads are listed as such.
    """
    known, verified, out = known_files(), VerifiedCache(cache_dir()), []
    for path in sorted(cache_dir().glob("*.hdf5*")) if cache_dir().exists() else []:
        if path.name.endswith(".part"):
            out.append((path.name, f"partial download ({path.stat().st_size} bytes); resumed on next use"))
        elif path.name not in known:
            out.append((path.name, "no published checksum (not used by any registered dataset)"))
        else:
            try:
                out.append((path.name, f"ok (sha256 {verified.verify(path, known[path.name], rehash=True)['sha256']})"))
            except DatasetError as e:
                out.append((path.name, f"FAILED: {e}"))
    return out


# -- embedded -----------------------------------------------------------------------------------------------------
def load_embedded(spec: DatasetSpec, data_path: Path | None = None) -> Trajectories:
    """Package data: ``episodes.npz`` (concatenated Minari-style episodes) and ``metadata.json``."""
    folder = Path(data_path) if data_path is not None else EMBEDDED_DIR / spec.location
    npz, meta_file = folder / "episodes.npz", folder / "metadata.json"
    if not npz.exists() or not meta_file.exists():
        raise DatasetError(f"embedded dataset {spec.name} is missing from {folder}; reinstall the package "
                           "(pip install -e .) or regenerate it with bench/datasets/embedded/make.sh")
    fix = ("reinstall the package (pip install -e .), or regenerate it with bench/datasets/embedded/make.sh"
           if data_path is None else f"copy a good {folder.name} folder there again")
    try:
        meta = json.loads(meta_file.read_text())
        if not isinstance(meta, dict):
            raise ValueError(f"a JSON {type(meta).__name__}, not an object")
    except ValueError as e:
        raise DatasetError(f"embedded dataset {spec.name}: {meta_file} is damaged ({e}); {fix}") from None
    try:
        with np.load(npz) as z:
            episodes = unpack_episodes({k: z[k] for k in z.files})
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, zlib.error) as e:
        raise DatasetError(f"embedded dataset {spec.name}: {npz} is damaged ({type(e).__name__}: {e}); {fix}") \
            from None
    return Trajectories.from_episodes(episodes, name=spec.name, metadata={"source": "embedded", **meta})


def pack_episodes(episodes: list[dict]) -> dict[str, np.ndarray]:
    """Concatenate episodes into a few flat arrays (one HDF5 group per episode would be 20x bigger)."""
    return {
        "observations": np.concatenate([e["observations"] for e in episodes]).astype(np.float32),
        "actions": np.concatenate([e["actions"] for e in episodes]).astype(np.float32),
        "rewards": np.concatenate([e["rewards"] for e in episodes]).astype(np.float32),
        "terminations": np.concatenate([e["terminations"] for e in episodes]).astype(bool),
        "truncations": np.concatenate([e["truncations"] for e in episodes]).astype(bool),
        "lengths": np.array([len(e["actions"]) for e in episodes], np.int64),
    }


def unpack_episodes(packed: dict[str, np.ndarray]) -> list[dict]:
    ends = np.cumsum(packed["lengths"])
    starts = ends - packed["lengths"]
    return [{
        # each episode keeps its T+1 observations: episode i's observations start at starts[i] + i
        "observations": packed["observations"][s + i: e + i + 1],
        "actions": packed["actions"][s:e], "rewards": packed["rewards"][s:e],
        "terminations": packed["terminations"][s:e], "truncations": packed["truncations"][s:e],
    } for i, (s, e) in enumerate(zip(starts, ends, strict=True))]


def pack_minari(minari_folder: Path, out: Path) -> None:
    """Write a Minari dataset as ``episodes.npz`` + ``metadata.json`` (the embedded format)."""
    import minari

    folder = Path(minari_folder)
    folder = folder / "data" if (folder / "data").is_dir() else folder
    if not (folder / "metadata.json").exists():
        raise DatasetError(f"{minari_folder} is not a Minari dataset folder (no metadata.json)")
    dataset = minari.MinariDataset(folder)
    episodes = [{"observations": ep.observations, "actions": ep.actions, "rewards": ep.rewards,
                 "terminations": ep.terminations, "truncations": ep.truncations}
                for ep in dataset.iterate_episodes()]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out / "episodes.npz", **pack_episodes(episodes))
    raw = dict(dataset.storage.metadata)
    meta = {**_minari_metadata(dataset), "source": "embedded",
            "minari_metadata": {k: raw[k] for k in ("dataset_id", "description", "requirements", "bench",
                                                    "total_episodes", "total_steps") if k in raw}}
    (out / "metadata.json").write_text(json.dumps(meta, indent=1, default=str))


def load_concat(spec: DatasetSpec, data_path: Path | None = None) -> Trajectories:
    """Registered datasets loaded one by one and joined; ``--data`` does not apply (each part has its own)."""
    from bench.specs import get_spec

    if data_path is not None:
        raise DatasetError(f"{spec.name} combines {spec.location}: load each part from its own location "
                           "(Minari store or cache) instead of --data")
    parts = [load_dataset(get_spec(name)) for name in spec.location.split(",")]
    return Trajectories.concatenate(parts, spec.name)


LOADERS = {"d4rl": load_d4rl, "minari": load_minari, "embedded": load_embedded, "concat": load_concat}


def load_dataset(spec: DatasetSpec, data_path: Path | None = None) -> Trajectories:
    """Load the dataset a spec names; ``data_path`` overrides where the file is read from."""
    return LOADERS[spec.source](spec, data_path)


_LOADED: dict[tuple[str, str | None], Trajectories] = {}


def load_dataset_cached(spec: DatasetSpec, data_path: str | Path | None = None) -> Trajectories:
    """:func:`load_dataset` once per process: a sweep worker runs many configs on the same data (and the kitchen
    fine-tuning runs all read kitchen-partial for their reference policy)."""
    key = (spec.name, str(data_path) if data_path else None)
    if key not in _LOADED:
        if len(_LOADED) >= 2:  # bound memory: keep the two most recent datasets
            _LOADED.pop(next(iter(_LOADED)))
        _LOADED[key] = load_dataset(spec, Path(data_path) if data_path else None)
    return _LOADED[key]


def is_on_disk(spec: DatasetSpec) -> tuple[bool, Path]:
    """(present, where) without loading anything."""
    if spec.source == "d4rl":
        p = cache_dir() / spec.location
        return p.exists(), p
    if spec.source == "minari":
        p = minari_root() / spec.location
        return (p / "data").is_dir(), p
    if spec.source == "concat":
        from bench.specs import get_spec

        parts = [is_on_disk(get_spec(name)) for name in spec.location.split(",")]
        return all(present for present, _ in parts), parts[0][1]
    p = EMBEDDED_DIR / spec.location
    return (p / "episodes.npz").exists(), p
