"""`bench llm train`: iw-SFT of a causal LM on prepared examples, a plain accelerate loop (no Trainer).

One optimisation step consumes one global batch of ``global_batch_size`` examples. The epoch order is a seeded
permutation known to every process; process r takes its contiguous share of each global batch and splits it into
micro-batches of ``per_device_batch_size`` (gradient accumulation makes up the rest). The loss is normalised by the
number of loss tokens in the whole global batch, so 1 process and N processes compute the same loss and gradient:

    L = -sum_{i in batch} sum_t w_{i,t} log p(y_{i,t} | x_i, y_{i,<t}; theta) / sum_{i in batch} |y_i|

Weights are those of :mod:`bench.llm.objectives`. Optimiser: AdamW; schedule: linear warm-up over
``warmup_ratio`` of the steps, then cosine to 0 (REFERENCE §5). The resumable state (model, optimiser, scheduler,
RNG, step, iw_sft_paper's lagged statistics) is written every ``save_every`` steps and at each epoch's end, where a
Hugging Face-format model is written too (``epoch-E/``, and ``final/`` when the run stops: after the last epoch or
after ``max_steps``).
"""

from __future__ import annotations

import functools
import json
import math
import os
import pickle
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from bench.algorithms.weights import warmup_cosine
from bench.llm.data import LLMDataError, load_prepared
from bench.llm.logprobs import TokenLogProbs, collate
from bench.llm.objectives import (
    LAGGED,
    LOSS_NORMALIZATIONS,
    OBJECTIVES,
    bound_fractions,
    clipped_log_ratio_sums,
    effective_sample_size,
    objective_weights,
    weight_floor,
    weighted_nll_sum,
)
from bench.llm.reference import DTYPES, distributed_state, load_causal_lm, load_ref_logps
from bench.results.store import package_versions


@dataclass
class LLMTrainConfig:
    model: str = ""  # Hugging Face id or folder of the starting model; it is also pi_ref
    data: str = ""  # folder written by `bench llm prepare`
    ref_logps: str = ""  # folder written by `bench llm ref-logps` (not needed for sft)
    out: str = "results/llm/train"
    objective: str = "iw_sft"  # sft | iw_sft (authors' code; default) | iw_sft_paper | iw_sft_paper_mean | iw_sft_token
    epochs: int = 5
    learning_rate: float = 1e-5
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 1e-4  # on matrices only: not on biases and norm weights (HF Trainer, which s1 used)
    warmup_ratio: float = 0.05
    max_grad_norm: float = 1.0  # s1 keeps the Trainer default
    loss_normalization: str = "tokens"  # tokens: mean over the global batch's loss tokens | sequence: mean over its
    # sequences of each sequence's token mean (s1 and the authors' code: 1 sequence per GPU; the `paper` preset)
    global_batch_size: int = 8  # examples per optimisation step, over all processes
    per_device_batch_size: int = 1  # examples per forward pass; the rest is gradient accumulation
    max_weight: float = 16.0  # cap of a sequence weight (iw_sft, iw_sft_paper, iw_sft_paper_mean)
    alpha: float = 0.1  # iw_sft_paper's smoothing g(rho) = alpha * rho
    mean_alpha: float = 1.0  # iw_sft_paper_mean's scale of the per-token mean clipped log-ratio
    ratio_clip: tuple[float, float] = (0.2, 1.8)  # per-token ratio clip (iw_sft_paper*, iw_sft_token)
    chunk_size: int = 1024  # tokens whose full-vocabulary logits exist at once
    model_dtype: str = "float32"  # master weights; compute follows mixed_precision
    mixed_precision: str = "bf16"  # bf16 | no (accelerate's setting; a launch config's value wins)
    gradient_checkpointing: bool = True
    save_every: int = 50  # steps between resumable states (also at every epoch end; 0: at epoch ends only)
    save_model_each_epoch: bool = True  # Hugging Face-format model in epoch-E/
    save_dtype: str = "bfloat16"  # dtype of the saved Hugging Face-format models
    max_steps: int = 0  # stop after this many steps (0 = all epochs)
    seed: int = 0
    log_every: int = 1
    cpu_threads: int = 0  # torch threads per process for its CPU work (the offloaded AdamW step); 0: this node's
    # cores / its processes (accelerate launch leaves each process 1 thread)


