"""Hub audio encoder: CLAP zero-shot sound tags and audio embedding, plus loudness and Silero VAD.

Any ``ClapModel`` works (``models.audio.model``: a hub id or a local folder); weights come from
the local Hugging Face cache or that folder and are downloaded only with ``allow_download``.
CLAP was trained on 48 kHz clips of up to 10 s: each 16 kHz chunk is resampled and the feature
extractor repeats it to 10 s. Tags are the softmax of CLAP's audio-text logits over the
vocabulary (``models.audio.vocabulary`` or ``DEFAULT_VOCABULARY``), so they sum to 1 per chunk;
one ``AudioTags`` covers the whole chunk. Text embeddings of the vocabulary are computed once.

``TINY`` is a randomly initialised CLAP of a few kilobytes with its own byte-level tokenizer,
written once to ``cache_dir/tiny/clap`` and loaded back through exactly the same
``from_pretrained`` code as the hub model, so tests exercise the real loading path offline.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmlm_stream.models.audio_yamnet import (
    MissingModel,
    SileroVad,
    check_rate,
    l2_normalised,
    top_labels,
)
from mmlm_stream.models.registry import LoadContext, ModelSpec
from mmlm_stream.operators.loudness import clean, envelope, loudness
from mmlm_stream.records.channels import AudioChunk
from mmlm_stream.records.modality import Modality
from mmlm_stream.records.results import AudioEncoding, AudioTags
from mmlm_stream.util.atomic_folder import build_folder

logger = logging.getLogger(__name__)

HUB_MODEL = "laion/clap-htsat-unfused"
PROMPT = "This is a sound of {}."
CLAP_SAMPLE_RATE = 48_000
MIN_SAMPLES = 160  # shorter chunks are zero-padded to 10 ms so every chunk gets tags

_VOCABULARY_TEXT = """
speech, conversation, whispering, shouting, laughter, crying, baby crying, cough, sneeze,
breathing, snoring, footsteps, applause, cheering, crowd, children playing, singing, music,
guitar, piano, drums, violin, trumpet, electronic music, dog barking, cat meowing,
bird singing, rooster crowing, cow mooing, horse neighing, insects buzzing, frog croaking,
wind, rain, thunder, water flowing, ocean waves, fire crackling, car engine, car horn,
traffic, motorcycle, truck, bus, train, train horn, airplane, helicopter, bicycle bell,
siren, police siren, ambulance siren, fire alarm, smoke detector, alarm clock, alarm,
beeping, buzzer, telephone ringing, doorbell, knocking, door slamming, glass breaking,
gunshot, explosion, fireworks, engine idling, vacuum cleaner, hair dryer, washing machine,
microwave beeping, blender, typing on a keyboard, mouse clicking, printer, clock ticking,
bell ringing, church bells, whistle, dishes clattering, cutlery, frying food,
boiling water, toilet flushing, shower, tap water running, zipper, paper rustling,
hammering, drilling, sawing, construction noise, chainsaw, lawn mower, white noise, static,
silence, radio, television, video game sounds, crowd chanting
"""
DEFAULT_VOCABULARY: tuple[str, ...] = tuple(
    word.strip() for word in _VOCABULARY_TEXT.replace("\n", " ").split(",")
)


class ClapAudioEncoder:
    """Loudness, Silero VAD, CLAP zero-shot tags and CLAP audio embedding per chunk."""

    def __init__(
        self,
        model: Any,
        feature_extractor: Any,
        tokenizer: Any,
        vad: SileroVad,
        vocabulary: Sequence[str],
        *,
        top_k: int,
        batch_size: int,
        device: str,
        dtype: Any,
        model_id: str,
    ) -> None:
        self._model = model
        self._features = feature_extractor
        self._tokenizer = tokenizer
        self._vad = vad
        self._vocabulary = list(vocabulary)
        self._top_k = top_k
        self._batch_size = batch_size
        self._device = device
        self._dtype = dtype
        self.model_id = model_id
        self.embedding_dim = int(model.config.projection_dim)
        # Unfused CLAP takes one mel per clip; "fusion" truncation would stack four.
        self._truncation = "fusion" if model.config.audio_config.enable_fusion else "rand_trunc"
        self._lock = threading.Lock()
        self._text = self._embed_texts([PROMPT.format(label) for label in self._vocabulary])

    def _embed_texts(self, texts: list[str]) -> Any:
        import torch

        tokens = self._tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
        with torch.inference_mode():
            out = self._model.get_text_features(**tokens.to(self._device))
        return out.pooler_output

    def _embed_audio(self, clips: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(embeddings, vocabulary probabilities) of 16 kHz clips."""
        import torch
        import torchaudio

        with torch.inference_mode():
            waves = [
                torchaudio.functional.resample(
                    torch.from_numpy(np.pad(clip, (0, max(0, MIN_SAMPLES - len(clip))))),
                    16_000,
                    CLAP_SAMPLE_RATE,
                ).numpy()
                for clip in clips
            ]
            inputs = self._features(
                waves,
                sampling_rate=CLAP_SAMPLE_RATE,
                truncation=self._truncation,
                return_tensors="pt",
            )
            features = inputs["input_features"].to(self._device, self._dtype)
            is_longer = inputs["is_longer"].to(self._device)
            audio = self._model.get_audio_features(
                input_features=features, is_longer=is_longer
            ).pooler_output
            logits = audio.float() @ self._text.float().T * self._model.logit_scale_a.exp().float()
            probabilities = torch.softmax(logits, dim=-1)
        return audio.float().cpu().numpy(), probabilities.cpu().numpy()

    def warmup(self) -> None:
        self._vad.warmup()
        self._embed_audio([np.zeros(16_000, np.float32)] * min(2, self._batch_size))

    def encode(self, chunks: Sequence[AudioChunk]) -> list[AudioEncoding]:
        with self._lock:
            return self._encode(chunks)

    def _encode(self, chunks: Sequence[AudioChunk]) -> list[AudioEncoding]:
        cleaned, levels, speech = [], [], []
        for chunk in chunks:
            check_rate(chunk)
            samples = clean(chunk.samples)
            cleaned.append(samples)
            levels.append(loudness(samples))
            speech.append(self._vad.spans(chunk, samples))
        embeddings: list[np.ndarray] = []
        scores: list[np.ndarray] = []
        for first in range(0, len(chunks), self._batch_size):
            emb, prob = self._embed_audio(cleaned[first : first + self._batch_size])
            embeddings.extend(emb)
            scores.extend(prob)
        out = []
        for chunk, samples, level, spans, emb, prob in zip(
            chunks, cleaned, levels, speech, embeddings, scores, strict=True
        ):
            labels = top_labels(prob, self._vocabulary, self._top_k)
            out.append(
                AudioEncoding(
                    start=chunk.start,
                    end=chunk.end,
                    rms_dbfs=level.rms_dbfs,
                    peak_dbfs=level.peak_dbfs,
                    speech=spans,
                    patches=(AudioTags(chunk.start, chunk.end, labels),),
                    labels=labels,
                    embedding=l2_normalised(emb),
                    short_term_dbfs=(
                        level.short_term_dbfs
                        if chunk.short_term_dbfs is None
                        else chunk.short_term_dbfs
                    ),
                    envelope_dbfs=chunk.envelope_dbfs or envelope(samples, chunk.sample_rate),
                    tones=chunk.tones,
                )
            )
        return out


