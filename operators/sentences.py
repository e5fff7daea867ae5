"""Window descriptions: one or two plain sentences from a window's fused evidence (SPEC 4).

``gather`` turns a ``FusedWindow`` into ``Facts``: label families grouped into concepts
(``label_groups``), scores thresholded, "Silence" and noise tags dropped, text cleaned. The
``Describer`` then writes at most two sentences in a fixed order:

1. the scene: fusion class, what is in view, the most notable sound
   ("This looks like a delivery: a person is in view and a doorbell rings.");
2. the words: what is said (or the subtitle when nothing is transcribed) and on-screen text
   (``Someone says "..." and on-screen text reads "..."``). Where a subtitle says what the
   recogniser heard, the subtitle's words are quoted (once) instead of the transcript's.

Nothing is dropped to fit, except that only one sound is named. With neither: "It is quiet."
for a very quiet window, otherwise "Nothing notable is happening."

Windows of one source overlap (4 s long, 2 s apart by default), so the same cat and the same
words arrive twice. The describer keeps the previous window of each source and says what goes
on ("The cat is still in view.", "Someone is still speaking.") instead of repeating it word for
word; speech that partly overlaps the previous window is quoted from where it left off.
Describing the same window again (a retry) gives the same text as the first time.

``LmDescriber`` (``kind: lm``) asks a local causal language model to rewrite the template
sentence from the same facts and keeps the template when the answer is unusable.

These sentences are the window record's ``description``; the description track shows a
shorter form of the same facts (``operators/captions``).
"""

from __future__ import annotations

import logging
import math
import re
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from mmlm_stream.config.describer import DescriberConfig
from mmlm_stream.operators.sounds import steady_noise
from mmlm_stream.records.evidence import FusedWindow
from mmlm_stream.records.label_groups import (
    NOISE_TAGS,
    SOUND_BY_KEY,
    SOUNDS,
    Concept,
    Sound,
    group_sounds,
    group_visual,
    ignored_sound,
    parts,
    plain_concept,
    sound_of,
)
from mmlm_stream.records.modality import Modality
from mmlm_stream.records.results import LABEL_PREFIX, AudioEncoding

logger = logging.getLogger(__name__)

NOTHING = "Nothing notable is happening."
QUIET = "It is quiet."
_SPEECH = next(sound for sound in SOUNDS if sound.key == "speech")
# Whisper's favourite inventions on silence and noise; dropped unless VAD heard speech.
_HALLUCINATIONS = frozenset(
    {
        "you",
        "thank you",
        "thank you very much",
        "thanks for watching",
        "thank you for watching",
        "please subscribe",
        "bye",
        "so",
        "subtitles by the amara org community",
    }
)
_SPACES = re.compile(r"\s+")
_QUOTES = str.maketrans({'"': "'", "\u201c": "'", "\u201d": "'", "\u201e": "'", "\u00ab": "'"})
_TRIM_TAIL = " ,;:-\u2013\u2014"
_CONTINUITY_SLACK_S = 1e-3
_MIN_OVERLAP_WORDS = 2
_SAME_WORDS_SHARE = 0.6
_STEM_CHARS = 5


@dataclass(frozen=True, slots=True)
class Facts:
    """What a window's evidence says, grouped, thresholded and cleaned; nothing else."""

    seen: tuple[Concept, ...] = ()
    sound: Sound | None = None
    speech: str = ""
    subtitles: tuple[str, ...] = ()
    screen: tuple[str, ...] = ()
    fusion: Concept | None = None
    quiet: bool = False
    spoken: tuple[str, ...] = ()
    """The subtitle lines that ``speech`` quotes (they say what the recogniser heard)."""

    @property
    def empty(self) -> bool:
        return not (
            self.seen or self.sound or self.speech or self.subtitles or self.screen or self.fusion
        )


def _finite(value: float) -> float:
    return value if math.isfinite(value) else 0.0


def clean_text(text: str) -> str:
    """Printable one-line text without double quotes (they delimit quotes in descriptions)."""
    text = "".join(ch if ch.isprintable() else " " for ch in text.translate(_QUOTES))
    text = _SPACES.sub(" ", text).strip()
    return text if any(ch.isalnum() for ch in text) else ""