@functools.lru_cache(maxsize=1)  # every step of an epoch asks for the same epoch's batches
def global_batches(n_examples: int, global_batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """The epoch's global batches: a seeded permutation cut into full batches (the last partial one is dropped)."""
    order = np.random.default_rng([seed, epoch]).permutation(n_examples)
    n = n_examples // global_batch_size
    return [order[b * global_batch_size:(b + 1) * global_batch_size].tolist() for b in range(n)]


def process_share(batch: list[int], rank: int, world: int) -> list[int]:
    per = len(batch) // world
    return batch[rank * per:(rank + 1) * per]


def check_config(cfg: LLMTrainConfig, world: int) -> None:
    if cfg.objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {cfg.objective!r}; choose one of {', '.join(OBJECTIVES)}")
    if cfg.loss_normalization not in LOSS_NORMALIZATIONS:
        raise ValueError(f"unknown loss_normalization {cfg.loss_normalization!r}; choose one of "
                         f"{', '.join(LOSS_NORMALIZATIONS)}")
    if cfg.global_batch_size % (world * cfg.per_device_batch_size):
        raise ValueError(f"global_batch_size {cfg.global_batch_size} must be a multiple of processes ({world}) x "
                         f"per_device_batch_size ({cfg.per_device_batch_size})")
    if cfg.objective != "sft" and not cfg.ref_logps:
        raise ValueError(f"objective {cfg.objective} needs --ref-logps (run `bench llm ref-logps` first)")


def fsdp_on_cpu(accelerator) -> None:
    """Run a launch with an FSDP config on CPU processes (gloo) through accelerate's FSDP path. accelerate turns FSDP
    on for accelerators only; on CPUs it would silently train a full replica per process instead, so the FSDP2
    sharding, its wrapping of an untied output head and its sharded checkpoints could not be tested off a GPU."""
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    state = accelerator.state
    if state.distributed_type == DistributedType.MULTI_CPU and os.environ.get("ACCELERATE_USE_FSDP") == "true":
        plugin = FullyShardedDataParallelPlugin()  # from the launch's FSDP_* variables
        if accelerator.mixed_precision != "no":
            plugin.set_mixed_precision(accelerator.mixed_precision)
        state.distributed_type, state.fsdp_plugin = DistributedType.FSDP, plugin
        # as accelerate does when it turns FSDP on: a state made later copies the process state's type
        PartialState._shared_state["distributed_type"] = DistributedType.FSDP


class _State:
    """The small part of the resumable state accelerate does not hold, as JSON: the step, the learning-rate
    schedule's state and iw_sft_paper's lagged sums."""

    def __init__(self, out: Path):
        self.path = out / "trainer_state.json"
        self.step, self.state_dir, self.lagged, self.scheduler = 0, None, {}, None
        if self.path.exists():
            try:
                s = json.loads(self.path.read_text())
                self.step, self.state_dir, self.lagged, self.scheduler = (s["step"], s["state_dir"], s["lagged"],
                                                                          s.get("scheduler"))
            except (ValueError, KeyError, TypeError) as e:
                raise LLMDataError(f"{self.path} is damaged ({type(e).__name__}: {e}); nothing was loaded. Move it "
                                   "aside to start afresh (the saved states beside it stay)") from None

    def write(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"step": self.step, "state_dir": self.state_dir, "lagged": self.lagged,
                                   "scheduler": self.scheduler}))
        tmp.replace(self.path)


# What torch.distributed.checkpoint's metadata files (plain pickles, read with pickle.load when an FSDP sharded state
# is resumed) may name: its own record classes, shapes, dtypes, layouts and paths. Anything else is code to run.
_DCP_RECORDS = {"torch.distributed.checkpoint.metadata": {
    "Metadata", "MetadataIndex", "StorageMeta", "TensorProperties", "TensorStorageMetadata", "ChunkStorageMetadata",
    "BytesStorageMetadata", "_MEM_FORMAT_ENCODING"},
    "torch.distributed.checkpoint.filesystem": {"_StorageInfo"}, "torch.serialization": {"_get_layout"},
    "pathlib": {"PosixPath", "PurePosixPath", "WindowsPath", "PureWindowsPath"}, "collections": {"OrderedDict"}}


class _RecordsOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        allowed = name in _DCP_RECORDS.get(module, ()) or (module == "torch" and (
            name == "Size" or isinstance(getattr(torch, name, None), (torch.dtype, torch.layout, torch.memory_format))))
        if not allowed:
            raise pickle.UnpicklingError(f"it names {module}.{name}")
        return super().find_class(module, name)


