"""The event engine: rules from ``EventsConfig`` turn fused windows into events (contract §4).

Pure: no Ray, no models. ``process`` is called once per window per source, in time order; the
engine keeps what it needs per source (open conditions, cooldowns, recent loudness, the last
speech and scene change) and ``close`` ends a source.

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
import math
import re
import statistics
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import numpy as np

from mmlm_stream.config.events import (
    ALARM_TAGS,
    AnyRule,
    ConditionRule,
    EventsConfig,
    KeywordRule,
    LabelRule,
    SceneChangeRule,
    SoundRule,
    SpeechRule,
    WatchQuery,
)
from mmlm_stream.operators.label_groups import SOUND_BY_KEY
from mmlm_stream.operators.query import (
    EvidenceQueryScorer,
    QueryMatch,
    QueryScorer,
    imagenet_synonyms,
    label_names,
)
from mmlm_stream.records.evidence import Channel, FusedWindow
from mmlm_stream.records.results import Label, OcrResult, TranscriptSegment
from mmlm_stream.records.schema import EventRecord, EventType, event_id, utc_stamp

logger = logging.getLogger(__name__)

_EPS = 1e-6
_SILENCE = "silence"


@dataclass(frozen=True)
class _Observation:
    """What one rule saw of one key in one window."""

    score: float
    entered: bool
    held: bool
    start: float
    end: float
    description: str
    evidence: dict[str, Any]


@dataclass
class _Open:
    """A condition that started and has not ended; ``emitted`` once it held long enough."""

    id: str
    start: float
    end: float
    first_window_start: float
    window_id: str
    wall_start: str | None
    best: _Observation
    emitted: bool = False


@dataclass
class _Condition:
    open: _Open | None = None
    quiet_until: float = -math.inf


@dataclass
class _SourceState:
    last_start: float | None = None
    last_end: float | None = None
    conditions: dict[tuple[str, str], _Condition] = field(default_factory=dict)
    levels: dict[str, deque[float]] = field(default_factory=dict)
    speech_end: dict[str, float] = field(default_factory=dict)
    scene_at: dict[str, float] = field(default_factory=dict)


@dataclass
class _Context:
    window: FusedWindow
    state: _SourceState
    queries: dict[str, QueryMatch]


def _wall(window: FusedWindow, at: float) -> str | None:
    wall = window.contents.wall_start
    return None if wall is None else utc_stamp(wall + timedelta(seconds=at - window.start))


def _article(word: str) -> str:
    return "An" if word[:1].lower() in "aeiou" else "A"


def _labels_json(labels: Sequence[Label]) -> list[dict[str, Any]]:
    return [{"label": lb.label, "score": round(lb.score, 4)} for lb in labels]


class _ConditionDetector:
    """One rule that yields observations per key; the engine turns them into events."""

    type: EventType

    def __init__(self, rule: ConditionRule) -> None:
        self.name = rule.name
        self.min_duration_s = rule.min_duration_s
        self.cooldown_s = rule.cooldown_s

    def observe(self, ctx: _Context) -> dict[str, _Observation]:
        raise NotImplementedError


class _LabelDetector(_ConditionDetector):
    def __init__(self, rule: LabelRule, synonyms: Callable[[str], Sequence[str]] | None) -> None:
        self.rule = rule
        super().__init__(rule)
        self.type: EventType = "fusion" if set(rule.modality) == {"fusion"} else "label"
        self.enter = rule.threshold
        self.exit = rule.threshold if rule.exit_threshold is None else rule.exit_threshold
        self.terms = [
            (term, re.compile(r"(?<!\w)" + re.escape(term) + r"(?!\w)", re.IGNORECASE))
            for term in rule.terms
        ]
        self.regex = re.compile(rule.regex, re.IGNORECASE) if rule.regex else None
        self._synonyms = synonyms
        self._names: dict[tuple[str, bool], tuple[str, ...]] = {}

    def names(self, label: str, modality: str) -> tuple[str, ...]:
        key = (label, modality == "visual")
        if key not in self._names:
            if len(self._names) > 65536:
                self._names.clear()
            self._names[key] = label_names(label, self._synonyms if key[1] else None)
        return self._names[key]

    def observe(self, ctx: _Context) -> dict[str, _Observation]:
        window = ctx.window
        found: dict[str, dict[str, list[Label]]] = {}
        for modality in self.rule.modality:
            for label in _labels_of(window, modality):
                names = self.names(label.label, modality)
                keys = [t for t, p in self.terms if any(p.search(n) for n in names)]
                if self.regex is not None and any(self.regex.search(n) for n in names):
                    keys.append(self.name)
                for key in keys:
                    found.setdefault(key, {}).setdefault(modality, []).append(label)
        return {key: self._observation(window, key, hits) for key, hits in found.items()}

    def _observation(
        self, window: FusedWindow, key: str, hits: dict[str, list[Label]]
    ) -> _Observation:
        def pooled(labels: list[Label]) -> float:
            scores = [lb.score for lb in labels]
            return min(1.0, sum(scores)) if self.rule.aggregate == "sum" else max(scores)

        score = max(pooled(labels) for labels in hits.values())
        top = max((lb for labels in hits.values() for lb in labels), key=lambda lb: lb.score)
        shown = top.label if key == self.name and self.regex is not None else key
        modalities = set(hits)
        if self.rule.description is not None:
            text = self.rule.description.format(label=shown, score=score)
        elif modalities == {"audio"}:
            text = f"{shown[:1].upper()}{shown[1:]} is heard."
        elif modalities == {"fusion"}:
            text = f"{_article(shown)} {shown} is detected."
        else:
            text = f"{_article(shown)} {shown} is in view."
        evidence = {m: {"labels": _labels_json(labels)} for m, labels in hits.items()}
        return _Observation(
            score, score >= self.enter, score >= self.exit, window.start, window.end, text, evidence
        )


def _labels_of(window: FusedWindow, modality: str) -> tuple[Label, ...]:
    return {
        "visual": window.visual,
        "audio": window.audio,
        "objects": window.objects,
        "fusion": window.extra_labels,
    }[modality]


@dataclass(frozen=True)
class _Hit:
    where: str
    start: float
    end: float
    text: str
    match: str


_SAYS = {
    "speech": 'Someone says "{}".',
    "subtitles": 'The subtitles say "{}".',
    "ocr": 'On-screen text reads "{}".',
}


class _KeywordDetector(_ConditionDetector):
    type: EventType = "keyword"

    def __init__(self, rule: KeywordRule) -> None:
        self.rule = rule
        super().__init__(rule)
        self.pattern = rule.pattern()

    def observe(self, ctx: _Context) -> dict[str, _Observation]:
        hits = self._hits(ctx.window)
        if not hits:
            return {}
        first = min(hits, key=lambda h: h.start)
        evidence: dict[str, Any] = {}
        for hit in sorted(hits, key=lambda h: h.start):
            evidence.setdefault(
                hit.where,
                {
                    "text": hit.text,
                    "match": hit.match,
                    "start": round(hit.start, 3),
                    "end": round(hit.end, 3),
                },
            )
        return {
            self.name: _Observation(
                1.0,
                True,
                True,
                first.start,
                max(h.end for h in hits),
                _SAYS[first.where].format(first.match),
                evidence,
            )
        }

    def _hits(self, window: FusedWindow) -> list[_Hit]:
        hits: list[_Hit] = []
        search = set(self.rule.search)
        if "speech" in search:
            for segment in window.transcript:
                hits += self._in_segment(segment)
        if "subtitles" in search:
            for cue in window.subtitles:
                text = " ".join(cue.text.split())
                hits += [
                    _Hit("subtitles", cue.start, cue.end, text, m.group(0))
                    for m in self.pattern.finditer(text)
                ]
        if "ocr" in search:
            timed = [
                (result.time, item.text)
                for result in window.contents.of(Channel.OCR)
                if isinstance(result, OcrResult)
                for item in result.texts
            ]
            if not timed:
                timed = [(window.start, text) for text in window.ocr]
            for at, text in timed:
                hits += [_Hit("ocr", at, at, text, m.group(0)) for m in self.pattern.finditer(text)]
        return hits

    def _in_segment(self, segment: TranscriptSegment) -> list[_Hit]:
        """Matches in one segment, timed by its words when they spell the segment's text."""
        text = segment.text.strip()
        spans: list[tuple[int, int, float, float]] = []
        offset = 0
        for word in segment.words:
            token = word.text.strip()
            spans.append((offset, offset + len(token), word.start, word.end))
            offset += len(token) + 1
        timed = bool(spans) and " ".join(w.text.strip() for w in segment.words) == text
        hits = []
        for m in self.pattern.finditer(text):
            start, end = segment.start, segment.end
            if timed:
                inside = [s for s in spans if s[1] > m.start() and s[0] < m.end()]
                if inside:
                    start, end = inside[0][2], inside[-1][3]
            hits.append(_Hit("speech", start, end, text, m.group(0)))
        return hits