def trim_quote(text: str, limit: int) -> str:
    """``text`` cut at a word boundary to at most ``limit`` characters, ending in "..."."""
    if len(text) <= limit:
        return text.rstrip(" .,;:")
    cut = text[: limit - 1]
    if text[limit - 1] != " " and " " in cut.strip():
        cut = cut[: cut.rstrip().rfind(" ")]
    return cut.rstrip(_TRIM_TAIL + ".") + "\u2026"


def _alnum_count(text: str) -> int:
    return sum(ch.isalnum() for ch in text)


def _speech_text(window: FusedWindow, config: DescriberConfig) -> str:
    kept = [
        clean_text(seg.text)
        for seg in window.transcript
        if _finite(seg.confidence) >= config.min_speech_confidence
    ]
    text = " ".join(part for part in kept if part)
    normalised = " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())
    if not window.speech_spans and normalised in _HALLUCINATIONS:
        return ""
    return text


def _subtitle_lines(window: FusedWindow) -> tuple[str, ...]:
    lines: dict[str, str] = {}
    for cue in window.subtitles:
        line = clean_text(cue.text)
        if line:
            lines.setdefault(line.lower(), line)
    return tuple(lines.values())


def _screen_lines(window: FusedWindow, config: DescriberConfig) -> tuple[str, ...]:
    lines: dict[str, str] = {}
    for raw in window.ocr:
        line = clean_text(raw)
        if _alnum_count(line) >= config.min_ocr_chars:
            lines.setdefault(line.lower(), line)
    return tuple(lines.values())


def _seen(window: FusedWindow, config: DescriberConfig) -> tuple[Concept, ...]:
    best: dict[str, tuple[Concept, float]] = {}
    for labels, floor in (
        (window.visual, config.min_visual_score),
        (window.objects, config.min_object_score),
    ):
        for concept, score in group_visual(labels):
            if score >= floor and score > best.get(concept.noun, (concept, -1.0))[1]:
                best[concept.noun] = (concept, score)
    ranked = sorted(best.values(), key=lambda item: (-item[1], item[0].noun))
    return tuple(concept for concept, _ in ranked[: config.max_visual_concepts])


def _other_sound(concept: Concept) -> Sound:
    thing = concept.indefinite()
    return Sound(
        f"other:{concept.noun.lower()}",
        f"a sound like {thing} can be heard",
        f"a sound like {thing} can still be heard",
    )


def _named_sounds(window: FusedWindow, config: DescriberConfig) -> list[tuple[Sound, float]]:
    """The window's named sounds (operators/sounds.py) from each family's calibrated score;
    windows without patch-level evidence: the families of the pooled tags."""
    if window.sounds is None:
        return [(s, v) for s, v in group_sounds(window.audio) if v >= config.min_audio_score]
    named = [
        (SOUND_BY_KEY[h.key], _finite(h.score)) for h in window.sounds if h.key in SOUND_BY_KEY
    ]
    return [(s, v) for s, v in named if v >= max(config.min_audio_score, s.min_score)]


def _sound(window: FusedWindow, config: DescriberConfig, speech: str) -> Sound | None:
    candidates: list[tuple[Sound, float]] = [
        (sound, score)
        for sound, score in _named_sounds(window, config)
        if not (sound is _SPEECH and speech)
    ]
    # "Someone is speaking" is the least telling sound: any other one goes first.
    candidates.sort(key=lambda item: (not item[0].urgent, item[0] is _SPEECH))
    if candidates:
        return candidates[0][0]
    # Stationary noise is also tagged "Rustle" or "Spray": nothing a noise tag outscores, and
    # nothing at all in a window of one steady level.
    if window.sounds is not None and steady_noise(
        a for a in window.contents.of(Modality.AUDIO) if isinstance(a, AudioEncoding)
    ):
        return None
    noise = max(
        (_finite(lb.score) for lb in window.audio if set(parts(lb.label)) & NOISE_TAGS),
        default=0.0,
    )
    others = sorted(
        (
            (label.label, _finite(label.score))
            for label in window.audio
            if not ignored_sound(label.label)
            and sound_of(label.label) is None
            and _finite(label.score) > noise
        ),
        key=lambda item: (-item[1], item[0]),
    )
    for name, score in others:
        concept = plain_concept(name, activity=True, sentence_case=True)
        if score >= config.min_other_audio_score and concept is not None:
            return _other_sound(concept)
    return None


