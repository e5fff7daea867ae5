"""Exponential backoff with jitter, shared by stream reconnects and Redis retries."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    """Delays initial, initial*factor, ... capped at ``maximum``, each scaled by 1 +/- jitter.

    Jitter spreads reconnects of many cameras that dropped at the same moment.
    """

    initial: float = 0.5
    maximum: float = 30.0
    factor: float = 2.0
    jitter: float = 0.2
    attempt: int = 0
    rng: random.Random = field(default_factory=random.Random, repr=False)

    def next_delay(self) -> float:
        base = min(self.maximum, self.initial * self.factor**self.attempt)
        self.attempt += 1
        return max(0.0, base * (1.0 + self.rng.uniform(-self.jitter, self.jitter)))

    def reset(self) -> None:
        self.attempt = 0
