"""Configuration of the event engine (``events:`` in the config file; see operators/detect.py;
the rule types are the files of ``mmlm_stream/rules/``).

Two lists: ``rules`` (what to detect, each with a ``type`` and a unique ``name``) and
``queries`` (natural-language watch queries). When ``rules`` is empty the built-in
``default_rules()`` run; ``include_defaults: true`` runs them next to the user's rules, and a
user rule with the name of a built-in one replaces it (``enabled: false`` switches it off).

Times are media seconds. A condition (label, keyword, sound, query) starts when its score
reaches ``threshold``, continues while it stays at or above ``exit_threshold`` (hysteresis),
is reported once it has held ``min_duration_s``, and after it ends the same rule and key stay
quiet for ``cooldown_s``.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, StringConstraints, model_validator

from mmlm_stream.rules.base import RuleConfig, RuleSection
from mmlm_stream.rules.label import LabelRule
from mmlm_stream.rules.registry import RuleItem
from mmlm_stream.rules.scene_change import SceneChangeRule
from mmlm_stream.rules.sound import SoundRule
from mmlm_stream.rules.speech import SpeechRule
from mmlm_stream.rules.watch_query import WatchQuery
from mmlm_stream.rules.zones import ZonePolygon

ZoneName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")]


class EventsConfig(RuleSection):
    """The event engine: which rules and watch queries turn windows into events."""

    enabled: bool = Field(True, description="Detect events at all.")
    include_defaults: bool | None = Field(
        None, description="Run the built-in rules too; null = only when rules is empty."
    )
    rules: list[RuleItem] = Field(default_factory=list, description="Detection rules (by type).")
    queries: list[WatchQuery] = Field(
        default_factory=list, description="Natural-language watch queries."
    )
    zones: dict[ZoneName, ZonePolygon] = Field(
        default_factory=dict,
        description="Named polygons, [[x, y], ...] as fractions of the frame (3 points or "
        "more), that label rules can be restricted to (`zones: [driveway]`); an object is in "
        "a zone when the bottom centre of its box is.",
    )

    @model_validator(mode="after")
    def _unique_names(self) -> EventsConfig:
        names = [rule.name for rule in self.rules] + [query.name for query in self.queries]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise ValueError(f"rule and query names must be unique: {', '.join(twice)}")
        for rule in self.rules:
            unknown = [z for z in getattr(rule, "zones", ()) if z not in self.zones]
            if unknown:
                known = ", ".join(sorted(self.zones)) or "none"
                raise ValueError(
                    f"rule {rule.name}: unknown zone {', '.join(unknown)} (zones: {known})"
                )
        return self

    def for_stream(
        self, rules: list[Any] | None = None, zones: dict[str, Any] | None = None
    ) -> EventsConfig:
        """This config with one stream's own rules and zones (None keeps the global ones),
        validated together (``ValueError`` with the first problem)."""
        data = self.model_dump(mode="json", exclude={"rules", "zones"})
        data["rules"] = [r.model_dump(mode="json") for r in self.rules] if rules is None else rules
        data["zones"] = self.model_dump(mode="json")["zones"] if zones is None else zones
        return EventsConfig.model_validate(data)

    def active_rules(self) -> list[RuleConfig]:
        """The rules that run: the user's, with the built-in ones as configured, enabled only."""
        rules = list(self.rules)
        if self.include_defaults or (self.include_defaults is None and not self.rules):
            own = {rule.name for rule in rules}
            rules = [rule for rule in default_rules() if rule.name not in own] + rules
        return [rule for rule in rules if rule.enabled]


def default_rules() -> list[RuleConfig]:
    """The built-in rules, chosen for the default model set on real content.

    - speech: a "speech" event on each utterance that follows 1 s without speech.
    - sound: named sounds (alarm, siren, ring, doorbell, beep, knock) at 0.3 (continuing down
      to 0.2), and loud audio when the loudest 400 ms reach -10 dBFS RMS (normal speech sits
      around -30 to -18 dBFS, its loudest 400 ms about 4 dB higher). No jump rule: after
      digital silence every speech onset is a jump, and a floor high enough to exclude speech
      leaves little that -10 dBFS does not already catch.
    - scene_change: cosine distance of 0.35 between consecutive frame embeddings.
    - in_view: person, car, dog, cat among detections or frame labels at 0.5 (continuing down
      to 0.3), summed over synonym families (ImageNet spreads a cat over "tabby", "tiger cat",
      "Egyptian cat"), held 2 s, then quiet for 10 s after it ends.
    """
    return [
        SpeechRule(name="speech", min_silence_s=1.0),
        SoundRule(
            name="sound",
            alarm=True,
            tag_threshold=0.3,
            tag_exit_threshold=0.2,
            level="short_term",
            above_dbfs=-10.0,
            cooldown_s=10.0,
        ),
        SceneChangeRule(name="scene_change", threshold=0.35),
        LabelRule(
            name="in_view",
            modality=["objects", "visual"],
            labels=["person", "car", "dog", "cat"],
            aggregate="sum",
            threshold=0.5,
            exit_threshold=0.3,
            min_duration_s=2.0,
            cooldown_s=10.0,
        ),
    ]


EXAMPLE_YAML = r"""events:
  enabled: true
  include_defaults: true        # keep the built-in speech/sound/scene/in_view rules
  rules:
    - type: label
      name: cat
      modality: visual
      label: cat                # whole word in any synonym: "tabby cat", "Egyptian cat"
      aggregate: sum
      threshold: 0.5
      exit_threshold: 0.3
      min_duration_s: 4
      cooldown_s: 30
    - type: label
      name: vehicles
      modality: [objects, visual]
      regex: '\b(truck|van|bus)\b'   # single quotes keep the backslashes
      threshold: 0.6
      description: "A vehicle ({label}) is in view."
    - type: keyword
      name: delivery_words
      words: [package, parcel, delivery]
      regex: "sign(ed)? for"
      search: [speech, subtitles, ocr]
      cooldown_s: 10
    - type: sound
      name: sound                # replaces the built-in sound rule
      alarm: true                # built-in named sounds: alarm, siren, ring, doorbell, beep, knock
      tag_threshold: 0.3
      tag_exit_threshold: 0.2
      level: peak                # loud audio, key "loud" (rms, peak or short_term: loudest 400 ms)
      above_dbfs: -3
      jump_db: 25                # or 25 dB above the recent median ...
      floor_dbfs: -20            # ... and at least -20 dBFS
      cooldown_s: 10
    - type: sound
      name: glass
      alarm: false
      tags: ["Glass", "Shatter"]
      kind: glass                # event key
      tag_threshold: 0.4
    - type: scene_change
      name: scene_change
      threshold: 0.4
      cooldown_s: 2
    - type: speech
      name: speech
      min_silence_s: 3
  queries:
    - name: delivery
      text: a courier delivering a package
      threshold: 0.55
      exit_threshold: 0.45
      min_duration_s: 2
      cooldown_s: 60
"""
"""A complete ``events:`` section (docs/events.md example; tests load it)."""