def _fusion(window: FusedWindow, config: DescriberConfig) -> Concept | None:
    ranked = sorted(
        (
            (label.label[len(LABEL_PREFIX) :], _finite(label.score))
            for label in window.extra_labels
            if label.label.startswith(LABEL_PREFIX)
        ),
        key=lambda item: (-item[1], item[0]),
    )
    for name, score in ranked:
        concept = plain_concept(name, activity=True)
        if score >= config.min_fusion_score and concept is not None:
            return concept
    return None


def _quiet(window: FusedWindow, config: DescriberConfig) -> bool:
    rms = window.rms_dbfs
    return rms is not None and not math.isnan(rms) and rms <= config.quiet_dbfs


def _word_set(text: str) -> set[str]:
    """Word stems of ``text`` (their first five letters): "galaxies" and the recogniser's
    "galaxy's", "thousands" and "thousand" are the same word here."""
    keys = (word_key(w).removesuffix("'s") for w in text.split())
    return {key[:_STEM_CHARS] for key in keys if key}


def spoken_subtitles(speech: str, lines: tuple[str, ...]) -> tuple[str, ...]:
    """The subtitle lines that say what the recogniser heard; empty when they do not.

    A line says the same when at least ``_SAME_WORDS_SHARE`` of the words of the shorter of
    the two (line, heard text) are in the other; and together the lines that do must hold that
    share of the heard words. The window's transcript is clipped to the window, so it may
    hold only part of a cue, or the end of one and the start of the next.
    """
    heard = _word_set(speech)
    if not heard:
        return ()
    same = []
    for line in lines:
        shown = _word_set(line)
        if shown and len(shown & heard) >= _SAME_WORDS_SHARE * min(len(shown), len(heard)):
            same.append(line)
    covered = set().union(*(_word_set(line) for line in same)) & heard
    if not same or len(covered) < _SAME_WORDS_SHARE * len(heard):
        return ()
    return tuple(same)


def gather(window: FusedWindow, config: DescriberConfig) -> Facts:
    """The facts a description may mention; pure (no per-source state).

    Where an embedded or sidecar subtitle says what the recogniser heard, the subtitle's words
    are the speech (an author wrote them; Whisper only guessed), quoted once as speech; other
    subtitles are quoted only in windows where nothing is transcribed.
    """
    speech = _speech_text(window, config)
    lines = _subtitle_lines(window)
    spoken = spoken_subtitles(speech, lines) if speech and lines else ()
    return Facts(
        seen=_seen(window, config),
        sound=_sound(window, config, speech),
        speech=" ".join(spoken) if spoken else speech,
        subtitles=() if speech else lines,
        screen=_screen_lines(window, config),
        fusion=_fusion(window, config),
        quiet=_quiet(window, config),
        spoken=spoken,
    )


def already_quoted(facts: Facts, subtitles: frozenset[str]) -> bool:
    """Whether speech quoted from subtitle lines was already quoted as those subtitles."""
    return bool(facts.spoken) and all(line.lower() in subtitles for line in facts.spoken)


@dataclass(frozen=True, slots=True)
class _Said:
    """What the previous window of a source said, for continuity."""

    window_id: str
    start: float
    end: float
    seen: tuple[str, ...]
    sound: str | None
    fusion: str | None
    speech_words: tuple[str, ...]
    subtitles: frozenset[str]
    screen: frozenset[str]
    context: _Said | None  # what this window was itself compared with (for retries)


def word_key(word: str) -> str:
    return re.sub(r"[^\w']", "", word.lower())


