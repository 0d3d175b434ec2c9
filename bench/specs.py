"""Dataset registry: a name a user types -> where the data comes from, how it is evaluated and scored.

Adding a dataset is one entry in ``REGISTRY``. ``minari:<dataset id>`` names any Minari dataset; its evaluation
environment and reference scores are read from the dataset's own metadata when it is loaded.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, replace

# D4RL reference returns (D4RL infos.py; REFERENCE.md §2): body -> (random policy return, expert return).
D4RL_REFERENCE_BY_BODY: dict[str, tuple[float, float]] = {
    "Hopper": (-20.272305, 3234.3),
    "HalfCheetah": (-280.178953, 12135.0),
    "Walker2d": (1.629008, 4592.3),
    "Ant": (-325.6, 3879.7),
}

# The row groups a report shows first, in the paper's order; other families follow alphabetically.
REPORT_FAMILY_ORDER = ("Medium Replay", "Expert", "Ant-maze", "Kitchen")

# D4RL level -> the family a report groups it under (the paper's Table 2 rows).
_FAMILIES = {"medium-replay": "Medium Replay", "expert": "Expert", "medium": "Medium",
             "medium-expert": "Medium Expert", "random": "Random", "full-replay": "Full Replay"}


@dataclass(frozen=True)
class DatasetSpec:
    name: str  # what users type: "hopper-medium-replay", "minari:D4RL/antmaze/umaze-v1", ...
    source: str  # "d4rl" (v2 HDF5), "minari" (store / hub), "embedded" (package data), "concat" (other specs)
    env_id: str | None  # gymnasium id (or JSON EnvSpec) the policy is evaluated in; None = read from the dataset
    ref_min_score: float | None  # return that scores 0; None = read from the dataset
    ref_max_score: float | None  # return that scores 100
    family: str = "Other"  # row group in reports
    location: str | None = None  # d4rl: file; minari: dataset id; embedded: package folder; concat: "a,b"
    paper_comparable: bool = False  # same data as the paper's tables (only the real D4RL/Minari datasets)
    score: str = "return"  # per-episode score: "return" (D4RL normalised), "success" (antmaze), "subtasks" (kitchen)
    reference: str = "dataset metadata"  # where the reference scores come from (bench datasets list shows it)

    def with_dataset_metadata(self, metadata: dict) -> DatasetSpec:
        """Fill what the registry left open (Minari datasets) from the loaded dataset's metadata."""
        return replace(
            self,
            env_id=self.env_id or metadata.get("env_spec") or metadata.get("env_id"),
            ref_min_score=self.ref_min_score if self.ref_min_score is not None else metadata.get("ref_min_score"),
            ref_max_score=self.ref_max_score if self.ref_max_score is not None else metadata.get("ref_max_score"),
        )


def _d4rl_locomotion() -> dict[str, DatasetSpec]:
    specs = {}
    for body, prefix in (("Hopper", "hopper"), ("HalfCheetah", "halfcheetah"), ("Walker2d", "walker2d")):
        lo, hi = D4RL_REFERENCE_BY_BODY[body]
        for level, family in _FAMILIES.items():
            name = f"{prefix}-{level}"
            specs[name] = DatasetSpec(
                name=name, source="d4rl",
                # v4: gymnasium's closest match to the v3 dynamics D4RL v2 data was collected and scored in
                env_id=f"{body}-v4", ref_min_score=lo, ref_max_score=hi, family=family,
                location=f"{prefix}_{level.replace('-', '_')}-v2.hdf5", paper_comparable=True,
                reference="D4RL (infos.py)",
            )
    return specs


