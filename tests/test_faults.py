"""Nothing on disk takes a run over: a tampered checkpoint runs no code, a damaged one or a damaged cached reference
policy is named, set aside and the work redone; an interrupted record keeps its curve; a run another sweep is doing
is not a failure."""

from __future__ import annotations

import os

import pytest
from conftest import RunsCode, kill_after_first_checkpoint

from bench.run import group_checkpoint, resolve_config, run

FAST = {"steps": 60, "eval_every": 20, "eval_episodes": 1, "final_eval_episodes": 2, "batch_size": 32}


@pytest.fixture
def cfg(hopper_minari_dataset):
    return resolve_config(f"minari:{hopper_minari_dataset[0]}", "bc", 0, FAST)


def _curve(record):
    return [{k: v for k, v in p.items() if k != "time"} for p in record.curve]


def test_a_tampered_checkpoint_runs_no_code_and_the_run_starts_afresh(cfg, tmp_path):
    import torch

    clean = run(cfg, tmp_path / "clean", log=lambda m: None)
    ckpt = group_checkpoint([cfg], tmp_path / "out", None)
    ckpt.parent.mkdir(parents=True)
    pwned = tmp_path / "pwned"
    torch.save({"step": 20, "components": RunsCode(f"touch {pwned}")}, ckpt)
    messages = []
    record = run(cfg, tmp_path / "out", log=messages.append)
    assert not pwned.exists()  # the pickle was refused, never run
    assert record.status == "complete" and _curve(record) == _curve(clean)  # started afresh, the same run
    assert "resumed_from_step" not in record.train_info
    assert "cannot be read as data (UnpicklingError" in record.train_info["checkpoint_discarded"]
    assert any(m.endswith("training starts afresh") and "warning: checkpoint" in m for m in messages)
    assert ckpt.with_name(ckpt.name + ".corrupt").exists() and not ckpt.exists()


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_a_damaged_checkpoint_is_set_aside_named_and_the_run_redone(cfg, tmp_path, monkeypatch, damage):
    clean = run(cfg, tmp_path / "clean", log=lambda m: None)
    kill_after_first_checkpoint(monkeypatch, lambda: run(cfg, tmp_path / "out", log=lambda m: None))
    ckpt = group_checkpoint([cfg], tmp_path / "out", None)
    data = bytearray(ckpt.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    else:  # one byte inside the stored weights: the file still loads, its checksum does not match
        data[len(data) // 2] ^= 0xFF
    ckpt.write_bytes(bytes(data))
    messages = []
    record = run(cfg, tmp_path / "out", log=messages.append)
    assert record.status == "complete" and _curve(record) == _curve(clean)
    assert record.final["returns"] == clean.final["returns"]
    assert "resumed_from_step" not in record.train_info
    reason = record.train_info["checkpoint_discarded"]
    assert str(ckpt) in reason and ("fails its checksum" in reason or "cannot be read as data" in reason)
    assert sum("warning: checkpoint" in m for m in messages) == 1
    assert ckpt.with_name(ckpt.name + ".corrupt").read_bytes() == bytes(data)  # kept for a look, out of the way


def test_an_interrupted_record_keeps_its_curve_up_to_the_stop(cfg, tmp_path, monkeypatch):
    from bench.results.store import read_record
    from bench.run import record_path

    kill_after_first_checkpoint(monkeypatch, lambda: run(cfg, tmp_path, log=lambda m: None))
    record = read_record(record_path(cfg, tmp_path))
    assert record.status == "interrupted" and [p["step"] for p in record.curve] == [20]


def test_a_damaged_cached_reference_policy_is_named_deleted_and_trained_again(hopper_minari_dataset, tmp_path):
    env = f"minari:{hopper_minari_dataset[0]}"
    sft = {**FAST, "steps": 20, "warmup_steps": 2, "bc_steps": 20, "bc_batch_size": 8, "batch_size": 8}
    first = run(resolve_config(env, "sft", 0, sft), tmp_path / "a", log=lambda m: None)
    cached = first.train_info["reference"]["path"]
    with open(cached, "r+b") as f:
        f.truncate(os.path.getsize(cached) // 3)
    messages = []
    again = run(resolve_config(env, "sft", 0, sft), tmp_path / "b", log=messages.append)
    assert again.status == "complete" and again.train_info["reference"]["cached"] is False
    assert any(f"the cached reference policy {cached} is damaged" in m and "training it again" in m
               for m in messages)
    assert [p["loss"] for p in again.curve] == [p["loss"] for p in first.curve]  # the same pi_ref, rebuilt
    third = run(resolve_config(env, "sft", 0, sft), tmp_path / "c", log=lambda m: None)
    assert third.train_info["reference"]["cached"] is True  # the rebuilt file is good


def test_a_run_another_process_is_doing_is_not_a_failure_of_the_sweep(cfg, tmp_path):
    from bench.locks import file_lock
    from bench.run import record_path
    from bench.sweep import run_sweep

    other = resolve_config(cfg.env, "bc", 1, FAST)
    with file_lock(record_path(cfg, tmp_path).with_suffix(".lock")):  # "another sweep" runs seed 0 right now
        summary = run_sweep([cfg, other], tmp_path, workers=2, log=lambda m: None)
    assert summary.ok and len(summary.done) == 1 and len(summary.elsewhere) == 1
    assert "1 being run by another process" in summary.text()


def test_a_record_cut_short_is_set_aside_and_its_run_redone_while_the_sweep_goes_on(cfg, tmp_path):
    from bench.run import record_path
    from bench.sweep import run_sweep

    other = resolve_config(cfg.env, "bc", 1, FAST)
    done = run(other, tmp_path, log=lambda m: None)
    kept = record_path(other, tmp_path).read_bytes()
    damaged = record_path(cfg, tmp_path)
    damaged.write_text('{"env": "' + cfg.env + '", "algo": "bc", "st')  # a record cut short
    messages = []
    summary = run_sweep([cfg, other], tmp_path, workers=1, log=messages.append)
    assert summary.ok and len(summary.done) == 1 and len(summary.skipped) == 1
    assert damaged.with_name(damaged.name + ".corrupt").exists()
    assert run(cfg, tmp_path, log=lambda m: None).status == "complete"  # redone, and now complete
    assert record_path(other, tmp_path).read_bytes() == kept and done.status == "complete"  # untouched


def test_report_lists_a_record_of_the_wrong_shape_names_other_json_once_and_counts_the_rest(cfg, tmp_path):
    import json

    from typer.testing import CliRunner

    from bench.cli import app
    from bench.results.store import load_records

    res = tmp_path / "results"  # beside the test's Minari folder, whose JSON is not the point here
    good = run(cfg, res, log=lambda m: None)
    broken = json.loads((res / good.filename).read_text())
    for seed, (name, value) in enumerate((("final", None), ("curve", "abc")), start=1):
        (res / good.filename.replace("seed0", f"seed{seed}")).write_text(
            json.dumps({**broken, name: value, "seed": seed}))
    (res / "notes").mkdir()
    (res / "notes" / "array.json").write_text("[1, 2]")
    (res / "notes" / "null.json").write_text("null")
    records, bad = load_records([res])
    assert [r.seed for r in records] == [0]
    assert sorted(reason for _, reason in bad) == ["TypeError: its curve is str, not a JSON list",
                                                   "TypeError: its final is NoneType, not a JSON dict"]
    result = CliRunner().invoke(app, ["report", str(res), "--out", str(tmp_path / "report")])
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output
    lines = result.output.splitlines()
    assert sum(line.startswith("skipped unreadable record") for line in lines) == 2
    passed_over = [line for line in lines if line.startswith("passed over")]
    assert passed_over == [f"passed over 2 JSON files that are not run records: {res / 'notes' / 'array.json'}, "
                           f"{res / 'notes' / 'null.json'}"]
    assert lines[-1] == f"1 records, 1 cells -> {tmp_path / 'report'}/report.md"


def test_a_sweeps_workers_exit_when_its_driver_is_killed(tmp_path):
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    import psutil

    bench = str(Path(sys.executable).parent / "bench")
    driver = subprocess.Popen([bench, "sweep", "--envs", "hopper-mini-replay", "--algos", "bc,td3_bc", "--seeds", "1",
                               "--workers", "2", "--set", "steps=1000000", "--out", str(tmp_path / "out")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, workers = time.time() + 120, []
    while time.time() < deadline and len(workers) < 2:
        workers = [p for p in psutil.Process(driver.pid).children() if "python" in p.name().lower()]
        time.sleep(0.2)
    assert len(workers) >= 2
    while time.time() < deadline and not list((tmp_path / "out").glob("*.json")):  # the runs have started
        time.sleep(0.2)
    driver.send_signal(signal.SIGKILL)
    driver.wait(timeout=30)
    gone, alive = psutil.wait_procs(workers, timeout=15)
    assert not alive, f"workers outlived their driver: {[p.pid for p in alive]}"


def _listening(pids: set[int]) -> set[tuple[str, int, int]]:
    """(address, port, pid) of every TCP socket these processes listen on."""
    import psutil

    return {(c.laddr.ip, c.laddr.port, c.pid) for c in psutil.net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN and c.pid in pids}


def _loopback(address: str) -> bool:
    import ipaddress

    ip = ipaddress.ip_address(address)
    return (getattr(ip, "ipv4_mapped", None) or ip).is_loopback


def test_the_ray_cluster_a_sweep_starts_listens_on_loopback_only(tmp_path):
    """`bench sweep --executor ray` without --ray-address: every socket its GCS, raylet, workers and driver listen on
    while the runs train is on 127.0.0.0/8, none on *, :: or the host's address."""
    import subprocess
    import sys
    import time
    from pathlib import Path

    import psutil

    bench = str(Path(sys.executable).parent / "bench")
    driver = subprocess.Popen([bench, "sweep", "--executor", "ray", "--envs", "hopper-mini-replay", "--algos", "bc",
                               "--seeds", "2", "--workers", "2", "--set", "steps=400", "--set", "eval_every=200",
                               "--out", str(tmp_path / "out")], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)
    seen: set[tuple[str, int, int]] = set()
    while driver.poll() is None:
        try:
            tree = {driver.pid} | {p.pid for p in psutil.Process(driver.pid).children(recursive=True)}
        except psutil.NoSuchProcess:
            break
        seen |= _listening(tree)
        time.sleep(0.3)
    output = driver.communicate(timeout=60)[0]
    assert driver.returncode == 0, output[-3000:]
    assert len(list((tmp_path / "out").glob("*.json"))) == 2
    assert len({pid for _, _, pid in seen}) >= 3, seen  # GCS, raylet and the driver were seen listening
    assert all(_loopback(ip) for ip, _, _ in seen), sorted(s for s in seen if not _loopback(s[0]))


@pytest.mark.parametrize("damage", ["crc", "metadata"])
def test_damaged_embedded_data_names_the_file_and_the_fix_without_a_traceback(tmp_path, damage):
    import shutil

    from typer.testing import CliRunner

    from bench.cli import app
    from bench.datasets.sources import EMBEDDED_DIR

    folder = tmp_path / "hopper-mini-replay"
    shutil.copytree(EMBEDDED_DIR / "hopper-mini-replay", folder)
    if damage == "crc":  # a byte of the stored arrays changed: the zip's CRC no longer matches
        npz = folder / "episodes.npz"
        data = bytearray(npz.read_bytes())
        data[len(data) // 2] ^= 0xFF
        npz.write_bytes(bytes(data))
        damaged = npz
    else:
        damaged = folder / "metadata.json"
        damaged.write_text(damaged.read_text()[:40])
    result = CliRunner().invoke(app, ["run", "--env", "hopper-mini-replay", "--algo", "bc", "--data", str(folder),
                                      "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert f"{damaged} is damaged" in result.output and "copy a good hopper-mini-replay folder" in result.output
    assert not list((tmp_path / "out").glob("*.json"))  # no record of a run that could not load its data


def test_a_record_trained_on_other_data_is_never_taken_for_this_runs(tmp_path):
    """--data OTHER writes under the same name as the run on the registered data (the data path is not part of the
    config hash): the skip decision compares the data, refuses on a difference and overwrites nothing."""
    import shutil

    import numpy as np
    from typer.testing import CliRunner

    from bench.cli import app
    from bench.datasets.sources import EMBEDDED_DIR
    from bench.sweep import run_sweep

    same, other = tmp_path / "same", tmp_path / "other"
    shutil.copytree(EMBEDDED_DIR / "hopper-mini-replay", same)
    shutil.copytree(EMBEDDED_DIR / "hopper-mini-replay", other)
    with np.load(other / "episodes.npz") as z:
        arrays = {k: z[k] for k in z.files}
    arrays["rewards"] = arrays["rewards"] * 2  # other data, same shapes
    np.savez(other / "episodes.npz", **arrays)
    fast = ["--set", "steps=20", "--set", "eval_every=10", "--set", "eval_episodes=1", "--set", "final_eval_episodes=1"]
    bench = ["run", "--env", "hopper-mini-replay", "--algo", "bc", *fast, "--out", str(tmp_path / "out")]
    assert CliRunner().invoke(app, [*bench, "--data", str(other)]).exit_code == 0
    (record,) = (tmp_path / "out").glob("*.json")
    written = record.read_bytes()
    result = CliRunner().invoke(app, bench)  # the registered data: not the record's
    assert result.exit_code == 2 and "is complete but was trained on other data (--data " in result.output
    assert "this run: the registered dataset" in result.output and "--force" in result.output
    assert record.read_bytes() == written
    result = CliRunner().invoke(app, [*bench, "--data", str(same)])  # another path, other content too
    assert result.exit_code == 2 and record.read_bytes() == written
    cfg = resolve_config("hopper-mini-replay", "bc", 0, {"steps": 20, "eval_every": 10, "eval_episodes": 1,
                                                         "final_eval_episodes": 1})
    summary = run_sweep([cfg], tmp_path / "out", workers=1, log=lambda m: None)
    assert not summary.ok and "trained on other data" in summary.failed[0]["error"] and record.read_bytes() == written
    result = CliRunner().invoke(app, [*bench, "--data", str(other)])  # its own data: skipped as complete
    assert result.exit_code == 0 and record.read_bytes() == written
    shutil.copytree(other, tmp_path / "copy")  # the same data under another path: the same run, skipped
    result = CliRunner().invoke(app, [*bench, "--data", str(tmp_path / "copy")])
    assert result.exit_code == 0 and "is complete; skipping" in result.output and record.read_bytes() == written


def test_a_batched_groups_checkpoint_survives_other_workers_and_never_lingers(hopper_minari_dataset, tmp_path,
                                                                              monkeypatch):
    """An interrupted group of seeds 0-2 resumes as that group in a sweep with 3 workers (which would otherwise split
    it); a rerun that groups the seeds otherwise says so, starts them afresh and leaves no stale checkpoint."""
    from bench.results.store import load_records
    from bench.run import run_seeds
    from bench.sweep import run_sweep

    env = f"minari:{hopper_minari_dataset[0]}"
    cfgs = [resolve_config(env, "bc", s, {**FAST, "steps": 40}) for s in (0, 1, 2)]
    clean = run_seeds(cfgs, tmp_path / "clean", log=lambda m: None)
    kill_after_first_checkpoint(monkeypatch, lambda: run_seeds(cfgs, tmp_path / "out", log=lambda m: None))
    assert [p.name for p in (tmp_path / "out" / "checkpoints").iterdir()][0].endswith("__seeds0-1-2.pt")
    summary = run_sweep(cfgs, tmp_path / "out", workers=3, log=lambda m: None)
    assert summary.ok and len(summary.done) == 3
    resumed = sorted(load_records([tmp_path / "out"])[0], key=lambda r: r.seed)
    for a, b in zip(resumed, clean, strict=True):
        assert a.train_info["resumed_from_step"] == 20 and a.train_info["batched_seeds"] == [0, 1, 2]
        assert _curve(a) == _curve(b)
    assert not (tmp_path / "out" / "checkpoints").exists()

    kill_after_first_checkpoint(monkeypatch, lambda: run_seeds(cfgs, tmp_path / "again", log=lambda m: None))
    messages = []
    records = run_seeds(cfgs[:2], tmp_path / "again", log=messages.append)  # seeds 0 and 1 only
    assert all(r.status == "complete" and "resumed_from_step" not in r.train_info for r in records)
    assert any("holds seeds [0, 1, 2] trained together; this run trains seeds [0, 1]" in m for m in messages)
    assert not list((tmp_path / "again" / "checkpoints").glob("*seeds0-1-2.pt"))
