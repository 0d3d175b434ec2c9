"""The `bench` command line: run, sweep, kitchen, report, toy, datasets ..., llm ..."""

from __future__ import annotations

import dataclasses
import errno
import json
import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer

from bench.algorithms import algorithms_markdown, names_by_family  # the registry builds the help texts
from bench.locks import FolderError, writable_folder

app = typer.Typer(
    help="Offline-RL benchmark suite: does SFT on curated data (SFT, SFT(Q), iw-SFT(Q)) compete with offline RL "
         "(AWAC, TD3+BC, CQL, IQL)? Every command takes --help.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
)
datasets_app = typer.Typer(help="List, inspect, generate and pack offline datasets.", no_args_is_help=True)
app.add_typer(datasets_app, name="datasets")
llm_app = typer.Typer(help="iw-SFT of a language model (accelerate) and reasoning evaluation: prepare -> ref-logps "
                           "-> train -> eval; `bench llm smoke` runs all four on a tiny local model.",
                      no_args_is_help=True)
app.add_typer(llm_app, name="llm")


def _fail(msg: str) -> None:
    typer.secho(f"error: {msg}", err=True, fg=typer.colors.RED)
    raise typer.Exit(2)


class LiveOutput:
    """Progress bars on stderr for an interactive terminal (steps, steps/s, ETA, last score; one per run) with the
    log lines printed above them. Used as ``log``: the run passes its steps to :meth:`progress`."""

    def __enter__(self) -> LiveOutput:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.bars = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                             TextColumn("{task.fields[rate]}"),
                             TimeRemainingColumn(), TextColumn("score {task.fields[score]}"),
                             console=Console(stderr=True), transient=False)
        self.tasks: dict[str, int] = {}
        self.bars.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.bars.__exit__(*exc)

    def __call__(self, message: str) -> None:
        self.bars.console.print(message, markup=False, highlight=False)

    def grid(self, done: int, total: int) -> None:
        """A sweep's bar: runs finished of the runs to do."""
        if "sweep" not in self.tasks:
            self.tasks["sweep"] = self.bars.add_task("sweep (runs)", total=total, rate="", score="-")
        self.bars.update(self.tasks["sweep"], completed=done)

    def progress(self, label: str, step: int, total: int, score: float | None) -> None:
        if label not in self.tasks:
            self.tasks[label] = self.bars.add_task(label, total=total, rate="", score="-")
        task = self.tasks[label]
        self.bars.update(task, completed=step, **({"score": f"{score:.1f}"} if score is not None else {}))
        speed = self.bars.tasks[task].speed
        self.bars.update(task, rate=f"{speed:.1f} steps/s" if speed else "")


# --logger and --log-every, the same on bench run and bench sweep
LoggerOption = Annotated[list[str], typer.Option(
    "--logger", help="Also log training statistics and scores to csv (<out>/csv), tensorboard (<out>/tb) or wandb "
    "($WANDB_PROJECT, default bench; WANDB_MODE=offline works without a network); repeatable. Not part of the "
    "run's hash.")]
LogEveryOption = Annotated[int | None, typer.Option(
    help="Steps between the loggers' statistics (default: at each evaluation).")]


def _parse_sets(items: list[str], text_fields: frozenset[str] = frozenset()) -> dict:
    """--set key=value items as a dict; a key in ``text_fields`` keeps its text (YAML would read "no" as False)."""
    from bench.run import parse_value

    out = {}
    for item in items:
        if "=" not in item:
            _fail(f"--set {item!r}: expected key=value, e.g. --set learning_rate=1e-4")
        key, value = (part.strip() for part in item.split("=", 1))
        out[key] = value if key in text_fields else parse_value(value)
    return out


def _parse_seeds(seeds: str) -> list[int]:
    """'5' -> seeds 0..4; '0,3,7' -> those seeds."""
    try:
        parsed = list(range(int(seeds))) if "," not in seeds else [int(s) for s in seeds.split(",")]
    except ValueError:
        _fail(f"--seeds {seeds!r}: give a count (5) or a comma-separated list (0,3,7)")
    if not parsed:
        _fail(f"--seeds {seeds}: that is no seed at all; give a count of at least 1 (5) or a list of seeds (0,3,7)")
    return parsed


def _writable_folder(path: Path, flag: str = "--out") -> None:
    """Stop with one line unless ``path`` is (or can become) a folder this process can write."""
    try:
        writable_folder(path, f"{flag} {path}", "give a folder you can write (it is created if missing)")
    except FolderError as e:
        _fail(str(e))


def _finish_sweep(summary) -> None:
    typer.echo(summary.text())
    raise typer.Exit(0 if summary.ok else 1)