def _levels(window: FusedWindow) -> dict[str, float]:
    levels = {
        "rms_dbfs": window.rms_dbfs,
        "peak_dbfs": window.peak_dbfs,
        "short_term_dbfs": window.short_term_dbfs,
    }
    return {name: round(value, 2) for name, value in levels.items() if value is not None}


def _level(window: FusedWindow, measure: str) -> float | None:
    if measure == "short_term":
        # Encoders that do not measure it: the window RMS (a lower bound of the loudest 400 ms).
        return window.short_term_dbfs if window.short_term_dbfs is not None else window.rms_dbfs
    return window.rms_dbfs if measure == "rms" else window.peak_dbfs


def _tag_names(name: str) -> set[str]:
    return {part.strip().lower() for part in re.split(r"[,/]", name) if part.strip()}


class _SoundDetector(_ConditionDetector):
    type: EventType = "sound"

    def __init__(self, rule: SoundRule) -> None:
        self.rule = rule
        super().__init__(rule)
        tags = [*(ALARM_TAGS if rule.alarm else ()), *rule.tags]
        self.tag_names = {name for tag in tags for name in _tag_names(tag)} - {_SILENCE}
        self.custom_names = {name for tag in rule.tags for name in _tag_names(tag)} - {_SILENCE}
        self.enter = rule.tag_threshold
        exit_threshold = rule.tag_exit_threshold
        self.exit = rule.tag_threshold if exit_threshold is None else exit_threshold
        self.keys = set(rule.sounds)

    def _named(self, window: FusedWindow, state: _SourceState) -> dict[str, _Observation]:
        """One observation per named sound of the window whose key the rule raises, from the
        sound's calibrated score (``Sound.min_score``) or the rule's threshold if higher.

        The last beeps of an alarm that is going on or just ended (a window holding only its
        tail, or the alarm's cooldown) belong to the alarm rather than start a ``beep``."""
        seen = {}
        alarm_recent = (self.name, "alarm") in state.conditions
        for heard in window.sounds or ():
            key = "alarm" if heard.key == "beep" and alarm_recent else heard.key
            if key not in self.keys or key in seen:
                continue
            top = heard.evidence[0] if heard.evidence else Label(heard.key, heard.score)
            shown = top.label.split(",")[0].strip()
            sound = SOUND_BY_KEY.get(key)
            clause = sound.clause if sound is not None else f"a {key} sound is heard"
            enter = max(self.enter, sound.min_score if sound is not None else 0.0)
            seen[key] = _Observation(
                heard.score,
                heard.score >= enter and key == heard.key,
                heard.score >= self.exit,
                window.start,
                window.end,
                f"{clause[:1].upper()}{clause[1:]} ({shown} {top.score:.2f}).",
                {
                    "audio": {
                        "labels": _labels_json(heard.evidence),
                        "start": round(heard.start, 3),
                        "end": round(heard.end, 3),
                        "lasting": heard.lasting,
                    }
                },
            )
        return seen

    def observe(self, ctx: _Context) -> dict[str, _Observation]:
        window, rule = ctx.window, self.rule
        seen: dict[str, _Observation] = {}
        named = rule.alarm and window.sounds is not None
        if named:
            seen.update(self._named(window, ctx.state))
        tag_names = self.custom_names if named else self.tag_names
        tags = [lb for lb in window.audio if _tag_names(lb.label) & tag_names]
        if tags and rule.kind not in seen:
            top = max(tags, key=lambda lb: lb.score)
            shown = top.label.split(",")[0].strip()
            text = (
                f"An alarm sounds ({shown} {top.score:.2f})."
                if rule.kind == "alarm"
                else f"A {rule.kind} sound is heard ({shown} {top.score:.2f})."
            )
            seen[rule.kind] = _Observation(
                top.score,
                top.score >= self.enter,
                top.score >= self.exit,
                window.start,
                window.end,
                text,
                {"audio": {"labels": _labels_json(sorted(tags, key=lambda lb: -lb.score))}},
            )
        level = _level(window, rule.level)
        if level is not None and (rule.above_dbfs is not None or rule.jump_db is not None):
            loud = self._loud(ctx.state, level)
            if loud is not None:
                seen["loud"] = _Observation(
                    float(np.clip(1.0 + level / 60.0, 0.0, 1.0)),
                    loud,
                    True,
                    window.start,
                    window.end,
                    f"A loud sound is heard ({level:.0f} dBFS {rule.level.replace('_', '-')}).",
                    {"audio": _levels(window)},
                )
        return seen

    def _loud(self, state: _SourceState, level: float) -> bool | None:
        """True: loud enough to start; False: only to continue; None: not loud."""
        rule = self.rule
        history = state.levels.setdefault(self.name, deque(maxlen=rule.baseline_windows))
        baseline = statistics.median(history) if len(history) >= 3 else None
        history.append(level)
        starts = holds = False
        if rule.above_dbfs is not None:
            starts |= level >= rule.above_dbfs
            holds |= level >= rule.above_dbfs - rule.hysteresis_db
        if rule.jump_db is not None and baseline is not None:
            starts |= level >= max(baseline + rule.jump_db, rule.floor_dbfs)
            holds |= level >= max(baseline + rule.jump_db, rule.floor_dbfs) - rule.hysteresis_db
        return starts if holds else None


