"""The registries carry everything: algorithm metadata feeds the CLI, the errors, the report and the README; presets
hold only what differs from the code's defaults; no module imports another that imports it back."""

from __future__ import annotations

import ast
import dataclasses
import re
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from bench.algorithms import ALGORITHMS, algorithms_markdown, get_algorithm
from bench.cli import app
from bench.configs import PRESET_DIR
from bench.reports.report import ordered_algos
from bench.run import RunConfig
from bench.specs import REGISTRY

ROOT = Path(__file__).resolve().parents[1]
RUN_DEFAULTS = {f.name: f.default for f in dataclasses.fields(RunConfig)
                if f.default is not dataclasses.MISSING}


def preset_files() -> list[Path]:
    return sorted(p for p in PRESET_DIR.glob("*.yaml") if p.stem in ALGORITHMS)


def test_every_algorithm_has_its_metadata_and_a_preset_file():
    assert [p.stem for p in preset_files()] == sorted(ALGORITHMS)
    orders = [cls.order for cls in ALGORITHMS.values()]
    assert orders == sorted(orders) and len(set(orders)) == len(orders)
    for name, cls in ALGORITHMS.items():
        assert cls.name == name and cls.family in ("native", "d3rlpy") and cls.summary and cls.display_name


def test_the_cli_help_the_unknown_name_message_and_the_report_come_from_the_registry():
    runner = CliRunner()
    help_text = re.sub(r"\s+", " ", re.sub(r"[│╭╮╰╯─]", " ", runner.invoke(app, ["run", "--help"]).output))
    listing = runner.invoke(app, ["algorithms"]).output
    for name, cls in ALGORITHMS.items():
        assert name in help_text and cls.display_name in listing
    with pytest.raises(KeyError) as e:
        get_algorithm("iw_sftq")
    assert "Did you mean iw_sft_q" in str(e.value) and all(name in str(e.value) for name in ALGORITHMS)
    assert ordered_algos(reversed(list(ALGORITHMS))) == list(ALGORITHMS)


def test_the_readme_lists_exactly_the_registered_algorithms():
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- algorithms: bench algorithms --markdown -->\n(.*?)\n<!-- /algorithms -->", readme, re.S)
    assert block is not None, "README.md lost its generated algorithm table"
    assert block.group(1) == algorithms_markdown(), "regenerate it: bench algorithms --markdown"


def redundant_or_unknown(path: Path) -> list[str]:
    """Each field a preset sets to the value it already has there (dataclass default, then the default section,
    then the dataset's family section), and each field that is not one of the algorithm's or the run's."""
    cls = get_algorithm(path.stem)
    algo_defaults = dataclasses.asdict(cls.Config())
    doc = yaml.safe_load(path.read_text()) or {}
    problems = []

    def check(where: str, section: dict, inherited: dict[str, dict]) -> None:
        for part, defaults in (("algo", algo_defaults), ("run", RUN_DEFAULTS)):
            for key, value in (section.get(part) or {}).items():
                if key not in defaults:
                    problems.append(f"{path.name} {where}.{part}: unknown field {key!r}")
                elif value == inherited[part].get(key, defaults[key]):
                    problems.append(f"{path.name} {where}.{part}: {key}={value!r} repeats what it inherits")

    default = doc.get("default") or {}
    check("default", default, {"algo": {}, "run": {}})
    base = {part: dict(default.get(part) or {}) for part in ("algo", "run")}
    for family, section in (doc.get("families") or {}).items():
        check(f"families.{family}", section, base)
    for dataset, section in (doc.get("datasets") or {}).items():
        family = (doc.get("families") or {}).get(REGISTRY[dataset].family) or {}
        check(f"datasets.{dataset}", section, {part: {**base[part], **(family.get(part) or {})}
                                               for part in ("algo", "run")})
    return problems


@pytest.mark.parametrize("path", preset_files(), ids=lambda p: p.name)
def test_a_preset_holds_only_what_differs_from_the_defaults(path):
    assert redundant_or_unknown(path) == []


def test_the_preset_check_catches_a_repeated_default_and_an_unknown_field(tmp_path):
    bad = tmp_path / "sft.yaml"
    bad.write_text("default:\n  algo: {steps: 4500, learning_rate: 1.0e-4, stepz: 3}\n  run: {eval_every: 500}\n"
                   "datasets:\n  hopper-expert:\n    algo: {learning_rate: 1.0e-4}\n")
    assert redundant_or_unknown(bad) == [
        "sft.yaml default.algo: steps=4500 repeats what it inherits",
        "sft.yaml default.algo: unknown field 'stepz'",
        "sft.yaml datasets.hopper-expert.algo: learning_rate=0.0001 repeats what it inherits"]


def imports_of(path: Path) -> set[str]:
    """The bench modules ``path`` imports, at module level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {m for m in found if m.startswith("bench")}


def test_no_module_imports_another_that_imports_it_back():
    modules = {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p
               for p in (ROOT / "bench").rglob("*.py")}
    graph = {m: {i for i in imports_of(p) if i in modules and i != m} for m, p in modules.items()}

    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            m = todo.pop()
            if m == goal:
                return True
            if m not in seen:
                seen.add(m)
                todo.extend(graph[m])
        return False

    # a package's __init__ importing its own modules is not a cycle; any other path back is
    cycles = sorted(f"{a} <-> {b}" for a in graph for b in graph[a]
                    if not b.startswith(a + ".") and reaches(b, a))
    assert cycles == []
