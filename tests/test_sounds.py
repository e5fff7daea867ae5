"""Sounds are what they are: real rings, beeps and alarm clocks, a crash, noise beds.

Each clip (tests/real_sounds.py) is a short video decoded by the real decoder (so its 48 kHz
audio reaches the tone detector), encoded by the default YAMNet encoder in process, and
windowed, fused, described and checked by the default event rules, as ``describe`` does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import real_sounds

from mmlm_stream.config import Config
from mmlm_stream.config.models import ModelsConfig
from mmlm_stream.models.registry import load_encoder
from mmlm_stream.operators.decode import decode
from mmlm_stream.operators.tones import ToneTracker, tone_pattern
from mmlm_stream.pipeline.aggregate import SourceAggregator
from mmlm_stream.records.channels import AudioChunk, Tone
from mmlm_stream.records.modality import Modality
from mmlm_stream.records.results import AudioEncoder
from mmlm_stream.records.schema import EventRecord, WindowRecord

pytestmark = [pytest.mark.models]


@dataclass(frozen=True)
class Described:
    windows: list[WindowRecord]
    events: list[EventRecord]

    def sound_keys(self) -> set[str]:
        return {e.key for e in self.events if e.type == "sound"}

    def sound_events(self, key: str) -> list[EventRecord]:
        return [e for e in self.events if e.type == "sound" and e.key == key and e.ongoing]


def audio_chunks(path: Path) -> list[AudioChunk]:
    return [item for item in decode(str(path)) if isinstance(item, AudioChunk)]


def describe_audio(
    chunks: list[AudioChunk], encoder: AudioEncoder, *, live: bool = False
) -> tuple[Described, list[tuple[float, EventRecord]]]:
    """Windows and events of the audio channel alone, through the real aggregator; for live,
    also when (media time of the last chunk fed) each event came out."""
    source = chunks[0].source if chunks else "empty"
    aggregator = SourceAggregator(source, Config(), frozenset({Modality.AUDIO}), live=live)
    windows: list[WindowRecord] = []
    events: list[EventRecord] = []
    timed: list[tuple[float, EventRecord]] = []
    for chunk, encoding in zip(chunks, encoder.encode(chunks), strict=True):
        aggregator.add(Modality.AUDIO, [encoding])
        aggregator.advance(Modality.AUDIO, chunk.end)
        polled = aggregator.poll()
        found = polled.events + [e for out in polled.windows for e in out.events]
        timed += [(chunk.end, e) for e in found]
        events += found
        windows += [out.window for out in polled.windows]
    outputs, closing = aggregator.finish()
    windows += [out.window for out in outputs]
    events += [e for out in outputs for e in out.events] + closing
    return Described(windows, events), timed


@pytest.fixture(scope="module")
def yamnet(default_models: ModelsConfig) -> AudioEncoder:
    encoder = load_encoder(Modality.AUDIO, default_models)
    assert isinstance(encoder, AudioEncoder)
    return encoder


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, real_sounds.SoundClip]:
    if not real_sounds.ensure_available():
        pytest.skip(f"real sound effects are not installed: {real_sounds.install_hint()}")
    folder = tmp_path_factory.mktemp("sounds")
    return {clip.name: clip for clip in real_sounds.build_clips(folder)}


@pytest.fixture(scope="module")
def described(clips, yamnet) -> dict[str, Described]:
    return {name: describe_audio(audio_chunks(c.path), yamnet)[0] for name, c in clips.items()}


def _overlaps(event: EventRecord, start: float, end: float) -> bool:
    return event.start < end and event.end > start


def test_a_real_phone_ring_is_a_ring_and_never_an_alarm(described, clips):
    ring = described["phone_ring"]
    truth = clips["phone_ring"].truths[0]
    assert "alarm" not in ring.sound_keys()
    assert any(_overlaps(e, truth.start, truth.end) for e in ring.sound_events("ring"))
    assert any("phone rings" in w.description for w in ring.windows)


def test_a_music_ringtone_opens_no_alarm(described):
    assert "alarm" not in described["ringtone"].sound_keys()


@pytest.mark.parametrize(
    "name", ["single_beep", "bell", "chime", "dialog_warning", "jingle", "short_beep"]
)
def test_a_single_chime_or_beep_is_no_alarm(described, name):
    said = " ".join(w.description for w in described[name].windows)
    assert "alarm" not in described[name].sound_keys(), described[name].events
    assert "alarm" not in said


def test_a_real_alarm_clock_above_8_khz_is_an_alarm(described, clips):
    truth = clips["alarm_clock"].truths[0]
    alarms = described["alarm_clock"].sound_events("alarm")
    assert alarms and all(_overlaps(e, truth.start, truth.end) for e in alarms)
    assert any("alarm" in w.description for w in described["alarm_clock"].windows)


def test_a_high_beeper_beeping_for_seconds_is_an_alarm_heard_in_its_tone(described, clips):
    truth = clips["high_beeper"].truths[0]
    (alarm,) = described["high_beeper"].sound_events("alarm")
    assert _overlaps(alarm, truth.start, truth.end)
    assert alarm.evidence["audio"]["labels"][0]["label"].startswith("Tone 9.5 kHz")


@pytest.mark.parametrize("name", ["high_beep", "short_beep"])
def test_one_beep_is_a_beep_and_nothing_else(described, name):
    assert described[name].sound_keys() == {"beep"}


def test_a_one_second_crash_at_minus_7_dbfs_is_loud(described, clips):
    truth = clips["crash_burst"].truths[0]
    loud = described["crash_burst"].sound_events("loud")
    assert loud and all(_overlaps(e, truth.start, truth.end) for e in loud)


@pytest.mark.parametrize("name", ["pink_noise", "brown_noise", "white_hiss"])
def test_a_stationary_noise_bed_is_neither_an_event_nor_a_described_sound(described, name):
    assert described[name].sound_keys() == set()
    for window in described[name].windows:
        assert window.description in {"Nothing notable is happening.", "It is quiet."}, (
            window.description
        )


def test_real_speech_at_the_loud_end_of_normal_is_neither_loud_nor_an_alarm(described):
    speech = described["speech"]
    assert speech.sound_keys() == set(), speech.events
    assert all("speaking" in w.description for w in speech.windows[:-1])


def test_music_of_chimes_and_bells_opens_no_alarm(described):
    for name in ("login_music", "jingle"):
        assert "alarm" not in described[name].sound_keys()
        assert any("music" in w.description.lower() for w in described[name].windows)


def test_a_live_burst_is_loud_as_soon_as_its_first_window_closes(clips, yamnet):
    truth = clips["crash_burst"].truths[0]
    chunks = audio_chunks(clips["crash_burst"].path)
    _described, timed = describe_audio(chunks, yamnet, live=True)
    first = next((at, e) for at, e in timed if e.type == "sound" and e.key == "loud")
    window_end = 2.0 * (truth.start // 2.0) + 2.0  # the first 4 s window holding the burst
    assert first[0] <= window_end + 1.0, first


# --- the native-rate tone detector, without models -----------------------------------------


def _tones_of(signal: np.ndarray, rate: int = real_sounds.RATE) -> list[Tone]:
    tracker = ToneTracker()
    tones: list[Tone] = []
    samples = signal.astype(np.float32)
    for i in range(0, samples.size, 1024):
        tones += tracker.push(samples[i : i + 1024], rate, 0.0 if i == 0 else None)
    return tones


def test_a_tone_above_8_khz_is_found_at_48_khz_with_its_pitch():
    tones = _tones_of(0.3 * real_sounds.beeper(2.0, 9_500.0))
    assert tones and all(abs(t.hz - 9_500) < 30 for t in tones)
    assert all(t.prominence_db > 40 for t in tones)


def test_noise_has_no_tones():
    noise = 0.3 * real_sounds.coloured_noise(3.0, 0.0, np.random.default_rng(1))
    assert _tones_of(noise) == []


def test_a_beeping_pitch_is_an_alarm_one_burst_a_beep_and_a_steady_whine_neither():
    alarm = tone_pattern(_tones_of(0.3 * real_sounds.beeper(3.0, 9_500.0)))
    beep = tone_pattern(_tones_of(0.3 * real_sounds.beeper(0.12, 9_500.0)))
    t = np.arange(4 * real_sounds.RATE) / real_sounds.RATE
    whine = tone_pattern(_tones_of(0.3 * np.sin(2 * np.pi * 15_700 * t)))
    assert alarm is not None and alarm.kind == "alarm" and alarm.onsets >= 5
    assert beep is not None and beep.kind == "beep"
    assert whine is None


def test_the_decoder_carries_tones_and_full_band_levels_on_its_audio_chunks(clips):
    chunks = audio_chunks(clips["alarm_clock"].path)
    tones = [t for c in chunks for t in c.tones]
    assert tones and all(abs(t.hz - 8_180) < 60 for t in tones)
    assert all(c.short_term_dbfs is not None and len(c.envelope_dbfs) >= 9 for c in chunks[:-1])