@app.command()
def run(
    env: Annotated[str, typer.Option(help="Dataset name (see `bench datasets list`) or minari:<dataset id>.")],
    algo: Annotated[str, typer.Option(help=f"Algorithm: {names_by_family()}; `bench algorithms` describes each.")],
    seed: Annotated[int, typer.Option(help="Seed for torch, numpy, data order and evaluation.")] = 0,
    seeds: Annotated[str | None, typer.Option(help="Several seeds instead of --seed: N (0..N-1) or a list (0,3,7); "
                                              "BC and the SFT family train them as one batched model.")] = None,
    set_: Annotated[list[str], typer.Option("--set", help="Override a preset field, key=value; repeatable "
                                            "(e.g. --set steps=2000 --set eval_episodes=5).")] = [],  # noqa: B006
    out: Annotated[Path, typer.Option(help="Folder for the run record (and checkpoints while running).")]
        = Path("results"),
    data: Annotated[Path | None, typer.Option(help="Read the dataset from this file or folder instead of the "
                                              "cache (a D4RL .hdf5 file or a Minari dataset folder).")] = None,
    reference_data: Annotated[Path | None, typer.Option(help="Read the reference dataset (the SFT family's "
                                                        "reference_dataset, e.g. kitchen-partial) from this file "
                                                        "or folder instead of the cache.")] = None,
    device: Annotated[str, typer.Option(help="auto (CUDA when present), cpu, cuda, cuda:N.")] = "auto",
    force: Annotated[bool, typer.Option(help="Run again even if a complete record exists.")] = False,
    logger: LoggerOption = [],  # noqa: B006
    log_every: LogEveryOption = None,
) -> None:
    """Train ALGO on dataset ENV with SEED (or each of --seeds), evaluate, and write JSON run records under --out."""
    from bench.algorithms import TrainingError
    from bench.datasets.trajectories import DatasetError
    from bench.run import RunLocked, resolve_config, run_seeds

    try:
        overrides = _parse_sets(set_)
        overrides.update(device=device, loggers=logger, log_every=log_every)
        if data is not None:
            overrides["data_path"] = str(data)
        if reference_data is not None:
            overrides["reference_data_path"] = str(reference_data)
        cfgs = [resolve_config(env, algo, s, overrides) for s in (_parse_seeds(seeds) if seeds else [seed])]
        _writable_folder(out)
        if sys.stderr.isatty():  # a live bar per run; piped or in CI: the plain lines
            with LiveOutput() as live:
                records = run_seeds(cfgs, out, force=force, log=live)
        else:
            records = run_seeds(cfgs, out, force=force)
    except (KeyError, ValueError, DatasetError, TrainingError, RunLocked) as e:
        _fail(str(e.args[0]) if isinstance(e, KeyError) else str(e))
    for record in records:
        typer.echo(str(Path(out) / record.filename))


@app.command()
def algorithms(
    markdown: Annotated[bool, typer.Option("--markdown", help="Print the README's table (Markdown) instead.")]
        = False,
) -> None:
    """The registered algorithms in table order: name, how tables print it, family, what it trains."""
    from rich.console import Console
    from rich.table import Table

    from bench.algorithms import ALGORITHMS

    if markdown:
        typer.echo(algorithms_markdown())
        return
    table = Table()
    for column in ("--algo", "tables", "family", "what it trains"):
        table.add_column(column, no_wrap=column != "what it trains")
    for cls in ALGORITHMS.values():
        table.add_row(cls.name, cls.display_name, cls.family, cls.summary)
    Console(width=None if sys.stdout.isatty() else 160).print(table)