def check_state_runs_no_code(folder: Path) -> None:
    """Refuse (LLMDataError, one line) a saved state whose pickles would run code when resumed. accelerate reads its
    own files with ``weights_only=True`` but a ``custom_checkpoint_*`` with code allowed (bench writes none);
    torch.distributed.checkpoint reads the ``.metadata`` of a sharded (FSDP) state with plain ``pickle.load``, so
    each is read here first with nothing but its record classes allowed."""
    fix = f"it was not loaded, nothing ran. Delete {folder} (and trainer_state.json to start afresh) after finding " \
          "out who wrote it"
    for path in sorted(folder.rglob("custom_checkpoint_*")):
        raise LLMDataError(f"{path} was not written by bench (it keeps no pickled objects in a state); {fix}")
    for path in sorted(folder.rglob("*.metadata")):
        try:
            with open(path, "rb") as f:
                _RecordsOnly(f).load()
        except Exception as e:  # noqa: BLE001 - cut short, or a pickle naming something else
            raise LLMDataError(f"{path} is not a checkpoint's metadata ({e}); {fix}") from None


def _save_model(accelerator, model, tokenizer, folder: Path, save_dtype: str) -> None:
    state_dict = accelerator.get_state_dict(model)
    lm = accelerator.unwrap_model(model).lm
    if state_dict is not None:  # saved in the dtype of inference (bf16 by default), not of the master weights
        state_dict = {k.removeprefix("lm."): v.to(DTYPES[save_dtype]) if v.is_floating_point() else v
                      for k, v in state_dict.items()}
    lm.save_pretrained(folder, state_dict=state_dict, is_main_process=accelerator.is_main_process,
                       save_function=accelerator.save)
    if accelerator.is_main_process:
        tokenizer.save_pretrained(folder)
        # save_pretrained writes the dtype of the parameters it holds (the float32 master weights), not of the
        # tensors it was given: config.json must say what was saved, or dtype="auto" loads upcast to float32
        config = folder / "config.json"
        config.write_text(json.dumps({**json.loads(config.read_text()), "dtype": save_dtype}, indent=2) + "\n")


def train(cfg: LLMTrainConfig) -> dict:
    """Train (or resume) into ``cfg.out``; returns the last logged step ({} on processes other than the main one).
    Runs with ``cfg.cpu_threads`` torch threads, this process's count restored afterwards."""
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(cfg.cpu_threads or max(1, (os.cpu_count() or 1) // int(os.environ.get(
            "LOCAL_WORLD_SIZE", 1))))
        return _train(cfg)
    finally:
        torch.set_num_threads(threads)


