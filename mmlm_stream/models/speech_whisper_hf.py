"""Hub speech recognizer: any Whisper through transformers (default ``openai/whisper-small``).

Loads from the local Hugging Face cache or a folder, never downloading unless
``models.allow_download`` is true. Windows are packed exactly as for the default model
(``mmlm_stream.operators.speech_packing``) and decoded ``batch_size`` at a time in one pass
with timestamp tokens; segment times come from those tokens (no word times here), clipped
to the input each segment overlaps most.

Per batch the encoder runs once: its output feeds one decoder step that gives both the
language (when not configured) and the no-speech probability, then ``generate``, then one
teacher-forced decoder pass that scores the generated tokens (the confidence of each
segment and the log-probability that flags invented text).

``TINY`` is a randomly initialised Whisper of a few kilobytes, built from a config, saved to
``<cache_dir>/tiny/whisper`` once and loaded back through the same ``from_pretrained`` code:
its text is garbage, its types and plumbing are real.
"""

from __future__ import annotations

import logging
import threading
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
)
from mmlm_stream.records.modality import Modality
from mmlm_stream.records.results import TranscriptSegment
from mmlm_stream.util.atomic_folder import build_folder
from mmlm_stream.util.errors import ConfigError
from mmlm_stream.util.file_lock import exclusive

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "openai/whisper-small"
TINY_FOLDER = Path("tiny") / "whisper"
TIME_PRECISION = 0.02
"""Seconds per Whisper timestamp token."""
NO_SPEECH_PROB = 0.6
LOW_LOGPROB = -1.0
JUNK_LOGPROB = -1.5
"""Same limits as the default model (see speech_faster_whisper for the measurements)."""

_TINY_LANGUAGES = ("en", "de", "fr", "es")
_TINY_MAX_NEW_TOKENS = 8


@dataclass(frozen=True, slots=True)
class _Decoded:
    """One window: (start, end, text, mean token probability) in window seconds."""

    segments: list[tuple[float, float, str, float]]
    avg_logprob: float
    no_speech_prob: float


def _load_from(
    ctx: LoadContext, reference: str, spec: ModelSpec, calibrated: bool = True
) -> WhisperHfRecognizer:
    try:
        from transformers import WhisperForConditionalGeneration, WhisperProcessor
    except ImportError:
        raise ctx.unavailable(spec, "packages torch and transformers are not installed") from None
    local_only = not ctx.allow_download
    try:
        processor = WhisperProcessor.from_pretrained(reference, local_files_only=local_only)
        model = WhisperForConditionalGeneration.from_pretrained(
            reference, local_files_only=local_only, dtype=ctx.torch_dtype()
        )
    except (OSError, ValueError) as exc:
        where = "the local Hugging Face cache" if local_only else "the Hugging Face Hub"
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        logger.debug("loading %s failed: %s", reference, reason)
        raise ctx.unavailable(spec, f"'{reference}' is not a Whisper model in {where}") from None
    model.to(ctx.device).eval()
    config = ctx.config
    if not isinstance(config, SpeechModelConfig):
        config = SpeechModelConfig.model_validate(config.model_dump())
    languages = getattr(model.generation_config, "lang_to_id", None) or {}
    if config.language is not None and languages and f"<|{config.language}|>" not in languages:
        raise ConfigError(
            f"models.speech.language '{config.language}' is not a language code of {reference}"
        )
    return WhisperHfRecognizer(model, processor, reference, config, ctx.batch_size, calibrated)


def load(ctx: LoadContext) -> WhisperHfRecognizer:
    return _load_from(ctx, ctx.model or DEFAULT_MODEL, SPEC)


def load_tiny(ctx: LoadContext) -> WhisperHfRecognizer:
    """The tiny random Whisper; its confidences mean nothing, so they filter nothing."""
    if ctx.model:
        return _load_from(ctx, ctx.model, TINY, calibrated=False)
    try:
        folder = build_tiny_whisper(ctx.cache_dir / TINY_FOLDER)
    except ImportError:
        raise ctx.unavailable(TINY, "packages torch and transformers are not installed") from None
    return _load_from(ctx, str(folder), TINY, calibrated=False)


