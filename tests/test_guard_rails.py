"""Guard rails: bad configs fail before any record, diverged runs are never "complete", one run per record at a
time, a full disk loses nothing, bad data names the file, the array and the fix."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import marked_episodes
from test_checkpoint import fill_disk_after
from test_sources import write_d4rl_file

from bench.algorithms.context import DivergedError
from bench.configs.domains import ConfigError
from bench.datasets.trajectories import DatasetError
from bench.run import _divergence_fix, resolve_config, run

FAST = {"steps": 200, "eval_every": 100, "eval_episodes": 2, "final_eval_episodes": 3, "batch_size": 64}
TINY_SFT = {"steps": 40, "eval_every": 20, "eval_episodes": 1, "final_eval_episodes": 2, "batch_size": 8,
            "warmup_steps": 5, "bc_steps": 30, "bc_batch_size": 8}


@pytest.fixture
def env(hopper_minari_dataset):
    return f"minari:{hopper_minari_dataset[0]}"


@pytest.mark.parametrize("algo, overrides, message", [
    ("bc", {"steps": -5}, r"steps=-5 is outside its domain: steps must be >= 1 \(given as --set steps=-5\)"),
    ("bc", {"steps": 0}, r"steps must be >= 1"),
    ("bc", {"batch_size": 0}, r"batch_size=0 is outside its domain: batch_size must be >= 1"),
    ("bc", {"eval_every": 0}, r"eval_every must be >= 1 \(given as --set eval_every=0\)"),
    ("bc", {"final_eval_episodes": 0}, r"final_eval_episodes must be >= 1"),
    ("bc", {"learning_rate": -1e-3}, r"learning_rate must be > 0"),
    ("iw_sft_q", {"percentiles": "abc"}, r"percentiles='abc' is not a list of numbers"),
    ("iw_sft_q", {"percentiles": [90, 101]}, r"every value of percentiles must be >= 0 and <= 100"),
    ("iw_sft_q", {"ema": 1.0}, r"ema must be >= 0 and < 1"),
    ("iw_sft_q", {"temperature": 0.0}, r"temperature must be > 0"),
    ("td3_bc", {"tau": 0.0}, r"tau must be > 0 and <= 1"),
    ("iql", {"expectile": 1.0}, r"expectile must be > 0 and < 1"),
])
def test_a_value_outside_its_domain_fails_before_any_record(env, tmp_path, algo, overrides, message):
    with pytest.raises(ConfigError, match=message):
        resolve_config(env, algo, 0, overrides)


def test_a_bad_preset_value_names_the_preset_file(env, monkeypatch, tmp_path):
    from bench import configs

    (tmp_path / "bc.yaml").write_text("default:\n  algo: {learning_rate: 0}\n")
    monkeypatch.setattr(configs, "PRESET_DIR", tmp_path)
    monkeypatch.setattr("bench.run.PRESET_DIR", tmp_path)
    with pytest.raises(ConfigError, match=r"learning_rate must be > 0 \(from the preset .*bc.yaml\)"):
        resolve_config(env, "bc", 0)


def test_the_cli_shows_a_bad_value_without_a_traceback(tmp_path):
    proc = subprocess.run([str(Path(sys.executable).parent / "bench"), "run", "--env", "hopper-mini-replay",
                           "--algo", "iw_sft_q", "--set", "percentiles=abc", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "percentiles='abc' is not a list of numbers" in proc.stderr
    assert not list(tmp_path.glob("*.json"))


def _record(out: Path) -> dict:
    (path,) = out.glob("*.json")
    return json.loads(path.read_text())


def test_an_exploding_bc_loss_is_diverged_not_complete_and_never_counted(env, tmp_path):
    cfg = resolve_config(env, "bc", 0, {**FAST, "learning_rate": 1e6})
    with pytest.raises(DivergedError, match=r"the loss is [\d.e+]+ over steps 1-100, above .* divergence_factor "
                                            r"100 .* lower learning_rate \(e.g. --set learning_rate=100000\)"):
        run(cfg, tmp_path / "out", log=lambda m: None)
    assert _record(tmp_path / "out")["status"] == "diverged"
    from bench.reports.report import build_report, collect_cells
    from bench.results.store import load_records

    run(resolve_config(env, "bc", 1, FAST), tmp_path / "out", log=lambda m: None)  # a sane run beside it
    (cell,) = collect_cells(load_records([tmp_path / "out"])[0]).values()
    assert len(cell.scores) == 1  # the diverged run is not counted
    build_report([tmp_path / "out"], tmp_path / "report")
    report_md = (tmp_path / "report" / "report.md").read_text()
    assert "status diverged: bench.algorithms.context.DivergedError: diverged at step 100" in report_md  # but listed


def test_collapsed_importance_weights_are_diverged(env, tmp_path):
    cfg = resolve_config(env, "iw_sft_q", 0, {**TINY_SFT, "learning_rate": 1e6})
    with pytest.raises(DivergedError, match=r"diverged at step \d+: the importance weights collapsed — ESS / batch "
                                            r"below min_ess_fraction 0.001 at every step of steps \d+-\d+ .*lower "
                                            r"learning_rate / bc_learning_rate"):
        run(cfg, tmp_path / "out", log=lambda m: None)
    assert _record(tmp_path / "out")["status"] == "diverged"


def test_the_advice_names_each_algorithms_own_fields(env):
    assert _divergence_fix(resolve_config(env, "td3_bc")) == (
        "lower actor_learning_rate / critic_learning_rate (e.g. --set actor_learning_rate=3e-05 "
        "--set critic_learning_rate=3e-05)")
    assert "temp_learning_rate" in _divergence_fix(resolve_config(env, "cql"))
    assert "bc_learning_rate" in _divergence_fix(resolve_config(env, "iw_sft_q"))


def test_two_identical_runs_started_together_leave_one_complete_record(tmp_path):
    bench = str(Path(sys.executable).parent / "bench")
    cmd = [bench, "run", "--env", "hopper-mini-replay", "--algo", "bc", "--set", "steps=1500",
           "--set", "eval_every=500", "--set", "final_eval_episodes=5", "--out", str(tmp_path / "out")]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outcomes = [(p.wait(timeout=600), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in outcomes)
    assert all("Traceback" not in err for _, err in outcomes)
    records = list((tmp_path / "out").glob("*.json"))
    assert len(records) == 1 and json.loads(records[0].read_text())["status"] == "complete"
    if codes == [0, 2]:  # they overlapped: the second said who runs it and left
        loser = next(err for code, err in outcomes if code == 2)
        assert "is being run right now by process" in loser
    else:  # the second started after the first had finished: it skipped the complete record
        assert codes == [0, 0] and any("skipping" in err for _, err in outcomes)
    assert not list((tmp_path / "out").rglob("*.tmp"))


def test_a_held_record_is_refused_at_once(env, tmp_path):
    import fcntl

    from bench.run import RunLocked, record_path

    cfg = resolve_config(env, "bc", 0, FAST)
    lock = record_path(cfg, tmp_path).with_suffix(".lock")
    with open(lock, "w") as f:
        f.write("process 4242 on elsewhere")
        f.flush()
        fcntl.flock(f, fcntl.LOCK_EX)
        with pytest.raises(RunLocked, match="being run right now by process 4242 on elsewhere"):
            run(cfg, tmp_path, log=lambda m: None)
    assert not list(tmp_path.glob("*.json"))


def _small_disk(tmp_path):
    """A tmpfs folder where this machine lets the test mount one (None otherwise) and a function to resize it."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mnt)], capture_output=True).returncode:
        return None, None
    return mnt, lambda size: subprocess.run(["mount", "-o", f"remount,size={size}", str(mnt)], check=True)


