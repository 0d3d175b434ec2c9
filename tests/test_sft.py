"""The SFT family end to end on a small real Hopper dataset: records, curation, weights, reference cache."""

import pytest
from conftest import kill_after_first_checkpoint

from bench.run import resolve_config, run

TINY = {"steps": 40, "eval_every": 20, "eval_episodes": 1, "final_eval_episodes": 2, "batch_size": 8,
        "warmup_steps": 5, "bc_steps": 30, "bc_batch_size": 8}


@pytest.fixture
def env_name(hopper_minari_dataset):
    return f"minari:{hopper_minari_dataset[0]}"


@pytest.mark.parametrize("algo", ["bc_10", "sft", "sft_q", "iw_sft", "iw_sft_q"])
def test_every_sft_family_algorithm_runs_and_records_its_curation(algo, env_name, tmp_path):
    overrides = {k: v for k, v in TINY.items() if algo != "bc_10" or not k.startswith(("bc_", "warmup"))}
    rec = run(resolve_config(env_name, algo, 0, overrides), tmp_path, log=lambda m: None)
    assert rec.status == "complete" and isinstance(rec.final["normalized_mean"], float)
    cur = rec.train_info["curation"]
    expected = [90.0] if algo in ("bc_10", "sft", "iw_sft") else [90.0, 95.0, 98.0]
    assert [b["percentile"] for b in cur["bins"]] == expected
    assert cur["episodes"] >= 3  # 30 episodes: the top 10% is 3 of them (more if tied)
    if algo.startswith("iw"):
        w = rec.train_info["weights"]
        assert w["function"] == "temperature" and len(w["per_window"]) == 2
        assert 0 < w["ess_fraction"] <= 1 and w["min"] <= w["mean"] <= w["max"]
    else:
        assert "weights" not in rec.train_info


def test_weights_start_at_one(env_name, tmp_path):
    cfg = resolve_config(env_name, "iw_sft_q", 0, {**TINY, "steps": 1, "eval_every": 1})
    rec = run(cfg, tmp_path, log=lambda m: None)
    window = rec.train_info["weights"]["per_window"][0]
    assert window["mean"] == window["min"] == window["max"] == 1.0  # theta = theta_q = pi_ref at step 0


def test_reference_policy_is_trained_once_and_keyed_by_its_config(env_name, tmp_path):
    a = run(resolve_config(env_name, "sft", 0, TINY), tmp_path, log=lambda m: None)
    b = run(resolve_config(env_name, "iw_sft_q", 0, TINY), tmp_path, log=lambda m: None)
    assert a.train_info["reference"]["cached"] is False and b.train_info["reference"]["cached"] is True
    assert a.train_info["reference"]["key"] == b.train_info["reference"]["key"]
    c = run(resolve_config(env_name, "sft", 0, {**TINY, "bc_steps": 31}), tmp_path, log=lambda m: None)
    d = run(resolve_config(env_name, "sft", 1, TINY), tmp_path, log=lambda m: None)
    assert c.train_info["reference"]["cached"] is False and d.train_info["reference"]["cached"] is False
    assert len({x.train_info["reference"]["key"] for x in (a, c, d)}) == 3


def test_a_fine_tuning_run_resumes_to_the_same_result(env_name, tmp_path, monkeypatch):
    cfg = resolve_config(env_name, "iw_sft_q", 0, TINY)
    reference = run(cfg, tmp_path / "ref", log=lambda m: None)
    # die after the first fine-tuning checkpoint (not the reference BC's)
    kill_after_first_checkpoint(monkeypatch, lambda: run(cfg, tmp_path / "out", log=lambda m: None),
                                when=lambda checkpoint: "q_policy" in checkpoint.components)
    resumed = run(cfg, tmp_path / "out", log=lambda m: None)
    assert [p["loss"] for p in resumed.curve] == [p["loss"] for p in reference.curve]
    assert resumed.final["returns"] == reference.final["returns"]
    assert resumed.train_info["weights"] == reference.train_info["weights"]
