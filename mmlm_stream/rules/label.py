"""``type: label``: a label of a modality crosses its threshold (frames, sounds, detections,
fusion-head classes); key = the matched term, or the rule's name for a regex."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from mmlm_stream.records.evidence import FusedWindow
from mmlm_stream.records.modality import Modality
from mmlm_stream.records.results import DetectionResult, Label
from mmlm_stream.records.schema import EventType
from mmlm_stream.rules.base import (
    ConditionDetector,
    ConditionRule,
    Context,
    LabelModality,
    Observation,
    Synonyms,
    article,
    check_exit,
    check_regex,
    labels_json,
)
from mmlm_stream.rules.query_scoring import label_names
from mmlm_stream.rules.zones import area, zone_of


class LabelRule(ConditionRule):
    """A label of a modality crosses its threshold; key = the matched term (regex: the name)."""

    type: Literal["label"] = "label"
    modality: list[LabelModality] = Field(
        default_factory=lambda: ["visual", "objects"],
        description="Where to look: visual (frame labels), audio (sound tags), objects "
        "(detections), fusion (fusion-head classes). One name or a list.",
    )
    label: str | None = Field(
        None, description="A term matched as whole words against every synonym of a label."
    )
    labels: list[str] = Field(
        default_factory=list, description="Several terms; each one is its own condition (key)."
    )
    regex: str | None = Field(
        None, description="Case-insensitive regex searched in every synonym; key = rule name."
    )
    aggregate: Literal["max", "sum"] = Field(
        "max",
        description="Score of a term: best matching label, or the sum of all matching labels "
        "(capped at 1) for classifiers that spread one object over a synonym family.",
    )
    threshold: float = Field(0.5, ge=0, le=1, description="Score that starts the condition.")
    exit_threshold: float | None = Field(
        None, ge=0, le=1, description="Score it must stay at or above to continue; null = same."
    )
    description: str | None = Field(
        None, description="Event sentence template with {label} and {score}; null = built-in."
    )
    zones: list[str] = Field(
        default_factory=list,
        description="Only detections whose box's bottom centre lies in one of these zones "
        "(events.zones, or the stream's own) count; the event names the zone. Objects only.",
    )
    min_box_area: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Only detections whose box covers at least this fraction of the frame "
        "count (far-away or tiny false detections do not). Objects only.",
    )

    @field_validator("modality", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("regex")
    @classmethod
    def _valid_regex(cls, value: str | None) -> str | None:
        return check_regex(value)

    @model_validator(mode="after")
    def _needs_something(self) -> LabelRule:
        if self.label is None and not self.labels and self.regex is None:
            raise ValueError("a label rule needs label, labels or regex")
        if not self.modality:
            raise ValueError("modality must name at least one modality")
        if (self.zones or self.min_box_area) and self.modality != ["objects"]:
            raise ValueError("zones and min_box_area apply to detections: modality: objects")
        check_exit(self.threshold, self.exit_threshold, "")
        if self.description is not None:
            try:
                self.description.format(label="cat", score=0.5)
            except (KeyError, IndexError, ValueError) as error:
                raise ValueError(
                    f"description may use only {{label}} and {{score}}: {error!r}"
                ) from None
        return self

    @property
    def terms(self) -> list[str]:
        return list(dict.fromkeys([*([self.label] if self.label else []), *self.labels]))

    def needs_text(self) -> bool:
        return "fusion" in self.modality

    def detector(self, synonyms: Synonyms | None) -> LabelDetector:
        return LabelDetector(self, synonyms)


def labels_of(window: FusedWindow, modality: str) -> tuple[Label, ...]:
    return {
        "visual": window.visual,
        "audio": window.audio,
        "objects": window.objects,
        "fusion": window.extra_labels,
    }[modality]


class LabelDetector(ConditionDetector):
    def __init__(self, rule: LabelRule, synonyms: Synonyms | None) -> None:
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

    def _placed(self, ctx: Context) -> tuple[list[Label], dict[str, str]]:
        """The best detection per label among those that pass ``zones`` and
        ``min_box_area``, and the zone each label's best one was in."""
        best: dict[str, Label] = {}
        where: dict[str, str] = {}
        for result in ctx.window.contents.of(Modality.OBJECTS):
            if not isinstance(result, DetectionResult):
                continue
            for d in result.detections:
                if area(d.box) < self.rule.min_box_area:
                    continue
                zone = zone_of(d.box, self.rule.zones, ctx.zones) if self.rule.zones else None
                if self.rule.zones and zone is None:
                    continue
                if d.label not in best or d.score > best[d.label].score:
                    best[d.label] = Label(d.label, d.score)
                    if zone is not None:
                        where[d.label] = zone
        return list(best.values()), where

    def observe(self, ctx: Context) -> dict[str, Observation]:
        window = ctx.window
        found: dict[str, dict[str, list[Label]]] = {}
        zones: dict[str, str] = {}
        placed = bool(self.rule.zones or self.rule.min_box_area)
        for modality in self.rule.modality:
            if placed:
                labels, where = self._placed(ctx)
            else:
                labels, where = list(labels_of(window, modality)), {}
            for label in labels:
                names = self.names(label.label, modality)
                keys = [t for t, p in self.terms if any(p.search(n) for n in names)]
                if self.regex is not None and any(self.regex.search(n) for n in names):
                    keys.append(self.name)
                for key in keys:
                    found.setdefault(key, {}).setdefault(modality, []).append(label)
                    if label.label in where:
                        zones.setdefault(key, where[label.label])
        return {
            key: self._observation(window, key, hits, zones.get(key)) for key, hits in found.items()
        }

    def _observation(
        self, window: FusedWindow, key: str, hits: dict[str, list[Label]], zone: str | None
    ) -> Observation:
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
            text = f"{article(shown)} {shown} is detected."
        elif zone is not None:
            text = f"{article(shown)} {shown} is in the {zone.replace('_', ' ')}."
        else:
            text = f"{article(shown)} {shown} is in view."
        evidence = {m: {"labels": labels_json(labels)} for m, labels in hits.items()}
        return Observation(
            score,
            score >= self.enter,
            score >= self.exit,
            window.start,
            window.end,
            text,
            evidence,
            zone,
        )