def build_tiny_whisper(folder: Path) -> Path:
    """Save the tiny random Whisper (model, feature extractor, tokenizer) once, atomically.

    Deterministic: a byte-level vocabulary with no merges, Whisper's special and timestamp
    tokens, and weights drawn from a fixed seed (without touching the global RNG state).
    """
    import torch
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
        WhisperTokenizer,
    )
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    folder.parent.mkdir(parents=True, exist_ok=True)
    with exclusive(folder.parent / f"{folder.name}.lock"):
        if (folder / "config.json").is_file():
            return folder
        vocab = {character: index for index, character in enumerate(bytes_to_unicode().values())}
        specials = [
            "<|endoftext|>",
            "<|startoftranscript|>",
            *(f"<|{code}|>" for code in _TINY_LANGUAGES),
            "<|translate|>",
            "<|transcribe|>",
            "<|startoflm|>",
            "<|startofprev|>",
            "<|nospeech|>",
            "<|notimestamps|>",
        ]
        for token in specials + [f"<|{i * TIME_PRECISION:.2f}|>" for i in range(1501)]:
            vocab[token] = len(vocab)
        eot = vocab["<|endoftext|>"]
        tokenizer = WhisperTokenizer(
            vocab=vocab,
            merges=[],
            unk_token="<|endoftext|>",
            bos_token="<|endoftext|>",
            eos_token="<|endoftext|>",
            pad_token="<|endoftext|>",
            additional_special_tokens=specials[1:],
        )
        config = WhisperConfig(
            vocab_size=len(vocab),
            num_mel_bins=80,
            d_model=32,
            encoder_layers=1,
            decoder_layers=1,
            encoder_attention_heads=2,
            decoder_attention_heads=2,
            encoder_ffn_dim=64,
            decoder_ffn_dim=64,
            max_source_positions=1500,
            max_target_positions=64,
            pad_token_id=eot,
            bos_token_id=eot,
            eos_token_id=eot,
            decoder_start_token_id=vocab["<|startoftranscript|>"],
            begin_suppress_tokens=None,
            suppress_tokens=None,
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = WhisperForConditionalGeneration(config)
        model.generation_config = GenerationConfig(
            decoder_start_token_id=vocab["<|startoftranscript|>"],
            eos_token_id=eot,
            pad_token_id=eot,
            bos_token_id=eot,
            no_timestamps_token_id=vocab["<|notimestamps|>"],
            prev_sot_token_id=vocab["<|startofprev|>"],
            lang_to_id={f"<|{code}|>": vocab[f"<|{code}|>"] for code in _TINY_LANGUAGES},
            task_to_id={
                "transcribe": vocab["<|transcribe|>"],
                "translate": vocab["<|translate|>"],
            },
            is_multilingual=True,
            max_initial_timestamp_index=50,
            begin_suppress_tokens=[eot],
            suppress_tokens=[],
            max_length=_TINY_MAX_NEW_TOKENS,
        )
        processor = WhisperProcessor(
            feature_extractor=WhisperFeatureExtractor(feature_size=80), tokenizer=tokenizer
        )

        def fill(staging: Path) -> None:
            model.save_pretrained(staging)
            processor.save_pretrained(staging)

        build_folder(folder, fill, complete=lambda _folder: False, replace=True)
        logger.info("saved the tiny random Whisper to %s", folder)
        return folder


class WhisperHfRecognizer(PackedWhisper):
    """SpeechRecognizer over a transformers Whisper: packed windows, one pass per batch."""

    def __init__(
        self,
        model: Any,
        processor: Any,
        model_id: str,
        config: SpeechModelConfig,
        batch_size: int,
        calibrated: bool = True,
    ) -> None:
        self._model = model
        self._processor = processor
        self._config = config
        self._batch_size = batch_size
        self._calibrated = calibrated
        self._lock = threading.Lock()
        self.model_id = model_id
        generation = model.generation_config
        self._eot = int(generation.eos_token_id)
        self._timestamp_begin = int(generation.no_timestamps_token_id) + 1
        self._no_speech = int(generation.no_timestamps_token_id) - 1
        self._languages: dict[str, int] = dict(getattr(generation, "lang_to_id", None) or {})
        self._multilingual = bool(getattr(generation, "is_multilingual", False) and self._languages)
        # OpenAI decodes at most half the decoder context per window; a model's own shorter
        # limit wins (the tiny model's keeps tests fast). Whisper's generate reads
        # ``max_length`` as new tokens after the prompt.
        self._max_new_tokens = min(
            int(generation.max_length or model.config.max_target_positions),
            model.config.max_target_positions // 2,
        )

    def _segments(self, window: Window, result: _Decoded, language: str) -> list[TranscriptSegment]:
        if self._calibrated and (
            result.avg_logprob < JUNK_LOGPROB
            or (result.no_speech_prob > NO_SPEECH_PROB and result.avg_logprob < LOW_LOGPROB)
        ):
            return []
        segments = []
        for start, end, text, confidence in result.segments:
            segment = text_to_segment(window, start, end, text, language, confidence)
            if segment is not None:
                segments.append(segment)
        return segments

    def _decode(
        self, audios: Sequence[np.ndarray], language: str | None
    ) -> tuple[list[_Decoded], str]:
        """Decode up to ``batch_size`` windows; the language is detected once."""
        import torch

        model = self._model
        features = self._processor.feature_extractor(
            list(audios), sampling_rate=SAMPLE_RATE, return_tensors="pt", device=str(model.device)
        ).input_features.to(model.device, model.dtype)
        count = len(audios)
        with torch.inference_mode():
            encoder_outputs = model.get_encoder()(features)
            start = torch.full(
                (count, 1), model.generation_config.decoder_start_token_id, device=model.device
            )
            first = model(encoder_outputs=encoder_outputs, decoder_input_ids=start).logits[:, -1]
            probabilities = first.float().softmax(dim=-1)
            no_speech = probabilities[:, self._no_speech].tolist()
            if not self._multilingual:
                language = "en"
            elif language is None:
                votes = probabilities[:, list(self._languages.values())].sum(dim=0)
                language = list(self._languages)[int(votes.argmax())][2:-2]
            options = {"task": "transcribe", "language": language} if self._multilingual else {}
            sequences = model.generate(
                encoder_outputs=encoder_outputs,
                return_timestamps=True,
                force_unique_generate_call=True,
                max_length=self._max_new_tokens,
                num_beams=self._config.beam_size,
                **options,
            )
            if not isinstance(sequences, torch.Tensor):
                sequences = sequences["sequences"]
            logits = model(encoder_outputs=encoder_outputs, decoder_input_ids=sequences).logits
            token_logprobs = (
                logits[:, :-1]
                .float()
                .log_softmax(dim=-1)
                .gather(-1, sequences[:, 1:, None])
                .squeeze(-1)
            )
        decoded = [
            self._parse(
                row.tolist(),
                scores.tolist(),
                duration=len(audio) / SAMPLE_RATE,
                no_speech=no_speech[index],
            )
            for index, (row, scores, audio) in enumerate(
                zip(sequences, token_logprobs, audios, strict=True)
            )
        ]
        return decoded, language

    def _parse(
        self, tokens: list[int], logprobs: list[float], duration: float, no_speech: float
    ) -> _Decoded:
        """Split one generated sequence at its timestamp tokens (window seconds).

        ``logprobs[i]`` scores ``tokens[i + 1]``. The prompt (start, language, task) is
        skipped; everything generated up to and including the end token is scored.
        """
        segments: list[tuple[float, float, str, float]] = []
        text: list[int] = []
        scores: list[float] = []
        generated: list[float] = []
        start: float | None = None
        for token, logprob in zip(tokens[1:], logprobs, strict=True):
            if token >= self._timestamp_begin:
                time = (token - self._timestamp_begin) * TIME_PRECISION
                if text:
                    segments.append(self._segment(start or 0.0, time, text, scores))
                    text, scores, start = [], [], None
                else:
                    start = time
            elif token < self._eot:
                text.append(token)
                scores.append(logprob)
            elif token == self._eot:
                generated.append(logprob)
                break
            elif not generated:
                continue  # the prompt's language and task tokens
            generated.append(logprob)
        if text:
            segments.append(self._segment(start or 0.0, duration, text, scores))
        avg_logprob = float(np.mean(generated)) if generated else float("-inf")
        return _Decoded(segments, avg_logprob, no_speech)

    def _segment(
        self, start: float, end: float, text: list[int], scores: list[float]
    ) -> tuple[float, float, str, float]:
        words = self._processor.tokenizer.decode(text, skip_special_tokens=True)
        return start, max(start, end), words, float(np.mean(np.exp(scores)))


SPEC = ModelSpec(
    name=DEFAULT_MODEL,
    modality=Modality.SPEECH,
    load=load,
    weights="Hugging Face Hub (local cache or folder; downloads only with allow_download)",
    licence="MIT (OpenAI Whisper)",
    size_mb=967.0,
    how_to_get=(
        "put it in the Hugging Face cache (`hf download openai/whisper-small` on a machine "
        "with network), set models.speech.model to a local folder, or set "
        "models.allow_download: true"
    ),
)

TINY = ModelSpec(
    name="tiny-random-whisper",
    modality=Modality.SPEECH,
    load=load_tiny,
    weights="random, built from a WhisperConfig into <cache_dir>/tiny/whisper (tests only)",
    licence="Apache-2.0 (generated)",
    size_mb=0.6,
    how_to_get="pip install torch transformers (the tiny model is generated locally)",
)
