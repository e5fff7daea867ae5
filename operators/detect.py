"""The event engine: rules from ``EventsConfig`` turn fused windows into events (contract §4).

Each rule type (its config, evaluation and sentence) is a file of ``mmlm_stream/rules/``;
the engine runs their detectors and owns what is common to conditions. Pure: no Ray, no
models. ``process`` is called once per window per source, in time order; the engine keeps
what each source needs (open conditions, cooldowns, each rule's own memory) and ``close``
ends a source.

Conditions (label, keyword, sound, query rules) give ONE event per occurrence:

- a condition starts in the window where its score reaches the rule's ``threshold`` and
  continues while the score stays at or above ``exit_threshold`` (hysteresis);
- it has held ``min_duration_s`` once the windows in which it held cover that much, counting
  one hop (the spacing of window starts) per window, so a blip seen in one window of a
  4 s / 2 s hop stream has held 2 s;
- then the event is emitted with ``ongoing=True`` and ``end`` = the end of the evidence so
  far; when the condition stops (or the source closes, or windows skip a gap) a closing update
  follows with the same ``id``, ``ongoing=False`` and the final ``end``. Nothing is sent in
  between. A condition that stops before ``min_duration_s`` gives nothing;
- after it ends, the same rule and key may not start again before ``end + cooldown_s``.

The ``start`` of an event is the window start for labels, sounds and queries, and the time of
the matching words, cue or OCR frame for keywords; ``confidence`` is the best score seen, and
``description`` and ``evidence`` come from the window that gave it. ``id`` is
``event_id(source, type, key, start)``, so the same windows give the same ids. ``wall_start``
is the window's wall-clock start moved by the event's offset into the window.

Speech and scene changes are point events (``start == end``, ``ongoing=False``): "speech"
when speech begins after ``min_silence_s`` of silence (the start of a stream counts as
silence), "scene_change" when fusion's consecutive-frame distance reaches the threshold, at
the frame where it changed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np

from mmlm_stream.config.events import EventsConfig
from mmlm_stream.records.evidence import FusedWindow
from mmlm_stream.records.schema import EventRecord, event_id
from mmlm_stream.rules.base import (
    EPS,
    Condition,
    ConditionDetector,
    Context,
    Observation,
    Open,
    PointDetector,
    RuleConfig,
    SourceState,
    Synonyms,
    wall_at,
)
from mmlm_stream.rules.query_scoring import (
    EvidenceQueryScorer,
    QueryMatch,
    QueryScorer,
    imagenet_synonyms,
)

logger = logging.getLogger(__name__)


def needs_text(rule: RuleConfig) -> bool:
    """Whether a rule must wait until a live window's speech is transcribed."""
    return rule.needs_text()