class _QueryDetector(_ConditionDetector):
    type: EventType = "query"

    def __init__(self, query: WatchQuery) -> None:
        self.query = query
        super().__init__(query)
        self.enter = query.threshold
        self.exit = query.threshold if query.exit_threshold is None else query.exit_threshold

    def observe(self, ctx: _Context) -> dict[str, _Observation]:
        match = ctx.queries.get(self.name)
        if match is None:
            return {}
        evidence: dict[str, Any] = {"query": {"text": self.query.text, "score": match.score}}
        if match.modality:
            found: dict[str, Any] = {"text": match.matched_text, "score": match.score}
            if match.time is not None:
                found["time"] = round(match.time, 3)
            evidence[match.modality] = found
        return {
            self.name: _Observation(
                match.score,
                match.score >= self.enter,
                match.score >= self.exit,
                ctx.window.start,
                ctx.window.end,
                f"Watch query '{self.name}' matched.",
                evidence,
            )
        }


def _point(
    window: FusedWindow,
    type_: EventType,
    key: str,
    at: float,
    confidence: float,
    description: str,
    evidence: dict[str, Any],
) -> EventRecord:
    return EventRecord(
        id=event_id(window.source, type_, key, at),
        source=window.source,
        type=type_,
        key=key,
        start=round(at, 3),
        end=round(at, 3),
        confidence=float(np.clip(confidence, 0.0, 1.0)),
        description=description,
        window_id=window.window_id,
        evidence=evidence,
        wall_start=_wall(window, at),
    )


