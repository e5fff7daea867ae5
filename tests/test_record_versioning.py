"""Record versioning (contract §4): lenient reading across /1 versions, strict building."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError
from redis_fixtures import event, window

from mmlm_stream.records.schema import EventRecord, LabelScore, UnreadableRecord, WindowRecord


def newer(record: EventRecord | WindowRecord, **changes: object) -> str:
    """The record as a newer /1 producer might write it."""
    data = json.loads(record.to_json())
    data.update(changes)
    return json.dumps(data)


def test_unknown_fields_survive_a_round_trip() -> None:
    data = json.loads(window(0.0).to_json())
    data["mood"] = "calm"
    data["objects"] = [{"label": "cat", "score": 0.9, "box": [0.1, 0.2, 0.5, 0.6]}]
    data["speech"] = {
        "text": "hi",
        "new_text": "hi",
        "segments": [{"start": 0.0, "end": 1.0, "text": "hi", "utterance_id": "u1"}],
    }
    read = WindowRecord.read_json(json.dumps(data))
    assert read.objects[0].label == "cat" and read.speech.text == "hi"
    assert json.loads(read.to_json()) == data
    assert WindowRecord.read_json(read.to_json()) == read

    raw = newer(event(1.0), zone="door", verified={"answer": "yes"})
    assert json.loads(EventRecord.read_json(raw).to_json()) == json.loads(raw)


def test_an_unknown_event_type_is_read_as_such_not_refused() -> None:
    read = EventRecord.read_json(newer(event(1.0), type="gesture", key="wave"))
    assert (read.type, read.key, read.known_type) == ("gesture", "wave", False)
    assert json.loads(read.to_json())["type"] == "gesture"
    assert event(1.0).known_type


def test_our_own_code_cannot_build_a_record_with_an_unknown_field_or_type() -> None:
    with pytest.raises(ValidationError, match="Extra inputs are not permitted: mood"):
        WindowRecord(source="s", window_id="s:0", start=0.0, end=4.0, mood="calm")
    with pytest.raises(ValidationError, match="Extra inputs are not permitted: box"):
        LabelScore(label="cat", score=0.9, box=[0, 0, 1, 1])
    with pytest.raises(ValidationError, match="unknown event type 'gesture'"):
        event(1.0, type_="gesture")
    with pytest.raises(ValidationError, match="weather"):
        EventRecord.model_validate_json(newer(event(1.0), weather="rain"))


def test_a_newer_major_schema_is_not_understood() -> None:
    with pytest.raises(UnreadableRecord, match=r"'mmlm.event/2': this reader understands"):
        EventRecord.read_json(newer(event(1.0), schema="mmlm.event/2"))
    with pytest.raises(UnreadableRecord, match=r"'mmlm.event/1': this reader understands"):
        WindowRecord.read_json(event(1.0).to_json())


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\xff{", "not JSON"),
        ("{not json", "not JSON"),
        ("[1, 2]", "not a JSON object but list"),
        ('{"schema": "mmlm.event/1", "type": "sound"}', "missing id, source, key, start"),
        (newer(event(1.0), confidence=3), "confidence: Input should be less than or equal to 1"),
    ],
)
def test_an_unreadable_record_says_why_in_one_line(raw: str | bytes, reason: str) -> None:
    with pytest.raises(UnreadableRecord) as caught:
        EventRecord.read_json(raw)
    assert reason in caught.value.reason and "\n" not in caught.value.reason
