"""Verified D4RL downloads against real HTTP servers on 127.0.0.1 serving files in D4RL's layout."""

from __future__ import annotations

import hashlib
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import marked_episodes
from test_sources import write_d4rl_file

from bench.cli import app
from bench.datasets.download import known_files
from bench.datasets.sources import cache_dir, load_dataset
from bench.datasets.trajectories import DatasetError
from bench.specs import REGISTRY, get_spec

SPEC = get_spec("hopper-medium-replay")
NAME = SPEC.location  # hopper_medium_replay-v2.hdf5


class D4RLServer(ThreadingHTTPServer):
    """Serves ``files`` (name -> bytes) at any path ending in the name, with HTTP Range; ``drop_after`` bytes of the
    first response are sent before the connection is cut; ``seconds``: each response takes about this long (sent in
    pieces); every request's Range header is logged."""

    def __init__(self, files: dict[str, bytes], drop_after: int | None = None, ignore_range: bool = False,
                 seconds: float = 0.0):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files, self.drop_after, self.ignore_range, self.ranges = files, drop_after, ignore_range, []
        self.seconds = seconds
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/d4rl/"

    def __exit__(self, *exc):
        self.shutdown()
        super().__exit__(*exc)


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):  # quiet
        pass

    def do_GET(self):
        server: D4RLServer = self.server
        data = server.files.get(self.path.rsplit("/", 1)[-1])
        if data is None:
            self.send_error(404)
            return
        asked = self.headers.get("Range")
        server.ranges.append(asked)
        start = int(asked.split("=")[1].split("-")[0]) if asked and not server.ignore_range else 0
        body = data[start:]
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(body)))
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        if server.drop_after is not None:
            cut, server.drop_after = server.drop_after, None
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self.close_connection = True
            return
        pieces = 50 if server.seconds else 1
        step = -(-len(body) // pieces)
        for i in range(0, len(body), step):
            self.wfile.write(body[i:i + step])
            self.wfile.flush()
            time.sleep(server.seconds / pieces)


@pytest.fixture
def d4rl_file(tmp_path, monkeypatch):
    """A small file in D4RL's layout under the real name, its published checksum supplied by a test-only table;
    the network allowed (the autouse fixture sets offline mode), only to the servers of each test."""
    path = tmp_path / "served" / NAME
    path.parent.mkdir()
    write_d4rl_file(path, marked_episodes([40, 30, 50], obs_dim=11, act_dim=3))
    data = path.read_bytes()
    table = tmp_path / "checksums.tsv"
    table.write_text(f"{NAME}\t{len(data)}\t{hashlib.sha256(data).hexdigest()}\n")
    monkeypatch.setenv("BENCH_D4RL_CHECKSUMS", str(table))
    monkeypatch.delenv("BENCH_OFFLINE")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    return data


def test_the_package_holds_the_published_checksums_of_every_locomotion_file():
    table = known_files()
    for body in ("hopper", "halfcheetah", "walker2d"):
        for level in ("random", "medium", "medium_replay", "medium_expert", "expert", "full_replay"):
            assert f"{body}_{level}-v2.hdf5" in table
    assert table[NAME].size == 75_854_457
    assert table[NAME].sha256 == "e121c5f7c9857a307baa9edc6a2c3b48e85fedb9ac316ecddd0f48ca7ef4e39b"
    assert table["walker2d_medium_replay-v2.hdf5"].sha256.startswith("e75de96a4f77")
    for spec in REGISTRY.values():  # every registered D4RL dataset has a published checksum
        assert spec.source != "d4rl" or spec.location in table


def test_a_good_file_downloads_verifies_and_loads_and_the_record_says_from_where(d4rl_file, monkeypatch):
    with D4RLServer({NAME: d4rl_file}) as server:
        monkeypatch.setenv("BENCH_D4RL_MIRRORS", server.url)
        traj = load_dataset(SPEC)
    assert traj.num_episodes == 3 and (cache_dir() / NAME).read_bytes() == d4rl_file
    assert traj.metadata["file"] == {"name": NAME, "sha256": hashlib.sha256(d4rl_file).hexdigest(),
                                     "source": server.url + NAME, "matches_published": True}
    assert not list(cache_dir().glob("*.part"))
    again = load_dataset(SPEC)  # from the cache, verified once before: no server needed, source remembered
    assert again.metadata["file"]["source"] == server.url + NAME


def test_a_substituted_file_fails_with_both_checksums_and_leaves_nothing_in_the_cache(d4rl_file, monkeypatch):
    bad = d4rl_file[:-10] + b"0123456789"  # same size, other bytes
    with D4RLServer({NAME: bad}) as server:
        monkeypatch.setenv("BENCH_D4RL_MIRRORS", server.url)
        monkeypatch.setattr("bench.datasets.download.mirrors", lambda: [server.url])  # not the real servers
        with pytest.raises(DatasetError) as e:
            load_dataset(SPEC)
    msg = str(e.value)
    assert hashlib.sha256(d4rl_file).hexdigest() in msg and hashlib.sha256(bad).hexdigest() in msg
    assert "moved aside" in msg
    assert not cache_dir().exists() or not list(cache_dir().iterdir())
    (rejected,) = (cache_dir().parent / "d4rl-rejected").iterdir()
    assert rejected.read_bytes() == bad


def test_a_dropped_connection_resumes_with_range_and_ends_with_the_right_bytes(d4rl_file, monkeypatch):
    with D4RLServer({NAME: d4rl_file}, drop_after=len(d4rl_file) // 3) as server:
        monkeypatch.setenv("BENCH_D4RL_MIRRORS", server.url)
        traj = load_dataset(SPEC)
    assert (cache_dir() / NAME).read_bytes() == d4rl_file and traj.num_episodes == 3
    assert server.ranges == [None, f"bytes={len(d4rl_file) // 3}-"]  # the second request asked for the rest


def test_a_server_that_ignores_range_sends_everything_again_and_the_file_is_still_right(d4rl_file, monkeypatch):
    with D4RLServer({NAME: d4rl_file}, drop_after=1000, ignore_range=True) as server:
        monkeypatch.setenv("BENCH_D4RL_MIRRORS", server.url)
        load_dataset(SPEC)
    assert (cache_dir() / NAME).read_bytes() == d4rl_file


def test_the_first_mirror_failing_and_the_second_serving_works(d4rl_file, monkeypatch):
    with D4RLServer({}) as empty, D4RLServer({NAME: d4rl_file}) as good:
        monkeypatch.setenv("BENCH_D4RL_MIRRORS", f"{empty.url},{good.url}")
        traj = load_dataset(SPEC)
    assert traj.metadata["file"]["source"] == good.url + NAME


def test_every_mirror_failing_lists_each_outcome_and_keeps_the_partial_bytes(d4rl_file, monkeypatch):
    with D4RLServer({}) as empty, D4RLServer({NAME: d4rl_file}, drop_after=500) as flaky:
        flaky_urls = [empty.url, flaky.url]
        monkeypatch.setattr("bench.datasets.download.mirrors", lambda: flaky_urls)
        monkeypatch.setattr("bench.datasets.download.ATTEMPTS_PER_MIRROR", 1)
        with pytest.raises(DatasetError) as e:
            load_dataset(SPEC)
        msg = str(e.value)
        assert f"{empty.url}{NAME}: HTTPError: HTTP Error 404" in msg and f"{flaky.url}{NAME}" in msg
        assert "500 bytes are kept" in msg and "--data PATH" in msg
        monkeypatch.setattr("bench.datasets.download.ATTEMPTS_PER_MIRROR", 4)
        load_dataset(SPEC)  # the next call resumes from the 500 bytes
        assert flaky.ranges[-1] == "bytes=500-"
    assert (cache_dir() / NAME).read_bytes() == d4rl_file


def test_a_cached_file_is_hashed_once_and_a_changed_one_is_moved_aside(d4rl_file, monkeypatch):
    from bench.datasets import download

    with D4RLServer({NAME: d4rl_file}) as server:
        monkeypatch.setenv("BENCH_D4RL_MIRRORS", server.url)
        load_dataset(SPEC)
        hashed = []
        real = download.sha256_of
        monkeypatch.setattr(download, "sha256_of", lambda p: hashed.append(p) or real(p))
        load_dataset(SPEC)
        assert hashed == []  # size and mtime as remembered: no second hash
        (cache_dir() / NAME).write_bytes(d4rl_file[:-1] + b"x")  # damaged in place
        load_dataset(SPEC)  # fails verification, is moved aside, and downloaded again
    assert (cache_dir() / NAME).read_bytes() == d4rl_file
    assert len(list((cache_dir().parent / "d4rl-rejected").iterdir())) == 1


def test_offline_fails_in_seconds_naming_every_mirror(d4rl_file, monkeypatch):
    monkeypatch.setenv("BENCH_OFFLINE", "1")
    t0 = time.time()
    with pytest.raises(DatasetError, match="offline mode is set") as e:
        load_dataset(SPEC)
    assert time.time() - t0 < 5
    assert "rail.eecs.berkeley.edu" in str(e.value) and "imone/D4RL/resolve/9ed58d8a" in str(e.value)


def test_download_and_verify_commands(d4rl_file, monkeypatch):
    from typer.testing import CliRunner

    runner = CliRunner()
    with D4RLServer({NAME: d4rl_file}) as server:
        monkeypatch.setenv("BENCH_D4RL_MIRRORS", server.url)
        result = runner.invoke(app, ["datasets", "download", "hopper-medium-replay", "hopper-mini-replay"])
    assert result.exit_code == 0, result.output
    assert f"from {server.url}{NAME}" in result.output and "ships with the package" in result.output
    result = runner.invoke(app, ["datasets", "verify"])
    assert result.exit_code == 0 and f"{NAME}: ok (sha256 {hashlib.sha256(d4rl_file).hexdigest()})" in result.output
    (cache_dir() / NAME).write_bytes(b"damaged")
    result = runner.invoke(app, ["datasets", "verify"])
    assert result.exit_code == 1 and "FAILED" in result.output and "moved aside" in result.output
    assert not (cache_dir() / NAME).exists()


def test_every_common_offline_dataset_has_a_registered_name_that_says_whose_data_it_is():
    from typer.testing import CliRunner

    expected = {"antmaze-large-diverse": "D4RL/antmaze/large-diverse-v1", "pen-human": "D4RL/pen/human-v2",
                "relocate-expert": "D4RL/relocate/expert-v2", "hopper-v5-medium": "mujoco/hopper/medium-v0",
                "humanoid-v5-simple": "mujoco/humanoid/simple-v0",
                "walker2d-full-replay": "walker2d_full_replay-v2.hdf5"}
    for name, location in expected.items():
        assert get_spec(name).location == location
    assert sum(s.family == "Ant-maze" for s in REGISTRY.values()) == 6
    assert sum(s.family == "Adroit" for s in REGISTRY.values()) == 12
    v5 = [s for s in REGISTRY.values() if s.location and s.location.startswith("mujoco/")]
    assert len(v5) == 33 and all("-v5-" in s.name and not s.paper_comparable for s in v5)
    result = CliRunner().invoke(app, ["datasets", "list"], env={"COLUMNS": "250"})
    assert result.exit_code == 0
    for name in ("antmaze-large-diverse", "door-cloned", "swimmer-v5-expert", "Minari metadata (own)", "D4RL (infos"):
        assert name in result.output


LOAD = ("from bench.datasets.sources import load_dataset; from bench.specs import get_spec; "
        "print(load_dataset(get_spec('hopper-medium-replay')).metadata['file']['sha256'])")


def test_four_processes_fetching_one_file_download_it_once_and_all_get_the_verified_file(d4rl_file, monkeypatch,
                                                                                          tmp_path):
    import subprocess
    import sys

    with D4RLServer({NAME: d4rl_file}, seconds=3.0) as server:
        monkeypatch.setenv("BENCH_D4RL_MIRRORS", server.url)
        procs = [subprocess.Popen([sys.executable, "-c", LOAD], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True) for _ in range(4)]
        outcomes = [(p.wait(timeout=120), p.stdout.read().strip(), p.stderr.read()) for p in procs]
    sha = hashlib.sha256(d4rl_file).hexdigest()
    assert [(code, out) for code, out, _ in outcomes] == [(0, sha)] * 4, outcomes
    assert server.ranges == [None]  # one download, from the first byte
    waited = [err for _, _, err in outcomes if "is fetching it into" in err]
    assert len(waited) >= 1 and all("waiting for it to finish" in err for err in waited)
    assert (cache_dir() / NAME).read_bytes() == d4rl_file
    assert not list(cache_dir().glob("*.part")) and not list(tmp_path.glob("d4rl-rejected/*"))


def test_a_killed_downloaders_lock_is_taken_over_and_its_bytes_resumed(d4rl_file, monkeypatch):
    import signal
    import subprocess
    import sys

    part = cache_dir() / f"{NAME}.part"
    with D4RLServer({NAME: d4rl_file}, seconds=6.0) as server:
        monkeypatch.setenv("BENCH_D4RL_MIRRORS", server.url)
        victim = subprocess.Popen([sys.executable, "-c", LOAD], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.time() + 60
        while not (part.exists() and part.stat().st_size > 0) and time.time() < deadline:
            time.sleep(0.05)
        victim.send_signal(signal.SIGKILL)  # it dies holding the lock, mid-download
        victim.wait(timeout=30)
        had = part.stat().st_size
        assert 0 < had < len(d4rl_file)
        traj = load_dataset(SPEC)  # this process takes the lock over at once and resumes the .part
    assert traj.metadata["file"]["sha256"] == hashlib.sha256(d4rl_file).hexdigest()
    assert server.ranges[0] is None and server.ranges[-1] == f"bytes={had}-"
    assert (cache_dir() / NAME).read_bytes() == d4rl_file and not part.exists()


def test_a_mirror_serving_a_file_of_another_size_is_named_with_both_sizes_and_nothing_is_kept(d4rl_file,
                                                                                               monkeypatch):
    other = d4rl_file[: len(d4rl_file) // 3]  # a complete response, with its own matching Content-Length
    with D4RLServer({NAME: other}) as wrong:
        monkeypatch.setattr("bench.datasets.download.mirrors", lambda: [wrong.url])
        with pytest.raises(DatasetError) as e:
            load_dataset(SPEC)
    message = str(e.value)
    assert f"{wrong.url}{NAME}: OtherFileError: this mirror serves a different file: {len(other):,} bytes where " \
           f"{len(d4rl_file):,} are published; nothing of it was kept" in message
    assert "still incomplete" not in message and "kept in" not in message
    assert not (cache_dir() / f"{NAME}.part").exists() and not (cache_dir() / NAME).exists()
    with D4RLServer({NAME: other}) as wrong, D4RLServer({NAME: d4rl_file}) as good:  # the next mirror serves it
        monkeypatch.setattr("bench.datasets.download.mirrors", lambda: [wrong.url, good.url])
        traj = load_dataset(SPEC)
    assert traj.metadata["file"]["source"] == good.url + NAME and good.ranges == [None]


def test_a_cached_file_changed_in_place_with_its_mtime_kept_is_found_and_fetched_again(d4rl_file, monkeypatch):
    """Bit rot or ``cp -p`` of a bad copy: size and mtime as verified, other bytes. The arrays read from it hash
    otherwise than when it was verified, so the file is hashed again, moved aside and downloaded afresh."""
    import os

    with D4RLServer({NAME: d4rl_file}) as server:
        monkeypatch.setenv("BENCH_D4RL_MIRRORS", server.url)
        first = load_dataset(SPEC)
        cached = cache_dir() / NAME
        stat = cached.stat()
        data = bytearray(cached.read_bytes())
        data[len(data) // 2] ^= 0x01  # a low bit of some stored value
        cached.write_bytes(bytes(data))
        os.utime(cached, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        again = load_dataset(SPEC)
    assert again.fingerprint() == first.fingerprint()  # the published data, not the changed bytes
    assert cached.read_bytes() == d4rl_file and len(server.ranges) == 2  # downloaded a second time
    assert len(list((cache_dir().parent / f"{cache_dir().name}-rejected").iterdir())) == 1  # the bad copy, aside
