import json

import numpy as np
import pytest
from conftest import kill_after_first_checkpoint

from bench.algorithms import TrainingError
from bench.results.store import read_record
from bench.run import resolve_config, run

FAST = {"steps": 200, "eval_every": 100, "eval_episodes": 2, "final_eval_episodes": 3, "batch_size": 64}


@pytest.fixture
def fast_cfg(hopper_minari_dataset):
    dataset_id, _ = hopper_minari_dataset
    return resolve_config(f"minari:{dataset_id}", "bc", seed=1, overrides=FAST)


def test_run_writes_a_complete_record(fast_cfg, tmp_path):
    rec = run(fast_cfg, tmp_path / "out", log=lambda m: None)
    on_disk = read_record(tmp_path / "out" / rec.filename)
    assert on_disk.status == "complete" and on_disk.error is None
    assert isinstance(on_disk.final["normalized_mean"], float) and len(on_disk.final["returns"]) == 3
    assert [p["step"] for p in on_disk.curve] == [100, 200]
    assert on_disk.dataset["sha256"] and on_disk.dataset["eval_env"] == "Hopper-v5"
    assert on_disk.config["algo_config"]["steps"] == 200 and on_disk.versions["d3rlpy"] == "2.8.1"
    assert on_disk.train_info["curation"]["selection"] == "all"
    assert not (tmp_path / "out" / "checkpoints").exists()


def test_same_seed_same_numbers_other_seed_other_numbers(fast_cfg, tmp_path):
    a = run(fast_cfg, tmp_path / "a", log=lambda m: None)
    b = run(fast_cfg, tmp_path / "b", log=lambda m: None)
    assert [p["loss"] for p in a.curve] == [p["loss"] for p in b.curve]
    assert a.final["returns"] == b.final["returns"]
    fast_cfg.seed = 2
    c = run(fast_cfg, tmp_path / "c", log=lambda m: None)
    assert [p["loss"] for p in a.curve] != [p["loss"] for p in c.curve]


def test_a_complete_run_is_skipped(fast_cfg, tmp_path):
    run(fast_cfg, tmp_path, log=lambda m: None)
    messages = []
    run(fast_cfg, tmp_path, log=messages.append)
    assert any("skipping" in m for m in messages)


def test_an_interrupted_run_resumes_to_the_same_result(fast_cfg, tmp_path, monkeypatch):
    reference = run(fast_cfg, tmp_path / "ref", log=lambda m: None)
    kill_after_first_checkpoint(monkeypatch, lambda: run(fast_cfg, tmp_path / "out", log=lambda m: None))
    path = tmp_path / "out" / reference.filename
    assert read_record(path).status == "interrupted"
    assert (tmp_path / "out" / "checkpoints" / (path.stem + ".pt")).exists()
    messages = []
    resumed = run(fast_cfg, tmp_path / "out", log=messages.append)
    assert any("resumed from" in m and "step 100" in m for m in messages)
    assert resumed.status == "complete"
    assert [p["loss"] for p in resumed.curve] == [p["loss"] for p in reference.curve]
    assert resumed.final["returns"] == reference.final["returns"]


def test_set_overrides_and_their_errors(hopper_minari_dataset):
    dataset_id, _ = hopper_minari_dataset
    cfg = resolve_config(f"minari:{dataset_id}", "bc", overrides={"learning_rate": 1e-4, "eval_every": 7.0})
    assert cfg.algo_config["learning_rate"] == 1e-4 and cfg.eval_every == 7
    with pytest.raises(KeyError, match="learning_rate"):
        resolve_config(f"minari:{dataset_id}", "bc", overrides={"lr": 1e-4})
    with pytest.raises(KeyError, match="unknown algorithm 'bcc'.*Did you mean bc"):
        resolve_config(f"minari:{dataset_id}", "bcc")
    with pytest.raises(KeyError, match="unknown dataset 'hopper-medium-replayy'.*hopper-medium-replay"):
        resolve_config("hopper-medium-replayy", "bc")
    # a bad value fails while resolving, before a run writes anything
    with pytest.raises(ValueError, match="precision='float16' is not one of its choices: float32, tf32, bfloat16"):
        resolve_config(f"minari:{dataset_id}", "bc", overrides={"precision": "float16"})
    with pytest.raises(ValueError, match="bc_batch_unit='episodes' is not one of its choices: transitions, traj"):
        resolve_config(f"minari:{dataset_id}", "iw_sft_q", overrides={"bc_batch_unit": "episodes"})


