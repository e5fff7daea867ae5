"""Subtitle text: markup stripping, sidecar discovery and sidecar parsing."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from pathlib import Path

import pysubs2

from mmlm_stream.records.channels import SubtitleCue

logger = logging.getLogger(__name__)

SIDECAR_SUFFIXES = (".srt", ".vtt", ".ass", ".ssa")
TEXT_SUBTITLE_CODECS = frozenset(
    {"subrip", "srt", "ass", "ssa", "mov_text", "webvtt", "text", "microdvd", "subviewer"}
)

# Patterns of bounded length only: each match is tried at one place and cannot backtrack
# over the rest of the text. Blocks with an unbounded body (``{...}``, ``<tag ...>``) are
# removed by ``_strip_blocks``, a single forward scan: the regexes ``\{[^}]*\}`` and
# ``</?[A-Za-z][^>]*>`` rescan the rest of the text from every opener without a closer,
# which took minutes of GIL for a 1 MB cue of ``{`` or ``<a``.
_HTML_TAG_START = re.compile(r"</?[A-Za-z]")
_ASS_OVERRIDE_START = re.compile(r"\{")
_VTT_TIMESTAMP = re.compile(r"<\d{1,2}:\d{2}(?::\d{2})?\.\d{3}>")
_SPACES = re.compile(r"[ \t]+")
TRUNCATED = "\u2026"


def _strip_blocks(text: str, start: re.Pattern[str], close: str) -> str:
    """``text`` without each block from a ``start`` match to the next ``close``; an opener
    with no closer after it (nor any later opener) is kept as text. Linear in ``text``."""
    kept: list[str] = []
    position = 0
    while (opener := start.search(text, position)) is not None:
        end = text.find(close, opener.end())
        if end < 0:
            break
        kept.append(text[position : opener.start()])
        position = end + 1
    kept.append(text[position:])
    return "".join(kept)


def clean_cue_text(raw: str) -> str:
    """Plain text of a cue: ASS override blocks, HTML-ish tags and hard breaks removed."""
    text = raw.replace("\\N", "\n").replace("\\n", "\n").replace("\\h", " ")
    text = _strip_blocks(text, _ASS_OVERRIDE_START, "}")
    text = _VTT_TIMESTAMP.sub("", text)
    text = _strip_blocks(text, _HTML_TAG_START, ">")
    for entity, char in (("&amp;", "&"), ("&lt;", "<"), ("&gt;", ">"), ("&nbsp;", " ")):
        text = text.replace(entity, char)
    lines = (_SPACES.sub(" ", line).strip() for line in text.splitlines())
    return "\n".join(line for line in lines if line)


class CueCleaner:
    """``clean_cue_text`` with a length cap; counts the cues it cut, so one warning can say
    how many were (a 1 MB cue would otherwise reach every window record it overlaps)."""

    def __init__(self, max_chars: int) -> None:
        self.max_chars = max_chars
        self.truncated = 0

    def __call__(self, raw: str) -> str:
        text = clean_cue_text(raw)
        if len(text) <= self.max_chars:
            return text
        self.truncated += 1
        return text[: self.max_chars - 1].rstrip() + TRUNCATED


DESCRIPTION_TRACK_MARK = "mmlm-stream description track"
"""Text of the header line of each WebVTT description track we write (``WEBVTT - ...``)."""
# Files written beside each description track ``<source>.srt``/``.vtt`` (same prefix, same
# folder, same run): ``mmlm_stream.pipeline.outputs.paths``; ``.partial`` while the run is going.
OUTPUT_SIBLINGS = (".windows.jsonl", ".windows.jsonl.partial", ".summary.json")


def is_description_track(path: Path) -> bool:
    """Whether a subtitle file is one of our own description tracks, which must never be read
    back as an input's subtitles (they would feed old descriptions into subtitles, keyword
    rules, search and the next descriptions).

    Two signs, either one enough: the run's records beside it (``<name>.windows.jsonl`` or
    ``<name>.summary.json`` for ``<name>.srt``), which covers SRT (a format without
    comments, so it cannot carry a mark of its own) and the track the current run is
    replacing; or, for WebVTT, the mark in its header line, which survives the file being
    copied away from its records.
    """
    prefix = path.name[: -len(path.suffix)]
    if any((path.parent / f"{prefix}{sibling}").exists() for sibling in OUTPUT_SIBLINGS):
        return True
    if path.suffix.lower() != ".vtt":
        return False
    try:
        with path.open("rb") as handle:
            header = handle.readline(256)
    except OSError:
        return False
    return DESCRIPTION_TRACK_MARK.encode() in header


def find_sidecars(video: Path) -> list[Path]:
    """Subtitle files next to a video: ``clip.srt`` and language-tagged ``clip.en.srt``;
    never our own description tracks (``is_description_track``)."""
    folder = video.parent
    if not folder.is_dir():
        return []
    found = []
    for candidate in sorted(folder.iterdir()):
        if candidate.suffix.lower() not in SIDECAR_SUFFIXES or not candidate.is_file():
            continue
        stem = candidate.name[: -len(candidate.suffix)]
        if (stem == video.stem or stem.startswith(video.stem + ".")) and not (
            is_description_track(candidate)
        ):
            found.append(candidate)
    return found


def sidecar_language(video_stem: str, sidecar: Path) -> str | None:
    """The language tag of ``clip.en.srt`` (``en``), or None for ``clip.srt``."""
    stem = sidecar.name[: -len(sidecar.suffix)]
    if stem.startswith(video_stem + "."):
        tag = stem[len(video_stem) + 1 :]
        return tag or None
    return None


class SidecarTooLarge(ValueError):
    """A subtitle file over ``decode.max_sidecar_bytes``; it is skipped, not read."""


# pysubs2's parser by file suffix (content sniffing would run every format's regexes).
_SIDECAR_FORMATS = {".srt": "srt", ".vtt": "vtt", ".ass": "ass", ".ssa": "ssa"}
_BLANK_LINES = re.compile(r"\n{3,}")


def read_sidecar(
    path: Path,
    source: str,
    language: str | None = None,
    *,
    clean: Callable[[str], str] = clean_cue_text,
    max_bytes: int | None = None,
) -> list[SubtitleCue]:
    """All cues of a subtitle file, in time order, as plain text.

    A file over ``max_bytes`` raises ``SidecarTooLarge`` before it is read: pysubs2 holds
    the whole file and every cue in memory. pysubs2's SRT/VTT parser strips HTML with the
    same quadratic regex as ``_HTML_TAG`` once did and trims a cue's trailing number with one
    quadratic in a run of newlines, so it keeps tags (``clean`` strips them, linearly) and
    gets runs of blank lines (which never matter in these formats) cut to one.
    """
    if max_bytes is not None and (size := path.stat().st_size) > max_bytes:
        raise SidecarTooLarge(
            f"{size / 2**20:.1f} MB, over decode.max_sidecar_bytes ({max_bytes / 2**20:.1f} MB)"
        )
    text = _BLANK_LINES.sub("\n\n", path.read_text(encoding="utf-8"))
    fmt = _SIDECAR_FORMATS.get(path.suffix.lower())
    subs = pysubs2.SSAFile.from_string(text, format_=fmt, keep_html_tags=True)
    cues = []
    for event in subs.events:
        if event.is_comment:
            continue
        text = clean(event.text)
        if not text:
            continue
        cues.append(
            SubtitleCue(
                source=source,
                start=event.start / 1000.0,
                end=event.end / 1000.0,
                text=text,
                language=language,
                track=f"file:{path.name}",
            )
        )
    cues.sort(key=lambda cue: (cue.start, cue.end))
    return cues
