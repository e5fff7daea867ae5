"""Cue text and timing of the description track (``<source>.srt`` / ``.vtt``).

A window's record keeps the full description (one or two sentences, ``operators/sentences``):
search, the API, events and subscribers read it. The track is read by a person while the
video plays, so each cue is shorter and placed where the window's evidence is:

- timing: a window's cue is shown for the window's centre hop (window [s, s+4) with hop 2:
  [s+1, s+3)), the stretch its evidence is centred on, so a cue never runs ahead of the
  picture; consecutive centre hops tile the timeline without overlapping.
- length: at most ``cps`` characters per second of display (subtitle guidance is 15-20), so
  a 2 s cue holds at most 40 characters, spaces and punctuation included.
- content: only what changed since the previous cue (what is in view, the sound, new words,
  new on-screen text), as short clauses ("A cat.", "A doorbell rings.", quoted words).
  When they do not all fit, the most telling go first: an urgent sound, then what is in
  view, the words, the scene's class, other sounds, on-screen text; a quote is cut at a word.
  What did not fit is offered again in the next cue. When nothing changed the previous cue
  stays on screen one hop longer; when something stopped and nothing new came, the track
  shows nothing (the previous cue would no longer be true).

Words come from ``gather`` like the description's: where a subtitle says what the speech
recogniser heard, the subtitle's text is quoted, once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from mmlm_stream.config.describer import DescriberConfig
from mmlm_stream.operators.sentences import (
    Facts,
    already_quoted,
    gather,
    join_words,
    new_lines,
    new_speech,
    trim_quote,
    word_key,
)
from mmlm_stream.records.evidence import FusedWindow

CAPTION_CPS = 20.0
"""Most characters per second of display a cue may hold."""
MIN_QUOTE_CHARS = 8
"""A quote cut shorter than this (letters, not counting quotes) is left for the next cue."""
MIN_CUE_S = 0.5
"""A cue that the end of the media would cut shorter than this is left out."""
_ELLIPSIS = "\u2026"
_CONTINUITY_SLACK_S = 1e-3


def centre_hop(start: float, end: float, hop_s: float) -> tuple[float, float]:
    """The stretch of window [start, end) its cue is shown for: the hop in its middle."""
    margin = max(0.0, (end - start - hop_s) / 2)
    return start + margin, start + margin + min(hop_s, end - start)


@dataclass(frozen=True, slots=True)
class Caption:
    """One window's cue text; ``text`` empty: no new cue (``holds``: the previous one stays)."""

    text: str
    holds: bool = False


@dataclass(slots=True)
class _Shown:
    """What the track shows at the end of the last cue (each part as last said)."""

    seen: frozenset[str] = frozenset()
    sound: str | None = None
    fusion: str | None = None
    speech_words: tuple[str, ...] = ()
    subtitles: frozenset[str] = frozenset()
    screen: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class _Part:
    kind: str
    order: int  # position in the cue
    rank: int  # who gets the room first
    text: str = ""
    quote: str = ""  # cut to fit when set: text is then the prefix before the quote
    words: tuple[str, ...] = ()
    lines: frozenset[str] = field(default_factory=frozenset)


def _sentence(text: str) -> str:
    text = text[:1].upper() + text[1:]
    return text if text[-1:] in ".!?" else text + "."