def new_speech(text: str, before: tuple[str, ...]) -> tuple[str, bool] | None:
    """The part of ``text`` that the previous window did not already quote.

    None when all of it was quoted; otherwise (text, continues) where ``continues`` says the
    text picks up mid-sentence where the previous window's words stopped.
    """
    words = text.split()
    keys = tuple(word_key(w) for w in words)
    if not before or not keys:
        return text, False
    n = len(keys)
    if any(before[i : i + n] == keys for i in range(len(before) - n + 1)):
        return None
    for k in range(min(n - 1, len(before)), _MIN_OVERLAP_WORDS - 1, -1):
        if before[-k:] == keys[:k]:
            rest = " ".join(words[k:])
            # A capital after what was quoted starts a new sentence: said, not gone on with.
            return (rest, not rest[:1].isupper()) if _alnum_count(rest) else None
    return text, False


def new_lines(lines: tuple[str, ...], before: frozenset[str]) -> tuple[str, ...]:
    """Subtitle or on-screen lines the previous window did not show."""
    return tuple(line for line in lines if line.lower() not in before)


def join_words(items: list[str]) -> str:
    if len(items) <= 2:
        return " and ".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _finish(sentence: str) -> str:
    sentence = sentence[:1].upper() + sentence[1:]
    if sentence.endswith(('?"', '!"')) or sentence[-1:] in ".!?":
        return sentence
    return sentence + "."


@dataclass(frozen=True, slots=True)
class _Clause:
    """A clause as it reads on its own (may take a colon) and inside a longer sentence."""

    alone: str
    inner: str


def _plain(text: str) -> _Clause:
    return _Clause(text, text)


def _quoted(subject: str, text: str) -> _Clause:
    return _Clause(f'{subject}: "{text}"', f'{subject} "{text}"')


def _sight(seen: tuple[Concept, ...], again: bool) -> _Clause:
    verb = "are" if len(seen) > 1 or seen[0].plural else "is"
    if again:
        return _plain(f"{join_words([c.definite() for c in seen])} {verb} still in view")
    return _plain(f"{join_words([c.indefinite() for c in seen])} {verb} in view")


def _sentence(clauses: list[_Clause], lead: str | None = None) -> str:
    if not clauses:
        body = ""
    elif len(clauses) == 1:
        body = clauses[0].alone if lead is None else clauses[0].inner
    else:
        first, second = clauses[0].inner, clauses[1].inner
        body = f"{first}{', and' if ' and ' in first else ' and'} {second}"
    if lead is not None:
        body = f"{lead}: {body}" if body else lead
    return _finish(body) if body else ""


def compose(facts: Facts, before: _Said | None, config: DescriberConfig) -> str:
    """One or two sentences for ``facts``; ``before`` is the previous window of the source."""
    if facts.empty:
        return QUIET if facts.quiet else NOTHING

    scene: list[_Clause] = []
    if facts.seen:
        again = before is not None and before.seen == tuple(c.noun for c in facts.seen)
        scene.append(_sight(facts.seen, again))
    if facts.sound is not None:
        again = before is not None and before.sound == facts.sound.key
        scene.append(_plain(facts.sound.still if again else facts.sound.clause))
    lead = None
    if facts.fusion is not None:
        thing = facts.fusion.indefinite()
        again = before is not None and before.fusion == facts.fusion.noun
        lead = f"this still looks like {thing}" if again else f"this looks like {thing}"

    words: list[_Clause] = []
    if facts.speech:
        new = new_speech(facts.speech, before.speech_words if before else ())
        if before is not None and already_quoted(facts, before.subtitles):
            new = None
        if new is None:
            words.append(_plain("someone is still speaking"))
        else:
            text, continues = new
            quote = trim_quote(text, config.max_quote_chars)
            if continues:
                words.append(_quoted("someone goes on", "\u2026" + quote))
            else:
                words.append(_quoted("someone says", quote))
    elif facts.subtitles:
        new = new_lines(facts.subtitles, before.subtitles if before else frozenset())
        if not new:
            words.append(_plain("the same subtitle is still shown"))
        else:
            quote = trim_quote(" ".join(new), config.max_quote_chars)
            words.append(_quoted("a subtitle reads", quote))
    if facts.screen:
        new = new_lines(facts.screen, before.screen if before else frozenset())
        if not new:
            words.append(_plain("the same text is still on screen"))
        else:
            quote = trim_quote(" ".join(new), config.max_ocr_chars)
            words.append(_quoted("on-screen text reads", quote))

    sentences = [_sentence(scene, lead), _sentence(words)]
    return " ".join(s for s in sentences if s)