def _speech_events(rule: SpeechRule, window: FusedWindow, state: _SourceState) -> list[EventRecord]:
    """A "speech" event at each onset that follows ``min_silence_s`` without speech.

    Spans are clipped to windows and windows may overlap, so a span that starts before the
    latest speech end already seen is the same speech continuing.
    """
    events = []
    for span in sorted(window.speech_spans, key=lambda s: s.start):
        last = state.speech_end.get(rule.name)
        if last is None or span.start - last >= rule.min_silence_s - _EPS:
            text = next((s.text.strip() for s in window.transcript if s.end > span.start), "")
            evidence: dict[str, Any] = {
                "start": round(span.start, 3),
                "end": round(span.end, 3),
                **({"text": text} if text else {}),
            }
            events.append(
                _point(
                    window,
                    "speech",
                    "speech",
                    span.start,
                    1.0,
                    "Speech begins.",
                    {"speech": evidence},
                )
            )
        state.speech_end[rule.name] = span.end if last is None else max(last, span.end)
    return events


def _scene_events(
    rule: SceneChangeRule, window: FusedWindow, state: _SourceState
) -> list[EventRecord]:
    if window.scene_change < rule.threshold:
        return []
    at = window.scene_change_at if window.scene_change_at is not None else window.start
    last = state.scene_at.get(rule.name)
    if last is not None and (at <= last + _EPS or at - last < rule.cooldown_s - _EPS):
        return []
    state.scene_at[rule.name] = at
    return [
        _point(
            window,
            "scene_change",
            "scene_change",
            at,
            window.scene_change,
            "The scene changes.",
            {"visual": {"distance": round(window.scene_change, 4)}},
        )
    ]


def needs_text(rule: AnyRule | WatchQuery) -> bool:
    """Whether a rule reads a window's transcript, its text embedding or the fusion head (which
    sees that embedding): such rules must wait until a live window's speech is transcribed."""
    if isinstance(rule, WatchQuery):
        return True
    if isinstance(rule, KeywordRule):
        return "speech" in rule.search
    if isinstance(rule, LabelRule):
        return "fusion" in rule.modality
    return False