def test_nan_loss_stops_with_advice_and_keeps_the_record(fast_cfg, tmp_path):
    fast_cfg.algo_config["learning_rate"] = 1e30
    with pytest.raises(TrainingError, match=r"loss = nan over steps 1-100; lower learning_rate \(e.g. --set "
                                            r"learning_rate=1e\+29\). A changed config is a new run"):
        run(fast_cfg, tmp_path, log=lambda m: None)
    (path,) = tmp_path.glob("*.json")
    rec = json.loads(path.read_text())
    assert rec["status"] == "diverged" and "DivergedError" in rec["error"]


def test_preset_for_the_embedded_dataset():
    cfg = resolve_config("hopper-mini-replay", "bc")
    assert cfg.algo_config["steps"] == 5000 and cfg.algo_config["learning_rate"] == 1e-3
    assert np.isclose(cfg.final_eval_episodes, 100)


TINY_SFT = {"steps": 20, "eval_every": 20, "eval_episodes": 1, "final_eval_episodes": 1, "batch_size": 4,
            "warmup_steps": 2, "bc_steps": 20, "bc_batch_size": 4}


def test_run_loads_the_reference_dataset_records_its_fingerprint_and_trains_pi_ref_on_it(hopper_minari_dataset,
                                                                                         tmp_path):
    from test_sources import write_d4rl_file

    from bench.datasets.sources import load_dataset
    from bench.results.store import config_hash
    from bench.specs import get_spec

    dataset_id, episodes = hopper_minari_dataset
    ref_file = tmp_path / "my_hopper_medium_replay.hdf5"
    write_d4rl_file(ref_file, episodes[:12])  # other data than the fine-tuning set: its first 12 episodes

    expected = load_dataset(get_spec("hopper-medium-replay"), ref_file).fingerprint()
    overrides = {**TINY_SFT, "reference_dataset": "hopper-medium-replay"}
    cfg = resolve_config(f"minari:{dataset_id}", "iw_sft_q", 0, {**overrides, "reference_data_path": str(ref_file)})
    rec = run(cfg, tmp_path / "out", log=lambda m: None)
    assert rec.status == "complete"
    assert rec.dataset["reference"]["name"] == "hopper-medium-replay"
    assert rec.dataset["reference"]["sha256"] == expected != rec.dataset["sha256"]
    assert rec.dataset["reference"]["episodes"] == 12 and rec.dataset["reference"]["file"]["source"] == str(ref_file)
    assert rec.train_info["reference"]["dataset"] == get_spec("hopper-medium-replay").name
    # the reference data's location is not part of the experiment: the same config hash as without it
    without = resolve_config(f"minari:{dataset_id}", "iw_sft_q", 0, overrides)
    assert rec.config_hash == config_hash(without.hashed_part())

    # without the file and offline, the reference data cannot be found: an input error, no record left behind
    with pytest.raises(Exception, match="hopper-medium-replay"):
        run(resolve_config(f"minari:{dataset_id}", "iw_sft_q", 1, overrides), tmp_path / "other", log=lambda m: None)
    assert not list((tmp_path / "other").glob("*.json"))
    with pytest.raises(ValueError, match="trains on no reference dataset"):
        run(resolve_config(f"minari:{dataset_id}", "bc", 0, {**FAST, "reference_data_path": str(ref_file)}),
            tmp_path / "bc", log=lambda m: None)