@app.command()
def sweep(
    envs: Annotated[str | None, typer.Option(help="Comma-separated dataset names.")] = None,
    algos: Annotated[str | None, typer.Option(help=f"Comma-separated algorithm names: {names_by_family()}.")]
        = None,
    seeds: Annotated[str, typer.Option(help="N (seeds 0..N-1) or a comma-separated list of seeds.")] = "5",
    set_: Annotated[list[str], typer.Option("--set", help="key=value for every run whose algorithm has the "
                                            "field; repeatable.")] = [],  # noqa: B006
    grid: Annotated[str | None, typer.Option(help="YAML file with envs, algos, seeds and optional set (instead of "
                                             "the flags), or one of the paper's: paper:table2 (Tables 2/5: 7 "
                                             "datasets x 9 algorithms x 5 seeds), paper:table3 (kitchen), "
                                             "paper:figure1 (the toy bandit).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the runs, which are complete, the compute "
                                          "each needs (presets' steps at measured rates) and the memory the jobs "
                                          "need with --workers of them at once, and stop.")] = False,
    executor: Annotated[str, typer.Option(help="local (processes on this machine) or ray (a Ray cluster).")]
        = "local",
    workers: Annotated[int | None, typer.Option(help="Parallel runs (default: one per CPU core).")] = None,
    ray_address: Annotated[str | None, typer.Option(help="Ray cluster address (default: start a local one).")]
        = None,
    gpus_per_run: Annotated[float | None, typer.Option(help="GPU fraction per run with the ray executor (default: "
                                                      "1 / --runs-per-gpu when the cluster has GPUs, else 0).")]
        = None,
    runs_per_gpu: Annotated[int, typer.Option(help="Runs sharing one GPU (local: each run sees one GPU through "
                                              "CUDA_VISIBLE_DEVICES, round-robin; ray: the GPU fraction asked).")]
        = 1,
    out: Annotated[Path, typer.Option(help="Folder for the run records (the ray executor's driver writes them: "
                                      "no shared file system needed).")] = Path("results"),
    checkpoint_dir: Annotated[Path | None, typer.Option(help="Where unfinished runs keep checkpoints (default: "
                                                        "<out>/checkpoints). On a cluster give a folder every node "
                                                        "can write, so a retried run resumes instead of "
                                                        "restarting.")] = None,
    logger: LoggerOption = [],  # noqa: B006
    log_every: LogEveryOption = None,
) -> None:
    """Run a grid of (dataset, algorithm, seed): skips complete records, resumes checkpoints, runs the rest."""
    from bench.sweep import Grid, read_grid_yaml, run_sweep
    from bench.sweep import dry_run as dry_run_text

    try:
        if grid is not None and "toy" in (doc := read_grid_yaml(grid)):
            if dry_run:
                typer.echo(f"{grid}: the toy bandit (bench toy) into {out / 'toy'}: seconds on a CPU")
                return
            from bench.toy import ToyConfig, run_toy

            run_toy(ToyConfig(**doc["toy"]), out / "toy")
            typer.echo(f"{grid}: the toy bandit -> {out / 'toy'}/toy_bandit.png/.pdf")
            return
        if grid is not None:
            spec = Grid.from_yaml(grid)
        else:
            if not envs or not algos:
                _fail("give --envs and --algos, or --grid FILE")
            spec = Grid(envs.split(","), algos.split(","), _parse_seeds(seeds), _parse_sets(set_))
        configs = [dataclasses.replace(c, loggers=logger, log_every=log_every) for c in spec.expand()]
        if dry_run:
            typer.echo(dry_run_text(configs, out, workers))
            return
        _writable_folder(out)
        if sys.stderr.isatty() and executor == "local":  # a bar for the grid and one per running run
            with LiveOutput() as live:
                summary = run_sweep(configs, out, executor, workers, ray_address, gpus_per_run, log=live, live=live,
                                    runs_per_gpu=runs_per_gpu, checkpoint_dir=checkpoint_dir)
        else:
            summary = run_sweep(configs, out, executor, workers, ray_address, gpus_per_run,
                                runs_per_gpu=runs_per_gpu, checkpoint_dir=checkpoint_dir)
    except (KeyError, ValueError) as e:
        _fail(str(e.args[0]) if isinstance(e, KeyError) else str(e))
    _finish_sweep(summary)


@app.command()
def kitchen(
    seeds: Annotated[str, typer.Option(help="N (seeds 0..N-1) or a comma-separated list of seeds.")] = "3",
    set_: Annotated[list[str], typer.Option("--set", help="key=value for every run whose algorithm has the "
                                            "field; repeatable (e.g. --set steps=500).")] = [],  # noqa: B006
    workers: Annotated[int | None, typer.Option(help="Parallel runs (default: one per CPU core).")] = None,
    out: Annotated[Path, typer.Option(help="Folder for the run records.")] = Path("results/kitchen"),
) -> None:
    """The paper's Franka-kitchen experiment (Table 3): BC on kitchen-partial, then sft / sft_q / iw_sft_q on the top
    5% of complete + mixed from it, and BC / BC 5% on complete — then `bench report` on --out."""
    from bench.kitchen import KitchenConfig, kitchen_configs
    from bench.sweep import run_sweep

    try:
        configs = kitchen_configs(KitchenConfig(seeds=_parse_seeds(seeds)), _parse_sets(set_))
        summary = run_sweep(configs, out, "local", workers)
    except (KeyError, ValueError) as e:
        _fail(str(e.args[0]) if isinstance(e, KeyError) else str(e))
    _finish_sweep(summary)


