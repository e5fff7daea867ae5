"""Exponential backoff with jitter, shared by stream reconnects, restarts and Redis retries."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    """Delays initial, initial*factor, ... capped at ``maximum``, each scaled by 1 +/- jitter.

    Jitter spreads reconnects of many cameras that dropped at the same moment. The exponent
    stops growing once the cap is reached, so an outage of any length (millions of attempts)
    never overflows: retry-forever loops must be able to retry forever.
    """

    initial: float = 0.5
    maximum: float = 30.0
    factor: float = 2.0
    jitter: float = 0.2
    attempt: int = 0
    rng: random.Random = field(default_factory=random.Random, repr=False)

    def next_delay(self) -> float:
        base = min(self.maximum, self.initial * self.factor ** min(self.attempt, self._cap()))
        self.attempt += 1
        return max(0.0, base * (1.0 + self.rng.uniform(-self.jitter, self.jitter)))

    def _cap(self) -> int:
        """The first exponent whose delay reaches ``maximum`` (no larger one is ever needed)."""
        if self.factor <= 1.0 or self.initial <= 0.0 or self.initial >= self.maximum:
            return 0
        return math.ceil(math.log(self.maximum / self.initial, self.factor))

    def reset(self) -> None:
        self.attempt = 0
