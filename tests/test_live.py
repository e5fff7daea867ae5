"""Live sources: a real MPEG-TS server on 127.0.0.1 that the tests stop and restart."""

from __future__ import annotations

import functools
import http.server
import itertools
import logging
import queue
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from media import TcpTsServer, mpegts_bytes, write_video

from mmlm_stream.config.decode import DecodeConfig, ReconnectConfig
from mmlm_stream.operators.decode import decode
from mmlm_stream.operators.probe import probe
from mmlm_stream.records.channels import AudioChunk, ChannelItem, Frame, StreamState, StreamStatus
from mmlm_stream.util.errors import SourceError

pytestmark = pytest.mark.live

FAST_RECONNECT = ReconnectConfig(initial_s=0.2, max_s=1.0, jitter=0.1)


class Collector:
    """Runs a decoder in a thread so the test can act on the source while it streams."""

    def __init__(self, items: Iterator[ChannelItem]) -> None:
        self.items: list[ChannelItem] = []
        self._queue: queue.Queue[ChannelItem | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, args=(items,), daemon=True)
        self._thread.start()

    def _run(self, items: Iterator[ChannelItem]) -> None:
        try:
            for item in items:
                self._queue.put(item)
        finally:
            self._queue.put(None)

    def until(self, predicate: Callable[[ChannelItem], bool], timeout: float) -> ChannelItem:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                item = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            if item is None:
                raise AssertionError("decoder ended early")
            self.items.append(item)
            if predicate(item):
                return item
        raise AssertionError(f"timed out; last items: {self.items[-5:]}")

    def finish(self, timeout: float = 15.0) -> None:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "decoder did not stop"
        while (item := self._queue.get_nowait()) is not None:
            self.items.append(item)


def _state(state: StreamState) -> Callable[[ChannelItem], bool]:
    return lambda item: isinstance(item, StreamStatus) and item.state is state


@pytest.mark.slow
def test_tcp_stream_reconnects_and_media_time_stays_monotonic():
    server = TcpTsServer(mpegts_bytes(4.0), 4.0)
    server.start()
    stop = threading.Event()
    config = DecodeConfig(
        frame_fps=2.0, open_timeout_s=5, stall_timeout_s=2, reconnect=FAST_RECONNECT
    )
    run = Collector(iter(decode(server.url, config, stop=stop)))
    try:
        run.until(_state(StreamState.STREAMING), timeout=10)
        # past the 4 s loop point of the sender: its PTS jump back, our time must not
        before = run.until(lambda i: isinstance(i, Frame) and i.time >= 5.0, timeout=15)
        server.stop()
        run.until(_state(StreamState.RECONNECTING), timeout=10)
        time.sleep(3.0)
        server.start()
        run.until(_state(StreamState.STREAMING), timeout=15)
        after = run.until(lambda i: isinstance(i, Frame), timeout=10)
        run.until(lambda i: isinstance(i, Frame) and i.time >= after.time + 2.0, timeout=10)
    finally:
        stop.set()
        server.stop()
    run.finish()

    states = [i.state for i in run.items if isinstance(i, StreamStatus)]
    assert states == [
        StreamState.CONNECTING,
        StreamState.STREAMING,
        StreamState.RECONNECTING,
        StreamState.STREAMING,
        StreamState.ENDED,
    ]
    assert after.time >= before.time + 3.0  # the outage is in media time too
    media = [i for i in run.items if isinstance(i, Frame | AudioChunk)]
    times = [i.sort_time for i in media]
    assert times == sorted(times)
    frames = [i.time for i in run.items if isinstance(i, Frame)]
    assert all(b - a < 1.0 for a, b in itertools.pairwise(frames) if b < before.time)
    chunks = [i for i in run.items if isinstance(i, AudioChunk)]
    assert all(b.start >= a.end - 1e-9 for a, b in itertools.pairwise(chunks))


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_stream_fails_after_its_attempts():
    url = f"tcp://127.0.0.1:{_closed_port()}"
    config = DecodeConfig(reconnect=ReconnectConfig(initial_s=0.05, max_attempts=2))
    items = list(decode(url, config))
    states = [i for i in items if isinstance(i, StreamStatus)]
    assert [s.state for s in states] == [StreamState.CONNECTING, StreamState.FAILED]
    assert states[-1].reason == "connection refused" and states[-1].attempt == 3


def test_stalling_server_times_out_instead_of_hanging():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    url = f"tcp://127.0.0.1:{listener.getsockname()[1]}"
    try:
        started = time.monotonic()
        with pytest.raises(SourceError, match="timed out after 1s") as caught:
            probe(url, DecodeConfig(open_timeout_s=1.0))
        assert time.monotonic() - started < 5.0
        assert url in str(caught.value)
    finally:
        listener.close()