class Describer:
    """Template describer with per-source continuity; thread-safe, no model, no Ray."""

    def __init__(self, config: DescriberConfig | None = None) -> None:
        self.config = config or DescriberConfig()
        self._said: OrderedDict[str, _Said] = OrderedDict()
        self._lock = threading.Lock()

    def describe(self, window: FusedWindow) -> str:
        """One or two plain sentences for ``window`` (windows of a source in time order)."""
        return self.describe_facts(window)[0]

    def describe_facts(self, window: FusedWindow) -> tuple[str, Facts]:
        """The description and the facts it was written from (for a language model prompt)."""
        facts = gather(window, self.config)
        with self._lock:
            before = self._context(window)
            text = compose(facts, before, self.config)
            self._remember(window, facts, before)
        return text, facts

    def reset(self, source: str | None = None) -> None:
        """Forget one source's previous window (a restarted stream), or every source's."""
        with self._lock:
            if source is None:
                self._said.clear()
            else:
                self._said.pop(source, None)

    def _context(self, window: FusedWindow) -> _Said | None:
        last = self._said.get(window.source)
        if not self.config.continuity or last is None:
            return None
        if window.window_id == last.window_id:
            return last.context
        if window.start <= last.start or window.start > last.end + _CONTINUITY_SLACK_S:
            return None  # a seek, a loop or a gap: nothing "goes on"
        return last

    def _remember(self, window: FusedWindow, facts: Facts, before: _Said | None) -> None:
        self._said[window.source] = _Said(
            window_id=window.window_id,
            start=window.start,
            end=window.end,
            seen=tuple(c.noun for c in facts.seen),
            sound=facts.sound.key if facts.sound else None,
            fusion=facts.fusion.noun if facts.fusion else None,
            speech_words=tuple(word_key(w) for w in facts.speech.split()),
            subtitles=frozenset(line.lower() for line in facts.subtitles + facts.spoken),
            screen=frozenset(line.lower() for line in facts.screen),
            context=None if before is None else replace(before, context=None),
        )
        self._said.move_to_end(window.source)
        while len(self._said) > self.config.max_sources:
            self._said.popitem(last=False)


# --- optional language model -------------------------------------------------------------------

Generate = Callable[[str], str]
LoadGenerator = Callable[[DescriberConfig], Generate]

_PROMPT = (
    "Describe this moment of a video in one or two short, plain English sentences. Use only "
    "the evidence; do not mention scores or silence.\nEvidence:\n{evidence}\nDraft: {draft}\n"
    "Description:"
)
_STOPWORDS = frozenset(
    "the and are is was were while this that with someone something can heard view still "
    "says reads text there here into from".split()
)
_LM_OUTPUT_CHARS = frozenset(" ,.;:'!?-\u2026()")
_LM_MAX_CHARS = 300
_LM_REJECT = ("silence", "evidence", "draft", "description")


def evidence_lines(facts: Facts, config: DescriberConfig) -> list[str]:
    """The facts as a short bullet list for a language model prompt."""
    lines: list[str] = []
    if facts.fusion is not None:
        lines.append(f"- looks like: {facts.fusion.indefinite()}")
    if facts.seen:
        lines.append(f"- in view: {join_words([c.indefinite() for c in facts.seen])}")
    if facts.sound is not None:
        lines.append(f"- sound: {facts.sound.clause}")
    if facts.speech:
        lines.append(f'- speech: "{trim_quote(facts.speech, config.max_quote_chars)}"')
    if facts.subtitles:
        subtitle = trim_quote(" ".join(facts.subtitles), config.max_quote_chars)
        lines.append(f'- subtitle: "{subtitle}"')
    if facts.screen:
        lines.append(
            f'- on-screen text: "{trim_quote(" ".join(facts.screen), config.max_ocr_chars)}"'
        )
    if facts.quiet:
        lines.append("- the audio is very quiet")
    return lines or ["- nothing recognisable"]


