"""Verified downloads of D4RL v2 files: published checksums, mirrors in order, resumable, with progress.

- Every D4RL v2 locomotion file has a published size and sha256 (``data/d4rl_v2_sha256.tsv``, copied from
  tensorflow/datasets' ``d4rl_mujoco_*/checksums.tsv``). A file whose sha256 differs is never used: it is moved
  aside to ``<cache>-rejected/`` and the error says what was expected and what was found.
- A file already in the cache is hashed once; the result is remembered in ``<cache>/.verified.json`` under its size
  and modification time, so later loads cost a ``stat``.
- Mirrors are tried in order: ``$BENCH_D4RL_MIRRORS`` (comma-separated base URLs) when set, then the Berkeley
  server, then the Hugging Face dataset ``imone/D4RL`` at a pinned revision (same file names at its root). The
  final error lists every attempt's outcome.
- A download writes ``<file>.part`` beside the target and renames it when complete and verified; a dropped
  connection resumes from the bytes already there (HTTP Range), on the same mirror while it makes progress. A mirror
  whose response announces another size than the published one serves another file: nothing of it is kept.
- One process at a time fetches a file into a cache (:func:`cache_lock`): the others wait, saying so, and then use
  the verified file. The lock dies with its process, so a killed downloader's lock is taken over at once and its
  ``.part`` resumed.
- ``$BENCH_D4RL_CHECKSUMS`` names an extra TSV (url or file name, bytes, sha256) whose entries override the package's:
  for private mirrors of other files, and for tests that serve small files in D4RL's layout.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import shutil
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.datasets.trajectories import DatasetError
from bench.locks import file_lock

BERKELEY_URL = "http://rail.eecs.berkeley.edu/datasets/offline_rl/gym_mujoco_v2/"
HF_MIRROR_URL = "https://huggingface.co/datasets/imone/D4RL/resolve/9ed58d8a76c12f4c1cb5db51fa71389e703d2ec5/"
CHECKSUMS_FILE = Path(__file__).parent / "data" / "d4rl_v2_sha256.tsv"
CHUNK = 1 << 20
ATTEMPTS_PER_MIRROR = 4  # a connection that drops is resumed this many times while each try adds bytes


@dataclass(frozen=True)
class KnownFile:
    name: str  # file name, e.g. hopper_medium_replay-v2.hdf5
    size: int  # bytes
    sha256: str


def _read_table(path: Path) -> dict[str, KnownFile]:
    table = {}
    for line in Path(path).read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        where, size, sha = line.split("\t")
        name = where.rsplit("/", 1)[-1]
        table[name] = KnownFile(name, int(size), sha.strip().lower())
    return table


def known_files() -> dict[str, KnownFile]:
    """File name -> published size and sha256 (the package's table, then ``$BENCH_D4RL_CHECKSUMS``)."""
    table = _read_table(CHECKSUMS_FILE)
    if extra := os.environ.get("BENCH_D4RL_CHECKSUMS"):
        table.update(_read_table(Path(extra)))
    return table


def mirrors() -> list[str]:
    """Base URLs in the order they are tried."""
    extra = [u.strip() for u in os.environ.get("BENCH_D4RL_MIRRORS", "").split(",") if u.strip()]
    return [u if u.endswith("/") else u + "/" for u in extra] + [BERKELEY_URL, HF_MIRROR_URL]


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def rejected_dir(cache: Path) -> Path:
    """Where files that failed verification are moved: beside the cache, so nothing in the cache is ever wrong."""
    return cache.parent / f"{cache.name}-rejected"


def _reject(path: Path, cache: Path, found: str) -> Path:
    dest = rejected_dir(cache) / f"{path.name.removesuffix('.part')}.{found[:12]}"
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(path, dest)
    return dest


def _check(path: Path, known: KnownFile, cache: Path) -> str:
    """The sha256 of ``path`` if it is the published file; otherwise moves it aside and raises."""
    size = path.stat().st_size
    if size != known.size:
        found, tag = f"{size} bytes", f"{size}bytes"
    else:
        sha = sha256_of(path)
        if sha == known.sha256:
            return sha
        found, tag = f"sha256 {sha}", sha[:12]
    moved = _reject(path, cache, tag)
    raise DatasetError(f"{known.name} does not match its published checksum: expected sha256 {known.sha256} "
                       f"({known.size} bytes), found {found}; the file was moved aside to {moved} and is not used")


class VerifiedCache:
    """The files of one cache folder whose checksum was verified, remembered by (size, mtime)."""

    def __init__(self, cache: Path):
        self.cache = Path(cache)
        self.memo_path = self.cache / ".verified.json"

    def _memo(self) -> dict:
        try:
            return json.loads(self.memo_path.read_text())
        except (OSError, ValueError):
            return {}

    def remember(self, path: Path, sha: str, url: str) -> None:
        memo = self._memo()
        stat = path.stat()
        memo[path.name] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": sha, "url": url}
        self._write(memo)

    def _write(self, memo: dict) -> None:
        tmp = self.memo_path.with_name(f".verified.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(memo, indent=1))
        os.replace(tmp, self.memo_path)

    def remember_arrays(self, path: Path, fingerprint: str) -> str | None:
        """Keep the fingerprint of the arrays read from the verified file ``path``; returns the one kept before
        (None the first time). The file's sha256 is checked once, but every load hashes the arrays it read: a file
        changed with its size and mtime kept (bit rot, ``cp -p`` of a bad copy) shows as another fingerprint."""
        memo = self._memo()
        entry = memo.get(path.name, {})
        before = entry.get("arrays_sha256")
        if before != fingerprint:
            entry["arrays_sha256"] = fingerprint
            memo[path.name] = entry
            self._write(memo)
        return before

    def verify(self, path: Path, known: KnownFile, rehash: bool = False) -> dict:
        """{sha256, url} of a cached file that matches its published checksum (hashed once, or again with
        ``rehash``); raises otherwise."""
        stat = path.stat()
        seen = self._memo().get(path.name)
        if not rehash and seen and (seen["size"], seen["mtime_ns"], seen["sha256"]) == (stat.st_size, stat.st_mtime_ns,
                                                                          known.sha256):
            return {"sha256": known.sha256, "url": seen.get("url")}
        sha = _check(path, known, self.cache)
        url = seen.get("url") if seen else None
        self.remember(path, sha, url)
        return {"sha256": sha, "url": url}


def cache_lock(path: Path, log: Callable[[str], None]) -> contextlib.AbstractContextManager:
    """Hold the lock of the cached file ``path`` (``.<name>.lock`` beside it, see ``bench.locks``); while another
    process holds it, say so once and wait."""
    return file_lock(path.with_name(f".{path.name}.lock"), on_wait=lambda holder: log(
        f"{path.name}: {holder} is fetching it into {path.parent}; waiting for it to finish, then using its "
        "verified file"))


def _progress(name: str, total: int) -> Callable[[int, bool], None]:
    """``update(done, final)``: a line on stderr with bytes, rate and ETA (redrawn in a terminal, else every 10%)."""
    t0, last = time.time(), [-1.0]
    tty = sys.stderr.isatty()

    def update(done: int, final: bool = False) -> None:
        frac = done / total if total else 0.0
        if not final and (tty and time.time() - last[0] < 0.2 or not tty and frac < last[0] + 0.1):
            return
        last[0] = time.time() if tty else frac
        rate = done / max(time.time() - t0, 1e-9)
        eta = (total - done) / rate if rate > 0 and total else float("nan")
        line = (f"{name}: {done / 1e6:.1f}/{total / 1e6:.1f} MB ({100 * frac:.0f}%) {rate / 1e6:.1f} MB/s "
                f"ETA {eta:.0f}s")
        print(("\r" + line) if tty else line, end="\n" if final or not tty else "", file=sys.stderr, flush=True)

    return update


class OtherFileError(DatasetError):
    """A mirror's response announces a file of another size than the published one."""


def _announced_size(resp) -> int | None:
    """The size of the whole file a response announces: Content-Range's total (206) or Content-Length (200)."""
    if resp.status == 206:
        total = (resp.headers.get("Content-Range") or "").rpartition("/")[2]
        return int(total) if total.isdigit() else None
    length = resp.headers.get("Content-Length")
    return int(length) if length and length.isdigit() else None


def _fetch_once(url: str, part: Path, total: int | None, update) -> bool:
    """Append to ``part`` from ``url`` (resuming at its size); True when the server sent everything it had."""
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        resp = urllib.request.urlopen(request, timeout=60)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have and (total is None or have == total):  # nothing left to send
            return True
        raise
    with resp:
        if total is not None and (announced := _announced_size(resp)) is not None and announced != total:
            raise OtherFileError(f"this mirror serves a different file: {announced:,} bytes where {total:,} are "
                                 "published; nothing of it was kept")
        mode = "ab" if have and resp.status == 206 else "wb"  # a server that ignores Range sends it all again
        done = have if mode == "ab" else 0
        with open(part, mode) as out:
            while chunk := resp.read1(CHUNK):  # what has arrived: progress (and a resumable .part) as it comes
                out.write(chunk)
                done += len(chunk)
                update(done)
    return total is None or done >= total


def download_file(dest: Path, known: KnownFile, offline_reason: Callable[[str], str | None]) -> str:
    """Download ``known`` to ``dest`` from the first mirror that serves the published file; returns the URL.

    Raises DatasetError listing each mirror's outcome when none does; bytes already downloaded stay in
    ``<dest>.part`` and the next call resumes from them.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    outcomes = []
    for base in mirrors():
        url = base + known.name
        if reason := offline_reason(url):
            outcomes.append(f"{url}: {reason}")
            continue
        update = _progress(known.name, known.size)
        try:
            for _ in range(ATTEMPTS_PER_MIRROR):
                before = part.stat().st_size if part.exists() else 0
                try:
                    if _fetch_once(url, part, known.size, update):
                        break
                except (OSError, http.client.HTTPException) as e:  # URLError is an OSError
                    now = part.stat().st_size if part.exists() else 0
                    if isinstance(e, urllib.error.HTTPError) or now <= before:
                        raise  # an HTTP error, or no progress: on to the next mirror
            else:
                raise DatasetError(f"still incomplete after {ATTEMPTS_PER_MIRROR} attempts")
            update(part.stat().st_size, final=True)
            _check(part, known, dest.parent)  # a substituted file is moved aside: the next mirror starts afresh
        except (OSError, http.client.HTTPException, DatasetError) as e:
            outcomes.append(f"{url}: {type(e).__name__}: {e}")
            continue
        os.replace(part, dest)
        return url
    kept = f"; {part.stat().st_size} bytes are kept in {part} and resumed next time" if part.exists() else ""
    raise DatasetError(f"no mirror served {known.name}: " + "; ".join(outcomes) + kept)