def _load_clap(ctx: LoadContext, spec: ModelSpec, source: str) -> ClapAudioEncoder:
    """Load any ClapModel from a hub id or folder; the one path both SPEC and TINY use."""
    try:
        vad = SileroVad.from_package(float(getattr(ctx.config, "vad_threshold", 0.5)))
    except MissingModel as exc:
        raise ctx.unavailable(spec, str(exc)) from None
    try:
        import torchaudio  # noqa: F401  (resamples to 48 kHz in encode)
        from transformers import AutoTokenizer, ClapFeatureExtractor, ClapModel
    except ImportError as exc:
        raise ctx.unavailable(spec, f"the CLAP stack is not importable ({exc})") from None
    local_only = not ctx.allow_download
    folder = Path(source).expanduser()
    if source.startswith((".", "/", "~")) and not folder.is_dir():
        raise ctx.unavailable(spec, f"'{source}' is not an existing folder")
    if folder.is_dir():
        source = str(folder)
    try:
        model = ClapModel.from_pretrained(
            source, local_files_only=local_only, dtype=ctx.torch_dtype()
        )
        feature_extractor = ClapFeatureExtractor.from_pretrained(
            source, local_files_only=local_only
        )
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_only)
    except (OSError, ValueError) as exc:
        if local_only and not folder.is_dir():
            reason = f"'{source}' is not in the local Hugging Face cache"
        else:
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            reason = f"'{source}' could not be loaded ({detail})"
        raise ctx.unavailable(spec, reason) from None
    model.to(ctx.device).eval()
    vocabulary = list(getattr(ctx.config, "vocabulary", None) or DEFAULT_VOCABULARY)
    return ClapAudioEncoder(
        model,
        feature_extractor,
        tokenizer,
        vad,
        vocabulary,
        top_k=int(getattr(ctx.config, "top_k", 5)),
        batch_size=ctx.batch_size,
        device=ctx.device,
        dtype=ctx.torch_dtype(),
        model_id=source,
    )


