"""Algorithm registry: name users type -> Algorithm class. Adding an algorithm is one entry here."""

from __future__ import annotations

import difflib

from bench.algorithms.base import Algorithm, RunContext, TrainingError
from bench.algorithms.baselines import AWAC, CQL, IQL, TD3BC
from bench.algorithms.bc import BC, BC5, BC10
from bench.algorithms.sft import IWSFT, IWSFTQ, SFT, SFTQ

ALGORITHMS: dict[str, type[Algorithm]] = {
    "bc": BC,
    "bc_10": BC10,
    "bc_5": BC5,
    "sft": SFT,
    "sft_q": SFTQ,
    "iw_sft": IWSFT,
    "iw_sft_q": IWSFTQ,
    "awac": AWAC,
    "td3_bc": TD3BC,
    "cql": CQL,
    "iql": IQL,
}

# How tables print each name (DESIGN.md "Names users type").
DISPLAY_NAMES = {"bc": "BC", "bc_10": "BC 10%", "bc_5": "BC 5%", "sft": "SFT", "sft_q": "SFT(Q)", "iw_sft": "iw-SFT",
                 "iw_sft_q": "iw-SFT(Q)", "awac": "AWAC", "td3_bc": "TD3+BC", "cql": "CQL", "iql": "IQL"}


def get_algorithm(name: str) -> type[Algorithm]:
    if name in ALGORITHMS:
        return ALGORITHMS[name]
    close = difflib.get_close_matches(name, ALGORITHMS, n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise KeyError(f"unknown algorithm {name!r}.{hint} Available: {', '.join(ALGORITHMS)}.")


__all__ = ["ALGORITHMS", "Algorithm", "DISPLAY_NAMES", "RunContext", "TrainingError", "get_algorithm"]
