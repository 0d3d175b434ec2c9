"""The one checkpoint mechanism every training loop uses: named state, one file, atomic, device-independent.

A loop names what it must restore to continue bit-identically — modules, optimisers, schedulers, generators, the
global RNGs, the run context (curve, statistics) — and :class:`Checkpoint` saves and restores all of it:

- a component is anything with ``state_dict()`` / ``load_state_dict()`` (``nn.Module``, ``Optimizer``,
  ``LRScheduler``, :class:`GlobalRNG`, :class:`~bench.algorithms.context.RunContext`, ...), a ``torch.Generator``
  or a numpy ``Generator``;
- the file holds data, never code: every state is tensors, numbers, text and bytes, read back with
  ``weights_only=True``, so a tampered checkpoint (a pickle that calls ``os.system``) is refused, not run; and it
  carries the sha256 of its payload, so a truncated file or flipped bytes are found. Such a file is moved aside
  (``<name>.corrupt``) and the run starts afresh, saying so in its log and record (``discarded``);
- the file is written to a temporary file with a unique name beside it, then renamed, so a reader sees the old
  checkpoint or the new one, never half of one, and two processes never write the same temporary file; a failed
  write (a full disk) removes its temporary file;
- it is read back to the CPU (``map_location="cpu"``) and each component moves what it needs: a module's or an
  optimiser's ``load_state_dict`` copies into tensors already on the training device, while generator and RNG
  states stay CPU byte tensors, which is what ``Generator.set_state`` expects for CPU and CUDA generators alike. So
  a checkpoint written on a GPU resumes on a CPU and the other way round. A torch generator's stream is specific to
  its device type (CPU: Mersenne Twister, CUDA: Philox), so a generator restored onto another kind of device is
  seeded from the saved state instead: deterministic, but not the stream an uninterrupted run would have drawn
  (whose numbers would differ on the other device anyway).
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch


class Stateful(Protocol):
    def state_dict(self) -> Any: ...

    def load_state_dict(self, state: Any) -> Any: ...


class GlobalRNG:
    """numpy's and torch's global generators (CPU and every CUDA device) as one component.

    Only for code that draws from the global generators and cannot be handed one (d3rlpy); the native algorithms
    draw from their own ``torch.Generator``.
    """

    def state_dict(self) -> dict:
        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        return {"numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],  # data, not pickles
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}

    def load_state_dict(self, state: dict) -> None:
        kind, keys, pos, has_gauss, gauss = state["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
        torch.set_rng_state(state["torch"])
        if state["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])


Component = Stateful | torch.Generator | np.random.Generator


def _state_of(component: Component) -> Any:
    if isinstance(component, torch.Generator):
        return {"device_type": component.device.type, "state": component.get_state()}
    if isinstance(component, np.random.Generator):
        return component.bit_generator.state
    return component.state_dict()


def _restore(component: Component, state: Any) -> None:
    if isinstance(component, torch.Generator):
        if state["device_type"] == component.device.type:
            component.set_state(state["state"])
        else:
            digest = hashlib.sha256(state["state"].numpy().tobytes()).digest()
            component.manual_seed(int.from_bytes(digest[:8], "little"))
    elif isinstance(component, np.random.Generator):
        component.bit_generator.state = state
    else:
        component.load_state_dict(state)


FORMAT = "bench-checkpoint-2"  # {format, sha256, payload}: the payload is torch.save of {step, components}


class CorruptCheckpoint(ValueError):
    """A checkpoint file that cannot be trusted: unreadable, another format, failing its checksum or holding code."""


class Checkpoint:
    """Every named component of a training loop in one file at ``path`` (None: never saved, nothing restored).
    ``discarded``: after :meth:`restore`, what was wrong with a file it moved aside (None: nothing was)."""

    def __init__(self, path: Path | None, components: dict[str, Component]):
        self.path = None if path is None else Path(path)
        self.components = components
        self.discarded: str | None = None

    def save(self, step: int) -> None:
        if self.path is None:
            return
        inner = io.BytesIO()
        torch.save({"step": step, "components": {name: _state_of(c) for name, c in self.components.items()}}, inner)
        payload = inner.getvalue()
        buffer = io.BytesIO()  # in memory first: a full disk can then say how many bytes were needed
        torch.save({"format": FORMAT, "sha256": hashlib.sha256(payload).hexdigest(), "payload": payload}, buffer)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(buffer.getbuffer())
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except OSError as e:
            Path(tmp).unlink(missing_ok=True)
            if e.errno != errno.ENOSPC:
                raise
            free = shutil.disk_usage(self.path.parent).free
            raise OSError(errno.ENOSPC, f"no space left in {self.path.parent} for the checkpoint at step {step}: "
                                        f"it needs {buffer.tell():,} bytes and {free:,} are free; free some space "
                                        "and run the same command again: it resumes from the last checkpoint "
                                        f"({'none yet' if not self.path.exists() else self.path})") from e
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def restore(self) -> int:
        """Restore every component from the file; returns the step it was saved at (0 when there is none, or when
        the file could not be trusted: then it is moved aside and ``discarded`` says why)."""
        if self.path is None or not self.path.exists():
            return 0
        try:
            state = read_checkpoint(self.path)
        except CorruptCheckpoint as e:
            aside = self.path.with_name(self.path.name + ".corrupt")
            os.replace(self.path, aside)
            self.discarded = f"checkpoint {self.path} {e}; moved aside to {aside}, training starts afresh"
            return 0
        saved = state["components"]
        if set(saved) != set(self.components):
            raise ValueError(f"checkpoint {self.path} holds {sorted(saved)}, this run needs "
                             f"{sorted(self.components)}; delete it to start the run afresh")
        for name, component in self.components.items():
            _restore(component, saved[name])
        return int(state["step"])


def read_checkpoint(path: Path) -> dict:
    """{step, components} of a checkpoint file, read as data only (``weights_only``) and checked against its
    checksum; raises CorruptCheckpoint saying what is wrong."""
    try:
        outer = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - cut short, not a torch file, or a pickle asking to run code
        raise CorruptCheckpoint(f"cannot be read as data ({type(e).__name__}: {str(e).splitlines()[0][:200]})") \
            from None
    if not isinstance(outer, dict) or outer.get("format") != FORMAT:
        raise CorruptCheckpoint(f"is not a checkpoint of this suite's format ({FORMAT}, with a checksum)")
    if hashlib.sha256(outer["payload"]).hexdigest() != outer["sha256"]:
        raise CorruptCheckpoint("fails its checksum (its bytes changed after it was written)")
    try:
        return torch.load(io.BytesIO(outer["payload"]), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - a payload with a valid checksum that still asks for code
        raise CorruptCheckpoint(f"holds more than data ({type(e).__name__})") from None