class Captioner:
    """Cue texts of one source's description track, one window at a time, in order."""

    def __init__(self, config: DescriberConfig | None = None, cps: float = CAPTION_CPS) -> None:
        self.config = config or DescriberConfig()
        self.cps = cps
        self._shown = _Shown()
        self._last: tuple[float, float] | None = None  # the previous window's start and end
        self._on_screen = False  # whether a cue is on screen at the end of the previous hop

    def caption(self, window: FusedWindow, display_s: float) -> Caption:
        """The cue for ``window``, to be shown for ``display_s`` seconds."""
        facts = gather(window, self.config)
        adjacent = (
            self._last is not None
            and self._last[0] < window.start <= self._last[1] + _CONTINUITY_SLACK_S
        )
        shown = self._shown if adjacent else _Shown()
        parts, stopped = self._changes(facts, shown)
        chosen = _fit(parts, math.floor(self.cps * display_s + 1e-9))
        self._shown = self._after(shown, chosen, facts)
        self._last = (window.start, window.end)
        if chosen:
            self._on_screen = True
            return Caption(" ".join(_render(p) for p in sorted(chosen, key=lambda p: p.order)))
        holds = adjacent and self._on_screen and not parts and not stopped and not facts.empty
        self._on_screen = holds
        return Caption("", holds=holds)

    def _changes(self, facts: Facts, shown: _Shown) -> tuple[list[_Part], bool]:
        """The parts that differ from what is shown; whether something shown has stopped."""
        parts: list[_Part] = []
        stopped = False
        seen = frozenset(c.noun for c in facts.seen)
        arrived = [c for c in facts.seen if c.noun not in shown.seen]
        if arrived:
            text = _sentence(join_words([c.indefinite() for c in arrived]))
            parts.append(_Part("seen", 1, 1, text, lines=seen))
            if len(arrived) > 1:  # the first alone, where both do not fit
                first = arrived[0]
                kept = (shown.seen & seen) | {first.noun}
                parts.append(_Part("seen", 1, 1, _sentence(first.indefinite()), lines=kept))
        stopped |= bool(shown.seen - seen)
        sound = facts.sound
        words = bool(facts.speech or facts.subtitles)
        if sound is not None and sound.key != shown.sound and not (sound.key == "speech" and words):
            parts.append(_Part("sound", 2, 0 if sound.urgent else 4, _sentence(sound.clause)))
        stopped |= shown.sound is not None and sound is None
        if facts.fusion is not None and facts.fusion.noun != shown.fusion:
            text = f"Looks like {facts.fusion.indefinite()}."
            parts.append(_Part("fusion", 0, 3, text))
        stopped |= shown.fusion is not None and facts.fusion is None
        if facts.speech:
            new = new_speech(facts.speech, shown.speech_words)
            if new is not None and not already_quoted(facts, shown.subtitles):
                text, continues = new
                keys = tuple(word_key(w) for w in facts.speech.split())
                spoken = frozenset(line.lower() for line in facts.spoken)
                prefix = _ELLIPSIS if continues else ""
                parts.append(_Part("speech", 3, 2, prefix, text, keys, spoken))
        elif facts.subtitles:
            fresh = new_lines(facts.subtitles, shown.subtitles)
            if fresh:
                lines = frozenset(line.lower() for line in facts.subtitles)
                parts.append(_Part("subtitles", 3, 2, "", quote=" ".join(fresh), lines=lines))
        stopped |= bool(shown.speech_words or shown.subtitles) and not words
        if facts.screen:
            fresh = new_lines(facts.screen, shown.screen)
            if fresh:
                lines = frozenset(line.lower() for line in facts.screen)
                parts.append(_Part("screen", 4, 5, "Text: ", quote=" ".join(fresh), lines=lines))
        stopped |= bool(shown.screen) and not facts.screen
        return parts, stopped

    def _after(self, shown: _Shown, chosen: list[_Part], facts: Facts) -> _Shown:
        """What is shown after this cue: the parts said now, nothing for what stopped, and
        the old state for what did not fit (so it is offered again)."""
        said = {p.kind: p for p in chosen}
        seen = frozenset(c.noun for c in facts.seen)
        state = _Shown(
            seen=said["seen"].lines if "seen" in said else shown.seen & seen,
            sound=facts.sound.key if "sound" in said and facts.sound else shown.sound,
            fusion=facts.fusion.noun if "fusion" in said and facts.fusion else shown.fusion,
            speech_words=said["speech"].words if "speech" in said else shown.speech_words,
            subtitles=next(
                (said[k].lines for k in ("subtitles", "speech") if k in said and said[k].lines),
                shown.subtitles,
            ),
            screen=said["screen"].lines if "screen" in said else shown.screen,
        )
        if facts.sound is None:
            state.sound = None
        if facts.fusion is None:
            state.fusion = None
        if not (facts.speech or facts.subtitles):
            state.speech_words, state.subtitles = (), frozenset()
        if not facts.screen:
            state.screen = frozenset()
        return state


def _render(part: _Part) -> str:
    return f'{part.text}"{part.quote}"' if part.quote else part.text


def _fit(parts: list[_Part], budget: int) -> list[_Part]:
    """The parts that fit in ``budget`` characters (joined by spaces), by rank; a quote is
    cut at a word to the room left, or left out below MIN_QUOTE_CHARS."""
    chosen: list[_Part] = []
    used = 0
    for part in sorted(parts, key=lambda p: p.rank):
        if any(c.kind == part.kind for c in chosen):
            continue  # a shorter alternative of a part already in
        room = budget - used - (1 if chosen else 0)
        if part.quote:
            limit = room - len(part.text) - 2
            if limit < MIN_QUOTE_CHARS:
                continue
            quote = trim_quote(part.quote, limit)
            if sum(ch.isalnum() for ch in quote) == 0:
                continue
            part = _Part(part.kind, part.order, part.rank, part.text, quote, part.words, part.lines)
        if len(_render(part)) > room:
            continue
        chosen.append(part)
        used += len(_render(part)) + (1 if len(chosen) > 1 else 0)
    return chosen


def fit_text(text: str, display_s: float, cps: float = CAPTION_CPS) -> str:
    """``text`` cut at a word to what ``display_s`` seconds of display allow (a cue that the
    end of the media shortens), closing a cut quote; empty when too little would be left."""
    limit = math.floor(cps * display_s + 1e-9)
    if len(text) <= limit:
        return text
    if limit < MIN_QUOTE_CHARS:
        return ""
    cut = trim_quote(text, limit)
    if cut.count('"') % 2:
        cut = trim_quote(text, limit - 1)
        cut += '"' if cut.count('"') % 2 else ""
    return cut
