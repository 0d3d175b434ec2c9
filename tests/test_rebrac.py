"""ReBRAC, the tenth algorithm: added as one class and one preset (the registry-wide tests train it through the
suite's loop and check the device sampler against d3rlpy's own update; see test_baselines.py)."""

import pytest
import torch

from bench.algorithms import get_algorithm
from bench.run import make_algorithm, resolve_config


@pytest.mark.parametrize("dataset,betas", [("hopper-medium-replay", (0.05, 0.5)), ("hopper-expert", (0.1, 0.001)),
                                           ("halfcheetah-medium-replay", (0.01, 0.001)),
                                           ("walker2d-medium-replay", (0.05, 0.01)),
                                           ("walker2d-expert", (0.01, 0.5)), ("halfcheetah-expert", (0.01, 0.01))])
def test_the_preset_has_the_papers_betas(dataset, betas):
    cfg = resolve_config(dataset, "rebrac").algo_config
    assert (cfg["actor_beta"], cfg["critic_beta"]) == betas
    assert cfg["batch_size"] == 1024 and cfg["hidden_units"] == [256] * 3 and cfg["actor_learning_rate"] == 1e-3


def test_layer_norm_in_the_critics_only_and_the_betas_reach_d3rlpy(hopper_minari_dataset):
    from d3rlpy.algos.utility import build_scalers_with_transition_picker

    from bench.algorithms.baselines import to_d3rlpy_dataset
    from bench.d3rlpy_import import import_d3rlpy
    from bench.datasets.curation import all_episodes
    from bench.datasets.trajectories import Trajectories

    d3rlpy = import_d3rlpy()
    traj = Trajectories.from_episodes(hopper_minari_dataset[1][:4])
    dataset = to_d3rlpy_dataset(traj, all_episodes(traj))
    cfg = resolve_config("hopper-medium-replay", "rebrac")
    algo = make_algorithm(cfg).config.d3rlpy_config(d3rlpy).create(device="cpu")
    build_scalers_with_transition_picker(algo, dataset)
    algo.build_with_dataset(dataset)
    assert type(algo).__name__ == "ReBRAC" and get_algorithm("rebrac").display_name == "ReBRAC"
    assert (algo.config.actor_beta, algo.config.critic_beta) == (0.05, 0.5)
    modules = algo.impl.modules

    def layer_norms(module):
        return sum(isinstance(m, torch.nn.LayerNorm) for m in module.modules())

    assert all(layer_norms(q) == 3 for q in modules.q_funcs) and layer_norms(modules.policy) == 0
    assert algo.config.observation_scaler is not None  # standardised observations