def _load_hub(ctx: LoadContext) -> ClapAudioEncoder:
    return _load_clap(ctx, SPEC, ctx.model or HUB_MODEL)


# --- tiny ---------------------------------------------------------------------------------


def _byte_alphabet() -> list[str]:
    """GPT-2's byte-to-unicode table: the 256 symbols a byte-level BPE vocabulary starts from."""
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    extra = iter(range(256, 512))
    return [chr(b) if b in printable else chr(next(extra)) for b in range(256)]


_TINY_MERGES = [("Ġ", "s"), ("o", "u"), ("ou", "n"), ("oun", "d"), ("Ġs", "ound"), ("Ġ", "a")]


def _tiny_tokenizer() -> Any:
    from transformers import RobertaTokenizer

    vocab = {token: i for i, token in enumerate(["<s>", "<pad>", "</s>", "<unk>"])}
    for symbol in _byte_alphabet():
        vocab.setdefault(symbol, len(vocab))
    for left, right in _TINY_MERGES:
        vocab.setdefault(left + right, len(vocab))
    vocab["<mask>"] = len(vocab)
    return RobertaTokenizer(vocab=vocab, merges=list(_TINY_MERGES), model_max_length=64)


def build_tiny(target: Path) -> Path:
    """Write a tiny random CLAP + feature extractor + tokenizer to ``target`` once (atomic)."""
    if (target / "config.json").is_file():
        return target
    import torch
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel

    tokenizer = _tiny_tokenizer()
    config = ClapConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": 16,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "intermediate_size": 32,
            "max_position_embeddings": 66,
            "projection_dim": 16,
        },
        audio_config={
            "spec_size": 128,
            "num_mel_bins": 32,
            "depths": [1, 1],
            "num_attention_heads": [1, 2],
            "patch_embeds_hidden_size": 8,
            "hidden_size": 16,
            "projection_dim": 16,
            "enable_fusion": False,
        },
        projection_dim=16,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = ClapModel(config).eval()

    def fill(scratch: Path) -> None:
        model.save_pretrained(scratch)
        ClapFeatureExtractor(
            feature_size=32, max_length_s=5, truncation="rand_trunc"
        ).save_pretrained(scratch)
        tokenizer.save_pretrained(scratch)

    build_folder(target, fill, complete=lambda folder: (folder / "config.json").is_file())
    logger.info("wrote tiny CLAP to %s", target)
    return target


def _load_tiny(ctx: LoadContext) -> ClapAudioEncoder:
    source = ctx.model or str(build_tiny(ctx.cache_dir / "tiny" / "clap"))
    return _load_clap(ctx, TINY, source)


SPEC = ModelSpec(
    name=HUB_MODEL,
    modality=Modality.AUDIO,
    load=_load_hub,
    weights=f"Hugging Face {HUB_MODEL} (local cache or models.audio.model folder)",
    licence="Apache-2.0 (LAION CLAP); Silero VAD: MIT",
    size_mb=615.0,
    how_to_get=(
        f"run `hf download {HUB_MODEL}` where the hub is reachable, point "
        "models.audio.model at a local copy, or set models.allow_download: true"
    ),
)

TINY = ModelSpec(
    name="tiny-clap",
    modality=Modality.AUDIO,
    load=_load_tiny,
    weights="built from a ClapConfig with random weights into cache_dir/tiny/clap",
    licence="n/a (random weights, tests only)",
    size_mb=0.5,
    how_to_get="built automatically; needs torch, torchaudio and transformers installed",
)