class EventEngine:
    """Turns each source's fused windows, in time order, into event records."""

    def __init__(
        self,
        config: EventsConfig,
        query_scorer: QueryScorer | None = None,
        *,
        synonyms: Synonyms | None = imagenet_synonyms,
        select: Callable[[RuleConfig], bool] | None = None,
    ) -> None:
        """``synonyms`` gives the other names of a frame label (ImageNet by default);
        ``select`` keeps only some of the configured rules and queries (live windows run
        the rules that do not need text early, the others when the window closes)."""
        self.config = config
        self.rules: list[RuleConfig] = config.active_rules() if config.enabled else []
        self.queries = [q for q in config.queries if q.enabled] if config.enabled else []
        if select is not None:
            self.rules = [r for r in self.rules if select(r)]
            self.queries = [q for q in self.queries if select(q)]
        if self.queries and query_scorer is None:
            raise ValueError(
                "watch queries are configured (events.queries) but no query scorer was given"
            )
        self.query_scorer = query_scorer
        made = [rule.detector(synonyms) for rule in self.rules]
        self._points = [d for d in made if isinstance(d, PointDetector)]
        self._detectors = [d for d in made if isinstance(d, ConditionDetector)]
        self._detectors += [query.detector(synonyms) for query in self.queries]
        self._sources: dict[str, SourceState] = {}

    def process(self, window: FusedWindow) -> list[EventRecord]:
        """Events that start or end with this window (and point events inside it)."""
        if not self.rules and not self.queries:
            return []
        state = self._sources.setdefault(window.source, SourceState())
        if state.last_start is not None and window.start <= state.last_start + EPS:
            logger.warning(
                "window %s does not come after %s:%s; ignored",
                window.window_id,
                window.source,
                round(state.last_start * 1000),
            )
            return []
        events: list[EventRecord] = []
        if state.last_end is not None and window.start > state.last_end + EPS:
            events += self._close_all(window.source, state)
        hop = window.end - window.start
        if state.last_start is not None:
            hop = min(hop, window.start - state.last_start)
        ctx = Context(window, state, self._score_queries(window), self.config.zones)
        for point in self._points:
            events += point.events(window, state)
        for detector in self._detectors:
            events += self._advance(detector, detector.observe(ctx), window, state, hop)
        state.last_start, state.last_end = window.start, window.end
        return events

    def close(self, source: str) -> list[EventRecord]:
        """End of a source: closing updates of its ongoing events; its state is dropped."""
        state = self._sources.pop(source, None)
        return [] if state is None else self._close_all(source, state)

    def _score_queries(self, window: FusedWindow) -> dict[str, QueryMatch]:
        if not self.queries or self.query_scorer is None:
            return {}
        texts = [q.text for q in self.queries]
        if isinstance(self.query_scorer, EvidenceQueryScorer):
            matches = self.query_scorer.score_with_evidence(window, texts)
        else:
            scores = np.asarray(self.query_scorer(window, texts), np.float64).reshape(-1)
            matches = [QueryMatch(float(s)) for s in scores]
        if len(matches) != len(texts):
            raise ValueError(f"query scorer gave {len(matches)} scores for {len(texts)} queries")
        return {
            q.name: QueryMatch(
                float(np.clip(np.nan_to_num(m.score), 0.0, 1.0)), m.modality, m.matched_text, m.time
            )
            for q, m in zip(self.queries, matches, strict=True)
        }

    def _advance(
        self,
        detector: ConditionDetector,
        seen: dict[str, Observation],
        window: FusedWindow,
        state: SourceState,
        hop: float,
    ) -> list[EventRecord]:
        events: list[EventRecord] = []
        keys = {key for name, key in state.conditions if name == detector.name} | set(seen)
        for key in sorted(keys):
            condition = state.conditions.setdefault((detector.name, key), Condition())
            observation = seen.get(key)
            current = condition.open
            if current is not None:
                if observation is not None and observation.held:
                    current.end = max(current.end, observation.end)
                    if observation.score > current.best.score:
                        current.best = observation
                    events += self._emit_if_due(detector, key, current, window, hop)
                    continue
                events += self._finish(detector, key, condition, window.source)
            if (
                observation is not None
                and observation.entered
                and observation.start >= condition.quiet_until - EPS
            ):
                condition.open = Open(
                    id=event_id(window.source, detector.type, key, observation.start),
                    start=observation.start,
                    end=observation.end,
                    first_window_start=window.start,
                    window_id=window.window_id,
                    wall_start=wall_at(window, observation.start),
                    best=observation,
                )
                events += self._emit_if_due(detector, key, condition.open, window, hop)
            if condition.open is None and condition.quiet_until <= window.start:
                del state.conditions[(detector.name, key)]
        return events

    @staticmethod
    def _emit_if_due(
        detector: ConditionDetector, key: str, current: Open, window: FusedWindow, hop: float
    ) -> list[EventRecord]:
        held = window.start - current.first_window_start + hop
        if current.emitted or held < detector.min_duration_s - EPS:
            return []
        current.emitted = True
        return [_record(detector, key, current, window.source, ongoing=True)]

    @staticmethod
    def _finish(
        detector: ConditionDetector, key: str, condition: Condition, source: str
    ) -> list[EventRecord]:
        current, condition.open = condition.open, None
        if current is None or not current.emitted:
            return []
        condition.quiet_until = current.end + detector.cooldown_s
        return [_record(detector, key, current, source, ongoing=False)]

    def _close_all(self, source: str, state: SourceState) -> list[EventRecord]:
        by_name = {d.name: d for d in self._detectors}
        events: list[EventRecord] = []
        for (name, key), condition in sorted(state.conditions.items()):
            events += self._finish(by_name[name], key, condition, source)
        return events


def _record(
    detector: ConditionDetector, key: str, current: Open, source: str, *, ongoing: bool
) -> EventRecord:
    best = current.best
    return EventRecord(
        id=current.id,
        source=source,
        type=detector.type,
        key=key,
        start=round(current.start, 3),
        end=round(max(current.end, current.start), 3),
        confidence=float(np.clip(best.score, 0.0, 1.0)),
        description=best.description,
        window_id=current.window_id,
        ongoing=ongoing,
        evidence=best.evidence,
        wall_start=current.wall_start,
        zone=best.zone,
    )
