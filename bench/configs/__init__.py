"""YAML presets (package data): ``<algo>.yaml`` holds ``default`` and per-dataset ``datasets.<name>`` sections,
each with ``algo`` (fields of the algorithm's config dataclass) and ``run`` (fields of RunConfig)."""

from __future__ import annotations

from pathlib import Path

import yaml

PRESET_DIR = Path(__file__).parent


def load_preset(algo: str, dataset: str) -> tuple[dict, dict]:
    """(algorithm fields, run fields) for ``algo`` on ``dataset``: the default section, then the dataset's."""
    path = PRESET_DIR / f"{algo}.yaml"
    if not path.exists():
        return {}, {}
    doc = yaml.safe_load(path.read_text()) or {}
    algo_fields, run_fields = {}, {}
    for section in (doc.get("default") or {}, (doc.get("datasets") or {}).get(dataset) or {}):
        algo_fields.update(section.get("algo") or {})
        run_fields.update(section.get("run") or {})
    return algo_fields, run_fields
