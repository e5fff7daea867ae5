"""Encoder throughput at batch 1 vs. the configured batch size, and cost per second of video.

For each modality of the default set (CPU): items per second at batch 1 and at the modality's
configured ``batch_size``, measured in the same run on the same inputs, and the CPU time
(process time, all threads) per second of video at default sampling: frames at 1 fps,
audio continuous, speech and text as found in the bundled sample. Last line:
``encoder_batch_gain=<min over enabled modalities of batched / batch-1 throughput>``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mmlm_stream.cli.sample import write_sample
from mmlm_stream.config.models import ModelsConfig
from mmlm_stream.models.registry import load_encoder
from mmlm_stream.operators.decode import decode
from mmlm_stream.records.channels import AudioChunk, Frame, SubtitleCue
from mmlm_stream.records.modality import Modality
from mmlm_stream.records.results import SpeechInput


@dataclass
class Inputs:
    frames: list[Frame]
    chunks: list[AudioChunk]
    speech: list[SpeechInput]
    texts: list[str]
    seconds: float


def sample_inputs(folder: Path) -> Inputs:
    """Everything the default sampling extracts from the bundled sample video."""
    info = write_sample(folder / "sample.mkv")
    frames, chunks, texts = [], [], []
    for item in decode(str(info.path)):
        if isinstance(item, Frame):
            frames.append(item)
        elif isinstance(item, AudioChunk):
            chunks.append(item)
        elif isinstance(item, SubtitleCue):
            texts.append(item.text)
    return Inputs(frames, chunks, [], texts, info.duration)


def speech_from(chunks: Sequence[AudioChunk], encodings: Sequence[Any]) -> list[SpeechInput]:
    """Cut the voice-activity spans the audio encoder found out of the audio."""
    audio = np.concatenate([c.samples for c in chunks])
    spans = []
    for enc in encodings:
        for span in enc.speech:
            if spans and span.start <= spans[-1][1] + 0.05:
                spans[-1] = (spans[-1][0], max(spans[-1][1], span.end))
            else:
                spans.append((span.start, span.end))
    return [SpeechInput(s, audio[int(s * 16000) : int(e * 16000)]) for s, e in spans if e > s]


Call = Callable[[Sequence[Any]], Any]


def rate(call: Call, items: Sequence[Any], batch: int) -> tuple[float, float]:
    """(items per wall second, CPU ms per item) for ``call`` over ``items`` in batches."""
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(0, len(items), batch):
        call(items[i : i + batch])
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return len(items) / wall, cpu * 1000 / len(items)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", type=Path, default=None)
    args = parser.parse_args()
    models = ModelsConfig(set="default", device="cpu")
    if args.cache_dir:
        models = models.model_copy(update={"cache_dir": args.cache_dir})
    with tempfile.TemporaryDirectory() as tmp:
        inputs = sample_inputs(Path(tmp))
    rows = []
    audio = load_encoder(Modality.AUDIO, models)
    inputs.speech = speech_from(inputs.chunks, audio.encode(inputs.chunks))
    speech_seconds = sum(s.end - s.start for s in inputs.speech)
    per_video_second = {
        # items of each modality per second of video at default sampling
        Modality.VISUAL: len(inputs.frames) / inputs.seconds,
        Modality.AUDIO: len(inputs.chunks) / inputs.seconds,
        Modality.SPEECH: len(inputs.speech) / inputs.seconds,
        Modality.TEXT: (len(inputs.texts) + len(inputs.speech)) / inputs.seconds,
    }
    work: dict[Modality, tuple[Call, Sequence[Any]]] = {
        Modality.VISUAL: (load_encoder(Modality.VISUAL, models).encode, inputs.frames),
        Modality.AUDIO: (audio.encode, inputs.chunks),
        Modality.SPEECH: (load_encoder(Modality.SPEECH, models).transcribe, inputs.speech),
        Modality.TEXT: (load_encoder(Modality.TEXT, models).embed, inputs.texts * 4),
    }
    for modality, (call, items) in work.items():
        batch = getattr(models, modality.value).batch_size
        one_rate, _ = rate(call, items, 1)
        many_rate, many_cpu = rate(call, items, batch)
        rows.append(
            {
                "modality": modality.value,
                "items": len(items),
                "batch": batch,
                "per_s_batch1": round(one_rate, 2),
                "per_s_batched": round(many_rate, 2),
                "gain": round(many_rate / one_rate, 2),
                "cpu_ms_per_video_s": round(many_cpu * per_video_second[modality], 1),
            }
        )
    print(
        f"sample: {inputs.seconds:.0f}s, {len(inputs.frames)} frames, "
        f"{len(inputs.chunks)} audio chunks, {len(inputs.speech)} speech spans "
        f"({speech_seconds:.1f}s), {len(inputs.texts)} subtitle cues"
    )
    print(
        f"{'modality':<8} {'batch':>5} {'items/s b=1':>12} {'items/s batched':>16} {'gain':>6} "
        f"{'CPU ms per video s':>19}"
    )
    for row in rows:
        print(
            f"{row['modality']:<8} {row['batch']:>5} {row['per_s_batch1']:>12} "
            f"{row['per_s_batched']:>16} {row['gain']:>6} {row['cpu_ms_per_video_s']:>19}"
        )
    total = sum(row["cpu_ms_per_video_s"] for row in rows)
    print(
        f"total: {total:.0f} CPU-ms per second of video "
        f"(~{1000 / total:.2f} real-time streams per CPU core)"
    )
    print(json.dumps(rows))
    print(f"encoder_batch_gain={min(row['gain'] for row in rows):.2f}")


if __name__ == "__main__":
    main()