@pytest.fixture
def http_folder(tmp_path):
    """Serves tmp_path over HTTP on 127.0.0.1, as an HLS origin would."""
    handler = functools.partial(QuietHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield tmp_path, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


def test_hls_over_http_decodes_all_channels(http_folder):
    folder, base = http_folder
    write_video(folder / "index.m3u8", duration_s=4.0)
    decoder = decode(f"{base}/index.m3u8", DecodeConfig(open_timeout_s=5, stall_timeout_s=5))
    items = list(decoder)
    frames = [i.time for i in items if isinstance(i, Frame)]
    assert frames == pytest.approx([0.0, 1.0, 2.0, 3.0], abs=0.1)
    assert abs(decoder.stats.audio_samples - 4.0 * 16000) <= 16000
    assert not [i for i in items if isinstance(i, StreamStatus)]  # a VOD playlist is not live


def test_missing_http_resource_is_a_one_line_error(http_folder):
    _, base = http_folder
    with pytest.raises(SourceError, match="HTTP 404 not found"):
        list(decode(f"{base}/nothing.m3u8"))


def test_udp_mpegts_stream_decodes_live():
    with socket.socket() as probe_port:
        probe_port.bind(("127.0.0.1", 0))
        port = probe_port.getsockname()[1]
    payload = mpegts_bytes(3.0)
    stop = threading.Event()

    def send() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            rate = len(payload) / 3.0
            started, offset = time.monotonic(), 0
            while not stop.is_set():
                if offset >= (time.monotonic() - started) * rate:
                    time.sleep(0.005)
                    continue
                sock.sendto(payload[offset % len(payload) :][:1316], ("127.0.0.1", port))
                offset += 1316

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    config = DecodeConfig(frame_fps=2.0, open_timeout_s=5, stall_timeout_s=2)
    run = Collector(iter(decode(f"udp://127.0.0.1:{port}", config, stop=stop)))
    try:
        run.until(_state(StreamState.STREAMING), timeout=10)
        run.until(lambda i: isinstance(i, Frame) and i.time >= 2.0, timeout=10)
    finally:
        stop.set()
    run.finish()
    assert any(isinstance(i, AudioChunk) for i in run.items)


def test_a_live_source_that_answers_404_fails_at_once_instead_of_reconnecting(http_folder):
    _, base = http_folder
    config = DecodeConfig(live=True, reconnect=ReconnectConfig(initial_s=0.05))
    started = time.monotonic()
    states = [i for i in decode(f"{base}/gone.ts", config) if isinstance(i, StreamStatus)]
    assert [s.state for s in states] == [StreamState.CONNECTING, StreamState.FAILED]
    assert states[-1].reason == "HTTP 404 not found"
    assert time.monotonic() - started < 5.0


@pytest.mark.slow
def test_a_flapping_source_is_damped_by_a_growing_backoff():
    """A camera that drops every 0.3 s: without damping ~30 reconnects in 10 s."""
    reconnect = ReconnectConfig(initial_s=0.2, max_s=4.0, jitter=0.0, stable_s=5.0)
    config = DecodeConfig(frame_fps=2.0, open_timeout_s=5, stall_timeout_s=2, reconnect=reconnect)
    stop = threading.Event()
    with TcpTsServer(mpegts_bytes(2.0), 2.0) as server:
        run = Collector(iter(decode(server.url, config, stop=stop)))
        run.until(_state(StreamState.STREAMING), timeout=10)
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            server.drop_client()
            time.sleep(0.3)
        stop.set()
        run.finish()
    drops = [i for i in run.items if _state(StreamState.RECONNECTING)(i)]
    # 0.2 + 0.4 + 0.8 + 1.6 + 3.2 + 4 ... : at most about six drops fit in ten seconds
    assert 2 <= len(drops) <= 8, len(drops)


class _AttemptCounter(logging.Handler):
    """Counts the decoder's failed connect attempts, as it logs them."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.attempts = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "connect attempt" in record.getMessage():
            self.attempts += 1


@pytest.mark.slow
def test_a_source_gone_for_over_a_thousand_attempts_comes_back():
    """The reconnect loop used to die of OverflowError at attempt 1024 (factor**attempt)."""
    reconnect = ReconnectConfig(initial_s=0.002, max_s=0.004, jitter=0.0)
    config = DecodeConfig(frame_fps=2.0, open_timeout_s=5, stall_timeout_s=2, reconnect=reconnect)
    counter = _AttemptCounter()
    log = logging.getLogger("mmlm_stream.operators.decode")
    level = log.level
    log.addHandler(counter)
    log.setLevel(logging.INFO)
    stop = threading.Event()
    server = TcpTsServer(mpegts_bytes(2.0), 2.0)
    server.start()
    run = Collector(iter(decode(server.url, config, stop=stop)))
    try:
        run.until(_state(StreamState.STREAMING), timeout=10)
        server.stop()
        run.until(_state(StreamState.RECONNECTING), timeout=10)
        deadline = time.monotonic() + 60
        while counter.attempts <= 1100 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert counter.attempts > 1100
        server.start()
        run.until(_state(StreamState.STREAMING), timeout=15)
    finally:
        stop.set()
        server.stop()
        log.removeHandler(counter)
        log.setLevel(level)
    run.finish()
