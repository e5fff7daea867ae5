import itertools

import av
import numpy as np
import pytest

from mmlm_stream.operators.audio_chunker import AudioChunker


def _frame(samples: np.ndarray, rate: int, channels: int = 1) -> av.AudioFrame:
    layout = "mono" if channels == 1 else "stereo"
    data = np.tile(samples.astype(np.float32), (channels, 1))
    frame = av.AudioFrame.from_ndarray(data, format="fltp", layout=layout)
    frame.sample_rate = rate
    return frame


def _feed(chunker: AudioChunker, rate: int, seconds: float, start: float = 0.0, channels=2):
    chunks, n, total = [], 0, round(seconds * rate)
    while n < total:
        size = min(1024, total - n)
        tone = np.sin(2 * np.pi * 440 * (np.arange(n, n + size) / rate)) * 0.3
        chunks += chunker.push(_frame(tone, rate, channels), start + n / rate)
        n += size
    return chunks + chunker.flush()


@pytest.mark.parametrize("rate", [8000, 16000, 44100, 48000])
def test_chunks_are_contiguous_and_sum_to_the_duration(rate):
    chunks = _feed(AudioChunker("s", 1.0), rate, 3.5)
    assert [c.start for c in chunks[:-1]] == [0.0, 1.0, 2.0]
    for before, after in itertools.pairwise(chunks):
        assert after.start == pytest.approx(before.end, abs=1e-9)
    total = sum(len(c.samples) for c in chunks)
    assert abs(total - 3.5 * 16000) < 16000 * 0.01
    assert all(c.samples.dtype == np.float32 and c.samples.ndim == 1 for c in chunks)


def test_stream_starting_late_keeps_its_start_time():
    chunks = _feed(AudioChunker("s", 0.5), 48000, 1.0, start=2.25)
    assert chunks[0].start == pytest.approx(2.25)
    assert chunks[1].start == pytest.approx(2.75)


def test_gap_in_input_is_filled_with_silence_so_time_stays_aligned():
    chunker = AudioChunker("s", 1.0)
    first = _feed(chunker, 16000, 1.0, channels=1)
    chunker = AudioChunker("s", 1.0)
    chunks = []
    tone = np.full(16000, 0.5, dtype=np.float32)
    chunks += chunker.push(_frame(tone, 16000), 0.0)
    chunks += chunker.push(_frame(tone, 16000), 2.0)
    chunks += chunker.flush()
    assert len(first) == 1
    assert [c.start for c in chunks] == [0.0, 1.0, 2.0]
    assert np.abs(chunks[1].samples).max() < 1e-3
    assert np.abs(chunks[2].samples).mean() > 0.4


def test_restart_continues_at_a_later_time():
    chunker = AudioChunker("s", 1.0)
    _feed(chunker, 16000, 1.0)
    chunker.restart_at(10.0)
    later = _feed(chunker, 16000, 1.0, start=10.0)
    assert later[0].start == pytest.approx(10.0)
    assert later[0].index == 1


def test_tones_and_levels_are_what_one_pass_over_the_whole_signal_finds():
    """Native-rate audio is measured in blocks, not per codec frame: the chunks must carry
    exactly the tones and levels that the tracker and meter find over the signal at once."""
    from mmlm_stream.operators.loudness import ShortTermMeter
    from mmlm_stream.operators.tones import ToneTracker

    rate, n = 48_000, 48_000 * 3
    t = np.arange(n) / rate
    beeping = (np.floor(t * 4) % 2 == 0) * 0.3 * np.sin(2 * np.pi * 9_000 * t)
    signal = (beeping + 0.01 * np.random.default_rng(0).standard_normal(n)).astype(np.float32)
    chunker = AudioChunker("s", 1.0)
    chunks = []
    for i in range(0, n, 1024):
        chunks += chunker.push(_frame(signal[i : i + 1024], rate), i / rate)
    chunks += chunker.flush()
    whole_tones = ToneTracker().push(signal, rate, 0.0)
    whole_steps = ShortTermMeter().push(signal, rate, 0.0)
    assert [tone for c in chunks for tone in c.tones] == whole_tones
    envelope = [level for c in chunks for level in c.envelope_dbfs]
    assert envelope == [round(step.block_dbfs, 1) for step in whole_steps]
    assert len(whole_tones) > 20
