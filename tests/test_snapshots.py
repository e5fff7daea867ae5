"""Snapshots: the frame where an event was strongest, boxes drawn, kept with retention."""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient
from PIL import Image
from test_api import FakeBackend, public_names

from mmlm_stream.config.api import ApiConfig
from mmlm_stream.config.snapshots import SnapshotsConfig
from mmlm_stream.pipeline.snapshots import FrameMemory, Snapshots, SnapshotStore, render
from mmlm_stream.records.channels import Frame
from mmlm_stream.records.results import Detection, DetectionResult
from mmlm_stream.records.schema import EventRecord, event_id, window_id
from mmlm_stream.service.api import create_app

RED = np.array([230, 40, 40])


def frame(time_s: float, shade: int = 90) -> Frame:
    return Frame("cam", time_s, np.full((256, 456, 3), shade, np.uint8))


def person_event(start: float, end: float, *, type_: str = "label", key: str = "person"):
    return EventRecord(
        id=event_id("cam", type_, key, start),
        source="cam",
        type=type_,
        key=key,
        start=start,
        end=end,
        confidence=0.9,
        description="A person is in view.",
        window_id=window_id("cam", start),
        ongoing=True,
    )


def test_the_snapshot_is_the_frame_where_the_label_scored_highest():
    memory = FrameMemory(keep_s=30)
    frames = [frame(t, shade=40 + 10 * int(t)) for t in (0.0, 1.0, 2.0, 3.0)]
    box = (0.5, 0.2, 0.8, 0.9)
    detections = [
        DetectionResult(1.0, (Detection("person", 0.6, box),)),
        DetectionResult(2.0, (Detection("person", 0.95, box), Detection("dog", 0.99, box))),
        DetectionResult(3.0, (Detection("person", 0.7, box),)),
    ]
    memory.add(frames, detections)
    shot = memory.best(person_event(0.0, 4.0))
    assert shot is not None and shot.frame.time == 2.0
    sound = memory.best(person_event(2.9, 2.9, type_="sound", key="alarm"))
    assert sound is not None and sound.frame.time == 3.0  # no detection of it: nearest frame
    assert memory.best(person_event(20.0, 21.0)) is None  # no frame near it


def test_the_snapshot_is_a_jpeg_with_the_box_drawn_where_the_detector_saw_it():
    memory = FrameMemory(keep_s=30)
    box = (0.25, 0.25, 0.75, 0.75)
    memory.add([frame(1.0)], [DetectionResult(1.0, (Detection("person", 0.9, box),))])
    event = person_event(0.0, 2.0)
    shot = memory.best(event)
    assert shot is not None
    image = np.asarray(Image.open(io.BytesIO(render(shot, event, quality=90))).convert("RGB"))
    assert image.shape == (256, 456, 3)
    height, width = image.shape[:2]
    left, right = int(0.25 * width), int(0.75 * width)
    top, bottom = int(0.25 * height), int(0.75 * height)
    edge = image[top : top + 2, left + 10 : right - 10].reshape(-1, 3).mean(axis=0)
    assert np.abs(edge - RED).max() < 40, edge  # the top edge of the box is red
    inside = image[top + 20 : bottom - 20, left + 20 : right - 20].reshape(-1, 3).mean(axis=0)
    assert np.abs(inside - 90).max() < 8  # the picture itself is untouched
    stamp = image[-8:, :40].reshape(-1, 3).mean(axis=0)
    assert stamp.max() < 90  # the time is burned in on a dark strip at the bottom


def test_retention_deletes_what_is_too_old_then_the_oldest_until_under_the_size(
    tmp_path: Path,
):
    store = SnapshotStore(
        SnapshotsConfig(dir=tmp_path, max_age_s=3600, max_total_mb=2.5 / 1024)
    )  # 2.5 KiB
    now = time.time()
    ages = {"cam:label:a": 7200, "cam:label:b": 300, "cam:label:c": 200, "cam:label:d": 100}
    for name, age in ages.items():
        path = store.write(name, b"x" * 1024)
        os.utime(path, (now - age, now - age))
    assert store.sweep(now=now) == 2  # a: too old; then b, the oldest, for the size
    kept = {name for name in ages if store.read(name) is not None}
    assert kept == {"cam:label:c", "cam:label:d"}


def test_events_get_their_snapshot_once_and_stream_events_none(tmp_path: Path):
    snapshots = Snapshots(SnapshotsConfig(dir=tmp_path))
    snapshots.remember([frame(1.0)], [])
    opening = person_event(0.0, 2.0)
    status = person_event(1.0, 1.0, type_="stream", key="streaming")
    snapshots.attach([opening, status])
    assert opening.snapshot == opening.id and status.snapshot is None
    written = snapshots.store.path(opening.id)
    first = written.stat().st_mtime_ns
    closing = opening.model_copy(update={"ongoing": False, "end": 6.0, "snapshot": None})
    snapshots.attach([closing])
    assert closing.snapshot == opening.id and written.stat().st_mtime_ns == first


def test_a_snapshot_folder_that_cannot_be_written_loses_no_event(tmp_path: Path, caplog):
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    snapshots = Snapshots(SnapshotsConfig(dir=blocked))
    snapshots.remember([frame(1.0)], [])
    events = [person_event(0.0, 2.0), person_event(0.5, 2.0, key="car")]
    snapshots.attach(events)
    assert [e.snapshot for e in events] == [None, None]
    assert caplog.text.count("snapshots: cannot write") == 1


def test_the_api_serves_a_snapshot_as_jpeg_behind_the_token(tmp_path: Path):
    config = SnapshotsConfig(dir=tmp_path)
    store = SnapshotStore(config)
    jpeg = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(jpeg, "JPEG")
    store.write("cam:label:abc", jpeg.getvalue())
    api = ApiConfig(api_token="s3cret-token-1", allowed_hosts_header=["testserver"])
    app = create_app(FakeBackend(), api, None, resolve=public_names, snapshots=config)
    with TestClient(app, raise_server_exceptions=False) as client:
        url = "/events/cam:label:abc/snapshot.jpg"
        assert client.get(url).status_code == 401
        auth = {"Authorization": "Bearer s3cret-token-1"}
        answer = client.get(url, headers=auth)
        assert answer.status_code == 200 and answer.headers["content-type"] == "image/jpeg"
        assert answer.content == jpeg.getvalue()
        assert client.get("/events/cam:label:nope/snapshot.jpg", headers=auth).status_code == 404
        assert client.get("/events/..%2F..%2Fetc/snapshot.jpg", headers=auth).status_code in (
            404,
            422,
        )


def test_snapshots_switched_off_are_404(tmp_path: Path):
    config = SnapshotsConfig(dir=tmp_path, enabled=False)
    SnapshotStore(config).write("cam:label:abc", b"\xff\xd8")
    api = ApiConfig(allowed_hosts_header=["testserver"])
    app = create_app(FakeBackend(), api, None, resolve=public_names, snapshots=config)
    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.get("/events/cam:label:abc/snapshot.jpg").status_code == 404