def _train(cfg: LLMTrainConfig) -> dict:
    from accelerate import Accelerator
    from accelerate.utils import gather_object, set_seed

    examples, meta = load_prepared(Path(cfg.data))

    world = distributed_state().num_processes
    check_config(cfg, world)
    accum = cfg.global_batch_size // (world * cfg.per_device_batch_size)
    accelerator = Accelerator(mixed_precision=cfg.mixed_precision, gradient_accumulation_steps=accum,
                              cpu=not torch.cuda.is_available())
    fsdp_on_cpu(accelerator)
    if (plugin := getattr(accelerator.state, "deepspeed_plugin", None)) is not None:
        set_deepspeed_batch_keys(plugin.deepspeed_config, cfg, world, accum)  # prepare() has no DataLoader to read
    rank = accelerator.process_index
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    set_seed(cfg.seed)

    ref = load_ref_logps(Path(cfg.ref_logps), examples) if cfg.objective != "sft" else {}
    steps_per_epoch = len(examples) // cfg.global_batch_size
    if steps_per_epoch == 0:
        raise LLMDataError(f"{len(examples)} examples make no global batch of {cfg.global_batch_size}")
    total = steps_per_epoch * cfg.epochs
    warmup = math.ceil(cfg.warmup_ratio * total)

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(cfg.model)  # saved beside every Hugging Face-format model
    lm = load_causal_lm(cfg.model, cfg.model_dtype)
    lm.config.use_cache = False
    if cfg.gradient_checkpointing:
        lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model = TokenLogProbs(lm, cfg.chunk_size)
    if getattr(accelerator.state, "deepspeed_plugin", None) is not None:
        # ZeRO-3 gathers a module's own parameters for its forward; the output head's weight is used by the
        # wrapper's chunked log-probs, so it is registered as the wrapper's external parameter.
        from deepspeed.zero import register_external_parameter

        register_external_parameter(model, lm.get_output_embeddings().weight)
    optimizer = _adamw(accelerator, model, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_cosine(s, warmup, total))
    # The scheduler stays unprepared and unregistered: accelerate would step it once per process, not once per
    # optimisation step, and would unpickle it with code allowed; its state is kept as JSON (_State).
    model, optimizer = accelerator.prepare(model, optimizer)

    state = _State(out)
    if state.state_dir:
        if state.scheduler is None:
            raise LLMDataError(f"{state.path} was written by an older bench that pickled the schedule; that state is "
                               "not loaded: train into a new --out")
        check_state_runs_no_code(out / state.state_dir)
        accelerator.load_state(str(out / state.state_dir))
        scheduler.load_state_dict(state.scheduler)
        accelerator.print(f"resumed from {out / state.state_dir} at step {state.step}")
    if accelerator.is_main_process:
        (out / "config.json").write_text(json.dumps({**asdict(cfg), "world_size": world, "accumulation": accum,
                                                     "total_steps": total, "warmup_steps": warmup,
                                                     "data_fingerprint": meta["fingerprint"],
                                                     "versions": package_versions()}, indent=2))
        _truncate_log(out / "log.jsonl", state.step)

    last_step = cfg.max_steps or total
    record: dict = {}
    model.train()
    while state.step < min(last_step, total):
        epoch, in_epoch = divmod(state.step, steps_per_epoch)
        batch = global_batches(len(examples), cfg.global_batch_size, cfg.seed, epoch)[in_epoch]
        batch_tokens = sum(len(examples[i]["input_ids"]) - examples[i]["prompt_len"] for i in batch)
        denominator = batch_tokens if cfg.loss_normalization == "tokens" else len(batch)
        mine = process_share(batch, rank, world)
        t0 = time.perf_counter()
        loss_sum = torch.zeros(2, device=accelerator.device)  # the weighted loss's numerator, the plain NLL's
        reported, floors, new_lagged = [], [], {}
        for m in range(0, len(mine), cfg.per_device_batch_size):
            micro = [examples[i] for i in mine[m:m + cfg.per_device_batch_size]]
            inputs = {k: v.to(accelerator.device) for k, v in collate(micro, meta["pad_token_id"]).items()}
            with accelerator.accumulate(model):
                logp = model(**inputs)
                lengths = inputs["lengths"] - inputs["loss_start"]
                logp_ref = (torch.cat([ref[e["id"]] for e in micro]).to(logp.device) if ref
                            else torch.zeros_like(logp))
                lagged = torch.tensor([state.lagged.get(e["id"], 0.0) for e in micro])
                w_tok, w_rep = objective_weights(cfg.objective, logp, logp_ref, lengths, lagged,
                                                 max_weight=cfg.max_weight, alpha=cfg.alpha,
                                                 mean_alpha=cfg.mean_alpha, ratio_min=cfg.ratio_clip[0],
                                                 ratio_max=cfg.ratio_clip[1])
                nll = weighted_nll_sum(logp, w_tok, lengths, cfg.loss_normalization)
                # accelerate divides by the accumulation steps and DDP averages over processes: undo both so the
                # gradient is that of the global batch's mean (over tokens, or over sequences).
                accelerator.backward(nll * (world * accum / denominator))
                if accelerator.sync_gradients and cfg.max_grad_norm:
                    accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                optimizer.step()  # accelerate skips it until the last micro-batch
                optimizer.zero_grad()
            loss_sum += torch.stack([nll.detach(), -logp.detach().sum()])
            reported += w_rep.detach().float().cpu().tolist()
            floors += weight_floor(cfg.objective, lengths.cpu(), max_weight=cfg.max_weight, alpha=cfg.alpha,
                                   mean_alpha=cfg.mean_alpha, ratio_min=cfg.ratio_clip[0]).tolist()
            if cfg.objective in LAGGED:
                sums = clipped_log_ratio_sums(logp, logp_ref, lengths, *cfg.ratio_clip).cpu().tolist()
                new_lagged.update({e["id"]: s for e, s in zip(micro, sums, strict=True)})
        lr = scheduler.get_last_lr()[0]  # the rate this step used
        scheduler.step()
        sums = accelerator.reduce(loss_sum, "sum").cpu()
        loss, plain_nll = (sums / torch.tensor([denominator, batch_tokens])).tolist()
        weights = torch.tensor(gather_object(reported))
        at_cap, at_floor = bound_fractions(weights, torch.tensor(gather_object(floors)), cfg.max_weight)
        for part in gather_object([new_lagged]):
            state.lagged.update(part)
        state.step += 1
        record = {"step": state.step, "epoch": epoch, "loss": loss, "nll": plain_nll, "lr": lr,
                  "weight_mean": float(weights.mean()), "weight_min": float(weights.min()),
                  "weight_max": float(weights.max()), "ess": effective_sample_size(weights),
                  "weight_capped_fraction": at_cap, "weight_floor_fraction": at_floor,
                  "tokens": batch_tokens, "seconds": time.perf_counter() - t0}
        if not math.isfinite(loss):
            raise FloatingPointError(f"loss is {loss} at step {state.step}; the last saved state "
                                     f"({state.state_dir or 'none'}) is intact — lower --learning-rate and resume")
        if accelerator.is_main_process:
            with open(out / "log.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")
            if state.step % cfg.log_every == 0:
                accelerator.print(f"step {state.step}/{total} epoch {epoch} loss {loss:.4f} nll {plain_nll:.4f} "
                                  f"w mean {record['weight_mean']:.3f} [{record['weight_min']:.3f}, "
                                  f"{record['weight_max']:.3f}] ess {record['ess']:.1f} at cap {at_cap:.2f} "
                                  f"at floor {at_floor:.2f} lr {record['lr']:.2e}")
        epoch_end = state.step % steps_per_epoch == 0
        if epoch_end or (cfg.save_every and state.step % cfg.save_every == 0) or state.step == last_step:
            state.scheduler = scheduler.state_dict()
            _checkpoint(accelerator, state, out)
        if epoch_end and cfg.save_model_each_epoch and state.step < total:
            _save_model(accelerator, model, tokenizer, out / f"epoch-{epoch + 1}", cfg.save_dtype)
    _save_model(accelerator, model, tokenizer, out / "final", cfg.save_dtype)
    accelerator.wait_for_everyone()
    return record if accelerator.is_main_process else {}


