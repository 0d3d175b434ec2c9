"""--logger csv / tensorboard / wandb: the logged values are the record's, and a resumed run continues the same
logged run without logging a step twice. W&B runs offline (WANDB_MODE=offline), read back from its own files."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from conftest import kill_after_first_checkpoint

from bench.loggers import read_csv_log
from bench.run import record_path, resolve_config, run

FAST = {"steps": 200, "eval_every": 100, "eval_episodes": 2, "final_eval_episodes": 3, "batch_size": 64}


@pytest.fixture
def wandb_offline(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_PROJECT", "bench-test")


def _cfg(env, **over):
    return resolve_config(env, "bc", 0, {**FAST, **over})


def tensorboard_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def wandb_records(out: Path) -> list[tuple[str, str, object]]:
    """(record type, run id, record) of every offline W&B run under ``out``, parsed from its .wandb files (W&B's
    LevelDB-style log: 7-byte header, 32 KiB blocks, records of (crc, length, type) chunks holding protobufs)."""
    from wandb.proto import wandb_internal_pb2 as pb

    found = []
    for path in sorted(out.glob("wandb/offline-run-*/run-*.wandb")):
        data, pos, buf, run_id = path.read_bytes(), 7, b"", None
        while pos + 7 <= len(data):
            if 32768 - pos % 32768 < 7:
                pos += 32768 - pos % 32768
                continue
            _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
            chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
            if kind in (2, 3):
                buf = (b"" if kind == 2 else buf) + chunk
                continue
            if kind not in (1, 4):
                continue
            rec = pb.Record()
            rec.ParseFromString(buf + chunk if kind == 4 else chunk)
            kind_name = rec.WhichOneof("record_type")
            if kind_name == "run":
                run_id = rec.run.run_id
            found.append((kind_name, run_id, rec))
    return found


def _items(items) -> dict:
    return {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in items}


def wandb_history(out: Path) -> list[tuple[str, dict]]:
    return [(run_id, _items(rec.history.item)) for kind, run_id, rec in wandb_records(out) if kind == "history"]


def test_tensorboard_and_csv_hold_the_records_curve(hopper_minari_dataset, tmp_path):
    cfg = _cfg(f"minari:{hopper_minari_dataset[0]}", loggers=["tensorboard", "csv"])
    rec = run(cfg, tmp_path, log=lambda m: None)
    name = record_path(cfg, tmp_path).stem
    tb = tensorboard_scalars(tmp_path / "tb" / name)
    logged = read_csv_log(tmp_path / "csv" / f"{name}.csv")
    for key in ("loss", "normalized_mean", "return_mean"):
        expected = [(p["step"], p[key]) for p in rec.curve]
        assert [s for s, _ in tb[key]] == [s for s, _ in expected] == [s for s, _ in logged[key]] == [100, 200]
        assert [v for _, v in tb[key]] == pytest.approx([v for _, v in expected], rel=1e-6)  # float32 in TB
        assert [v for _, v in logged[key]] == [v for _, v in expected]
    assert "steps_per_s" in logged
    final = [line for line in (tmp_path / "csv" / f"{name}.csv").read_text().splitlines() if line.startswith("final")]
    assert f"final,normalized_mean,{rec.final['normalized_mean']}" in final
    assert cfg.hashed_part() == _cfg(f"minari:{hopper_minari_dataset[0]}").hashed_part()  # loggers: not hashed


def test_log_every_gives_the_loggers_statistics_between_evaluations(hopper_minari_dataset, tmp_path):
    cfg = _cfg(f"minari:{hopper_minari_dataset[0]}", loggers=["csv"], log_every=25)
    rec = run(cfg, tmp_path, log=lambda m: None)
    logged = read_csv_log(tmp_path / "csv" / f"{record_path(cfg, tmp_path).stem}.csv")
    assert [s for s, _ in logged["loss"]] == list(range(25, 201, 25))
    assert [s for s, _ in logged["normalized_mean"]] == [100, 200] == [p["step"] for p in rec.curve]


def test_wandb_offline_run_holds_the_records_values_grouped_by_cell(hopper_minari_dataset, tmp_path, wandb_offline):
    cfg = _cfg(f"minari:{hopper_minari_dataset[0]}", loggers=["wandb"])
    rec = run(cfg, tmp_path, log=lambda m: None)
    rows = wandb_history(tmp_path)
    assert [r["_step"] for _, r in rows] == [100, 200]
    assert [r["loss"] for _, r in rows] == [p["loss"] for p in rec.curve]
    assert [r["normalized_mean"] for _, r in rows] == [p["normalized_mean"] for p in rec.curve]
    records = wandb_records(tmp_path)
    (run_record,) = [rec.run for kind, _, rec in records if kind == "run"]
    assert run_record.run_group == f"{cfg.env}/bc/{rec.config_hash}" and run_record.display_name == rec.filename[:-5]
    summary = {k: v for kind, _, r in records if kind == "summary" for k, v in _items(r.summary.update).items()}
    assert summary["final/normalized_mean"] == pytest.approx(rec.final["normalized_mean"])


def test_a_killed_and_resumed_run_logs_to_the_same_run_without_duplicated_steps(hopper_minari_dataset, tmp_path,
                                                                              monkeypatch, wandb_offline):
    cfg = _cfg(f"minari:{hopper_minari_dataset[0]}", steps=300, loggers=["csv", "tensorboard", "wandb"])
    reference = run(cfg, tmp_path / "ref", log=lambda m: None)
    out = tmp_path / "out"
    kill_after_first_checkpoint(monkeypatch, lambda: run(cfg, out, log=lambda m: None),
                                when=lambda checkpoint: True)
    resumed = run(cfg, out, log=lambda m: None)
    assert [p["loss"] for p in resumed.curve] == [p["loss"] for p in reference.curve]
    name = record_path(cfg, out).stem
    steps = [100, 200, 300]
    assert [s for s, _ in read_csv_log(out / "csv" / f"{name}.csv")["loss"]] == steps
    assert [s for s, _ in tensorboard_scalars(out / "tb" / name)["loss"]] == steps
    rows = wandb_history(out)
    assert sorted(r["_step"] for _, r in rows) == steps  # two offline sessions, each step once
    assert len({run_id for run_id, _ in rows}) == 1  # the same W&B run
    assert [r["loss"] for _, r in sorted(rows, key=lambda x: x[1]["_step"])] == [p["loss"] for p in reference.curve]


def test_an_unknown_logger_is_refused_before_any_record(hopper_minari_dataset):
    with pytest.raises(ValueError, match="unknown logger mlflow; choose from csv, tensorboard, wandb"):
        _cfg(f"minari:{hopper_minari_dataset[0]}", loggers=["mlflow"])


def test_bench_report_draws_training_curves_from_the_csv_logs(hopper_minari_dataset, tmp_path):
    from bench.reports.report import build_report

    for seed in (0, 1):
        cfg = resolve_config(f"minari:{hopper_minari_dataset[0]}", "bc", seed,
                             {**FAST, "loggers": ["csv"], "log_every": 20})
        run(cfg, tmp_path / "res", log=lambda m: None)
    written = build_report([tmp_path / "res"], tmp_path / "rep", n_resamples=100)
    assert "training_loss.png" in written["figures"] and (tmp_path / "rep" / "training_loss.pdf").stat().st_size
    assert "- [training_loss.png](training_loss.png)" in (tmp_path / "rep" / "report.md").read_text()


def _in_a_terminal(cmd: list[str]) -> str:
    """Run ``cmd`` with a pseudo-terminal for its output; everything it wrote."""
    import os
    import pty
    import subprocess

    leader, follower = pty.openpty()
    proc = subprocess.Popen(cmd, stdin=follower, stdout=follower, stderr=follower, close_fds=True)
    os.close(follower)
    seen = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal closed: the process is done
            break
        if not chunk:
            break
        seen += chunk
    assert proc.wait(timeout=300) == 0
    return seen.decode(errors="replace")


def test_a_terminal_gets_a_live_bar_and_a_pipe_gets_plain_lines(tmp_path):
    import subprocess
    import sys

    cmd = [str(Path(sys.executable).parent / "bench"), "run", "--env", "hopper-mini-replay", "--algo", "bc",
           "--set", "steps=300", "--set", "eval_every=150", "--set", "final_eval_episodes=2"]
    piped = subprocess.run([*cmd, "--out", str(tmp_path / "piped")], capture_output=True, text=True, timeout=300)
    assert piped.returncode == 0 and "\x1b" not in piped.stderr and "steps/s" in piped.stderr
    text = _in_a_terminal([*cmd, "--out", str(tmp_path / "tty")])
    assert "\x1b" in text and "300/300" in text and "score" in text  # the live bar, redrawn in place
    assert "final: return" in text  # and the log lines above it


def test_a_sweep_in_a_terminal_shows_the_grid_and_each_running_run(tmp_path):
    import sys

    text = _in_a_terminal([str(Path(sys.executable).parent / "bench"), "sweep", "--envs", "hopper-mini-replay",
                           "--algos", "bc,bc_10", "--seeds", "1", "--workers", "2", "--set", "steps=300",
                           "--set", "eval_every=150", "--set", "final_eval_episodes=2", "--out", str(tmp_path)])
    assert "sweep (runs)" in text and "2/2" in text  # the grid's bar, finished
    assert "hopper-mini-replay bc_10 seed 0" in text and "300/300" in text  # a bar per run, from the workers
    assert "sweep: 2 done" in text
