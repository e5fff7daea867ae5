"""Live latency and stream capacity of ``mmlm-stream serve`` on this machine.

1. Latency. The bundled sample (known moments: every spoken cue starts a ``speech`` event,
   the alarm starts a ``sound`` event) is served as MPEG-TS over TCP by a server in this
   process that sends each packet at its timestamp (real time, looping ``--passes`` times with
   continuous timestamps). The service, with the default models on CPU, watches it as a stream
   added over the HTTP API. A moment's latency is its event's first ``published_at`` minus the
   wall-clock time the server sent that moment. Baseline measured in the same run: a bare PyAV
   reader of the same live stream (the transport and decode floor no pipeline can beat), on
   the same moments. Prints p50 and p95 (target: p95 <= hop_s + 1.5 s) and their ratio to it.
2. Capacity. 640x360 streams (the sample, looping) at 1 frame/s are added one step at a time;
   a step holds when, over ``--measure-s`` after a warm-up, no stream's lag grows by more than
   ``--max-lag-slope`` seconds per second, stays under ``--max-lag-s``, and backpressure dropped
   under 5 % of the sampled frames. The largest held step is ``max_streams``; the lag of one
   stream is the baseline the others are read against.

Last line: ``live_p95_s=... max_streams=...``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import statistics
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import av
import numpy as np

from mmlm_stream.cli import ray_driver as driver
from mmlm_stream.cli.sample import SampleInfo, write_sample
from mmlm_stream.config import Config
from mmlm_stream.config.api import ApiConfig
from mmlm_stream.config.bus import RedisConfig
from mmlm_stream.config.decode import DecodeConfig
from mmlm_stream.config.models import ModelsConfig
from mmlm_stream.records.schema import EventRecord
from mmlm_stream.util.threads import limit_threads


class _SocketFile:
    """The write side of a socket as the file object PyAV's muxer writes to."""

    def __init__(self, conn: socket.socket) -> None:
        self.conn = conn

    def write(self, data: bytes) -> int:
        self.conn.sendall(data)
        return len(data)

    def flush(self) -> None:
        pass


@dataclass
class Connection:
    """One client of the server: ``t0`` is the wall time (epoch s) of media time 0."""

    t0: float
    thread: threading.Thread
    passes_done: int = 0


