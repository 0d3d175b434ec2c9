"""Every named option declares its choices and every constraint between fields is checked when a config is resolved:
before any record, before any training (the reference BC included)."""

from __future__ import annotations

import dataclasses

import pytest

from bench.algorithms import ALGORITHMS
from bench.configs.domains import ConfigError
from bench.run import resolve_config

ENV = "hopper-mini-replay"
NOT_A_CHOICE = {"reference_dataset"}  # a dataset name: checked against the registry instead


def _choice_fields():
    for name, cls in ALGORITHMS.items():
        for f in dataclasses.fields(cls.Config):
            if "choices" in f.metadata:
                yield name, f.name, f.metadata["choices"]


def test_every_text_field_of_every_algorithm_declares_its_choices():
    for name, cls in ALGORITHMS.items():
        for f in dataclasses.fields(cls.Config):
            if f.type in ("str", str) and f.name not in NOT_A_CHOICE:
                assert "choices" in f.metadata, f"{name}.{f.name} is a text field without declared choices"
    fields = {(a, f) for a, f, _ in _choice_fields()}
    for expected in [("iw_sft_q", "weight_fn"), ("sft", "loss_normalization"), ("sft_q", "ties"),
                     ("iw_sft", "bc_batch_unit"), ("bc", "batch_unit"), ("td3_bc", "observation_scaling"),
                     ("iql", "reward_scaling"), ("bc_10", "precision"), ("sft", "bc_precision")]:
        assert expected in fields


@pytest.mark.parametrize("algo, field, choices", list(_choice_fields()))
def test_a_value_outside_the_choices_fails_at_resolve_time_naming_field_value_and_choices(algo, field, choices,
                                                                                          tmp_path):
    with pytest.raises(ConfigError) as e:
        resolve_config(ENV, algo, 0, {field: "softmax"})
    assert e.value.field == field
    assert f"{field}='softmax' is not one of its choices: {', '.join(choices)} (given as --set {field}='softmax')" \
        in str(e.value)
    assert not list(tmp_path.iterdir())  # nothing written, nothing trained


@pytest.mark.parametrize("overrides, message", [
    ({"ratio_min": 2.0, "ratio_max": 1.5}, "ratio_min=2.0 and ratio_max=1.5: ratio_min must be < ratio_max"),
    ({"ratio_min": 1.5, "ratio_max": 1.5}, "ratio_min=1.5 and ratio_max=1.5: ratio_min must be < ratio_max"),
    ({"min_weight": 5.0, "max_weight": 2.0}, "min_weight=5.0 and max_weight=2.0: min_weight must be <= max_weight"),
    ({"reference_dataset": "kitchen-partail"}, "reference_dataset='kitchen-partail': unknown dataset"),
])
def test_constraints_between_fields_fail_at_resolve_time(overrides, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        resolve_config(ENV, "iw_sft_q", 0, overrides)


def test_a_negative_seed_fails_at_resolve_time():
    with pytest.raises(ConfigError, match=r"seed=-2 is outside its domain: seed must be >= 0"):
        resolve_config(ENV, "bc", -2)


def test_every_exception_the_suite_raises_pickles():
    """A Ray task's error travels to the driver pickled: each keeps its message and fields."""
    import pickle

    from bench.algorithms.context import DivergedError, TrainingError
    from bench.datasets.trajectories import DatasetError
    from bench.run import RunLocked

    for error in (DivergedError("diverged at step 3", seed=4), ConfigError("ema", "ema=2 is outside"),
                  TrainingError("stop"), DatasetError("bad file"), RunLocked("held")):
        again = pickle.loads(pickle.dumps(error))
        assert type(again) is type(error) and str(again) == str(error)
        assert getattr(again, "seed", None) == getattr(error, "seed", None)
        assert getattr(again, "field", None) == getattr(error, "field", None)
