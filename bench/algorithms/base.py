"""The one interface every algorithm implements, native or d3rlpy-backed.

An algorithm is a class with a config dataclass (``Config``) and two methods:
- ``curate(trajectories) -> Curated``: which episodes it trains on (BC: all; SFT: the top 10%; ...);
- ``fit(trajectories, curated, group) -> [Policy]``: train the seeds of ``group`` (a
  :class:`~bench.algorithms.context.SeedGroup`; one seed is a single run) with ``context.train``.
``run.py`` calls exactly these and never asks which kind of algorithm it runs; what ``run.py`` and ``sweep.py`` need to
know about an algorithm (its reference policy, its learning rates, its precision, its compute rate) it says itself.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

from bench.algorithms.context import SeedGroup
from bench.datasets.curation import Curated
from bench.datasets.trajectories import Trajectories
from bench.evaluation import Policy


class Algorithm(ABC):
    """An algorithm and what the suite says about it. A concrete subclass that sets ``name`` registers itself
    (``registered()``): the CLI's help, ``bench algorithms``, the unknown-name message, the report's columns and the
    README's list are all read from these class attributes, so adding an algorithm is its class and its preset."""

    name: ClassVar[str]  # what users type (--algo)
    Config: ClassVar[type]  # its config dataclass (fields = what --set and the presets may change)
    display_name: ClassVar[str]  # how tables print it ("iw-SFT(Q)")
    order: ClassVar[int]  # its column in tables: the paper's Table 2 order, baselines before the SFT family
    family: ClassVar[str]  # "native" (PyTorch, bench/algorithms) or "d3rlpy" (d3rlpy's update in our loop)
    summary: ClassVar[str]  # one line: what it trains on and how
    learning_rate_fields: ClassVar[tuple[str, ...]]  # its config's learning rates (a diverged run's advice names them)
    batches_seeds: ClassVar[bool] = False  # fit trains several seeds as one batched model (else one at a time)

    _registry: ClassVar[dict[str, type[Algorithm]]] = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "name" not in cls.__dict__:  # a shared base (D3rlpyAlgorithm): not an algorithm users can name
            return
        required = ("Config", "display_name", "order", "family", "summary", "learning_rate_fields")
        missing = [a for a in required if not hasattr(cls, a)]
        if missing:
            raise TypeError(f"algorithm {cls.__name__} ({cls.name!r}) must set {', '.join(missing)}")
        if cls.family not in ("native", "d3rlpy"):
            raise TypeError(f"algorithm {cls.name!r}: family must be 'native' or 'd3rlpy', got {cls.family!r}")
        if (other := Algorithm._registry.get(cls.name)) is not None and other.__qualname__ != cls.__qualname__:
            raise TypeError(f"two algorithms are named {cls.name!r}: {other.__qualname__} and {cls.__qualname__}")
        Algorithm._registry[cls.name] = cls

    @staticmethod
    def registered() -> list[type[Algorithm]]:
        """Every registered algorithm, in table order."""
        return sorted(Algorithm._registry.values(), key=lambda c: (c.order, c.name))

    def __init__(self, config: Any):
        self.config = config

    def datasets_used(self) -> dict[str, str]:
        """Datasets the run trains on besides its own, by role (the SFT family's ``{"reference": name}``);
        ``run.py`` loads each and records its fingerprint (the reference data: pi_ref is trained on it)."""
        return {}

    def reference_bc(self) -> Any:
        """The BCConfig of the pi_ref it fine-tunes from (None: none); ``run.py`` resolves pi_ref per seed, on the
        dataset of role "reference" (:meth:`datasets_used`) or the run's own, into ``group.references``."""
        return None

    def precision(self) -> str:
        """The numeric precision of its training step (the record's device section)."""
        return "float32"

    def rate_key(self) -> str:
        """The entry of configs/rates.yaml that times one update of this config (``bench sweep --dry-run``)."""
        return f"{self.name}/{self.config.batch_size}"

    @abstractmethod
    def curate(self, trajectories: Trajectories) -> Curated: ...

    @abstractmethod
    def fit(self, trajectories: Trajectories, curated: Curated, group: SeedGroup) -> list[Policy]:
        """Train every seed of ``group`` (``run.py`` hands several only when ``batches_seeds``); one policy each."""