class EventEngine:
    """Turns each source's fused windows, in time order, into event records."""

    def __init__(
        self,
        config: EventsConfig,
        query_scorer: QueryScorer | None = None,
        *,
        synonyms: Callable[[str], Sequence[str]] | None = imagenet_synonyms,
        select: Callable[[AnyRule | WatchQuery], bool] | None = None,
    ) -> None:
        """``synonyms`` gives the other names of a frame label (ImageNet by default);
        ``select`` keeps only some of the configured rules and queries (live windows run
        the rules that do not need text early, the others when the window closes)."""
        self.config = config
        self.rules: list[AnyRule] = config.active_rules() if config.enabled else []
        self.queries = [q for q in config.queries if q.enabled] if config.enabled else []
        if select is not None:
            self.rules = [r for r in self.rules if select(r)]
            self.queries = [q for q in self.queries if select(q)]
        if self.queries and query_scorer is None:
            raise ValueError(
                "watch queries are configured (events.queries) but no query scorer was given"
            )
        self.query_scorer = query_scorer
        self._detectors: list[_ConditionDetector] = []
        for rule in self.rules:
            if isinstance(rule, LabelRule):
                self._detectors.append(_LabelDetector(rule, synonyms))
            elif isinstance(rule, KeywordRule):
                self._detectors.append(_KeywordDetector(rule))
            elif isinstance(rule, SoundRule):
                self._detectors.append(_SoundDetector(rule))
        self._detectors += [_QueryDetector(query) for query in self.queries]
        self._sources: dict[str, _SourceState] = {}

    def process(self, window: FusedWindow) -> list[EventRecord]:
        """Events that start or end with this window (and point events inside it)."""
        if not self.rules and not self.queries:
            return []
        state = self._sources.setdefault(window.source, _SourceState())
        if state.last_start is not None and window.start <= state.last_start + _EPS:
            logger.warning(
                "window %s does not come after %s:%s; ignored",
                window.window_id,
                window.source,
                round(state.last_start * 1000),
            )
            return []
        events: list[EventRecord] = []
        if state.last_end is not None and window.start > state.last_end + _EPS:
            events += self._close_all(window.source, state)
        hop = window.end - window.start
        if state.last_start is not None:
            hop = min(hop, window.start - state.last_start)
        ctx = _Context(window, state, self._score_queries(window))
        for rule in self.rules:
            if isinstance(rule, SpeechRule):
                events += _speech_events(rule, window, state)
            elif isinstance(rule, SceneChangeRule):
                events += _scene_events(rule, window, state)
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
        detector: _ConditionDetector,
        seen: dict[str, _Observation],
        window: FusedWindow,
        state: _SourceState,
        hop: float,
    ) -> list[EventRecord]:
        events: list[EventRecord] = []
        keys = {key for name, key in state.conditions if name == detector.name} | set(seen)
        for key in sorted(keys):
            condition = state.conditions.setdefault((detector.name, key), _Condition())
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
                and observation.start >= condition.quiet_until - _EPS
            ):
                condition.open = _Open(
                    id=event_id(window.source, detector.type, key, observation.start),
                    start=observation.start,
                    end=observation.end,
                    first_window_start=window.start,
                    window_id=window.window_id,
                    wall_start=_wall(window, observation.start),
                    best=observation,
                )
                events += self._emit_if_due(detector, key, condition.open, window, hop)
            if condition.open is None and condition.quiet_until <= window.start:
                del state.conditions[(detector.name, key)]
        return events

    @staticmethod
    def _emit_if_due(
        detector: _ConditionDetector, key: str, current: _Open, window: FusedWindow, hop: float
    ) -> list[EventRecord]:
        held = window.start - current.first_window_start + hop
        if current.emitted or held < detector.min_duration_s - _EPS:
            return []
        current.emitted = True
        return [_record(detector, key, current, window.source, ongoing=True)]

    @staticmethod
    def _finish(
        detector: _ConditionDetector, key: str, condition: _Condition, source: str
    ) -> list[EventRecord]:
        current, condition.open = condition.open, None
        if current is None or not current.emitted:
            return []
        condition.quiet_until = current.end + detector.cooldown_s
        return [_record(detector, key, current, source, ongoing=False)]

    def _close_all(self, source: str, state: _SourceState) -> list[EventRecord]:
        by_name = {d.name: d for d in self._detectors}
        events: list[EventRecord] = []
        for (name, key), condition in sorted(state.conditions.items()):
            events += self._finish(by_name[name], key, condition, source)
        return events


def _record(
    detector: _ConditionDetector, key: str, current: _Open, source: str, *, ongoing: bool
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
    )
