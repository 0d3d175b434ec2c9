r"""The domain of every numeric config field and the choices of every named option, declared once beside the field,
checked when a config is built.

    steps: int = bounded(10_000, ge=1)  # gradient steps
    ema: float = bounded(0.99, ge=0, lt=1)  # theta_q <- ema * theta_q + (1 - ema) * theta
    weight_fn: str = choice("temperature", WEIGHT_FUNCTIONS)  # see weights.py

``bounded`` / ``choice`` are dataclass ``field``\ s whose metadata holds the domain / the choices; :func:`check_domains`
(called from each config's ``__post_init__``) raises :class:`ConfigError` naming the field, the value and the domain
or the allowed set, and :func:`check_order` does the same for a constraint between two fields. A list field's domain
applies to each element. ``run.resolve_config`` adds where the value came from (``--set``, a preset file, or the
dataclass default), so a bad value fails before any record exists and before any training.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any


class ConfigError(ValueError):
    """A config value outside its domain; ``field`` names it so the caller can say where it came from."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field

    def __reduce__(self):  # pickles (a Ray task's error travels to the driver)
        return type(self), (self.field, str(self))


@dataclass(frozen=True)
class Domain:
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def __str__(self) -> str:
        low = f">= {self.ge:g}" if self.ge is not None else f"> {self.gt:g}" if self.gt is not None else None
        high = f"<= {self.le:g}" if self.le is not None else f"< {self.lt:g}" if self.lt is not None else None
        return " and ".join(p for p in (low, high) if p)

    def holds(self, x: float) -> bool:
        return (math.isfinite(x) and (self.ge is None or x >= self.ge) and (self.gt is None or x > self.gt)
                and (self.le is None or x <= self.le) and (self.lt is None or x < self.lt))


def bounded(default: Any, *, ge: float | None = None, gt: float | None = None, le: float | None = None,
            lt: float | None = None) -> Any:
    """A dataclass field with ``default`` whose value (each element, for a list) must lie in the given bounds."""
    metadata = {"domain": Domain(ge, gt, le, lt)}
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def choice(default: str, choices: tuple[str, ...]) -> Any:
    """A dataclass field with ``default`` whose value must be one of ``choices``."""
    return dataclasses.field(default=default, metadata={"choices": tuple(choices)})


def check_order(config: Any, low: str, high: str, strict: bool = False) -> None:
    """Raise ConfigError unless field ``low`` is below (``strict``) or at most field ``high`` of ``config``."""
    a, b = getattr(config, low), getattr(config, high)
    if a > b or (strict and a == b):
        raise ConfigError(low, f"{low}={a!r} and {high}={b!r}: {low} must be {'<' if strict else '<='} {high}")


def check_domains(config: Any) -> None:
    """Raise ConfigError for the first field of the dataclass ``config`` whose value lies outside its domain or is
    not one of its choices."""
    for f in dataclasses.fields(config):
        if (choices := f.metadata.get("choices")) is not None:
            if getattr(config, f.name) not in choices:
                raise ConfigError(f.name, f"{f.name}={getattr(config, f.name)!r} is not one of its choices: "
                                          f"{', '.join(choices)}")
            continue
        domain: Domain | None = f.metadata.get("domain")
        if domain is None:
            continue
        value = getattr(config, f.name)
        listed = f.default_factory is not dataclasses.MISSING  # bounded() gives list fields a factory
        values = value if isinstance(value, list) else [value]
        if listed and value == []:
            raise ConfigError(f.name, f"{f.name} is empty; it needs at least one value {domain}")
        for x in values:
            if isinstance(x, bool) or not isinstance(x, (int, float)) or listed != isinstance(value, list):
                kind = "a list of numbers, e.g. [90, 95]" if listed else "a number"
                raise ConfigError(f.name, f"{f.name}={value!r} is not {kind} ({domain})")
            if not domain.holds(float(x)):
                where = "every value of " if isinstance(value, list) else ""
                raise ConfigError(f.name, f"{f.name}={value!r} is outside its domain: {where}{f.name} must be "
                                          f"{domain}")