@app.command()
def report(
    results: Annotated[list[Path], typer.Argument(help="Folders (or files) of run records; searched recursively.")]
        = None,  # noqa: B008
    out: Annotated[Path, typer.Option(help="Folder for tables, figures and report.md.")] = Path("reports"),
    alpha: Annotated[float, typer.Option(help="Significance level of the one-sided Welch test for bold.")] = 0.05,
    holm: Annotated[bool, typer.Option(help="Holm-correct the p-values of each row.")] = False,
    resamples: Annotated[int, typer.Option(help="Bootstrap resamples for the aggregate intervals.")] = 2000,
    score: Annotated[str, typer.Option(help="final: the final evaluation (the paper's protocol); best: the best "
                                            "evaluation during training (CORL's 'best', optimistic; labelled).")]
        = "final",
    mix_configs: Annotated[bool, typer.Option("--mix-configs", help="Pool runs of different configs in one cell "
                                              "(default: the config with the most runs; the others are listed).")]
        = False,
) -> None:
    """Tables (LaTeX, Markdown, CSV), aggregate statistics (rliable's definitions), figures and report.md from run
    records. Failed, diverged, running and scoreless runs are listed, never counted; duplicates count once."""
    from bench.reports.report import build_report

    for folder in results or [Path("results")]:
        if not folder.exists():
            _fail(f"{folder}: no such folder or file of run records (bench run / bench sweep write them, to "
                  "results/ by default)")
    _writable_folder(out)
    try:
        written = build_report(results or [Path("results")], out, alpha, holm, resamples, score, mix_configs)
    except ValueError as e:
        _fail(str(e))
    for path, why in written["unreadable"]:
        typer.secho(f"skipped unreadable record {path}: {why}", err=True, fg=typer.colors.YELLOW)
    if others := written["not_records"]:  # W&B's files, notes: named once, not as failures
        more = f" and {len(others) - 3} more" if len(others) > 3 else ""
        typer.echo(f"passed over {len(others)} JSON files that are not run records: "
                   f"{', '.join(map(str, others[:3]))}{more}", err=True)
    typer.echo(f"{written['records']} records, {written['cells']} cells -> {out}/report.md")


@app.command()
def toy(
    out: Annotated[Path, typer.Option(help="Folder for toy_bandit.json and toy_bandit.png/.pdf.")]
        = Path("reports/toy"),
    seed: Annotated[int, typer.Option(help="Seed of the bandit draws.")] = 0,
    samples: Annotated[int, typer.Option(help="Draws from the uniform reference policy.")] = 10_000,
    steps: Annotated[int, typer.Option(help="Gradient steps.")] = 2_000,
) -> None:
    """The two-armed bandit of the paper's §3.5: SFT on successes -> P(right) = 2/3, iw-SFT -> 1."""
    from bench.toy import ToyConfig, run_toy

    result = run_toy(ToyConfig(samples=samples, steps=steps, seed=seed), out)
    for name in ("sft", "iw_sft"):
        typer.echo(f"{name:>7}: P(right) = {result[name]['p_right']:.4f}, "
                   f"expected reward = {result[name]['expected_reward']:.4f}")
    typer.echo(f"theory : SFT P(right) = 2/3 (reward 5/6), iw-SFT -> 1; figure: {out}/toy_bandit.png/.pdf")


@datasets_app.command("list")
def datasets_list() -> None:
    """Registered datasets: name, source, evaluation environment, family, score kind, reference scores, whether
    on disk, size."""
    from rich.console import Console
    from rich.table import Table

    from bench.datasets.sources import is_on_disk
    from bench.specs import REGISTRY

    table = Table()
    table.add_column("name", no_wrap=True)
    for column in ("source", "eval env", "family", "score", "reference scores", "paper", "on disk", "size"):
        table.add_column(column)
    for name, spec in REGISTRY.items():
        present, where = is_on_disk(spec)
        size = "-"
        if present:
            nbytes = where.stat().st_size if where.is_file() else sum(
                p.stat().st_size for p in where.rglob("*") if p.is_file())
            size = f"{nbytes / 2**20:.1f} MB"
        table.add_row(name, spec.source, spec.env_id or "(from the data)", spec.family, spec.score, spec.reference,
                      "yes" if spec.paper_comparable else "-", "yes" if present else "no", size)
    Console(width=None if sys.stdout.isatty() else 160).print(table)
    typer.echo("Any Minari dataset: minari:<dataset id>, e.g. minari:D4RL/antmaze/umaze-v1.")


