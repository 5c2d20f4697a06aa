"""Run profiles: the training budget every model gets, so that a comparison is fair.

A profile fixes one :class:`~wxbench.interfaces.Budget` for all models; models may scale their
architecture per profile through ``profile_hyperparameters`` (e.g. a tiny network for ``smoke``),
and the budget and hyperparameters used are recorded in each result.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from .errors import ConfigError
from .interfaces import Budget


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    budget: Budget
    #: hard limit on one model's whole run (fit + evaluation); past it the model becomes an error row
    timeout_seconds: float
    #: samples per throughput measurement
    throughput_batches: int = 3


PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        Profile("smoke", "seconds per model, tiny networks; used by the tests",
                Budget(max_epochs=1, max_steps=3, max_seconds=120, batch_size=4, eval_batch_size=8,
                       ensemble_size=3, patience=1, val_windows=8),
                timeout_seconds=300, throughput_batches=1),
        Profile("cpu", "the default: every model trains about a minute on a laptop-class CPU",
                Budget(max_epochs=30, max_steps=100_000, max_seconds=50, batch_size=16, eval_batch_size=32,
                       ensemble_size=8, patience=4, val_windows=128),
                timeout_seconds=900),
        Profile("gpu", "full budgets on one GPU",
                Budget(max_epochs=100, max_steps=1_000_000, max_seconds=600, batch_size=32, eval_batch_size=64,
                       ensemble_size=50, patience=8, val_windows=512),
                timeout_seconds=3600),
    )
}
DEFAULT_PROFILE = "cpu"


def get_profile(name: str) -> Profile:
    if name not in PROFILES:
        close = difflib.get_close_matches(name, list(PROFILES), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"unknown profile {name!r}{hint} Known: {', '.join(PROFILES)}")
    return PROFILES[name]
