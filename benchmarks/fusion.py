"""Windowing + fusion + rules + description on synthetic encoder results.

One hour of a three-channel stream (frames at 1 fps with 1280-d embeddings and top-5
labels, 1 s audio chunks with tags, loudness, speech spans and 1024-d embeddings,
transcript segments and subtitle cues) goes through the aggregator exactly as the pipeline
drives it. The baseline measured in the same run is the time to merely build those
encoder results. Last line: ``fusion_realtime_factor=<media seconds per wall second>``
(target >= 1000: this stage must never be the bottleneck).
"""

from __future__ import annotations

import argparse
import random
import time

import numpy as np

from mmlm_stream.config import Config
from mmlm_stream.pipeline.aggregate import SourceAggregator
from mmlm_stream.records.channels import SubtitleCue
from mmlm_stream.records.modality import Modality
from mmlm_stream.records.results import (
    AudioEncoding,
    FrameEncoding,
    Label,
    TimeSpan,
    TranscriptSegment,
)

CHANNELS = frozenset({Modality.VISUAL, Modality.AUDIO, Modality.SPEECH, Modality.SUBTITLES})
VISUAL = ["tabby", "Egyptian cat", "espresso", "missile", "tripod", "car wheel", "bobsled"]
AUDIO = ["Speech", "Music", "Silence", "Beep, bleep", "Alarm", "Vehicle", "Dog"]


def synthetic(seconds: int, seed: int = 0) -> list[tuple[float, Modality, object]]:
    """Encoder results in arrival order: scenes of 20-60 s, speech and cues now and then."""
    rng = random.Random(seed)
    nrng = np.random.default_rng(seed)
    scene_vectors = nrng.normal(size=(16, 1280)).astype(np.float32)
    items: list[tuple[float, Modality, object]] = []
    scene, next_cut = 0, rng.uniform(20, 60)
    for t in range(seconds):
        if t >= next_cut:
            scene, next_cut = rng.randrange(16), t + rng.uniform(20, 60)
        embedding = scene_vectors[scene] + 0.1 * nrng.normal(size=1280).astype(np.float32)
        labels = tuple(Label(VISUAL[(scene + k) % len(VISUAL)], 0.5 / (k + 1)) for k in range(5))
        items.append((float(t), Modality.VISUAL, FrameEncoding(float(t), embedding, labels)))
        talking = (t // 15) % 3 == 1
        speech = (TimeSpan(t + 0.1, t + 0.9),) if talking else ()
        tags = tuple(Label(AUDIO[(t // 30 + k) % len(AUDIO)], 0.8 / (k + 1)) for k in range(5))
        chunk = AudioEncoding(
            float(t),
            t + 1.0,
            -25.0 + 10 * talking,
            -10.0,
            speech,
            (),
            tags,
            nrng.normal(size=1024).astype(np.float32),
        )
        items.append((t + 1.0, Modality.AUDIO, chunk))
        if t % 15 == 14 and talking:
            text = f"sentence number {t} about the parcel at the door"
            segment = TranscriptSegment(t - 14.0, t + 1.0, text, "en")
            items.append((t + 1.0, Modality.SPEECH, segment))
        if t % 10 == 0:
            cue = SubtitleCue("bench", float(t), t + 3.0, f"Cue {t}: the scene goes on.")
            items.append((float(t), Modality.SUBTITLES, cue))
    return items


def run(items: list[tuple[float, Modality, object]], config: Config) -> tuple[float, int, int]:
    aggregator = SourceAggregator("bench", config, CHANNELS, model_ids={"visual": "synthetic"})
    windows = events = 0
    started = time.perf_counter()
    for arrival, channel, item in items:
        aggregator.add(channel, [item])
        for ch in CHANNELS:
            aggregator.advance(ch, arrival)
        for output in aggregator.poll():
            windows += 1
            events += len(output.events)
    outputs, closing = aggregator.finish()
    windows += len(outputs)
    events += sum(len(o.events) for o in outputs) + len(closing)
    return time.perf_counter() - started, windows, events


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=3600)
    args = parser.parse_args()
    started = time.perf_counter()
    items = synthetic(args.seconds)
    build = time.perf_counter() - started
    elapsed, windows, events = run(items, Config())
    factor = args.seconds / elapsed
    print(
        f"stream: {args.seconds}s, {len(items)} encoder results, {windows} windows, {events} events"
    )
    print(f"baseline (building the encoder results): {build:.2f}s")
    print(f"windowing+fusion+rules+description: {elapsed:.2f}s ({elapsed / build:.1f}x baseline)")
    print(f"per window: {elapsed / max(windows, 1) * 1000:.2f} ms")
    print(f"fusion_realtime_factor={factor:.0f}")


if __name__ == "__main__":
    main()
