"""Zones and box sizes: label rules restricted to a part of the picture, per stream too."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from mmlm_stream.config.events import EventsConfig
from mmlm_stream.operators.detect import EventEngine
from mmlm_stream.operators.fuse import Fuser
from mmlm_stream.records.evidence import WindowContents
from mmlm_stream.records.modality import Modality
from mmlm_stream.records.results import Detection, DetectionResult
from mmlm_stream.rules.label import LabelRule
from mmlm_stream.rules.zones import inside, zone_of
from mmlm_stream.service.protocol import Invalid, StreamSpec, stream_events

# The lower left quarter of the picture: where the driveway is.
DRIVEWAY = ((0.0, 0.5), (0.5, 0.5), (0.5, 1.0), (0.0, 1.0))
PORCH = ((0.6, 0.0), (1.0, 0.0), (1.0, 0.4), (0.6, 0.4))


def person_rule(**fields) -> LabelRule:
    return LabelRule(name="person", label="person", modality="objects", **fields)


def windows(box: tuple[float, float, float, float], score: float = 0.9):
    fuser = Fuser()
    for start in (0.0, 2.0, 4.0):
        detections = (DetectionResult(start + 0.5, (Detection("person", score, box),)),)
        items = {Modality.OBJECTS: detections}
        yield fuser.fuse(WindowContents("cam", start, start + 2.0, items, frozenset(items)))


def events_for(config: EventsConfig, box) -> list:
    engine = EventEngine(config)
    found = [e for w in windows(box) for e in engine.process(w)]
    return found + engine.close("cam")


def test_the_anchor_of_a_box_is_its_bottom_centre_and_the_boundary_counts():
    assert inside((0.25, 0.75), DRIVEWAY)
    assert inside((0.5, 0.75), DRIVEWAY)  # on an edge
    assert not inside((0.75, 0.75), DRIVEWAY)
    # Head in the driveway, feet below it on the street side: not in it.
    assert zone_of((0.6, 0.3, 0.8, 0.9), ["driveway"], {"driveway": DRIVEWAY}) is None
    assert zone_of((0.1, 0.2, 0.3, 0.9), ["driveway"], {"driveway": DRIVEWAY}) == "driveway"


def test_an_event_fires_for_a_box_inside_the_zone_and_names_it():
    config = EventsConfig(rules=[person_rule(zones=["driveway"])], zones={"driveway": DRIVEWAY})
    found = events_for(config, (0.1, 0.4, 0.3, 0.9))
    assert found and {e.zone for e in found} == {"driveway"}
    assert found[-1].description == "A person is in the driveway."


def test_no_event_fires_for_a_box_outside_the_zone():
    config = EventsConfig(
        rules=[person_rule(zones=["driveway", "porch"])],
        zones={"driveway": DRIVEWAY, "porch": PORCH},
    )
    assert events_for(config, (0.55, 0.5, 0.9, 0.95)) == []


def test_a_box_smaller_than_min_box_area_does_not_count():
    config = EventsConfig(rules=[person_rule(min_box_area=0.05)])
    assert events_for(config, (0.1, 0.1, 0.15, 0.2)) == []  # 0.5 % of the frame
    big = events_for(config, (0.1, 0.1, 0.5, 0.6))  # 20 %
    assert big and big[-1].zone is None


def test_a_rule_naming_an_unknown_zone_is_a_config_error():
    with pytest.raises(ValidationError, match="unknown zone garage"):
        EventsConfig(rules=[person_rule(zones=["garage"])], zones={"driveway": DRIVEWAY})
    with pytest.raises(ValidationError, match="needs at least 3 points"):
        EventsConfig(zones={"line": ((0.0, 0.0), (1.0, 1.0))})
    with pytest.raises(ValidationError, match="modality: objects"):
        LabelRule(name="x", label="person", zones=["driveway"])


def test_a_stream_has_its_own_rules_and_zones():
    spec = StreamSpec.model_validate(
        {
            "id": "door",
            "url": "rtsp://cam.example/door",
            "rules": [{"type": "label", "name": "at_door", "label": "person",
                       "modality": "objects", "zones": ["porch"]}],
            "zones": {"porch": [list(p) for p in PORCH]},
        }
    )  # fmt: skip
    events = stream_events(EventsConfig(), spec)
    assert [r.name for r in events.active_rules()] == ["at_door"]
    assert found_in(events, (0.7, 0.1, 0.9, 0.35)) == {"porch"}
    assert found_in(events, (0.1, 0.4, 0.3, 0.9)) == set()
    assert stream_events(EventsConfig(), StreamSpec(url="rtsp://x.example/a")) == EventsConfig()


def found_in(config: EventsConfig, box) -> set[str | None]:
    return {e.zone for e in events_for(config, box)}


def test_a_stream_rule_naming_a_zone_it_does_not_have_is_refused_by_name():
    spec = StreamSpec.model_validate(
        {
            "id": "door",
            "url": "rtsp://cam.example/door",
            "rules": [{"type": "label", "name": "at_door", "label": "person",
                       "modality": "objects", "zones": ["porch"]}],
        }
    )  # fmt: skip
    with pytest.raises(Invalid, match=r"door: rule at_door: unknown zone porch \(zones: none\)"):
        stream_events(EventsConfig(), spec)
