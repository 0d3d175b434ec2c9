import json

from bench.toy import ToyConfig, run_toy, success_actions


def test_sft_converges_to_two_thirds_and_iw_sft_to_the_good_arm(tmp_path):
    result = run_toy(ToyConfig(), tmp_path)
    assert abs(result["sft"]["p_right"] - 2 / 3) < 0.02
    assert abs(result["sft"]["expected_reward"] - 5 / 6) < 0.01
    assert result["iw_sft"]["p_right"] > 0.95
    assert json.loads((tmp_path / "toy_bandit.json").read_text())["iw_sft"] == result["iw_sft"]
    assert (tmp_path / "toy_bandit.png").stat().st_size > 0 and (tmp_path / "toy_bandit.pdf").stat().st_size > 0


def test_success_data_has_right_twice_as_often_as_left():
    actions = success_actions(40_000, seed=1)
    assert abs(actions.mean() - 2 / 3) < 0.01