@datasets_app.command("info")
def datasets_info(
    name: Annotated[str, typer.Argument(help="Dataset name or minari:<dataset id>.")],
    data: Annotated[Path | None, typer.Option(help="Read from this file or folder instead of the cache.")] = None,
    percentiles: Annotated[str, typer.Option(help="Quality-bin cutoffs to show (paper Algorithm 2).")]
        = "90,95,98",
    ties: Annotated[str, typer.Option(help="inclusive (return >= cutoff) or strict (>).")] = "inclusive",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Episodes, transitions, return quantiles, reference scores and quality bins of a dataset."""
    from bench.datasets.curation import quality_bins
    from bench.datasets.sources import load_dataset
    from bench.datasets.trajectories import DatasetError
    from bench.evaluation import env_label
    from bench.specs import get_spec

    try:
        spec = get_spec(name)
        traj = load_dataset(spec, data)
    except KeyError as e:
        _fail(e.args[0])
    except DatasetError as e:
        _fail(str(e))
    spec = spec.with_dataset_metadata(traj.metadata)
    info = {**traj.summary(), "source": spec.source, "eval_env": env_label(spec.env_id) if spec.env_id else None,
            "score": spec.score,
            "ref_min_score": spec.ref_min_score, "ref_max_score": spec.ref_max_score, "sha256": traj.fingerprint()}
    try:
        bins = quality_bins(traj, [float(p) for p in percentiles.split(",")], ties).description
    except ValueError as e:
        _fail(f"--percentiles/--ties: {e}")
    info["quality_bins"] = bins
    if as_json:
        typer.echo(json.dumps(info, indent=1))
        return
    for key, value in info.items():
        if key == "quality_bins":
            continue
        if isinstance(value, dict):
            value = "  ".join(f"{k} {v:.1f}" for k, v in value.items())
        elif isinstance(value, float):
            value = f"{value:.3f}"
        typer.echo(f"{key:>20}: {value}")
    typer.echo(f"\nquality bins (return {'>=' if ties == 'inclusive' else '>'} cutoff):")
    typer.echo(f"{'percentile':>12} {'cutoff return':>14} {'episodes':>9} {'transitions':>12}")
    for b in bins["bins"]:
        typer.echo(f"{b['percentile']:>12.1f} {b['cutoff_return']:>14.2f} {b['episodes']:>9} {b['transitions']:>12}")
    typer.echo(f"{'union':>12} {'':>14} {bins['episodes']:>9} {bins['transitions']:>12}   "
               f"(multiset: {bins['multiset_episodes']} episode draws)")


@datasets_app.command("download")
def datasets_download(
    names: Annotated[list[str], typer.Argument(help="Dataset names (bench datasets list) or minari:<dataset id>.")],
) -> None:
    """Fetch datasets ahead of time: D4RL files from the first mirror that serves the published file (resuming a
    partial download, verified against the published sha256), Minari datasets from the hub."""
    from bench.datasets.sources import fetch
    from bench.datasets.trajectories import DatasetError
    from bench.specs import get_spec

    failed = []
    for name in names:
        try:
            typer.echo(fetch(get_spec(name)))
        except KeyError as e:
            failed.append(f"{name}: {e.args[0]}")
        except DatasetError as e:
            failed.append(str(e))
    if failed:
        _fail("\n".join(failed))


@datasets_app.command("verify")
def datasets_verify() -> None:
    """Hash every D4RL file in the cache again and check it against its published sha256; a file that fails is
    moved aside (beside the cache, in <cache>-rejected/) and never used."""
    from bench.datasets.sources import cache_dir, verify_cache

    results = verify_cache()
    for name, verdict in results:
        typer.echo(f"{name}: {verdict}")
    if not results:
        typer.echo(f"no D4RL files in {cache_dir()}")
    if any(v.startswith("FAILED") for _, v in results):
        raise typer.Exit(1)


@datasets_app.command("generate")
def datasets_generate(
    env: Annotated[str, typer.Option(help="gymnasium MuJoCo environment id.")] = "Hopper-v5",
    kind: Annotated[str, typer.Option(help="random | medium | medium-replay | expert (the D4RL recipe).")]
        = "medium-replay",
    name: Annotated[str | None, typer.Option(help="Dataset id becomes bench/<name>/<kind>-v0 (default: the env "
                                             "name lower-cased).")] = None,
    seed: Annotated[int, typer.Option(help="Seed for SAC, exploration and env resets.")] = 0,
    max_env_steps: Annotated[int, typer.Option(help="Online SAC budget in env steps (expert trains all of it).")]
        = 1_000_000,
    target_return: Annotated[float | None, typer.Option(help="medium / medium-replay: stop when the evaluated "
                                                        "return reaches this.")] = None,
    random_steps: Annotated[int, typer.Option(help="Uniform-random steps before SAC acts.")] = 10_000,
    eval_every: Annotated[int, typer.Option(help="Env steps between evaluations.")] = 5_000,
    eval_episodes: Annotated[int, typer.Option(help="Episodes per evaluation.")] = 5,
    dataset_size: Annotated[int, typer.Option(help="Transitions rolled out for random / medium / expert.")]
        = 1_000_000,
    ref_max_score: Annotated[float | None, typer.Option(help="Return that scores 100 (default: the expert's, "
                                                        "else D4RL's for the same body).")] = None,
    out: Annotated[Path | None, typer.Option(help="Minari datasets root to write into (default: "
                                             "$MINARI_DATASETS_PATH or ~/.minari/datasets).")] = None,
    work_dir: Annotated[Path | None, typer.Option(help="Checkpoint folder; a run started again resumes from it "
                                                  "(default ~/.cache/bench/generate/<id>).")] = None,
    device: Annotated[str, typer.Option(help="Device for SAC.")] = "cpu",
) -> None:
    """Make a D4RL-style dataset with online SAC and write it as a Minari dataset (use it as minari:<id>)."""
    from bench.datasets.generate import GenerateConfig, generate
    from bench.datasets.trajectories import DatasetError

    cfg = GenerateConfig(env_id=env, kind=kind, name=name, seed=seed, max_env_steps=max_env_steps,
                         target_return=target_return, random_steps=random_steps, eval_every=eval_every,
                         eval_episodes=eval_episodes, dataset_size=dataset_size, ref_max_score=ref_max_score)
    try:
        path = generate(cfg, out, work_dir, device, command="bench " + shlex.join(sys.argv[1:]))
    except DatasetError as e:
        _fail(str(e))
    typer.echo(f"wrote {path}; use it as --env minari:{cfg.dataset_id()}"
               + (f" with MINARI_DATASETS_PATH={out}" if out else ""))


@datasets_app.command("pack")
def datasets_pack(
    minari_folder: Annotated[Path, typer.Argument(help="A Minari dataset folder (the one holding data/).")],
    out: Annotated[Path, typer.Option(help="Folder to write episodes.npz and metadata.json into.")],
) -> None:
    """Pack a Minari dataset into the compact embedded format (flat compressed arrays; ~20x smaller)."""
    from bench.datasets.sources import pack_minari
    from bench.datasets.trajectories import DatasetError

    try:
        pack_minari(minari_folder, out)
    except DatasetError as e:
        _fail(str(e))
    size = sum(p.stat().st_size for p in out.iterdir()) / 2**20
    typer.echo(f"wrote {out} ({size:.1f} MB)")


@llm_app.command("prepare")
def llm_prepare(
    tokenizer: Annotated[str, typer.Option(help="Tokenizer: Hugging Face id or folder (the model to train).")],
    source: Annotated[str, typer.Option(help="s1K-1.1 as a local .parquet/.jsonl/.csv file or folder, or a Hugging "
                                        "Face dataset id.")] = "simplescaling/s1K-1.1",
    out: Annotated[Path, typer.Option(help="Folder for examples.jsonl and prepare.json.")] = Path("results/llm/data"),
    traces: Annotated[str, typer.Option(help="Reasoning traces: deepseek (s1K-1.1) or gemini (s1K).")] = "deepseek",
    max_length: Annotated[int, typer.Option(help="Block size in tokens (the authors' code: 22k; s1: 32k).")] = 22000,
    policy: Annotated[str, typer.Option(help="Longer examples: truncate (keep the first max-length tokens, as s1) "
                                        "or drop.")] = "truncate",
    limit: Annotated[int | None, typer.Option(help="Use only the first N rows.")] = None,
) -> None:
    """Tokenise s1K-1.1 in the s1 chat format, loss on the assistant turn only; prints token-length statistics."""
    from bench.llm.data import LLMDataError, prepare

    try:
        stats = prepare(source, tokenizer, out, traces, max_length, policy, limit)
    except LLMDataError as e:
        _fail(str(e))
    typer.echo("\n".join(stats.lines() + [f"-> {out}"]))


@llm_app.command("ref-logps")
def llm_ref_logps(
    model: Annotated[str, typer.Option(help="The reference model pi_ref (the starting model): id or folder.")],
    data: Annotated[Path, typer.Option(help="Folder written by `bench llm prepare`.")] = Path("results/llm/data"),
    out: Annotated[Path, typer.Option(help="Folder for the log-prob shards.")] = Path("results/llm/ref-logps"),
    dtype: Annotated[str, typer.Option(help="Model dtype: bfloat16, float16 or float32.")] = "bfloat16",
    chunk_size: Annotated[int, typer.Option(help="Tokens whose full-vocabulary logits exist at once.")] = 1024,
) -> None:
    """Per-token log-probs of pi_ref on every prepared example; under `accelerate launch` the examples are split
    over the processes. Resumes a killed pass."""
    from bench.llm.data import LLMDataError
    from bench.llm.reference import compute_ref_logps

    try:
        n = compute_ref_logps(model, data, out, chunk_size, dtype)
    except LLMDataError as e:
        _fail(str(e))
    typer.echo(f"computed {n} examples on this process -> {out}")


@llm_app.command("train")
def llm_train(
    model: Annotated[str, typer.Option(help="Starting model (= pi_ref): Hugging Face id or folder.")],
    data: Annotated[Path, typer.Option(help="Folder written by `bench llm prepare`.")] = Path("results/llm/data"),
    ref_logps: Annotated[Path | None, typer.Option(help="Folder written by `bench llm ref-logps` (all objectives "
                                                   "but sft).")] = None,
    out: Annotated[Path, typer.Option(help="Folder for log.jsonl, resumable states and HF-format models.")]
        = Path("results/llm/train"),
    objective: Annotated[str | None, typer.Option(help="sft | iw_sft (authors' code; default) | iw_sft_paper "
                                                  "(Appendix C read literally) | iw_sft_paper_mean (its "
                                                  "length-normalised reading) | iw_sft_token; overrides the "
                                                  "preset's.")] = None,
    preset: Annotated[str, typer.Option(help="Preset of bench/configs/llm.yaml: paper or cpu.")] = "paper",
    set_: Annotated[list[str], typer.Option("--set", help="Override a field, key=value (e.g. --set epochs=3).")]
        = [],  # noqa: B006
) -> None:
    """Train with accelerate (launch with `accelerate launch --config_file ... -m bench llm train ...`); running it
    again with the same --out resumes from the last saved state."""
    from bench.llm.data import LLMDataError
    from bench.llm.train import LLMTrainConfig, load_preset, train

    text_fields = frozenset(f.name for f in dataclasses.fields(LLMTrainConfig) if isinstance(f.default, str))
    fields = {**load_preset(preset), **_parse_sets(set_, text_fields), "model": model, "data": str(data),
              "out": str(out), "ref_logps": str(ref_logps or "")}
    if objective:
        fields["objective"] = objective
    try:
        cfg = LLMTrainConfig(**fields)
        record = train(cfg)
    except (LLMDataError, ValueError, TypeError, FloatingPointError) as e:
        _fail(str(e))
    if record:
        typer.echo(f"step {record['step']} loss {record['loss']:.4f} nll {record['nll']:.4f} -> {out}/final")


@llm_app.command("eval")
def llm_eval(
    model: Annotated[str, typer.Option(help="Model to evaluate: Hugging Face id or folder.")],
    tasks: Annotated[str, typer.Option(help="Comma-separated: aime24, math500, gpqa_diamond.")]
        = "aime24,math500,gpqa_diamond",
    data: Annotated[list[str], typer.Option(help="Source of a task, task=PATH or task=HF_ID (repeatable; "
                                            "aime24=s1: s1's aime24_nofigures); otherwise its default Hugging "
                                            "Face id is used.")] = [],  # noqa: B006
    out: Annotated[Path, typer.Option(help="Folder for TASK.jsonl and TASK.llmeval.json.")] = Path("results/llm/eval"),
    name: Annotated[str | None, typer.Option(help="Row name in the report (default: the model folder's name).")]
        = None,
    backend: Annotated[str, typer.Option(help="auto (vLLM when installed), transformers or vllm.")] = "auto",
    max_new_tokens: Annotated[int, typer.Option(help="Generation budget without budget forcing.")] = 32768,
    thinking_budget: Annotated[str, typer.Option(help="Budget forcing: thinking tokens (0 = off), or auto (s1's "
                                                 "protocol without budget forcing: the context less the prompt and "
                                                 "--answer-tokens).")] = "0",
    num_waits: Annotated[int, typer.Option(help="Budget forcing: times \"Wait\" is appended.")] = 0,
    answer_tokens: Annotated[int, typer.Option(help="Budget forcing: tokens for the answer.")] = 512,
    seed: Annotated[int, typer.Option(help="Seed of the GPQA option order.")] = 0,
    limit: Annotated[int | None, typer.Option(help="Evaluate only the first N items per task.")] = None,
    batch_size: Annotated[int, typer.Option(help="Prompts per generate call (Transformers backend).")] = 8,
    dtype: Annotated[str, typer.Option(help="Model dtype.")] = "bfloat16",
    tensor_parallel_size: Annotated[int, typer.Option(help="vLLM tensor parallel GPUs.")] = 1,
    prompt: Annotated[str, typer.Option(help="Question wording: ours (box the final answer) or s1 (the simple-evals "
                                        "templates of s1's tasks: a final 'Answer:' line).")] = "ours",
    samples: Annotated[int, typer.Option(help="Answers sampled per item (pass@1 over them, with a t interval over "
                                         "items); 1 = greedy.")] = 1,
    temperature: Annotated[float, typer.Option(help="Sampling temperature for --samples > 1 (0 = greedy).")] = 0.0,
    thinking_budgets: Annotated[str | None, typer.Option(help="The paper's Figure 2: evaluate at each of these "
                                                         "thinking budgets (e.g. none,512,1024,2048,4096,8192; none = "
                                                         "without budget forcing), one folder of records each under "
                                                         "--out, resuming budgets already done.")] = None,
) -> None:
    """Evaluation on AIME 2024, MATH500 and GPQA Diamond (greedy, or pass@1 over sampled answers), graded with
    math-verify."""
    from bench.llm.data import LLMDataError
    from bench.llm.evaluate import evaluate, evaluate_budget_series

    sources = {}
    for item in data:
        if "=" not in item:
            _fail(f"--data {item!r}: expected task=PATH, e.g. --data aime24=aime_2024.parquet")
        task, path = item.split("=", 1)
        sources[task.strip()] = path
    def parse_budget(text: str, flag: str) -> int | str:
        if text in ("auto", "none"):
            return 0 if text == "none" else text
        if text.isdigit():
            return int(text)
        _fail(f"{flag} {text!r}: give 0 (off), a number of thinking tokens, or auto")

    budget = parse_budget(thinking_budget, "--thinking-budget")
    task_list = [t.strip() for t in tasks.split(",") if t.strip()]
    try:
        if thinking_budgets:
            records = evaluate_budget_series(
                model, task_list, out, [parse_budget(b.strip(), "--thinking-budgets") for b in
                                        thinking_budgets.split(",")],
                sources=sources, backend=backend, max_new_tokens=max_new_tokens, num_waits=num_waits,
                answer_tokens=answer_tokens, seed=seed, limit=limit, batch_size=batch_size, dtype=dtype,
                tensor_parallel_size=tensor_parallel_size, name=name, prompt=prompt, samples=samples,
                temperature=temperature)
        else:
            records = evaluate(model, task_list, out, sources, backend, max_new_tokens, budget, num_waits,
                               answer_tokens, seed, limit, batch_size, dtype, tensor_parallel_size, name, prompt,
                               samples, temperature)
    except (LLMDataError, ImportError, ValueError) as e:
        _fail(str(e))
    for r in records:
        lo, hi = r["ci95"]
        which = f" (thinking budget {r['config']['thinking_budget'] or 'none'})" if thinking_budgets else ""
        typer.echo(f"{r['title']:>13}{which}: {100 * r['accuracy']:.1f} [{100 * lo:.1f}, {100 * hi:.1f}] "
                   f"({r['correct']:g}/{r['n']}{f', pass@1 over {samples} samples' if samples > 1 else ''}; "
                   f"unreadable {r['unreadable']}, self-contradicting "
                   f"{r['contradictory']}, grading timeouts {r['grading_timeouts']})")


@llm_app.command("smoke")
def llm_smoke(
    out: Annotated[Path, typer.Option(help="Folder for the tiny model, data and every stage's output.")]
        = Path("results/llm/smoke"),
    steps: Annotated[int, typer.Option(help="Training steps.")] = 20,
    objective: Annotated[str, typer.Option(help="Objective to train.")] = "iw_sft",
) -> None:
    """prepare -> ref-logps -> train -> eval end to end on a tiny random Qwen2 built locally (CPU, offline)."""
    from bench.llm.smoke import smoke

    result = smoke(out, steps, objective)
    t = result["timings"]
    typer.echo(" ".join(f"{k} {v:.1f}s" for k, v in t.items()) + f" (total {sum(t.values()):.1f}s)")
    typer.echo(f"nll {result['first_nll']:.3f} -> {result['last_nll']:.3f} over {result['steps']} steps; accuracy "
               + ", ".join(f"{k} {v:.2f}" for k, v in result["accuracy"].items()) + f" -> {out}")


def main() -> None:
    """Console entry point: the commands, plus one clear message for a full disk (nothing written is lost)."""
    try:
        app()
    except OSError as e:
        if e.errno != errno.ENOSPC:
            raise
        message = (f"no space left on the device while writing {e.filename}: free some space and run the same "
                   "command again — complete records are kept and unfinished runs resume from their last checkpoint"
                   if e.filename else e.strerror)  # a checkpoint's own message names the folder and the bytes
        typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
        sys.exit(2)
