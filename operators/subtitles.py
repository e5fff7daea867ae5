"""Subtitle text: markup stripping, sidecar discovery and sidecar parsing."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pysubs2

from mmlm_stream.channels import SubtitleCue

logger = logging.getLogger(__name__)

SIDECAR_SUFFIXES = (".srt", ".vtt", ".ass", ".ssa")
TEXT_SUBTITLE_CODECS = frozenset(
    {"subrip", "srt", "ass", "ssa", "mov_text", "webvtt", "text", "microdvd", "subviewer"}
)

_ASS_OVERRIDE = re.compile(r"\{[^}]*\}")
_HTML_TAG = re.compile(r"</?[A-Za-z][^>]*>")
_VTT_TIMESTAMP = re.compile(r"<\d{1,2}:\d{2}(?::\d{2})?\.\d{3}>")
_SPACES = re.compile(r"[ \t]+")


def clean_cue_text(raw: str) -> str:
    """Plain text of a cue: ASS override blocks, HTML-ish tags and hard breaks removed."""
    text = raw.replace("\\N", "\n").replace("\\n", "\n").replace("\\h", " ")
    text = _ASS_OVERRIDE.sub("", text)
    text = _VTT_TIMESTAMP.sub("", text)
    text = _HTML_TAG.sub("", text)
    for entity, char in (("&amp;", "&"), ("&lt;", "<"), ("&gt;", ">"), ("&nbsp;", " ")):
        text = text.replace(entity, char)
    lines = (_SPACES.sub(" ", line).strip() for line in text.splitlines())
    return "\n".join(line for line in lines if line)


def find_sidecars(video: Path) -> list[Path]:
    """Subtitle files next to a video: ``clip.srt`` and language-tagged ``clip.en.srt``."""
    folder = video.parent
    if not folder.is_dir():
        return []
    found = []
    for candidate in sorted(folder.iterdir()):
        if candidate.suffix.lower() not in SIDECAR_SUFFIXES or not candidate.is_file():
            continue
        stem = candidate.name[: -len(candidate.suffix)]
        if stem == video.stem or stem.startswith(video.stem + "."):
            found.append(candidate)
    return found


def sidecar_language(video_stem: str, sidecar: Path) -> str | None:
    """The language tag of ``clip.en.srt`` (``en``), or None for ``clip.srt``."""
    stem = sidecar.name[: -len(sidecar.suffix)]
    if stem.startswith(video_stem + "."):
        tag = stem[len(video_stem) + 1 :]
        return tag or None
    return None


def read_sidecar(path: Path, source: str, language: str | None = None) -> list[SubtitleCue]:
    """All cues of a subtitle file, in time order, as plain text."""
    subs = pysubs2.load(str(path), encoding="utf-8")
    cues = []
    for event in subs.events:
        if event.is_comment:
            continue
        text = clean_cue_text(event.text)
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
