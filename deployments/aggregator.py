"""The per-source state holder: one Ray actor per source and job.

Serve routes each request to any replica, so per-source state (open windows, smoothing,
ongoing events, the previous description) cannot live in a scaled deployment. Each source
gets its own actor and the decode task of that source holds its handle: every item of the
source reaches the same state, and sources spread over the cluster's CPU nodes. A file's
actor is named ``mmlm-agg:<source>:<8 hex>`` (jobs may describe the same file at once); a
live source's is ``mmlm-agg:<source>:live``, one name cluster-wide, which a new analysis
takes over from any old one (``_take_over``).
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import ray

from mmlm_stream.config import Config
from mmlm_stream.models.fusion_head import load_head
from mmlm_stream.pipeline.aggregate import Polled, SourceAggregator, WindowOutput
from mmlm_stream.records.evidence import Evidence
from mmlm_stream.records.modality import Modality
from mmlm_stream.records.schema import EventRecord
from mmlm_stream.rules.query_scoring import TextQueryScorer
from mmlm_stream.util.errors import MmlmError

logger = logging.getLogger(__name__)


class _RemoteText:
    """The TextEncoder protocol over the TextEncoder deployment (for fusion and queries)."""

    def __init__(self, handle: Any, model_id: str, dim: int) -> None:
        self.handle = handle
        self.model_id = model_id
        self.embedding_dim = dim

    def warmup(self) -> None:
        pass

    def embed(self, texts: Sequence[str]) -> Any:
        return self.handle.remote(list(texts), modality="text").result()


@ray.remote(num_cpus=0, max_restarts=0)
class SourceAggregatorActor:
    def __init__(
        self,
        source: str,
        cfg: Config,
        channels: list[str],
        model_ids: dict[str, str],
        live: bool,
        text_handle: Any,
    ) -> None:
        text = _RemoteText(text_handle, model_ids.get("text", "text"), 0)
        scorer = TextQueryScorer(text) if cfg.events.queries else None
        head = load_head(cfg.fusion.head) if cfg.fusion.head else None
        self.aggregator = SourceAggregator(
            source,
            cfg,
            frozenset(Modality(c) for c in channels),
            embed_text=text.embed,
            query_scorer=scorer,
            head=head,
            model_ids=model_ids,
            live=live,
        )

    def step(
        self, adds: list[tuple[str, list[Evidence]]], marks: dict[str, float], poll: bool
    ) -> Polled | None:
        """The caller's results and channel marks since its last step, then (``poll``) what
        is ready: one actor call per turn of the analysis loop, not one per channel and item."""
        for channel, items in adds:
            self.aggregator.add(Modality(channel), items)
        for channel, media_time in marks.items():
            self.aggregator.advance(Modality(channel), media_time)
        return self.aggregator.poll() if poll else None

    def finish(self) -> tuple[list[WindowOutput], list[EventRecord]]:
        return self.aggregator.finish()

    def late_dropped(self) -> int:
        return self.aggregator.late_dropped


class RemoteAggregation:
    """The analysis loop's Aggregation protocol over a SourceAggregatorActor.

    ``add`` and ``advance`` are held and go with the next ``poll`` (or ``finish``) in one
    call, in the order they were made, so a window can only close after the results added
    before it; an actor call costs about a millisecond on each side.
    """

    def __init__(self, actor: Any, timeout_s: float | None = None) -> None:
        self.actor = actor
        self.timeout_s = timeout_s
        self._adds: list[tuple[str, list[Evidence]]] = []
        self._marks: dict[str, float] = {}

    def add(self, channel: Modality, items: Sequence[Evidence]) -> None:
        if items:
            self._adds.append((channel.value, list(items)))

    def advance(self, channel: Modality, media_time: float) -> None:
        self._marks[channel.value] = media_time

    def _step(self, poll: bool) -> Any:
        adds, marks = self._adds, self._marks
        self._adds, self._marks = [], {}
        return self.actor.step.remote(adds, marks, poll)

    def poll(self) -> Polled:
        return ray.get(self._step(poll=True), timeout=self.timeout_s)

    def finish(self) -> tuple[list[WindowOutput], list[EventRecord]]:
        if self._adds or self._marks:
            self._step(poll=False)  # ordered before finish: one caller's calls run in order
        return ray.get(self.actor.finish.remote(), timeout=self.timeout_s)

    @property
    def late_dropped(self) -> int:
        return ray.get(self.actor.late_dropped.remote(), timeout=self.timeout_s)

    def close(self) -> None:
        """End the actor now (not when its handle is collected): one aggregator per source."""
        with contextlib.suppress(Exception):
            ray.kill(self.actor, no_restart=True)


def _take_over(name: str, args: tuple[Any, ...], attempts: int = 50) -> Any:
    """The one aggregator of a live source, by a cluster-wide actor name: an analysis of the
    same source still running anywhere (one an ingress lost when it died) has its actor
    killed here, so it fails at its next call and ends. One analysis per live source."""
    for _ in range(attempts):
        try:
            return SourceAggregatorActor.options(name=name).remote(*args)
        except ValueError:  # the name is taken
            with contextlib.suppress(ValueError):
                old = ray.get_actor(name)
                logger.warning("%s: ending the analysis that still held it", name)
                ray.kill(old, no_restart=True)
            time.sleep(0.2)
    raise MmlmError(f"{name}: the previous aggregator did not go away")


def aggregator_factory(
    source: str,
    config: Config,
    channels: frozenset[Modality],
    model_ids: dict[str, str],
    text_handle: Any,
    timeout_s: float | None = None,
) -> Callable[[bool, Callable[[float], datetime | None] | None], RemoteAggregation]:
    """What SourceAnalysis calls to get its state holder once it knows if the source is live."""

    def make(live: bool, wall_of: Callable[[float], datetime | None] | None) -> RemoteAggregation:
        args = (
            source,
            config,
            sorted(c.value for c in channels),
            model_ids,
            live,
            text_handle,
        )
        if not live:
            name = f"mmlm-agg:{source}:{uuid.uuid4().hex[:8]}"
            return RemoteAggregation(SourceAggregatorActor.options(name=name).remote(*args))
        return RemoteAggregation(_take_over(f"mmlm-agg:{source}:live", args), timeout_s)

    return make
