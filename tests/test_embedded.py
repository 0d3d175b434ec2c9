"""The dataset shipped inside the package: present, small, aligned, and with a wide range of returns."""

import json

import numpy as np

from bench.datasets.sources import EMBEDDED_DIR, load_dataset
from bench.specs import get_spec


def test_embedded_dataset_is_small_and_spans_a_wide_range_of_returns():
    folder = EMBEDDED_DIR / "hopper-mini-replay"
    size = sum(p.stat().st_size for p in folder.iterdir())
    assert size < 10 * 2**20
    traj = load_dataset(get_spec("hopper-mini-replay"))
    returns = traj.episode_returns
    assert returns.min() < 50 and returns.max() > 1000  # from falling at once to well past 1000
    meta = json.loads((folder / "metadata.json").read_text())
    assert meta["env_id"] == "Hopper-v5" and meta["ref_max_score"] > meta["ref_min_score"]
    assert meta["minari_metadata"]["bench"]  # the exact generating command is kept
    inner = ~(traj.terminals | traj.timeouts)
    np.testing.assert_array_equal(traj.next_observations[:-1][inner[:-1]], traj.observations[1:][inner[:-1]])
