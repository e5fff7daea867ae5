import itertools

import numpy as np
import pytest

from mmlm_stream.operators.speech_segmenter import SpeechSegmenter, utterances
from mmlm_stream.records.channels import AudioChunk
from mmlm_stream.records.results import AudioEncoding, TimeSpan


def chunks_with(spans: list[tuple[float, float]], seconds: int = 6):
    signal = np.arange(seconds * 16000, dtype=np.float32) / 16000  # sample value = its time
    chunks, encodings = [], []
    for k in range(seconds):
        chunk = AudioChunk("s", float(k), signal[k * 16000 : (k + 1) * 16000])
        inside = tuple(TimeSpan(max(a, k), min(b, k + 1)) for a, b in spans if a < k + 1 and b > k)
        chunks.append(chunk)
        encodings.append(AudioEncoding(float(k), k + 1.0, -20, -6, inside))
    return chunks, encodings


def test_an_utterance_across_chunks_is_one_input_with_its_own_audio():
    out = utterances(*chunks_with([(1.5, 3.2)]))
    assert len(out) == 1
    assert out[0].start == pytest.approx(1.35)
    assert out[0].end == pytest.approx(3.35)
    assert out[0].samples[0] == pytest.approx(1.35, abs=1e-4)  # the audio really is from there


def test_short_gaps_are_bridged_long_gaps_split():
    out = utterances(*chunks_with([(0.5, 1.0), (1.3, 1.8), (3.5, 4.0)]))
    assert [(round(u.start, 2), round(u.end, 2)) for u in out] == [(0.35, 1.95), (3.35, 4.15)]


def test_no_speech_gives_no_input_and_long_speech_is_cut_without_losing_a_sample():
    assert utterances(*chunks_with([])) == []
    segmenter = SpeechSegmenter(max_s=2.0)
    chunks, encodings = chunks_with([(0.0, 6.0)])
    out = [u for c, e in zip(chunks, encodings, strict=True) for u in segmenter.push(c, e)]
    out += segmenter.flush()
    assert all(u.end - u.start <= 2.0 + 1e-6 for u in out) and len(out) >= 3
    assert out[0].start == 0.0 and out[-1].end == pytest.approx(6.0)
    assert all(a.end == pytest.approx(b.start) for a, b in itertools.pairwise(out))
    assert sum(len(u.samples) for u in out) == 6 * 16000


def test_a_monologue_is_cut_at_its_quietest_moment_and_goes_on_in_the_next_input():
    """Under babble voice activity never ends; a cut at a fixed length would split a word."""
    rng = np.random.default_rng(0)
    seconds = 40
    signal = (0.3 * rng.standard_normal(seconds * 16000)).astype(np.float32)
    breath = slice(round(25.3 * 16000), round(25.5 * 16000))
    signal[breath] *= 0.01  # the speaker's pause 25.3-25.5 s, within 5 s of the 28 s limit
    segmenter = SpeechSegmenter()
    out = []
    for k in range(seconds):
        chunk = AudioChunk("s", float(k), signal[k * 16000 : (k + 1) * 16000])
        encoding = AudioEncoding(float(k), k + 1.0, -10, -1, (TimeSpan(float(k), k + 1.0),))
        out += segmenter.push(chunk, encoding)
    out += segmenter.flush()
    assert 25.3 <= out[0].end <= 25.5
    assert out[1].start == pytest.approx(out[0].end)
    assert np.array_equal(np.concatenate([u.samples for u in out]), signal)
