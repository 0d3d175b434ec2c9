"""`Trajectories`: the one in-memory form of an offline dataset.

Every source (Minari, D4RL HDF5, the generator, the embedded dataset) produces exactly this, so nothing downstream
knows where the data came from. Arrays are flat over transitions; episode ``i`` is the half-open range
``episode_starts[i]:episode_starts[i + 1]``.

Alignment invariant: row t of ``observations``, ``actions``, ``rewards`` and ``next_observations`` belong to the same
environment step, and ``next_observations[t] == observations[t + 1]`` whenever t + 1 is in the same episode.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from bench.envs import flatten_observation


class DatasetError(RuntimeError):
    """A dataset is missing, corrupt or malformed. The message says what and how to fix it."""


@dataclass(frozen=True)
class Trajectories:
    observations: np.ndarray  # (N, obs_dim) float32
    actions: np.ndarray  # (N, act_dim) float32
    rewards: np.ndarray  # (N,) float32
    next_observations: np.ndarray  # (N, obs_dim) float32
    terminals: np.ndarray  # (N,) bool: the MDP ended at this step (no bootstrapping)
    timeouts: np.ndarray  # (N,) bool: the episode was cut at this step (time limit or end of data)
    episode_starts: np.ndarray  # (E + 1,) int64 offsets; episode i is [starts[i], starts[i+1])
    name: str = "unnamed"
    metadata: dict = field(default_factory=dict)  # source, path, reference scores, ...

    def __post_init__(self) -> None:
        n = len(self.rewards)
        checks = {
            "observations": self.observations.shape[0] == n and self.observations.ndim == 2,
            "next_observations": self.next_observations.shape == self.observations.shape,
            "actions": self.actions.shape[0] == n and self.actions.ndim == 2,
            "terminals": self.terminals.shape == (n,),
            "timeouts": self.timeouts.shape == (n,),
            "episode_starts": self.episode_starts[0] == 0 and self.episode_starts[-1] == n,
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise DatasetError(f"dataset {self.name!r}: inconsistent arrays {bad} for {n} transitions")
        if np.any(np.diff(self.episode_starts) <= 0):
            raise DatasetError(f"dataset {self.name!r}: empty episode in episode_starts")
        if not (np.all(np.isfinite(self.observations)) and np.all(np.isfinite(self.actions))
                and np.all(np.isfinite(self.rewards))):
            raise DatasetError(f"dataset {self.name!r} contains NaN or inf values; the file is corrupt, "
                               "delete it from the cache and load it again")

    # -- sizes ------------------------------------------------------------------------------------------------
    @property
    def num_transitions(self) -> int:
        return len(self.rewards)

    @property
    def num_episodes(self) -> int:
        return len(self.episode_starts) - 1

    @property
    def obs_dim(self) -> int:
        return self.observations.shape[1]

    @property
    def act_dim(self) -> int:
        return self.actions.shape[1]

    @property
    def episode_lengths(self) -> np.ndarray:
        return np.diff(self.episode_starts)

    @property
    def episode_returns(self) -> np.ndarray:
        """Undiscounted return of every episode (float64 sums, so long episodes do not lose precision)."""
        return np.add.reduceat(self.rewards.astype(np.float64), self.episode_starts[:-1])

    def episode_slice(self, i: int) -> slice:
        return slice(int(self.episode_starts[i]), int(self.episode_starts[i + 1]))

    def episode_index_of_transitions(self) -> np.ndarray:
        """(N,) episode index of each transition."""
        return np.repeat(np.arange(self.num_episodes), self.episode_lengths)

    def fingerprint(self) -> str:
        """sha256 over the content (not the file format), so the same data from any source hashes the same."""
        return self._fingerprint

    @cached_property
    def _fingerprint(self) -> str:  # computed once: the record and the reference-policy cache key both need it
        h = hashlib.sha256()
        for a in (self.observations, self.actions, self.rewards, self.next_observations,
                  self.terminals, self.timeouts, self.episode_starts):
            h.update(str(a.dtype).encode() + str(a.shape).encode())
            h.update(np.ascontiguousarray(a).tobytes())
        return h.hexdigest()

    def summary(self) -> dict:
        r = self.episode_returns
        q = np.percentile(r, [0, 10, 25, 50, 75, 90, 100])
        return {
            "name": self.name,
            "episodes": self.num_episodes,
            "transitions": self.num_transitions,
            "obs_dim": self.obs_dim,
            "act_dim": self.act_dim,
            "episode_length_mean": float(self.episode_lengths.mean()),
            "return_mean": float(r.mean()),
            "return_quantiles": dict(zip(["min", "p10", "p25", "p50", "p75", "p90", "max"],
                                         map(float, q), strict=True)),
        }

    # -- construction -----------------------------------------------------------------------------------------
    @classmethod
    def from_episodes(
        cls,
        episodes: Sequence[dict],
        name: str = "unnamed",
        metadata: dict | None = None,
    ) -> Trajectories:
        """Build from Minari-style episodes: ``observations`` has T+1 rows, the other keys T.

        ``next_observations`` is taken from the same episode (row t+1), which is what makes the data aligned.
        """
        obs, nxt, act, rew, term, tout, lengths = [], [], [], [], [], [], []
        for k, ep in enumerate(episodes):
            o = flatten_observation(ep["observations"])
            a = np.asarray(ep["actions"], dtype=np.float32)
            t = len(a)
            if o.ndim != 2:
                raise DatasetError(f"dataset {name!r}, episode {k}: observations must be (T+1, dim) arrays or "
                                   f"goal-conditioned dicts, got shape {o.shape}")
            if t == 0:
                continue
            if len(o) != t + 1:
                raise DatasetError(f"dataset {name!r}, episode {k}: {len(o)} observations for {t} actions; "
                                   "Minari episodes store T+1 observations")
            a = a.reshape(t, -1)
            obs.append(o[:-1])
            nxt.append(o[1:])
            act.append(a)
            rew.append(np.asarray(ep["rewards"], dtype=np.float32).reshape(t))
            term.append(np.asarray(ep["terminations"], dtype=bool).reshape(t))
            trunc = np.asarray(ep["truncations"], dtype=bool).reshape(t).copy()
            if not (term[-1][-1] or trunc[-1]):
                trunc[-1] = True  # an episode cut by the end of the data is a truncation
            tout.append(trunc)
            lengths.append(t)
        if not lengths:
            raise DatasetError(f"dataset {name!r} has no non-empty episodes")
        return cls(
            observations=np.concatenate(obs),
            actions=np.concatenate(act),
            rewards=np.concatenate(rew),
            next_observations=np.concatenate(nxt),
            terminals=np.concatenate(term),
            timeouts=np.concatenate(tout),
            episode_starts=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
            name=name,
            metadata=dict(metadata or {}),
        )

    @classmethod
    def from_flat(
        cls,
        observations: np.ndarray,
        actions: np.ndarray,
        rewards: np.ndarray,
        terminals: np.ndarray,
        timeouts: np.ndarray,
        next_observations: np.ndarray | None = None,
        name: str = "unnamed",
        metadata: dict | None = None,
    ) -> Trajectories:
        """Build from D4RL-style flat arrays; an episode ends at a terminal, a timeout or the end of the data.

        Without ``next_observations`` (older D4RL files), next_observations[t] = observations[t + 1] inside an
        episode. At an episode's last step the next observation is not in the file: it is set to observations[t]
        and the step is flagged as terminal or timeout, so no learner bootstraps from it (D4RL's own
        ``qlearning_dataset`` drops such timeout steps; we keep them so episode returns stay exact).
        """
        n = len(rewards)
        terminals = np.asarray(terminals, dtype=bool).reshape(n)
        timeouts = np.asarray(timeouts, dtype=bool).reshape(n).copy()
        ends = terminals | timeouts
        if n and not ends[-1]:
            timeouts[-1] = True  # the data ends mid-episode: treat as truncation
            ends[-1] = True
        timeouts &= ~terminals  # a step that terminates is a terminal, whatever the time limit says
        end_idx = np.flatnonzero(ends)
        starts = np.concatenate([[0], end_idx + 1]).astype(np.int64)
        obs = np.asarray(observations, dtype=np.float32).reshape(n, -1)
        if next_observations is None:
            nxt = np.empty_like(obs)
            nxt[:-1] = obs[1:]
            nxt[end_idx] = obs[end_idx]  # next observation unknown at an episode's last step
        else:
            nxt = np.asarray(next_observations, dtype=np.float32).reshape(n, -1)
        return cls(
            observations=obs,
            actions=np.asarray(actions, dtype=np.float32).reshape(n, -1),
            rewards=np.asarray(rewards, dtype=np.float32).reshape(n),
            next_observations=nxt,
            terminals=terminals,
            timeouts=timeouts,
            episode_starts=starts,
            name=name,
            metadata=dict(metadata or {}),
        )

    @classmethod
    def concatenate(cls, parts: Sequence[Trajectories], name: str) -> Trajectories:
        """Several datasets as one; ``metadata["parts"]`` keeps which episodes came from which (for curation)."""
        if len({(p.obs_dim, p.act_dim) for p in parts}) != 1:
            raise DatasetError(f"cannot combine {[p.name for p in parts]}: observation/action sizes differ "
                               f"{[(p.obs_dim, p.act_dim) for p in parts]}")
        offsets = np.cumsum([0] + [p.num_transitions for p in parts])
        first = np.cumsum([0] + [p.num_episodes for p in parts])
        cat = {k: np.concatenate([getattr(p, k) for p in parts])
               for k in ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts")}
        starts = np.concatenate([[0]] + [p.episode_starts[1:] + o for p, o in zip(parts, offsets, strict=False)])
        meta = {**parts[0].metadata, "parts": [{"name": p.name, "first_episode": int(f), "episodes": p.num_episodes}
                                               for p, f in zip(parts, first, strict=False)]}
        return cls(**cat, episode_starts=starts.astype(np.int64), name=name, metadata=meta)

    def to_episodes(self) -> list[dict]:
        """Minari-style episodes (T+1 observations) — the inverse of :meth:`from_episodes`."""
        eps = []
        for i in range(self.num_episodes):
            s = self.episode_slice(i)
            eps.append({
                "observations": np.concatenate([self.observations[s], self.next_observations[s][-1:]]),
                "actions": self.actions[s],
                "rewards": self.rewards[s],
                "terminations": self.terminals[s],
                "truncations": self.timeouts[s],
            })
        return eps