class RealtimeTsServer:
    """Serves a media file as MPEG-TS on tcp://127.0.0.1:<port>, every packet at its time.

    Each client gets its own remux from the start, timestamps shifted so the first packet is at
    0 and continued across ``passes`` loops of the file, so media time m is sent at t0 + m.
    """

    def __init__(self, path: Path, passes: int) -> None:
        self.path = path
        self.passes = passes
        self.span = self._span(path)
        self.connections: list[Connection] = []
        self._stop = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def url(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    @staticmethod
    def _span(path: Path) -> tuple[float, float]:
        """(first dts, end of the last packet) in seconds, to shift and to loop by."""
        first, end = float("inf"), 0.0
        with av.open(str(path)) as inp:
            for packet in inp.demux(*inp.streams.video, *inp.streams.audio):
                if packet.dts is None:
                    continue
                tb = float(packet.time_base)
                first = min(first, packet.dts * tb)
                end = max(end, (packet.pts or packet.dts) * tb + (packet.duration or 0) * tb)
        return first, end

    def start(self) -> RealtimeTsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._listener.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            connection = Connection(time.time(), thread)
            self.connections.append(connection)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        connection = self.connections[-1]
        first, end = self.span
        loop_s = end - first + 0.05
        try:
            with av.open(
                _SocketFile(conn), "w", format="mpegts", options={"flush_packets": "1"}
            ) as out:
                with av.open(str(self.path)) as inp:
                    streams = {
                        s.index: out.add_stream_from_template(s)
                        for s in (*inp.streams.video, *inp.streams.audio)
                    }
                started = time.time()
                connection.t0 = started
                for k in range(self.passes):
                    with av.open(str(self.path)) as inp:
                        for packet in inp.demux(*inp.streams.video, *inp.streams.audio):
                            if packet.dts is None or self._stop.is_set():
                                continue
                            tb = packet.time_base
                            shift = round((k * loop_s - first) / float(tb))
                            packet.dts += shift
                            packet.pts = (packet.pts if packet.pts is not None else 0) + shift
                            due = started + packet.dts * float(tb)
                            if (wait := due - time.time()) > 0:
                                time.sleep(wait)
                            packet.stream = streams[packet.stream.index]
                            out.mux(packet)
                    connection.passes_done = k + 1
        except (OSError, av.error.FFmpegError):
            pass  # the client went away
        finally:
            conn.close()


@dataclass(frozen=True)
class Moment:
    kind: str  # the event type it should raise
    at: float  # media seconds from the start of the stream
    since: float  # an event starting after this ...
    until: float  # ... and at the latest here belongs to the moment


def known_moments(
    info: SampleInfo, passes: int, loop_s: float, settle_s: float, window_s: float
) -> list[Moment]:
    """Speech onsets after 2 s without speech (the default rule's silence) and alarm starts,
    over every pass, leaving out the stream's first ``settle_s`` (connection start-up).

    A sound is judged per window, so its event starts with a window that holds the alarm's
    start (after ``at - window_s``); an event open since before that (a beep) does not count.
    """
    one, last_end = [], -math.inf
    for cue in info.cues:
        if cue.start - last_end >= 2.0:
            one.append(Moment("speech", cue.start, cue.start - 0.5, cue.start + 2.5))
        last_end = cue.end
    one += [Moment("sound", a, a - window_s, b) for a, b in info.alarms]
    shifted = (
        Moment(m.kind, m.at + k * loop_s, m.since + k * loop_s, m.until + k * loop_s)
        for k in range(passes)
        for m in one
    )
    return sorted((m for m in shifted if m.at >= settle_s), key=lambda m: m.at)


def _epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def event_latencies(
    moments: list[Moment], events: list[EventRecord], t0: float
) -> tuple[list[float], int]:
    """Latency per moment (first publication of the first matching event); and misses."""
    first_seen: dict[str, EventRecord] = {}
    for event in events:
        if event.published_at and (
            event.id not in first_seen
            or _epoch(event.published_at) < _epoch(first_seen[event.id].published_at or "")
        ):
            first_seen[event.id] = event
    latencies, missed = [], 0
    for moment in moments:
        hits = [
            e
            for e in first_seen.values()
            if e.type == moment.kind and moment.since < e.start <= moment.until
        ]
        if not hits:
            missed += 1
            print(f"  {moment.kind:6s} at {moment.at:6.1f} s: no event")
            continue
        published = min(_epoch(e.published_at or "") for e in hits)
        latencies.append(published - (t0 + moment.at))
        print(f"  {moment.kind:6s} at {moment.at:6.1f} s: {latencies[-1]:.2f} s")
    others = sorted(
        (e.start, e.type, e.key) for e in first_seen.values() if e.type in {"speech", "sound"}
    )
    print(f"  speech/sound events seen (start, type, key): {others}")
    return latencies, missed


def decode_floor(server: RealtimeTsServer, moments: list[Moment], limit_s: float) -> list[float]:
    """Bare PyAV reader: when is each moment's audio decoded, relative to when it was sent."""
    out: list[float] = []
    pending = [m.at for m in moments]
    with av.open(server.url, timeout=(10, 10)) as inp:
        t0 = server.connections[-1].t0
        origin = None
        for frame in inp.decode(inp.streams.audio[0]):
            if frame.time is None:
                continue
            origin = frame.time if origin is None else origin
            now = time.time()
            while pending and frame.time - origin >= pending[0]:
                out.append(now - (t0 + pending.pop(0)))
            if not pending or now - t0 > limit_s:
                break
    return out


class Api:
    def __init__(self, base: str) -> None:
        self.base = base

    def call(self, method: str, path: str, body: object | None = None) -> object:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.base + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            raw = response.read()
        return json.loads(raw) if raw else None


def read_events(redis_url: str, prefix: str, source: str) -> list[EventRecord]:
    import redis

    client = redis.Redis.from_url(redis_url)
    entries = client.xrange(f"{prefix}:events:{source}")
    return [EventRecord.model_validate_json(fields[b"json"]) for _id, fields in entries]


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def measure_latency(
    api: Api, info: SampleInfo, args: argparse.Namespace, config: Config
) -> tuple[list[float], int, list[float]]:
    floor_server = RealtimeTsServer(info.path, 1).start()
    short = [
        m
        for m in known_moments(info, 1, 0, args.settle_s, config.window.window_s)
        if m.at < args.floor_s
    ]
    floor = decode_floor(floor_server, short, args.floor_s + 5)
    floor_server.stop()

    server = RealtimeTsServer(info.path, args.passes).start()
    loop_s = server.span[1] - server.span[0] + 0.05
    moments = known_moments(info, args.passes, loop_s, args.settle_s, config.window.window_s)
    source = "bench-latency"
    api.call("POST", "/streams", {"id": source, "url": server.url})
    total = args.passes * loop_s
    deadline = time.monotonic() + total + 60
    while time.monotonic() < deadline:
        if any(c.passes_done >= args.passes for c in server.connections):
            break
        time.sleep(1)
    time.sleep(config.window.max_lateness_s + config.window.window_s + 2)
    api.call("DELETE", f"/streams/{source}")
    server.stop()
    served = max(server.connections, key=lambda c: c.passes_done)  # not a probe's short one
    if served.passes_done < args.passes:
        print(f"note: the stream was not served to the end ({len(server.connections)} connections)")
    events = read_events(args.redis_url, config.redis.prefix, source)
    latencies, missed = event_latencies(moments, events, served.t0)
    return latencies, missed, floor


@dataclass
class Step:
    streams: int
    lags: dict[str, list[float]] = field(default_factory=dict)
    dropped: int = 0
    held: bool = False
    reason: str = ""


def _stats(api: Api) -> dict[str, dict]:
    return {s["id"]: s for s in api.call("GET", "/streams")}  # type: ignore[union-attr]


def measure_step(api: Api, n: int, args: argparse.Namespace, fps: float) -> Step:
    step = Step(n)
    time.sleep(args.warmup_s)
    before = {k: v["stats"]["frames_dropped"] for k, v in _stats(api).items()}
    started = time.monotonic()
    while time.monotonic() - started < args.measure_s:
        for sid, info in _stats(api).items():
            if info["stats"]["lag_s"] is not None:
                step.lags.setdefault(sid, []).append(info["stats"]["lag_s"])
        time.sleep(2)
    after = {k: v["stats"]["frames_dropped"] for k, v in _stats(api).items()}
    # A restarted analysis counts from zero again: its drops since then are all new.
    step.dropped = sum(
        after[k] - before.get(k, 0) if after[k] >= before.get(k, 0) else after[k] for k in after
    )
    expected = n * fps * args.measure_s
    worst_slope, worst_lag = 0.0, 0.0
    for sid in (f"cap{i}" for i in range(n)):
        lags = step.lags.get(sid, [])
        if len(lags) < 3:
            step.reason = f"{sid} reported no lag (not streaming?)"
            return step
        slope = float(np.polyfit(np.arange(len(lags)) * 2.0, lags, 1)[0])
        worst_slope, worst_lag = max(worst_slope, slope), max(worst_lag, lags[-1])
    drop_share = step.dropped / expected if expected else 0.0
    step.held = (
        worst_slope <= args.max_lag_slope and worst_lag <= args.max_lag_s and drop_share < 0.05
    )
    step.reason = (
        f"worst lag {worst_lag:.1f} s, worst slope {worst_slope:+.3f} s/s, "
        f"dropped {step.dropped} of ~{expected:.0f} frames"
    )
    return step


def measure_capacity(api: Api, info: SampleInfo, args: argparse.Namespace) -> list[Step]:
    server = RealtimeTsServer(info.path, 1000).start()
    steps: list[Step] = []
    running = 0
    try:
        for n in args.streams:
            while running < n:
                api.call(
                    "POST", "/streams", {"id": f"cap{running}", "url": server.url, "frame_fps": 1}
                )
                running += 1
            step = measure_step(api, n, args, 1.0)
            steps.append(step)
            print(f"  {n:2d} streams: {'held' if step.held else 'NOT held'} ({step.reason})")
            if not step.held:
                break
    finally:
        for i in range(running):
            api.call("DELETE", f"/streams/cap{i}")
        server.stop()
    return steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration-s", type=float, default=60.0, help="sample length")
    parser.add_argument("--passes", type=int, default=2, help="loops of the sample for latency")
    parser.add_argument("--floor-s", type=float, default=30.0, help="decode floor run length")
    parser.add_argument(
        "--settle-s", type=float, default=5.0, help="moments this early in a stream are skipped"
    )
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 2, 3, 4, 6, 8, 10, 12])
    parser.add_argument("--warmup-s", type=float, default=15.0)
    parser.add_argument("--measure-s", type=float, default=30.0)
    parser.add_argument("--max-lag-slope", type=float, default=0.05)
    parser.add_argument("--max-lag-s", type=float, default=15.0)
    parser.add_argument(
        "--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    )
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--skip-capacity", action="store_true")
    parser.add_argument(
        "--serve-config", type=Path, default=None, help="Serve config (default local-cpu.yaml)"
    )
    args = parser.parse_args()

    limit_threads()
    prefix = f"mmlm-bench-{os.getpid()}"
    config = Config(
        decode=DecodeConfig(frame_fps=1.0),
        models=ModelsConfig(device="cpu"),
        redis=RedisConfig(url=args.redis_url, embedded=False, prefix=prefix),
        api=ApiConfig(allow_internal=["127.0.0.0/8"]),
    )
    with tempfile.TemporaryDirectory(prefix="mmlm-live-bench-") as tmp:
        info = write_sample(Path(tmp) / "sample.mkv", duration_s=args.duration_s, speech=True)
        print(f"sample: {info.duration:.0f} s, {len(info.cues)} spoken cues, alarms {info.alarms}")
        started = time.monotonic()
        driver.start_ray(None)
        base = driver.run_service(
            config,
            args.serve_config,
            args.redis_url,
            host="127.0.0.1",
            port=args.port,
            jobs_dir=Path(tmp),
        )
        print(f"service up in {time.monotonic() - started:.0f} s at {base}")
        api = Api(base)
        try:
            p50 = p95 = float("nan")
            if not args.skip_latency:
                latencies, missed, floor = measure_latency(api, info, args, config)
                target = config.window.hop_s + 1.5
                p50, p95 = percentile(latencies, 50), percentile(latencies, 95)
                floor_p50 = percentile(floor, 50)
                print(
                    f"latency over {len(latencies)} moments ({missed} missed): "
                    f"p50 {p50:.2f} s, p95 {p95:.2f} s, "
                    f"max {max(latencies, default=float('nan')):.2f} s; "
                    f"target p95 <= {target:.1f} s (p95/target {p95 / target:.2f}); "
                    f"bare decode floor p50 {floor_p50:.2f} s "
                    f"(pipeline adds {p50 - floor_p50:.2f} s)"
                )
            max_streams = 0
            if not args.skip_capacity:
                print("capacity, 640x360 streams at 1 frame/s:")
                steps = measure_capacity(api, info, args)
                held = [s.streams for s in steps if s.held]
                max_streams = max(held, default=0)
                if steps and steps[0].held:
                    one = statistics.mean(steps[0].lags.get("cap0", [float("nan")]))
                    print(f"  baseline: one stream's mean lag {one:.2f} s")
        finally:
            driver.shutdown()
    print(f"live_p95_s={p95:.2f} live_p50_s={p50:.2f} max_streams={max_streams}")


if __name__ == "__main__":
    main()