def build_prompt(facts: Facts, draft: str, config: DescriberConfig) -> str:
    return _PROMPT.format(evidence="\n".join(evidence_lines(facts, config)), draft=draft)


def _content_stems(text: str) -> set[str]:
    return {
        word[:4]
        for word in re.findall(r"[a-z]+", text.lower())
        if len(word) >= 3 and word not in _STOPWORDS
    }


def clean_lm_output(raw: str, draft: str) -> str | None:
    """The first one or two sentences of a model's answer, or None when it is not usable.

    Usable means: readable characters, at least three words, not one word over and over, at
    least one content word shared with the draft (so it describes this window), and no echo
    of the prompt.
    """
    lines = [line for line in (clean_text(line) for line in raw.splitlines()) if line]
    if not lines:
        return None
    text = re.sub(r"^(?:description|answer)\s*:\s*", "", lines[0], flags=re.I).strip(" '")
    sentences = [s.strip() for s in re.findall(r"[^.!?\u2026]+(?:[.!?\u2026]+|$)", text)]
    text = " ".join(s for s in sentences[:2] if s)
    words = re.findall(r"[A-Za-z]+", text)
    if len(words) < 3 or len(text) > _LM_MAX_CHARS:
        return None
    readable = sum(ch.isalnum() or ch in _LM_OUTPUT_CHARS for ch in text)
    if readable < 0.9 * len(text) or len({w.lower() for w in words}) < 0.5 * len(words):
        return None
    if any(word in text.lower() for word in _LM_REJECT):
        return None
    if not _content_stems(text) & _content_stems(draft):
        return None
    return _finish(text)


class LmDescriber:
    """Rewrites the template description with a local causal LM; the template is the fallback.

    The model loads on first use from ``lm_path`` only (``local_files_only``), decodes greedily
    and is asked for one or two sentences. Any failure (no path, load error, generation error,
    unusable text) returns the template description; each kind of failure is logged once.
    ``generate`` replaces the model (prompt in, continuation out), for tests and other backends;
    otherwise ``load`` makes it (``mmlm_stream.models.describer_lm``, which operators do not
    import: the pipeline passes it in).
    """

    def __init__(
        self,
        config: DescriberConfig,
        generate: Generate | None = None,
        load: LoadGenerator | None = None,
    ) -> None:
        self.config = config
        self.template = Describer(config)
        self._generate = generate
        self._load = load
        self._load_error: Exception | None = None
        self._warned: set[str] = set()
        self._lock = threading.Lock()

    def describe(self, window: FusedWindow) -> str:
        draft, facts = self.template.describe_facts(window)
        try:
            raw = self.complete(build_prompt(facts, draft, self.config))
        except Exception as exc:
            self._warn_once("error", "describer: language model failed (%s); using templates", exc)
            return draft
        text = clean_lm_output(raw, draft)
        if text is None:
            self._warn_once(
                "unusable", "describer: unusable model output %r; using the template", raw[:80]
            )
            return draft
        return text

    def reset(self, source: str | None = None) -> None:
        self.template.reset(source)

    def complete(self, prompt: str) -> str:
        """The model's continuation of ``prompt`` (loads the model on the first call)."""
        with self._lock:
            if self._generate is None:
                if self._load_error is not None:
                    raise RuntimeError(f"language model not loaded: {self._load_error}")
                if self._load is None:
                    raise RuntimeError("no language model loader was given")
                try:
                    self._generate = self._load(self.config)
                except Exception as exc:
                    self._load_error = exc
                    raise
            return self._generate(prompt)

    def _warn_once(self, kind: str, message: str, *args: Any) -> None:
        if kind not in self._warned:
            self._warned.add(kind)
            logger.warning(message, *args)


def make_describer(
    config: DescriberConfig | None = None, load: LoadGenerator | None = None
) -> Describer | LmDescriber:
    """The describer ``config.kind`` asks for; ``load`` gets its model (``kind: lm``)."""
    config = config or DescriberConfig()
    return LmDescriber(config, load=load) if config.kind == "lm" else Describer(config)
