"""The event engine: condition semantics (hysteresis, duration, cooldown, one event per
occurrence), every rule type, deterministic ids, and the YAML configuration."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from mmlm_stream.config.events import EXAMPLE_YAML, EventsConfig, default_rules
from mmlm_stream.operators.detect import EventEngine
from mmlm_stream.records.channels import SubtitleCue
from mmlm_stream.records.evidence import FusedWindow, WindowContents
from mmlm_stream.records.modality import Modality
from mmlm_stream.records.results import (
    Label,
    OcrResult,
    OcrText,
    TimeSpan,
    TranscriptSegment,
    Word,
)
from mmlm_stream.records.schema import EventRecord, event_id
from mmlm_stream.rules.keyword import KeywordRule
from mmlm_stream.rules.label import LabelRule
from mmlm_stream.rules.scene_change import SceneChangeRule
from mmlm_stream.rules.sound import SoundRule
from mmlm_stream.rules.speech import SpeechRule
from mmlm_stream.rules.watch_query import WatchQuery

SYNONYMS = {
    "tabby": ("tabby", "tabby cat"),
    "tiger cat": ("tiger cat", "tabby cat"),
    "Egyptian cat": ("Egyptian cat", "domestic cat"),
}


def synonyms(label: str) -> tuple[str, ...]:
    return SYNONYMS.get(label, ())


def win(
    start: float,
    end: float | None = None,
    *,
    source: str = "cam",
    wall: datetime | None = None,
    items: dict[Modality, tuple] | None = None,
    **fields,
) -> FusedWindow:
    end = start + 1.0 if end is None else end
    items = items or {}
    contents = WindowContents(source, start, end, items, frozenset(items), wall)
    return FusedWindow(contents=contents, **fields)


def engine(*rules, queries: Sequence[WatchQuery] = (), scorer=None) -> EventEngine:
    config = EventsConfig(rules=list(rules), queries=list(queries))
    return EventEngine(config, scorer, synonyms=synonyms)


def run(eng: EventEngine, windows: Iterable[FusedWindow], source: str = "cam") -> list[EventRecord]:
    events: list[EventRecord] = []
    for window in windows:
        events += eng.process(window)
    return events + eng.close(source)


def person_rule(**kwargs) -> LabelRule:
    return LabelRule(name="people", modality="objects", label="person", **kwargs)


def people(scores: Sequence[float], step: float = 1.0, length: float = 1.0) -> list[FusedWindow]:
    return [
        win(i * step, i * step + length, objects=(Label("person", s),) if s else ())
        for i, s in enumerate(scores)
    ]


# --- condition semantics -------------------------------------------------------------------


def test_ongoing_condition_gives_one_event_then_a_closing_update():
    eng = engine(person_rule(threshold=0.5))
    windows = people([0.9, 0.8, 0.7, 0.9, 0.6])
    first = eng.process(windows[0])
    assert [e.ongoing for e in first] == [True]
    assert all(eng.process(w) == [] for w in windows[1:])
    closing = eng.close("cam")
    assert len(closing) == 1
    opened, closed = first[0], closing[0]
    assert closed.id == opened.id == event_id("cam", "label", "person", 0.0)
    assert (opened.start, opened.end) == (0.0, 1.0)
    assert (closed.start, closed.end, closed.ongoing) == (0.0, 5.0, False)
    assert closed.type == "label" and closed.key == "person"
    assert closed.window_id == "cam:0"
    assert closed.confidence == pytest.approx(0.9)
    assert closed.description == "A person is in view."
    assert closed.evidence == {"objects": {"labels": [{"label": "person", "score": 0.9}]}}


def test_hysteresis_keeps_one_event_while_the_score_stays_above_exit():
    eng = engine(person_rule(threshold=0.8, exit_threshold=0.4))
    events = run(eng, people([0.9, 0.5, 0.7, 0.45, 0.79, 0.1, 0.0]))
    assert [(e.ongoing, e.start, e.end) for e in events] == [(True, 0.0, 1.0), (False, 0.0, 5.0)]
    assert len({e.id for e in events}) == 1


def test_after_dropping_below_exit_a_new_event_needs_the_enter_threshold():
    eng = engine(person_rule(threshold=0.8, exit_threshold=0.4))
    events = run(eng, people([0.9, 0.3, 0.7, 0.9]))
    starts = [(e.start, e.end, e.ongoing) for e in events]
    assert starts == [(0.0, 1.0, True), (0.0, 1.0, False), (3.0, 4.0, True), (3.0, 4.0, False)]


def test_one_window_blip_shorter_than_min_duration_gives_nothing():
    eng = engine(person_rule(min_duration_s=3.0))
    assert run(eng, people([0.0, 0.9, 0.0, 0.0])) == []


def test_event_is_emitted_once_the_condition_has_held_min_duration():
    eng = engine(person_rule(min_duration_s=3.0))
    windows = people([0.9, 0.9, 0.9, 0.9, 0.0])
    emitted = [eng.process(w) for w in windows]
    assert [len(e) for e in emitted] == [0, 0, 1, 0, 1]
    opened, closed = emitted[2][0], emitted[4][0]
    assert (opened.start, opened.end, opened.ongoing) == (0.0, 3.0, True)
    assert (closed.start, closed.end, closed.ongoing) == (0.0, 4.0, False)
    assert opened.window_id == "cam:0"


def test_min_duration_counts_one_hop_per_overlapping_window():
    rule = person_rule(min_duration_s=3.0)
    # 4 s windows every 2 s: a blip seen by one window (not the first) has held 2 s.
    assert run(engine(rule), people([0.0, 0.9, 0.0], step=2.0, length=4.0)) == []
    events = run(engine(rule), people([0.0, 0.9, 0.9, 0.0], step=2.0, length=4.0))
    assert [(e.start, e.end, e.ongoing) for e in events] == [(2.0, 8.0, True), (2.0, 8.0, False)]


def test_cooldown_suppresses_a_second_occurrence_then_allows_one_with_a_new_id():
    eng = engine(person_rule(cooldown_s=5.0))
    events = run(eng, people([0.9, 0.0, 0.9, 0.0, 0.0, 0.0, 0.9, 0.0]))
    opened = [e for e in events if e.ongoing]
    assert [e.start for e in opened] == [0.0, 6.0]
    assert opened[0].id != opened[1].id
    assert opened[1].id == event_id("cam", "label", "person", 6.0)


def test_same_windows_give_the_same_ids_on_a_rerun():
    windows = people([0.9, 0.9, 0.0, 0.9, 0.2, 0.0])
    first = run(engine(person_rule()), windows)
    second = run(engine(person_rule()), windows)
    assert first and [e.model_dump() for e in first] == [e.model_dump() for e in second]
    eng = engine(person_rule())
    assert run(eng, windows) == run(eng, windows)


def test_a_gap_between_windows_closes_ongoing_events():
    eng = engine(person_rule())
    assert len(eng.process(win(0, 1, objects=(Label("person", 0.9),)))) == 1
    events = eng.process(win(10, 11, objects=(Label("person", 0.9),)))
    assert [(e.start, e.end, e.ongoing) for e in events] == [(0, 1, False), (10, 11, True)]


def test_a_window_that_is_not_after_the_last_one_is_ignored():
    eng = engine(person_rule())
    eng.process(win(2, 3))
    assert eng.process(win(1, 2, objects=(Label("person", 0.9),))) == []


def test_sources_keep_separate_state():
    eng = engine(person_rule())
    a = eng.process(win(0, 1, source="a", objects=(Label("person", 0.9),)))
    b = eng.process(win(0, 1, source="b"))
    assert len(a) == 1 and b == []
    assert eng.close("b") == [] and len(eng.close("a")) == 1


def test_wall_start_is_the_window_wall_clock_moved_to_the_event_start():
    rule = KeywordRule(name="pkg", words=["package"])
    cue = SubtitleCue("cam", 10.5, 11.0, "a package")
    wall = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    (event,) = engine(rule).process(win(10, 12, wall=wall, subtitles=(cue,)))
    assert event.wall_start == "2026-01-01T12:00:00.500Z"
    assert event.start == 10.5


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0, 1), max_size=30), st.floats(0, 3), st.floats(0, 4))
def test_events_pair_up_and_never_overlap(scores, min_duration, cooldown):
    rule = person_rule(
        threshold=0.6, exit_threshold=0.3, min_duration_s=min_duration, cooldown_s=cooldown
    )
    events = run(engine(rule), people(scores))
    assert [e.ongoing for e in events] == [True, False] * (len(events) // 2)
    for opened, closed in zip(events[::2], events[1::2], strict=True):
        assert opened.id == closed.id and opened.start == closed.start
        assert closed.end - closed.start >= min_duration - 1e-6
    closings = events[1::2]
    for earlier, later in itertools.pairwise(closings):
        assert later.start >= earlier.end + cooldown - 1e-6


# --- label rules ---------------------------------------------------------------------------


def test_a_term_matches_any_synonym_and_sum_pools_a_synonym_family():
    cats = (Label("tabby", 0.3), Label("tiger cat", 0.25), Label("Egyptian cat", 0.2))
    summed = LabelRule(name="cats", modality="visual", label="cat", aggregate="sum")
    (event, _) = run(engine(summed), [win(0, 1, visual=cats)])
    assert event.key == "cat" and event.confidence == pytest.approx(0.75)
    assert event.description == "A cat is in view."
    assert [lb["label"] for lb in event.evidence["visual"]["labels"]] == [
        "tabby",
        "tiger cat",
        "Egyptian cat",
    ]
    best_only = LabelRule(name="cats", modality="visual", label="cat")
    assert run(engine(best_only), [win(0, 1, visual=cats)]) == []


def test_terms_match_whole_words_only():
    rule = LabelRule(name="cats", modality="visual", label="cat", threshold=0.1)
    assert run(engine(rule), [win(0, 1, visual=(Label("catamaran", 0.9),))]) == []


def test_each_term_of_a_rule_is_its_own_condition():
    rule = LabelRule(name="things", modality=["objects", "visual"], labels=["person", "car"])
    window = win(0, 1, objects=(Label("person", 0.9),), visual=(Label("sports car", 0.7),))
    events = [e for e in run(engine(rule), [window]) if e.ongoing]
    assert sorted((e.key, e.description) for e in events) == [
        ("car", "A car is in view."),
        ("person", "A person is in view."),
    ]


def test_a_regex_rule_is_keyed_by_its_name_and_shows_the_best_label():
    rule = LabelRule(name="vehicles", modality="objects", regex="^(truck|van)$")
    window = win(0, 1, objects=(Label("van", 0.6), Label("truck", 0.8), Label("car", 0.9)))
    (event, _) = run(engine(rule), [window])
    assert event.key == "vehicles"
    assert event.description == "A truck is in view."
    assert event.confidence == pytest.approx(0.8)


def test_audio_and_fusion_labels_and_description_templates():
    audio = LabelRule(name="dog", modality="audio", label="bark", threshold=0.4)
    (heard, _) = run(engine(audio), [win(0, 1, audio=(Label("Bark", 0.6),))])
    assert heard.description == "Bark is heard." and heard.type == "label"
    fusion = LabelRule(
        name="delivery", modality="fusion", label="delivery", description="Delivery ({score:.1f})."
    )
    (found, _) = run(engine(fusion), [win(0, 1, extra_labels=(Label("delivery", 0.7),))])
    assert found.type == "fusion" and found.description == "Delivery (0.7)."


# --- keyword rules -------------------------------------------------------------------------


def test_keyword_in_the_transcript_is_timed_by_its_words():
    words = (Word(3.0, 3.2, " the"), Word(3.3, 3.9, " package"), Word(4.0, 4.2, " arrived"))
    segment = TranscriptSegment(3.0, 4.2, "the package arrived", words=words)
    rule = KeywordRule(name="pkg", words=["package"])
    (event, closing) = run(engine(rule), [win(2, 6, transcript=(segment,))])
    assert (event.type, event.key, event.start, event.end) == ("keyword", "pkg", 3.3, 3.9)
    assert event.description == 'Someone says "package".'
    assert event.evidence["speech"] == {
        "text": "the package arrived",
        "match": "package",
        "start": 3.3,
        "end": 3.9,
    }
    assert closing.id == event.id and not closing.ongoing


def test_keyword_regex_is_case_insensitive_over_subtitles_and_ocr():
    rule = KeywordRule(name="exit", regex=r"emergency\s+exit", search=["subtitles", "ocr"])
    cue = SubtitleCue("cam", 1.0, 2.0, "Use the\nEMERGENCY exit")
    (sub, _) = run(engine(rule), [win(0, 4, subtitles=(cue,))])
    assert sub.description == 'The subtitles say "EMERGENCY exit".'
    assert sub.evidence["subtitles"]["text"] == "Use the EMERGENCY exit"
    ocr = OcrResult(2.5, (OcrText("Emergency Exit", ((0, 0), (1, 1)), 0.9),))
    window = win(0, 4, items={Modality.OCR: (ocr,)}, ocr=("Emergency Exit",))
    (read, _) = run(engine(rule), [window])
    assert read.start == 2.5 and read.description == 'On-screen text reads "Emergency Exit".'


def test_keyword_ignores_text_it_is_not_told_to_search():
    rule = KeywordRule(name="pkg", words=["package"], search=["subtitles"])
    segment = TranscriptSegment(0.0, 1.0, "a package")
    assert run(engine(rule), [win(0, 2, transcript=(segment,), ocr=("package",))]) == []


def test_the_same_keyword_in_consecutive_windows_is_one_event():
    rule = KeywordRule(name="pkg", words=["package"])
    cue = SubtitleCue("cam", 3.0, 7.0, "package")
    windows = [win(s, s + 4, subtitles=(cue,) if s < 7 else ()) for s in (2.0, 4.0, 6.0, 8.0)]
    events = run(engine(rule), windows)
    assert [(e.start, e.end, e.ongoing) for e in events] == [(3, 7, True), (3, 7, False)]


# --- sound rules ---------------------------------------------------------------------------


def test_loud_audio_at_an_absolute_level_is_one_event_until_it_quietens():
    rule = SoundRule(name="sound", alarm=False, level="peak", above_dbfs=-6, hysteresis_db=3)
    levels = [-30.0, -4.0, -8.0, -20.0]
    windows = [win(i, i + 1, peak_dbfs=v, rms_dbfs=v - 10) for i, v in enumerate(levels)]
    events = run(engine(rule), windows)
    assert [(e.key, e.start, e.end, e.ongoing) for e in events] == [
        ("loud", 1, 2, True),
        ("loud", 1, 3, False),
    ]
    assert events[0].description == "A loud sound is heard (-4 dBFS peak)."
    assert events[0].evidence == {"audio": {"rms_dbfs": -14.0, "peak_dbfs": -4.0}}


def test_a_loudness_jump_also_needs_the_absolute_floor():
    rule = SoundRule(name="sound", alarm=False, jump_db=20, floor_dbfs=-20, baseline_windows=5)
    levels = [-120.0] * 5 + [-28.0, -120.0, -120.0, -6.0]
    windows = [win(i, i + 1, rms_dbfs=v) for i, v in enumerate(levels)]
    opened = [e for e in run(engine(rule), windows) if e.ongoing]
    assert [(e.key, e.start) for e in opened] == [("loud", 8.0)]


def test_alarm_like_tags_fire_and_silence_never_does():
    rule = SoundRule(name="sound", tags=["Silence"], tag_threshold=0.3)
    quiet = win(0, 1, audio=(Label("Silence", 0.98), Label("Speech", 0.6)))
    alarm = win(1, 2, audio=(Label("Silence", 0.9), Label("Smoke detector, smoke alarm", 0.82)))
    events = run(engine(rule), [quiet, alarm])
    assert [(e.key, e.start, e.ongoing) for e in events] == [
        ("alarm", 1, True),
        ("alarm", 1, False),
    ]
    assert events[0].description == "An alarm sounds (Smoke detector 0.82)."
    assert events[0].evidence["audio"]["labels"] == [
        {"label": "Smoke detector, smoke alarm", "score": 0.82}
    ]


def test_named_tags_use_the_rule_kind_as_key():
    rule = SoundRule(name="glass", alarm=False, tags=["Shatter"], kind="glass", tag_threshold=0.4)
    (event, _) = run(engine(rule), [win(0, 1, audio=(Label("Shatter", 0.5),))])
    assert (event.type, event.key) == ("sound", "glass")
    assert event.description == "A glass sound is heard (Shatter 0.50)."


# --- scene changes and speech --------------------------------------------------------------


def test_scene_change_at_the_threshold_is_one_point_event_per_change():
    rule = SceneChangeRule(name="scene_change", threshold=0.35)
    windows = [
        win(0, 4, scene_change=0.2, scene_change_at=1.0),
        win(2, 6, scene_change=0.6, scene_change_at=3.0),
        win(4, 8, scene_change=0.6, scene_change_at=3.0),
        win(6, 10, scene_change=0.4),
    ]
    events = run(engine(rule), windows)
    assert [(e.key, e.start, e.end, e.ongoing) for e in events] == [
        ("scene_change", 3.0, 3.0, False),
        ("scene_change", 6.0, 6.0, False),
    ]
    assert events[0].description == "The scene changes."
    assert events[0].window_id == "cam:2000"
    assert events[0].confidence == pytest.approx(0.6)


def test_speech_event_only_after_min_silence():
    rule = SpeechRule(name="speech", min_silence_s=2.0)
    hello = TranscriptSegment(0.5, 1.8, "hello there")
    windows = [
        win(0, 2, speech_spans=(TimeSpan(0.5, 2.0),), transcript=(hello,)),
        win(2, 4, speech_spans=(TimeSpan(2.0, 3.0),)),
        win(4, 6, speech_spans=(TimeSpan(5.0, 6.0),)),
        win(6, 8, speech_spans=(TimeSpan(6.5, 7.0),)),
    ]
    events = run(engine(rule), windows)
    assert [(e.type, e.key, e.start, e.end) for e in events] == [
        ("speech", "speech", 0.5, 0.5),
        ("speech", "speech", 5.0, 5.0),
    ]
    assert events[0].description == "Speech begins."
    assert events[0].evidence == {"speech": {"start": 0.5, "end": 2.0, "text": "hello there"}}


def test_speech_continuing_across_overlapping_windows_is_not_a_new_onset():
    rule = SpeechRule(name="speech", min_silence_s=1.0)
    windows = [
        win(0, 4, speech_spans=(TimeSpan(3.0, 4.0),)),
        win(2, 6, speech_spans=(TimeSpan(3.0, 5.5),)),
        win(4, 8, speech_spans=(TimeSpan(4.0, 5.5),)),
    ]
    assert [e.start for e in run(engine(rule), windows)] == [3.0]


# --- watch queries -------------------------------------------------------------------------


class ScriptedScorer:
    """Scores by window start; a plain callable without evidence."""

    def __init__(self, scores: dict[float, float]) -> None:
        self.scores = scores

    def __call__(self, window: FusedWindow, texts: Sequence[str]) -> np.ndarray:
        return np.full(len(texts), self.scores.get(window.start, 0.0))


def test_watch_query_is_a_condition_with_threshold_and_min_duration():
    query = WatchQuery(name="delivery", text="a courier", threshold=0.6, min_duration_s=2)
    scorer = ScriptedScorer({0: 0.7, 1: 0.65, 2: 0.2, 4: 0.9})
    events = run(engine(queries=[query], scorer=scorer), [win(i, i + 1) for i in range(6)])
    assert [(e.type, e.key, e.start, e.end, e.ongoing) for e in events] == [
        ("query", "delivery", 0, 2, True),
        ("query", "delivery", 0, 2, False),
    ]
    assert events[0].description == "Watch query 'delivery' matched."
    assert events[0].evidence == {"query": {"text": "a courier", "score": 0.7}}


def test_watch_queries_without_a_scorer_are_a_clear_error():
    with pytest.raises(ValueError, match="query scorer"):
        engine(queries=[WatchQuery(name="q", text="a dog")])


# --- configuration -------------------------------------------------------------------------


def test_default_rules_run_when_the_config_has_none():
    names = [r.name for r in EventEngine(EventsConfig()).rules]
    assert (
        names == [r.name for r in default_rules()] == ["speech", "sound", "scene_change", "in_view"]
    )
    only_mine = EventsConfig(rules=[person_rule()])
    assert [r.name for r in only_mine.active_rules()] == ["people"]
    both = EventsConfig(include_defaults=True, rules=[person_rule()])
    assert "people" in [r.name for r in both.active_rules()] and len(both.active_rules()) == 5


def test_a_rule_named_like_a_default_replaces_or_disables_it():
    config = EventsConfig(
        include_defaults=True,
        rules=[
            SceneChangeRule(name="scene_change", enabled=False),
            SpeechRule(name="speech", min_silence_s=5),
        ],
    )
    rules = {r.name: r for r in config.active_rules()}
    assert "scene_change" not in rules and rules["speech"].min_silence_s == 5


def test_default_rules_detect_speech_alarms_and_a_cat():
    cats = (Label("tabby", 0.3), Label("tiger cat", 0.3))
    window = win(
        0,
        4,
        speech_spans=(TimeSpan(1.0, 2.0),),
        audio=(Label("Silence", 0.98), Label("Siren", 0.7)),
        visual=cats,
        rms_dbfs=-30.0,
    )
    events = [
        e
        for e in run(EventEngine(EventsConfig(), synonyms=synonyms), [window])
        if e.ongoing or e.type == "speech"
    ]
    assert sorted((e.type, e.key) for e in events) == [
        ("label", "cat"),
        ("sound", "alarm"),
        ("speech", "speech"),
    ]


def test_disabled_engine_returns_nothing():
    eng = EventEngine(EventsConfig(enabled=False))
    assert eng.process(win(0, 1, speech_spans=(TimeSpan(0, 1),))) == [] and eng.close("cam") == []


def test_example_yaml_loads_and_round_trips():
    data = yaml.safe_load(EXAMPLE_YAML)["events"]
    config = EventsConfig.model_validate(data)
    assert {r.type for r in config.rules} == {"label", "keyword", "sound", "scene_change", "speech"}
    assert config.queries[0].name == "delivery"
    dumped = yaml.safe_dump(config.model_dump(mode="json"))
    assert EventsConfig.model_validate(yaml.safe_load(dumped)) == config
    EventEngine(config, ScriptedScorer({}))


@pytest.mark.parametrize(
    "data",
    [
        {"rulez": []},
        {"rules": [{"type": "label", "name": "x", "label": "cat", "thresh": 0.5}]},
        {"rules": [{"type": "smell", "name": "x"}]},
        {"rules": [{"type": "label", "name": "x"}]},
        {"rules": [{"type": "label", "name": "x", "regex": "("}]},
        {
            "rules": [
                {
                    "type": "label",
                    "name": "x",
                    "label": "c",
                    "threshold": 0.3,
                    "exit_threshold": 0.5,
                }
            ]
        },
        {"rules": [{"type": "label", "name": "x", "label": "c", "description": "{nope}"}]},
        {"rules": [{"type": "keyword", "name": "x"}]},
        {"rules": [{"type": "speech", "name": "a b"}]},
        {"rules": [{"type": "speech", "name": "x"}], "queries": [{"name": "x", "text": "t"}]},
        {"queries": [{"name": "q", "text": "t", "extra": 1}]},
    ],
)
def test_invalid_or_unknown_keys_are_rejected(data):
    with pytest.raises(ValidationError):
        EventsConfig.model_validate(data)
