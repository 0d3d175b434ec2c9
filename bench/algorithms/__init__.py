"""Algorithm registry: name users type -> Algorithm class, built from the classes themselves.

A concrete :class:`Algorithm` subclass with a ``name`` registers itself when its module is imported (see
``Algorithm.__init_subclass__``); this package imports the modules that hold them. Adding an algorithm is its class
(name, display name, table order, family, summary, config) and its preset (``bench/configs/<name>.yaml``).
"""

from __future__ import annotations

import difflib

import bench.algorithms.baselines  # noqa: F401  (registers the d3rlpy algorithms)
import bench.algorithms.bc  # noqa: F401  (registers bc, bc_10, bc_5)
import bench.algorithms.sft  # noqa: F401  (registers the SFT family)
from bench.algorithms.base import Algorithm
from bench.algorithms.context import RunContext, SeedGroup, TrainingError

ALGORITHMS: dict[str, type[Algorithm]] = {cls.name: cls for cls in Algorithm.registered()}

# How tables print each name (DESIGN.md "Names users type").
DISPLAY_NAMES: dict[str, str] = {name: cls.display_name for name, cls in ALGORITHMS.items()}


def get_algorithm(name: str) -> type[Algorithm]:
    if name in ALGORITHMS:
        return ALGORITHMS[name]
    close = difflib.get_close_matches(name, ALGORITHMS, n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise KeyError(f"unknown algorithm {name!r}.{hint} Available: {names_by_family()} "
                   "(`bench algorithms` describes each).")


def names_by_family() -> str:
    """'bc, bc_10, ... (native); awac, ... (d3rlpy)': the registry as one line for help texts and errors."""
    groups = {family: [c.name for c in ALGORITHMS.values() if c.family == family] for family in ("native", "d3rlpy")}
    return "; ".join(f"{', '.join(names)} ({family})" for family, names in groups.items() if names)


def algorithms_markdown() -> str:
    """The README's algorithm table, from the registry (a test keeps the README's copy current)."""
    rows = [f"| `{c.name}` | {c.display_name} | {c.family} | {c.summary} |" for c in ALGORITHMS.values()]
    return "\n".join(["| `--algo` | tables | family | what it trains |", "|---|---|---|---|", *rows])


__all__ = ["ALGORITHMS", "Algorithm", "DISPLAY_NAMES", "RunContext", "SeedGroup", "TrainingError",
           "algorithms_markdown", "get_algorithm", "names_by_family"]
