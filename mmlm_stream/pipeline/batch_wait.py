"""How long a model's batcher waits for more callers before it runs what it has.

Waiting pays only when other callers are coming: Whisper pads every call to one 30 s window
(about 1.0 s of CPU for the base model here), so the utterances of ten live streams that
wait a second for each other cost one window instead of several, while one file or one
camera would only be slowed by that second. The rule: a call that comes within ``busy_s``
of the previous one (several callers at work) lets the batch wait ``busy_s``; otherwise it
waits the modality's usual ``quiet_s``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class BatchWait:
    quiet_s: float
    busy_s: float | None = None
    _last_call: float = -math.inf

    def for_call(self, now: float) -> float:
        """The wait for a call arriving at monotonic time ``now``."""
        since, self._last_call = now - self._last_call, now
        if self.busy_s is not None and since <= self.busy_s:
            return max(self.busy_s, self.quiet_s)
        return self.quiet_s
