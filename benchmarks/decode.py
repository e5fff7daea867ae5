"""Decode operator vs. the limit: a bare PyAV loop over the same file.

Generates a 60 s 1280x720 H.264+AAC clip, then times (best of N, alternating) the decode
operator at frame_fps=1 and a bare loop that decodes every packet and converts only the
sampled frames with the same scaler. Also measures peak RSS of a child process decoding a
generated 10-minute clip, to show the operator streams instead of loading the file.
Last line: ``decode_ratio=<operator fps / bare fps>`` (target >= 0.9).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from mmlm_stream.config.decode import DecodeConfig
from mmlm_stream.operators.decode import decode
from mmlm_stream.operators.frame_sampler import output_size


def write_clip(path: Path, seconds: float, width: int, height: int, fps: int = 25) -> Path:
    """A moving, noisy picture so H.264 has real work to do; written frame by frame."""
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 60, size=(height, width, 3), dtype=np.uint8)
    ys, xs = np.mgrid[0:height, 0:width]
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=fps, options={"preset": "ultrafast", "crf": "28"})
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        audio = out.add_stream("aac", rate=48000)
        audio.layout = "stereo"
        sample = 0
        for i in range(int(seconds * fps)):
            shift = (i * 4) % width
            base = ((xs + shift) % 256).astype(np.uint8)
            img = np.stack([base, ((ys + i) % 256).astype(np.uint8), base // 2], axis=-1)
            img = img + np.roll(noise, i * 3, axis=1)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = i
            for packet in video.encode(frame):
                out.mux(packet)
            while sample < (i + 1) * 48000 // fps:
                t = np.arange(sample, sample + 1024) / 48000
                tone = (0.2 * np.sin(2 * math.pi * 440 * t)).astype(np.float32)
                af = av.AudioFrame.from_ndarray(
                    np.stack([tone, tone]), format="fltp", layout="stereo"
                )
                af.sample_rate, af.pts, af.time_base = 48000, sample, Fraction(1, 48000)
                for packet in audio.encode(af):
                    out.mux(packet)
                sample += 1024
        for stream in (video, audio):
            for packet in stream.encode():
                out.mux(packet)
    return path


def bare_loop(path: Path, config: DecodeConfig) -> int:
    """The limit: decode every packet, convert a frame only when one is due."""
    frames = 0
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        size = output_size(video.width, video.height, config.frame_short_side, config.frame_size)
        next_due = 0.0
        for packet in container.demux(video, *container.streams.audio[:1]):
            for frame in packet.decode():
                if packet.stream.type != "video":
                    continue
                frames += 1
                if frame.time is not None and frame.time >= next_due - 1e-6:
                    frame.reformat(
                        width=size[0],
                        height=size[1],
                        format="rgb24",
                        interpolation=config.frame_interpolation,
                    ).to_ndarray()
                    next_due = (
                        math.floor(frame.time * config.frame_fps + 1e-6 + 1) / config.frame_fps
                    )
    return frames


def operator_run(path: Path, config: DecodeConfig) -> int:
    decoder = decode(str(path), config)
    for _ in decoder:
        pass
    return round((decoder.stats.last_time or 0) * 25)


def peak_rss_mb(path: Path) -> float:
    """Decode in a child process and read its own peak RSS."""
    code = (
        "import resource, sys\n"
        "from mmlm_stream.operators.decode import decode\n"
        "for _ in decode(sys.argv[1]): pass\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True
    )
    return int(done.stdout.strip().splitlines()[-1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--long-seconds", type=float, default=600.0)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    config = DecodeConfig(frame_fps=1.0)
    with tempfile.TemporaryDirectory() as tmp:
        clip = write_clip(Path(tmp) / "bench720.mp4", args.seconds, 1280, 720)
        bare_times, op_times = [], []
        for _ in range(args.repeat):
            start = time.perf_counter()
            frames = bare_loop(clip, config)
            bare_times.append(time.perf_counter() - start)
            start = time.perf_counter()
            operator_run(clip, config)
            op_times.append(time.perf_counter() - start)
        bare_fps = frames / min(bare_times)
        op_fps = frames / min(op_times)
        print(f"clip: {args.seconds:.0f}s 1280x720, {frames} frames")
        print(f"bare PyAV loop: {bare_fps:.0f} fps (best of {args.repeat})")
        print(f"decode operator: {op_fps:.0f} fps (best of {args.repeat})")
        long_clip = write_clip(Path(tmp) / "long.mp4", args.long_seconds, 640, 360)
        size_mb = long_clip.stat().st_size / 2**20
        rss = peak_rss_mb(long_clip)
        print(f"peak RSS decoding a {args.long_seconds:.0f}s clip ({size_mb:.0f} MB): {rss:.0f} MB")
        print(
            json.dumps(
                {
                    "bare_fps": round(bare_fps),
                    "operator_fps": round(op_fps),
                    "peak_rss_mb": round(rss),
                    "long_clip_mb": round(size_mb),
                }
            )
        )
    print(f"decode_ratio={op_fps / bare_fps:.3f}")


if __name__ == "__main__":
    main()
