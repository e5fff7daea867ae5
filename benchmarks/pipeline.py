"""The Serve pipeline against its baselines, each pair measured in the same run.

- ``serve_ratio``: frame-encoder throughput through Serve (concurrent callers sending
  mini-batches to the frames modality of the Encoders deployment, batching on) over the bare
  encoder looping over the same frames at the same batch size in this process.
- ``speedup_vs_naive``: ``describe`` of a generated 5-minute clip through Serve against a naive
  sequential baseline in the seed's style: decode every frame at full size and call each model
  one item at a time (every frame through the frame encoder and the detector, every 1 s audio
  chunk, speech per 5 s of audio, every text), producing the same kinds of output. The naive
  run is measured on the clip's first ``--naive-seconds`` and scaled to the clip. ``describe``
  is timed on its second run (the application already deployed, models loaded); the first
  run, with Ray start and model loading, is printed too.
Also prints ``describe``'s real-time factor and the peak memory of all its processes.
Last line: ``serve_ratio=... speedup_vs_naive=... realtime_factor=...``.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil

from mmlm_stream.cli import ray_driver as driver
from mmlm_stream.cli.sample import write_sample
from mmlm_stream.config import Config
from mmlm_stream.config.decode import DecodeConfig
from mmlm_stream.config.models import ModelsConfig
from mmlm_stream.models.registry import load_encoder
from mmlm_stream.operators.decode import decode
from mmlm_stream.records.channels import AudioChunk, Frame
from mmlm_stream.records.modality import Modality
from mmlm_stream.records.results import SpeechInput
from mmlm_stream.util.threads import limit_threads


def frames_of(path: Path, count: int) -> list[Frame]:
    frames = [i for i in decode(str(path), DecodeConfig(frame_fps=2.0)) if isinstance(i, Frame)]
    return (frames * (count // max(len(frames), 1) + 1))[:count]


def bare_fps(frames: list[Frame], batch_size: int) -> float:
    encoder = load_encoder(Modality.VISUAL, ModelsConfig(device="cpu"))
    encoder.encode(frames[:batch_size])
    started = time.perf_counter()
    for i in range(0, len(frames), batch_size):
        encoder.encode(frames[i : i + batch_size])
    return len(frames) / (time.perf_counter() - started)


def serve_fps(frames: list[Frame], batch_size: int, callers: int = 2) -> float:
    from ray import serve

    handle = serve.get_deployment_handle("Encoders", app_name=driver.APP_NAME)
    handle.remote(frames[:batch_size], modality="visual").result()

    async def run() -> None:
        queue = list(range(0, len(frames), batch_size))

        async def caller() -> None:
            while queue:
                i = queue.pop()
                await handle.remote(frames[i : i + batch_size], modality="visual")

        await asyncio.gather(*(caller() for _ in range(callers)))

    started = time.perf_counter()
    asyncio.run(run())
    return len(frames) / (time.perf_counter() - started)


def naive_seconds_per_media_second(path: Path, seconds: float) -> float:
    """The seed's style: every frame at full size, every model one item at a time."""
    frames_model = load_encoder(Modality.VISUAL, ModelsConfig(device="cpu"))
    audio_model = load_encoder(Modality.AUDIO, ModelsConfig(device="cpu"))
    speech_model = load_encoder(Modality.SPEECH, ModelsConfig(device="cpu"))
    text_model = load_encoder(Modality.TEXT, ModelsConfig(device="cpu"))
    detector = load_encoder(Modality.OBJECTS, ModelsConfig(device="cpu"))
    config = DecodeConfig(frame_fps=0, frame_short_side=10_000)
    started = time.perf_counter()
    pending: list[np.ndarray] = []
    for item in decode(str(path), config):
        if item.sort_time >= seconds:
            break
        if isinstance(item, Frame):
            frames_model.encode([item])
            detector.detect([item])
        elif isinstance(item, AudioChunk):
            audio_model.encode([item])
            pending.append(item.samples)
            if len(pending) == 5:
                segments = speech_model.transcribe(
                    [SpeechInput(item.start - 4, np.concatenate(pending))]
                )
                for segment in segments:
                    text_model.embed([segment.text])
                pending = []
        elif hasattr(item, "text"):
            text_model.embed([item.text])
    return (time.perf_counter() - started) / seconds


class PeakMemory:
    """Sums the RSS of this process and every Ray process it started, sampled twice a second."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.wait(0.5):
            total = 0
            for proc in [me, *me.children(recursive=True)]:
                try:
                    total += proc.memory_info().rss
                except psutil.Error:
                    continue
            self.peak = max(self.peak, total)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=300.0, help="length of the clip")
    parser.add_argument("--naive-seconds", type=float, default=60.0)
    parser.add_argument("--frames", type=int, default=192)
    args = parser.parse_args()
    limit_threads(1)
    config = Config()
    batch_size = config.models.visual.batch_size
    with tempfile.TemporaryDirectory() as tmp:
        clip = write_sample(Path(tmp) / "clip.mkv", duration_s=args.seconds).path
        frames = frames_of(clip, args.frames)
        with PeakMemory() as memory:
            cold = driver.describe([str(clip)], Path(tmp) / "out", config, force=True)
            report = driver.describe([str(clip)], Path(tmp) / "out", config, force=True)
        describe_s = report.wall_s
        serve_rate = serve_fps(frames, batch_size)
        driver.shutdown()
        bare_rate = bare_fps(frames, batch_size)
        naive_per_s = naive_seconds_per_media_second(clip, min(args.naive_seconds, args.seconds))
    naive_s = naive_per_s * args.seconds
    print(
        f"frame encoder: bare {bare_rate:.1f} fps, through Serve {serve_rate:.1f} fps "
        f"(batch {batch_size})"
    )
    print(
        f"describe of {args.seconds:.0f}s: {describe_s:.1f}s warm ({cold.wall_s:.1f}s on the "
        f"first run, with Ray start and model loading); naive: {naive_s:.0f}s "
        f"(from {args.naive_seconds:.0f}s measured)"
    )
    print(f"describe peak memory (all processes): {memory.peak / 2**30:.2f} GiB")
    print(
        f"serve_ratio={serve_rate / bare_rate:.2f} speedup_vs_naive={naive_s / describe_s:.1f} "
        f"realtime_factor={args.seconds / describe_s:.2f}"
    )


if __name__ == "__main__":
    main()