def test_a_full_disk_leaves_no_temporary_file_says_so_and_the_same_command_resumes(env, tmp_path, monkeypatch):
    cfg = resolve_config(env, "bc", 0, {**FAST, "steps": 300})
    mnt, resize = _small_disk(tmp_path)
    out = (mnt or tmp_path) / "out"
    try:
        reference = run(cfg, tmp_path / "reference", log=lambda m: None)
        if mnt is not None:  # room for the record and one checkpoint (~1.6 MB), not for a second beside it
            resize("2500k")
        else:
            fill_disk_after(monkeypatch, 1)  # no tmpfs here: the second checkpoint write fails with ENOSPC
        with pytest.raises(OSError, match=r"no space left in .*checkpoints.* it needs [\d,]+ bytes"):
            run(cfg, out, log=lambda m: None)
        rec = _record(out)
        assert rec["status"] == "failed" and rec["error"].startswith("disk full: ")
        assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
        if mnt is not None:
            resize("64m")  # space freed
        else:
            monkeypatch.undo()
        messages = []
        resumed = run(cfg, out, log=messages.append)
        assert any("resumed from" in m and "step 100" in m for m in messages)
        assert resumed.status == "complete"
        assert [p["loss"] for p in resumed.curve] == [p["loss"] for p in reference.curve]
    finally:
        if mnt is not None:
            subprocess.run(["umount", str(mnt)], check=False)