def _minari_d4rl() -> dict[str, DatasetSpec]:
    """Minari's ports of D4RL kitchen and antmaze; evaluation env (with its kwargs) comes from the dataset."""
    specs = {
        f"kitchen-{part}": DatasetSpec(name=f"kitchen-{part}", source="minari", env_id=None, ref_min_score=0.0,
                                       ref_max_score=4.0, family="Kitchen", location=f"D4RL/kitchen/{part}-v2",
                                       score="subtasks", reference="sub-tasks done of 4")
        for part in ("partial", "complete", "mixed")
    }
    # The paper's §4.3 fine-tuning data: the top 5% of complete plus the top 5% of mixed (curated per part).
    specs["kitchen-complete+mixed"] = DatasetSpec(
        name="kitchen-complete+mixed", source="concat", env_id=None, ref_min_score=0.0, ref_max_score=4.0,
        family="Kitchen", location="kitchen-complete,kitchen-mixed", score="subtasks", reference="sub-tasks done of 4")
    # The paper's table names antmaze-umaze-v0 (D4RL); Minari has no v0: its v1 datasets are regenerated ports,
    # evaluated in AntMaze_*-v4. Same tasks, not the same data — so never compared with the paper's number.
    for maze in ("umaze", "umaze-diverse", "medium-play", "medium-diverse", "large-play", "large-diverse"):
        specs[f"antmaze-{maze}"] = DatasetSpec(
            name=f"antmaze-{maze}", source="minari", env_id=None, ref_min_score=0.0, ref_max_score=1.0,
            family="Ant-maze", location=f"D4RL/antmaze/{maze}-v1", score="success", reference="success rate")
    # Point-maze: Minari's D4RL/pointmaze datasets (D4RL's maze2d, regenerated in gymnasium-robotics' PointMaze),
    # sparse and dense rewards, scored with the dataset's own reference returns.
    for maze in ("open", "umaze", "medium", "large"):
        for reward in ("", "-dense"):
            specs[f"pointmaze-{maze}{reward}"] = DatasetSpec(
                name=f"pointmaze-{maze}{reward}", source="minari", env_id=None, ref_min_score=None,
                ref_max_score=None, family="Point-maze", location=f"D4RL/pointmaze/{maze}{reward}-v2",
                reference="Minari metadata")
    # Adroit (Minari's ports of D4RL's human / cloned / expert data, v2); scored with the dataset's own reference
    # returns, which Minari copied from D4RL.
    for task in ("pen", "door", "hammer", "relocate"):
        for kind in ("human", "cloned", "expert"):
            specs[f"{task}-{kind}"] = DatasetSpec(
                name=f"{task}-{kind}", source="minari", env_id=None, ref_min_score=None, ref_max_score=None,
                family="Adroit", location=f"D4RL/{task}/{kind}-v2", reference="Minari metadata (D4RL's)")
    return specs


def _minari_mujoco() -> dict[str, DatasetSpec]:
    """Minari's own MuJoCo datasets on gymnasium's v5 environments: other data than D4RL's, scored with Minari's own
    reference returns, so their names carry "-v5-" and they are never compared with the paper."""
    specs = {}
    for env in ("ant", "halfcheetah", "hopper", "humanoid", "humanoidstandup", "invertedpendulum",
                "inverteddoublependulum", "pusher", "reacher", "swimmer", "walker2d"):
        for kind in ("simple", "medium", "expert"):
            specs[f"{env}-v5-{kind}"] = DatasetSpec(
                name=f"{env}-v5-{kind}", source="minari", env_id=None, ref_min_score=None, ref_max_score=None,
                family="MuJoCo v5 (Minari)", location=f"mujoco/{env}/{kind}-v0", reference="Minari metadata (own)")
    return specs


REGISTRY: dict[str, DatasetSpec] = {
    **_d4rl_locomotion(),
    **_minari_d4rl(),
    **_minari_mujoco(),
    # Made by `bench datasets generate` (see bench/datasets/embedded/README.md); scores are its own, not D4RL's.
    "hopper-mini-replay": DatasetSpec(
        name="hopper-mini-replay", source="embedded", env_id=None, ref_min_score=None, ref_max_score=None,
        family="Medium Replay", location="hopper-mini-replay", reference="own (generated, see its README)",
    ),
}


def get_spec(name: str) -> DatasetSpec:
    """The spec for a dataset name; unknown names fail with the closest registered names."""
    if name.startswith("minari:"):
        dataset_id = name.removeprefix("minari:")
        if not dataset_id:
            raise KeyError("empty Minari id: use minari:<namespace>/<name>-v<version>, e.g. "
                           "minari:D4RL/antmaze/umaze-v1")
        return DatasetSpec(name=name, source="minari", env_id=None, ref_min_score=None, ref_max_score=None,
                           location=dataset_id, paper_comparable=dataset_id.startswith("D4RL/"))
    if name in REGISTRY:
        return REGISTRY[name]
    close = difflib.get_close_matches(name, REGISTRY, n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise KeyError(f"unknown dataset {name!r}.{hint} Registered: {', '.join(sorted(REGISTRY))}; "
                   "or minari:<dataset id> for any Minari dataset.")
