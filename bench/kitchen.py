"""`bench kitchen`: the paper's §4.3 Franka-kitchen experiment (Table 3) as one command.

1. BC on all of ``kitchen-partial`` — the pretrained policy (and the row "BC on kitchen-partial").
2. From it (the SFT family's reference policy, ``reference_dataset: kitchen-partial``), fine-tune on the top 5% of
   ``kitchen-complete`` plus the top 5% of ``kitchen-mixed`` (curated per part) with sft, sft_q and iw_sft_q.
3. Baselines from scratch: BC on all of ``kitchen-complete`` ("BC (all data)") and on its top 5% ("BC (5%)").
Every run is an ordinary run record, so `bench report` tabulates them (the Kitchen rows). The paper gives neither
the bins nor the hyper-parameters of this experiment; ours are in the presets (configs/*.yaml, datasets
kitchen-*), chosen as documented there and overridable with --set.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bench.run import RunConfig, overrides_for, resolve_config


@dataclass
class KitchenConfig:
    pretrain_dataset: str = "kitchen-partial"  # BC on all of it = the policy every fine-tuning starts from
    finetune_dataset: str = "kitchen-complete+mixed"  # curated per part (top 5% of each)
    finetune_algos: list[str] = field(default_factory=lambda: ["sft", "sft_q", "iw_sft_q"])
    baseline_dataset: str = "kitchen-complete"
    baseline_algos: list[str] = field(default_factory=lambda: ["bc", "bc_5"])  # "BC (all data)", "BC (5%)"
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])


def kitchen_configs(cfg: KitchenConfig, overrides: dict | None = None) -> list[RunConfig]:
    """Every run of the experiment; an override applies to the runs whose algorithm has that field."""
    plan = [(cfg.pretrain_dataset, "bc")] + [(cfg.finetune_dataset, a) for a in cfg.finetune_algos] + \
        [(cfg.baseline_dataset, a) for a in cfg.baseline_algos]
    overrides = overrides or {}
    configs = []
    for env, algo in plan:
        for seed in cfg.seeds:
            cfg_run = resolve_config(env, algo, seed, overrides_for(algo, overrides))
            if "reference_dataset" in cfg_run.algo_config and cfg_run.algo_config["reference_dataset"] is None:
                cfg_run.algo_config["reference_dataset"] = cfg.pretrain_dataset
            configs.append(cfg_run)
    return configs