def _bad_hdf5(path: Path, kind: str) -> None:
    write_d4rl_file(path, marked_episodes([5, 4], obs_dim=3, act_dim=2))
    with h5py.File(path, "r+") as f:
        if kind == "lengths":
            del f["actions"]
            f["actions"] = np.zeros((5, 2), np.float32)
        elif kind == "empty":
            for key in list(f):
                shape = f[key].shape
                del f[key]
                f[key] = np.zeros((0, *shape[1:]), np.float32)
        else:
            obs = f["observations"][:]
            obs[3, 1] = np.nan
            f["observations"][...] = obs


@pytest.mark.parametrize("kind, message", [
    ("lengths", r"array 'actions' has 5 rows but 'rewards' has 9"),
    ("empty", r"holds no transitions \(its 'rewards' array has 0 rows\)"),
    ("nonfinite", r"array 'observations' has 1 non-finite values \(the first in row 3\)"),
])
def test_bad_hdf5_names_the_file_the_array_and_the_fix_and_info_shows_no_traceback(tmp_path, kind, message):
    from typer.testing import CliRunner

    from bench.cli import app
    from bench.datasets.sources import load_dataset
    from bench.specs import get_spec

    path = tmp_path / "bad.hdf5"
    _bad_hdf5(path, kind)
    with pytest.raises(DatasetError, match=message) as e:
        load_dataset(get_spec("hopper-medium-replay"), path)
    assert str(path) in str(e.value) and "the file given with --data" in str(e.value)  # not "delete the cache"
    result = CliRunner().invoke(app, ["datasets", "info", "hopper-medium-replay", "--data", str(path)])
    assert result.exit_code == 2 and result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output


def test_a_damaged_minari_metadata_names_the_folder_and_the_fix(hopper_minari_dataset, tmp_path):
    from typer.testing import CliRunner

    from bench.cli import app
    from bench.datasets.sources import load_dataset, minari_root
    from bench.specs import get_spec

    dataset_id = hopper_minari_dataset[0]
    meta = minari_root() / dataset_id / "data" / "metadata.json"
    meta.write_text(meta.read_text()[:40])  # cut short
    with pytest.raises(DatasetError, match=r"cannot be read \(JSONDecodeError.*metadata.json or episode file is "
                                           r"damaged: download it again"):
        load_dataset(get_spec(f"minari:{dataset_id}"))
    result = CliRunner().invoke(app, ["datasets", "info", f"minari:{dataset_id}"])
    assert result.exit_code == 2 and "damaged" in result.output and "Traceback" not in result.output


def test_a_diverging_seed_of_a_batched_group_stops_alone_and_the_others_train_on_their_own(env, tmp_path):
    from bench.run import run_seeds

    cfgs = [resolve_config(env, "bc", s, {**FAST, "learning_rate": 1e6}) for s in (0, 1, 2)]
    messages = []
    with pytest.raises(DivergedError) as e:
        run_seeds(cfgs, tmp_path / "out", log=messages.append)
    assert e.value.seed == 0
    assert any("seed 0 diverged; training seeds [1, 2] again without it" in m for m in messages)
    statuses = sorted(json.loads(p.read_text())["status"] for p in (tmp_path / "out").glob("*.json"))
    assert statuses == ["diverged"] * 3  # each trained on its own, and each diverged (no record says "complete")
