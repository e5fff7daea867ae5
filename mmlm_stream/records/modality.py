"""The one word for each kind of evidence, used by every layer.

The values are the record keys of the public window schema (``visual``, ``objects``, ...), so
a model set's slot, an encoder deployment, a window's evidence, a rule's ``modality`` and a
record field all say the same thing. ``frames``/``detector`` were this vocabulary's old
words for ``visual``/``objects``; config and Serve options still accept them (``LEGACY``).
"""

from __future__ import annotations

from enum import StrEnum


class Modality(StrEnum):
    VISUAL = "visual"
    """What a frame shows as a whole (frame-model labels and embeddings)."""
    OBJECTS = "objects"
    """Things found in a frame with a box (the detector)."""
    AUDIO = "audio"
    SPEECH = "speech"
    TEXT = "text"
    """Text embeddings of transcripts, subtitles, OCR and watch queries."""
    OCR = "ocr"
    SUBTITLES = "subtitles"
    """Cues of the source's own text tracks (no encoder: decoded, not inferred)."""


ENCODED = (
    Modality.VISUAL,
    Modality.AUDIO,
    Modality.SPEECH,
    Modality.TEXT,
    Modality.OCR,
    Modality.OBJECTS,
)
"""The modalities a model fills (a model set's slots; one encoder deployment each)."""

LEGACY = {"frames": Modality.VISUAL, "detector": Modality.OBJECTS}
"""Old names still accepted in config files, environment variables and Serve options."""
