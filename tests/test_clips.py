"""Clips: seconds around an event cut from a live stream's own packets, not re-encoded."""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path

import av
import pytest
from media import TcpTsServer, mpegts_bytes

from mmlm_stream.config.clips import ClipsConfig
from mmlm_stream.config.decode import DecodeConfig
from mmlm_stream.config.snapshots import SnapshotsConfig
from mmlm_stream.operators.clip_ring import ClipRing
from mmlm_stream.operators.decode import decode
from mmlm_stream.pipeline.snapshots import MP4, Snapshots, SnapshotStore
from mmlm_stream.records.channels import Frame
from mmlm_stream.records.schema import EventRecord, event_id, window_id

pytestmark = pytest.mark.live


def watch(server: TcpTsServer, ring: ClipRing, until_s: float, request_at: float) -> None:
    """Decode the live stream, ask for a clip at ``request_at``, stop at ``until_s``."""
    stop = threading.Event()
    config = DecodeConfig(frame_fps=2.0, open_timeout_s=5, stall_timeout_s=3)
    asked = False
    deadline = time.monotonic() + 30
    for item in decode(server.url, config, stop=stop, clips=ring):
        if isinstance(item, Frame):
            if not asked and item.time >= request_at:
                ring.request("cam:sound:clip", request_at)
                asked = True
            if item.time >= until_s or time.monotonic() > deadline:
                stop.set()


def test_a_clip_spans_the_seconds_around_its_event_and_keeps_the_streams_codecs():
    server = TcpTsServer(mpegts_bytes(6.0, fps=25), 6.0)
    server.start()
    clips: dict[str, bytes] = {}
    ring = ClipRing(ClipsConfig(enabled=True, before_s=1.0, after_s=1.5), clips.__setitem__)
    try:
        watch(server, ring, until_s=5.0, request_at=3.0)
    finally:
        server.stop()
    assert set(clips) == {"cam:sound:clip"} and ring.written == 1
    with av.open(io.BytesIO(clips["cam:sound:clip"])) as clip:
        video = clip.streams.video[0]
        assert video.codec_context.name == "h264" and (video.width, video.height) == (320, 240)
        assert clip.streams.audio and clip.streams.audio[0].codec_context.name == "aac"
        packets = [p for p in clip.demux(video) if p.size]
        assert packets[0].is_keyframe  # cut at a keyframe: it plays from its first frame
        frames = [f for p in packets for f in p.decode()]
    span = len(frames) / 25
    # 1 s before to 1.5 s after, reaching back to the keyframe before (one a second).
    assert 2.5 <= span <= 3.6, span


def test_a_clip_still_pending_when_the_connection_ends_is_written_with_what_there_is():
    server = TcpTsServer(mpegts_bytes(4.0, fps=25), 4.0)
    server.start()
    clips: dict[str, bytes] = {}
    ring = ClipRing(ClipsConfig(enabled=True, before_s=1.0, after_s=30.0), clips.__setitem__)
    try:
        watch(server, ring, until_s=3.0, request_at=2.0)
    finally:
        server.stop()
    assert "cam:sound:clip" in clips
    with av.open(io.BytesIO(clips["cam:sound:clip"])) as clip:
        assert clip.streams.video and clip.duration is not None


def test_live_events_get_a_clip_reference_and_the_clip_lands_in_the_store(tmp_path: Path):
    store = SnapshotStore(SnapshotsConfig(dir=tmp_path))
    ring = ClipRing(ClipsConfig(enabled=True, before_s=0.5, after_s=0.5), store.write_clip)
    snapshots = Snapshots(SnapshotsConfig(dir=tmp_path), store, ring)
    event = EventRecord(
        id=event_id("cam", "sound", "alarm", 2.0),
        source="cam",
        type="sound",
        key="alarm",
        start=2.0,
        end=2.0,
        confidence=0.9,
        description="An alarm sounds.",
        window_id=window_id("cam", 2.0),
    )
    snapshots.attach([event])
    assert event.clip == event.id
    server = TcpTsServer(mpegts_bytes(6.0, fps=25), 6.0)
    server.start()
    try:
        stop = threading.Event()
        for item in decode(server.url, DecodeConfig(open_timeout_s=5), stop=stop, clips=ring):
            if isinstance(item, Frame) and item.time >= 4.0:
                stop.set()
    finally:
        server.stop()
    data = store.read(event.id, MP4)
    assert data is not None and data[4:8] == b"ftyp"
