import json
import os
import signal
import subprocess
import sys
import time

from bench.results.store import RunRecord, load_records, save_record, write_json_atomic


def test_record_round_trips_and_is_named_by_env_algo_seed_hash(tmp_path):
    rec = RunRecord(env="minari:bench/x/y-v0", algo="bc", seed=3, config={"a": 1}, config_hash="abc123")
    rec.final = {"normalized_mean": 12.5}
    path = save_record(rec, tmp_path)
    assert path.name == "minari_bench_x_y-v0__bc__seed3__abc123.json"
    records, bad = load_records([tmp_path])
    assert bad == [] and records[0].final == {"normalized_mean": 12.5} and records[0].versions["torch"]


def test_unreadable_records_are_listed_not_fatal(tmp_path):
    save_record(RunRecord(env="e", algo="bc", seed=0, config={}, config_hash="h"), tmp_path)
    (tmp_path / "broken.json").write_text('{"env": "e", "al')
    records, bad = load_records([tmp_path])
    assert len(records) == 1 and [p.name for p, _ in bad] == ["broken.json"]


WRITER = """
import sys
from bench.results.store import write_json_atomic
payload = {"data": list(range(200000))}
i = 0
while True:
    payload["i"] = i
    write_json_atomic(sys.argv[1], payload)
    i += 1
"""


def test_a_killed_writer_never_leaves_a_half_written_file(tmp_path):
    target = tmp_path / "rec.json"
    write_json_atomic(target, {"i": -1})
    for delay in (0.3, 0.55, 0.8):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(target)])
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        with open(target) as f:
            assert "i" in json.load(f)  # the old or the new content, never a torn file
    leftovers = [p for p in os.listdir(tmp_path) if p != "rec.json"]
    assert all(p.endswith(".tmp") for p in leftovers)  # only temporary files may be left, never the target torn


def test_records_load_as_a_dataframe(tmp_path):
    from bench.results.store import records_frame

    for seed, score in ((0, 10.0), (1, 14.0)):
        rec = RunRecord(env="e", algo="bc", seed=seed, config={"steps": 5}, config_hash="h", status="complete")
        rec.final = {"normalized_mean": score, "return_mean": score * 2, "returns": [1, 2]}
        save_record(rec, tmp_path)
    df = records_frame(load_records([tmp_path])[0])
    assert sorted(df.seed) == [0, 1] and df.normalized_mean.mean() == 12.0 and set(df.eval_episodes) == {2}
