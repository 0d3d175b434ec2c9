"""YAML presets (package data): ``<algo>.yaml`` holds ``default`` and per-dataset ``datasets.<name>`` sections,
each with ``algo`` (fields of the algorithm's config dataclass) and ``run`` (fields of RunConfig)."""

from __future__ import annotations

from pathlib import Path

import yaml

PRESET_DIR = Path(__file__).parent


def load_preset(algo: str, dataset: str, family: str | None = None) -> tuple[dict, dict]:
    """(algorithm fields, run fields) for ``algo`` on ``dataset``: ``default``, then ``families.<family>``
    (the dataset's row group, e.g. "Ant-maze"), then ``datasets.<dataset>``."""
    path = PRESET_DIR / f"{algo}.yaml"
    if not path.exists():
        return {}, {}
    doc = yaml.safe_load(path.read_text()) or {}
    algo_fields, run_fields = {}, {}
    sections = (doc.get("default") or {}, (doc.get("families") or {}).get(family) or {},
                (doc.get("datasets") or {}).get(dataset) or {})
    for section in sections:
        algo_fields.update(section.get("algo") or {})
        run_fields.update(section.get("run") or {})
    return algo_fields, run_fields
