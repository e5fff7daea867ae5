import pytest

from mmlm_stream.operators.source import assign_source_ids, resolve_source
from mmlm_stream.util.backoff import Backoff


def test_file_source_id_is_the_base_name_with_extension():
    assert assign_source_ids(["/a/clip.mkv", "/a/clip.mp4"]) == ["clip.mkv", "clip.mp4"]


def test_same_base_name_in_two_folders_gets_distinct_stable_ids():
    ids = assign_source_ids(["/a/clip.mkv", "/b/clip.mkv"])
    assert ids[0] != ids[1]
    assert all(i.startswith("clip.mkv-") for i in ids)
    assert ids == assign_source_ids(["/a/clip.mkv", "/b/clip.mkv"])


def test_url_source_id_omits_credentials():
    spec = resolve_source("rtsp://user:secret@cam.local:554/stream1")
    assert spec.source_id == "cam.local_554_stream1"
    assert spec.live_by_scheme and not spec.is_file


def test_invalid_explicit_source_id_is_rejected():
    with pytest.raises(ValueError):
        resolve_source("x.mp4", source_id="bad id!")


def test_backoff_grows_to_its_cap_with_bounded_jitter():
    backoff = Backoff(initial=1.0, maximum=8.0, factor=2.0, jitter=0.25)
    delays = [backoff.next_delay() for _ in range(6)]
    for delay, base in zip(delays, [1, 2, 4, 8, 8, 8], strict=True):
        assert base * 0.75 <= delay <= base * 1.25
    backoff.reset()
    assert backoff.next_delay() <= 1.25


def test_backoff_keeps_retrying_after_an_outage_of_any_length():
    """attempt 1024 used to raise OverflowError (factor**attempt before the cap)."""
    backoff = Backoff(initial=0.5, maximum=30.0, factor=2.0, jitter=0.0)
    backoff.attempt = 10**7
    assert backoff.next_delay() == 30.0
    steep = Backoff(initial=1e-3, maximum=1e6, factor=1e3, jitter=0.0, attempt=5000)
    assert steep.next_delay() == 1e6
