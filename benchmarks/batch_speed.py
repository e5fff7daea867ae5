"""Batch speed and memory of ``mmlm-stream describe`` against the bare models run plainly.

1. A folder of a dozen short mixed files is generated: the bundled sample (speech, photos,
   subtitles) at two sizes, recorded human speech (Debian's asterisk prompts, when
   installed), music (a chord progression), silence, a 4K clip, a portrait and a tiny odd
   size, a video without audio, a variable-frame-rate clip, a truncated MP4 and random bytes.
2. ``mmlm-stream describe --fresh`` describes it cold, as a user would with no service
   running (a subprocess: Ray start, model loading and all). ``cold_first_window_s`` is the
   time from that start to the first window record on disk.
3. A plain single-process script (``--plain``, also a subprocess) runs the same default
   models over the same files with no Ray and no gating: frames decoded at 1 fps, the frame
   model and the detector on every frame, YAMNet on 4 s chunks, plain faster-whisper over
   each file's whole audio.
4. ``mmlm-stream serve`` is started and, once healthy and idle, ``mmlm-stream describe``
   describes the folder again, reusing the service (its Ray, its loaded models);
   ``first_window_s`` is that run's time to its first window on disk. It must say it reused
   the service, or the run fails.
5. With every model loaded and the service idle again, the PSS of all its processes (Ray's
   included) is summed.

Every subprocess gets a private ``XDG_RUNTIME_DIR``, so no other ``serve`` of the user is
reused. Last line: ``describe_vs_plain=<cold wall ratio> first_window_s=<s with the service>
service_pss_mb=<MB> cold_first_window_s=<s>``. Run it alone on the machine (it measures wall
time): ``python benchmarks/batch_speed.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import wave
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from mmlm_stream.records.modality import Modality

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ASTERISK = Path("/usr/share/asterisk/sounds/en_US_f_Allison")
CLI = [sys.executable, "-m", "mmlm_stream.cli.main"]


def _write_wav(path: Path, samples: np.ndarray, rate: int) -> Path:
    pcm = (np.clip(samples, -1.0, 1.0) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm.tobytes())
    return path


def _speech(seconds: float) -> tuple[np.ndarray, int] | None:
    """Recorded prompts (8 kHz) with 0.7 s pauses, up to ``seconds``; None when not installed."""
    prompts = sorted(ASTERISK.glob("*.wav"))
    if not prompts:
        return None
    parts, total, rate = [], 0, 8000
    for prompt in prompts[::7]:
        with wave.open(str(prompt)) as f:
            rate = f.getframerate()
            x = np.frombuffer(f.readframes(f.getnframes()), "<i2").astype(np.float32) / 32768
        parts += [x, np.zeros(int(0.7 * rate), np.float32)]
        total += len(x) + int(0.7 * rate)
        if total >= seconds * rate:
            break
    return np.concatenate(parts)[: int(seconds * rate)], rate


def _music(seconds: float, rate: int = 22050) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    chords = [(261.6, 329.6, 392.0), (220.0, 261.6, 329.6), (174.6, 220.0, 261.6)]
    out = np.zeros_like(t)
    for k, chord in enumerate(chords * int(seconds)):
        part = (t >= k) & (t < k + 1)
        envelope = np.exp(-3 * (t[part] - k))
        for f in chord:
            out[part] += 0.15 * envelope * np.sin(2 * np.pi * f * t[part])
    return out.astype(np.float32)


def make_corpus(folder: Path) -> list[Path]:
    """The mixed input folder; returns the files written."""
    from media import write_random_bytes, write_truncated_mp4, write_video

    from mmlm_stream.cli.sample import write_sample

    folder.mkdir(parents=True, exist_ok=True)
    files = [
        write_sample(folder / "sample.mkv", duration_s=30).path,
        write_sample(folder / "sample-small.mkv", duration_s=12, width=320, height=180).path,
    ]
    speech = _speech(30.0)
    if speech is not None:
        files.append(_write_wav(folder / "speech.wav", *speech))
    files.append(_write_wav(folder / "music.wav", _music(20.0), 22050))
    files.append(_write_wav(folder / "silence.wav", np.zeros(15 * 16000, np.float32), 16000))
    files.append(write_video(folder / "clip-4k.mp4", duration_s=3, width=3840, height=2160, fps=5))
    files.append(write_video(folder / "portrait.mkv", duration_s=8, width=180, height=640))
    files.append(write_video(folder / "tiny.mp4", duration_s=6, width=64, height=48))
    files.append(write_video(folder / "no-audio.mkv", duration_s=10, audio_tracks=0))
    files.append(write_video(folder / "vfr.mkv", duration_s=10, vfr=True))
    files.append(write_truncated_mp4(folder / "truncated.mp4"))
    files.append(write_random_bytes(folder / "corrupt.mp4"))
    return files


def _media_seconds(files: Sequence[Path]) -> float:
    import av

    total = 0.0
    for path in files:
        try:
            with av.open(str(path)) as c:
                total += float(c.duration or 0) / 1e6
        except av.error.FFmpegError:
            pass
    return total


def _first_window(out: Path, started: float, found: list[float], stop: threading.Event) -> None:
    while not stop.is_set():
        for path in out.glob("*.windows.jsonl*"):
            try:
                if path.stat().st_size > 0:
                    found.append(time.monotonic() - started)
                    return
            except OSError:
                continue
        time.sleep(0.05)


REUSED = "reusing the running service"


def run_describe(
    files: Sequence[Path], out: Path, env: dict[str, str], *flags: str
) -> tuple[float, float, bool]:
    """Wall seconds of a ``describe``, seconds to its first window on disk, and whether it
    reused a running service."""
    found: list[float] = []
    stop = threading.Event()
    started = time.monotonic()
    watcher = threading.Thread(target=_first_window, args=(out, started, found, stop))
    out.mkdir(parents=True, exist_ok=True)
    watcher.start()
    try:
        result = subprocess.run(
            [*CLI, "describe", *map(str, files), "--out", str(out), "--force", *flags],
            env=env,
            capture_output=True,
            text=True,
        )
    finally:
        stop.set()
        watcher.join()
    wall = time.monotonic() - started
    if result.returncode not in (0, 1):  # 1: some inputs failed (the corrupt ones)
        sys.stderr.write(result.stderr[-4000:])
        raise SystemExit(f"describe exited {result.returncode}")
    failed = sorted(p.name for p in out.glob("*.error.json"))
    reused = REUSED in result.stderr
    print(
        f"describe {' '.join(flags)}: {wall:.1f}s wall, rc={result.returncode}, "
        f"reused the service: {reused}, failed inputs: {failed}"
    )
    return wall, found[0] if found else float("nan"), reused


def run_plain(files: Sequence[Path], env: dict[str, str]) -> float:
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, __file__, "--plain", *map(str, files)],
        env=env,
        capture_output=True,
        text=True,
    )
    wall = time.monotonic() - started
    if result.returncode:
        sys.stderr.write(result.stderr[-4000:])
        raise SystemExit(f"plain script exited {result.returncode}")
    print(f"plain: {wall:.1f}s wall; {result.stdout.strip().splitlines()[-1]}")
    return wall


def _descendants(pid: int) -> list:
    import psutil

    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _pss_mb(processes: list) -> tuple[float, list[tuple[str, float]]]:
    import psutil

    rows = []
    for proc in processes:
        try:
            pss = proc.memory_full_info().pss / 2**20
            name = " ".join(proc.cmdline()[:3])[-60:] or proc.name()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        rows.append((name, pss))
    return sum(p for _, p in rows), sorted(rows, key=lambda r: -r[1])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
            return r.status == 200 and bool(json.loads(r.read()).get("ok"))
    except OSError:
        return False


@contextlib.contextmanager
def running_service(
    env: dict[str, str], log: Path, timeout_s: float = 240.0
) -> Iterator[subprocess.Popen]:
    """``mmlm-stream serve``, healthy and advertised for ``describe`` to reuse (its service
    record written), until the block ends; its output goes to ``log``."""
    port = _free_port()
    records = Path(env["XDG_RUNTIME_DIR"]) / "mmlm-stream"
    with log.open("w") as sink:
        proc = subprocess.Popen(
            [*CLI, "serve", "--port", str(port), "--jobs-dir", str(log.parent / "jobs")],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            text=True,
        )
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"serve exited {proc.returncode}: {log.read_text()[-2000:]}")
            if _healthy(port) and list(records.glob("serve-*.json")):
                break
            if time.monotonic() > deadline:
                raise SystemExit("serve did not become healthy")
            time.sleep(1)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            for p in reversed(_descendants(proc.pid)):
                p.kill()


def service_pss(proc: subprocess.Popen, idle_s: float = 10.0) -> float:
    """PSS of a running ``mmlm-stream serve`` (every process it started) once idle."""
    time.sleep(idle_s)
    total, rows = _pss_mb(_descendants(proc.pid))
    print(f"service: {total:.0f} MB PSS over {len(rows)} processes when idle")
    for name, pss in rows:
        print(f"  {pss:7.0f} MB  {name}")
    return total


def plain(files: Sequence[str]) -> None:
    """The bare default models over each file, one process, no gating (see module doc)."""
    import av
    from faster_whisper import WhisperModel

    from mmlm_stream.config.models import ModelsConfig
    from mmlm_stream.models import speech_faster_whisper
    from mmlm_stream.models.registry import load_encoder, resolve
    from mmlm_stream.records.channels import AudioChunk, Frame
    from mmlm_stream.util.threads import limit_threads

    limit_threads(len(os.sched_getaffinity(0)))
    clock = time.monotonic()
    spent: dict[str, float] = {}

    def lap(stage: str) -> None:
        nonlocal clock
        now = time.monotonic()
        spent[stage] = round(spent.get(stage, 0.0) + now - clock, 2)
        clock = now

    models = ModelsConfig()
    frames_model = load_encoder(Modality.VISUAL, models)
    detector = load_encoder(Modality.OBJECTS, models)
    audio_model = load_encoder(Modality.AUDIO, models)
    speech_ctx = resolve(Modality.SPEECH, models).context  # type: ignore[union-attr]
    folder, _ = speech_faster_whisper._model_folder(speech_ctx)
    cores = len(os.sched_getaffinity(0))
    whisper = WhisperModel(str(folder), device="cpu", compute_type="int8", cpu_threads=cores)
    lap("load")
    counts: dict[str, float] = {"frames": 0, "audio_s": 0.0, "words": 0}
    for name in files:
        try:
            frames, audio = _decode(av, name)
        except (av.error.FFmpegError, ValueError, IndexError):
            continue
        lap("decode")
        for k in range(0, len(frames), 4):
            batch = [Frame(name, t, image) for t, image in frames[k : k + 4]]
            frames_model.encode(batch)
            lap("frames")
            detector.detect(batch)
            lap("detector")
        counts["frames"] += len(frames)
        if len(audio):
            step = 4 * 16000
            chunks = [
                AudioChunk(name, i / 16000, audio[i : i + step], index=i // step)
                for i in range(0, len(audio), step)
            ]
            audio_model.encode(chunks)
            lap("yamnet")
            segments, _ = whisper.transcribe(audio, beam_size=1)
            counts["words"] += sum(len(s.text.split()) for s in segments)
            counts["audio_s"] = round(counts["audio_s"] + len(audio) / 16000, 1)
            lap("whisper")
    print(json.dumps({**counts, "seconds": spent}))


def _decode(av, name: str) -> tuple[list[tuple[float, np.ndarray]], np.ndarray]:
    """Frames at 1 fps (short side 256) and 16 kHz mono audio of one file."""
    frames: list[tuple[float, np.ndarray]] = []
    audio: list[np.ndarray] = []
    with av.open(name) as container:
        if container.streams.video:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            due = 0.0
            for frame in container.decode(stream):
                t = float(frame.time or 0.0)
                if t + 1e-6 < due:
                    continue
                due = np.floor(t) + 1.0
                scale = 256 / min(frame.width, frame.height)
                size = {
                    "width": max(2, round(frame.width * scale)),
                    "height": max(2, round(frame.height * scale)),
                }
                frames.append((t, frame.to_ndarray(format="rgb24", **size)))
    with av.open(name) as container:
        if container.streams.audio:
            resampler = av.AudioResampler(format="flt", layout="mono", rate=16000)
            for frame in container.decode(container.streams.audio[0]):
                for out in resampler.resample(frame):
                    audio.append(out.to_ndarray().reshape(-1))
    return frames, np.concatenate(audio) if audio else np.zeros(0, np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plain", nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--no-pss", action="store_true", help="skip the service memory step")
    args = parser.parse_args()
    if args.plain:
        plain(args.plain)
        return
    sys.path.insert(0, str(ROOT / "tests"))
    with tempfile.TemporaryDirectory(prefix="mmlm-batch-speed-") as tmp:
        runtime = Path(tmp) / "run"
        runtime.mkdir(mode=0o700)
        env = {**os.environ, "PYTHONPATH": str(ROOT), "XDG_RUNTIME_DIR": str(runtime)}
        files = make_corpus(Path(tmp) / "in")
        print(f"corpus: {len(files)} files, {_media_seconds(files):.0f} s of media")
        describe_s, cold_first_s, _ = run_describe(files, Path(tmp) / "out", env, "--fresh")
        plain_s = run_plain(files, env)
        with running_service(env, Path(tmp) / "serve.log") as proc:
            _, first_s, reused = run_describe(files, Path(tmp) / "out-service", env)
            if not reused:
                raise SystemExit("describe did not reuse the running service")
            # After the describe: every model is loaded then, and the service idle again.
            pss = float("nan") if args.no_pss else service_pss(proc)
    print(
        f"describe_vs_plain={describe_s / plain_s:.2f} first_window_s={first_s:.1f} "
        f"service_pss_mb={pss:.0f} cold_first_window_s={cold_first_s:.1f}"
    )


if __name__ == "__main__":
    main()