def decay_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW parameter groups as Hugging Face's Trainer (which s1 used) makes them: weight decay on weight matrices
    and embeddings, none on biases and normalisation weights (1-D parameters, or names with "bias" / "norm")."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 or "bias" in name or "norm" in name.lower() else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def set_deepspeed_batch_keys(ds_config: dict, cfg: LLMTrainConfig, world: int, accum: int) -> None:
    """Fill DeepSpeed's batch keys from the run's config: accelerate reads them from a DataLoader, and this loop
    passes none to ``prepare`` (with "auto" left in, ``prepare`` raises). A value the launch config sets must
    agree."""
    wanted = {"train_micro_batch_size_per_gpu": cfg.per_device_batch_size,
              "gradient_accumulation_steps": accum, "train_batch_size": cfg.global_batch_size}
    for key, value in wanted.items():
        given = ds_config.get(key, "auto")
        if given not in ("auto", value):
            raise ValueError(f"the DeepSpeed config sets {key}: {given} but this run needs {value} (global_batch_size "
                             f"{cfg.global_batch_size} = {world} processes x per_device_batch_size "
                             f"{cfg.per_device_batch_size} x {accum} accumulation steps); set {key}: {value} or "
                             "auto in the launch config")
        ds_config[key] = value


def _adamw(accelerator, model, cfg: LLMTrainConfig):
    """torch's fused AdamW (one kernel over all parameters, on the GPU or — FSDP2 offload — on the CPU, where the
    per-tensor loop of the default took ~28 s a step for a 32B model's shard); DeepSpeedCPUAdam (the same update)
    when a DeepSpeed launch config offloads the optimizer."""
    kwargs = {"lr": cfg.learning_rate, "betas": tuple(cfg.betas)}
    groups = decay_groups(model, cfg.weight_decay)
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    offload = None if plugin is None else \
        plugin.deepspeed_config.get("zero_optimization", {}).get("offload_optimizer", {}).get("device")
    if offload == "cpu":
        from deepspeed.ops.adam import DeepSpeedCPUAdam

        return DeepSpeedCPUAdam(groups, adamw_mode=True, **kwargs)
    return torch.optim.AdamW(groups, fused=True, **kwargs)


def _checkpoint(accelerator, state: _State, out: Path) -> None:
    name = f"state-{state.step}"
    accelerator.save_state(str(out / name))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        old, state.state_dir = state.state_dir, name
        state.write()
        if old and old != name:
            shutil.rmtree(out / old, ignore_errors=True)
    else:
        state.state_dir = name
    accelerator.wait_for_everyone()


def _truncate_log(path: Path, step: int) -> None:
    """Drop log lines past the resumed step (a killed run may have logged steps it never saved)."""
    if path.exists():
        lines = [ln for ln in path.read_text().splitlines() if ln and json.loads(ln)["step"] <= step]
        path.write_text("".join(ln + "\n" for ln in lines))


def read_log(out: Path) -> list[dict]:
    return [json.loads(ln) for ln in (Path(out) / "log.jsonl").read_text().splitlines() if ln]


def load_preset(name: str) -> dict:
    """Fields of a preset in bench/configs/llm.yaml."""
    import yaml

    from bench.configs import PRESET_DIR

    presets = yaml.safe_load((PRESET_DIR / "llm.yaml").read_text())
    if name not in presets:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(presets)}")
    return presets[name]
