"""The trainable fusion head: classifies a window into the user's own classes.

The encoders only know their pretrained vocabularies (ImageNet, AudioSet). A user who labels a
few time ranges of their own videos ("delivery", "forklift", "break") gets a small classifier
over the pooled per-modality vectors of each window, trained with ``mmlm-stream train-fusion``
and applied to every window through ``fusion.head`` in the config.

What goes in (``window_features``): one vector per modality, taken from the ``FusedWindow``:

- ``frames``: ``frame_mean ‖ frame_max`` (``frame_mean`` twice when there is no max),
- ``audio``: ``audio_mean``,
- ``text``: ``text_mean`` (speech transcript and subtitles).

A modality a window lacks (no speech, no audio stream) is left out; the head sees zeros plus a
presence flag for it, so such windows still classify. ``FusedWindow.fused`` is not used: the head
normalises and projects each modality itself and needs to know which one is missing.

Labels file (``LABELS.jsonl``), one JSON object per line, blank lines ignored::

    {"video": "clips/dock.mp4", "start": 12.0, "end": 20.5, "label": "delivery"}
    {"video": "clips/dock.mp4", "start": "1:05", "end": "1:31.5", "label": "forklift"}

``video`` is relative to the labels file (or absolute); ``start``/``end`` are media seconds or
``[H:]MM:SS[.fff]``; ``label`` is any non-empty name. A window takes the label that covers at
least half of it; windows covered less, or split evenly between two labels, are skipped. With
``background="name"`` a window that no range touches at all becomes an example of that class
(only sensible when every occurrence of every class in those videos is labelled).

The saved head is one ``.safetensors`` file: the weights, plus the metadata ``format``
(``mmlm.fusion-head/1``), ``classes``, ``modalities`` (name and length of each input vector),
``hidden``, ``width``, ``dropout`` and a ``training`` summary, each a JSON string.

Errors: a malformed labels or head file is a ``ConfigError`` (exit code 2); data that cannot
train a head (one class, no covered windows, vectors of changing length) is a
``FusionTrainingError``. Torch is imported only when a head is built, trained or loaded, so the
configuration (``FusionConfig``) stays importable without it.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import logging
import math
import os
import re
import tempfile
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeGuard

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from mmlm_stream.records.evidence import FusedWindow
from mmlm_stream.records.results import LABEL_PREFIX, Label
from mmlm_stream.util.errors import ConfigError, MmlmError

if TYPE_CHECKING:
    import torch
    from torch import nn

logger = logging.getLogger(__name__)

FORMAT = "mmlm.fusion-head/1"
_MODALITY_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,31}$")

Features = dict[str, np.ndarray]


class FusionTrainingError(MmlmError):
    """The labelled data cannot train a head; the message says why and what to do."""


# ---------------------------------------------------------------- features


def window_features(window: FusedWindow) -> Features:
    """The per-modality vectors of a window (see the module docstring); absent ones left out."""
    features: Features = {}
    if _usable(window.frame_mean):
        mean = _flat(window.frame_mean)
        frame_max = _flat(window.frame_max) if _usable(window.frame_max) else mean
        features["frames"] = np.concatenate([mean, frame_max])
    if _usable(window.audio_mean):
        features["audio"] = _flat(window.audio_mean)
    if _usable(window.text_mean):
        features["text"] = _flat(window.text_mean)
    return features


def _usable(vector: np.ndarray | None) -> TypeGuard[np.ndarray]:
    return vector is not None and vector.size > 0


def _flat(vector: np.ndarray) -> np.ndarray:
    return np.nan_to_num(np.asarray(vector, dtype=np.float32).reshape(-1))


# ---------------------------------------------------------------- labels


def _parse_time(value: Any) -> Any:
    """Accept ``[H:]MM:SS[.fff]`` strings besides plain seconds, as people write times down."""
    if not isinstance(value, str) or ":" not in value:
        return value
    parts = value.strip().split(":")
    if len(parts) > 3:
        raise ValueError(f"time {value!r} is not [H:]MM:SS[.fff]")
    try:
        numbers = [float(p) for p in parts]
    except ValueError:
        raise ValueError(f"time {value!r} is not [H:]MM:SS[.fff]") from None
    seconds = 0.0
    for number in numbers:
        seconds = seconds * 60 + number
    return seconds


class LabelledRange(BaseModel):
    """One line of a labels file: a time range of a video and the class it shows."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    video: Path = Field(description="Video file; relative paths are relative to the labels file.")
    start: float = Field(ge=0, description="Start of the range in media seconds.")
    end: float = Field(description="End of the range in media seconds.")
    label: Annotated[
        str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)
    ] = Field(description="Class name the range shows; becomes the window label fusion:<label>.")

    @field_validator("start", "end", mode="before")
    @classmethod
    def _clock_times(cls, value: Any) -> Any:
        return _parse_time(value)

    @field_validator("label")
    @classmethod
    def _one_line(cls, label: str) -> str:
        if "\n" in label or "\r" in label:
            raise ValueError("must be one line")
        return label

    @model_validator(mode="after")
    def _ordered(self) -> LabelledRange:
        if not self.end > self.start:
            raise ValueError(f"end ({self.end:g}) must be after start ({self.start:g})")
        return self


def read_labels(path: str | Path) -> list[LabelledRange]:
    """Parse a labels file; a bad line is a ``ConfigError`` naming ``file:line``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such labels file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read labels file ({exc})") from None
    ranges: list[LabelledRange] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{where}: not valid JSON ({exc.msg}, column {exc.colno})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: expected a JSON object, got {type(data).__name__}")
        try:
            item = LabelledRange.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            loc = ".".join(str(p) for p in first["loc"])
            msg = first["msg"].removeprefix("Value error, ")
            raise ConfigError(f"{where}: {loc + ': ' if loc else ''}{msg}") from None
        if not item.video.is_absolute():
            item = item.model_copy(update={"video": path.parent / item.video})
        ranges.append(item)
    if not ranges:
        raise ConfigError(f"{path}: no labelled ranges in the file")
    return ranges


def _covered(intervals: list[tuple[float, float]], start: float, end: float) -> float:
    """Length of [start, end] covered by the union of the intervals (overlaps counted once)."""
    clipped = sorted((max(a, start), min(b, end)) for a, b in intervals if b > start and a < end)
    total, reach = 0.0, start
    for a, b in clipped:
        if b > reach:
            total += b - max(a, reach)
            reach = b
    return total


def examples_from_windows(
    windows: Iterable[FusedWindow],
    ranges: Sequence[LabelledRange],
    *,
    background: str | None = None,
) -> list[tuple[Features, str]]:
    """Pair each window of ONE video with the label covering at least half of it.

    ``ranges`` are that video's labelled ranges. Windows covered less than half, split evenly
    between two labels, or without any feature vector are skipped; with ``background`` set, a
    window no range touches becomes an example of that class.
    """
    by_label: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for r in ranges:
        by_label[r.label].append((r.start, r.end))
    examples: list[tuple[Features, str]] = []
    skipped = 0
    for window in windows:
        length = window.end - window.start
        features = window_features(window)
        if length <= 0 or not features:
            skipped += 1
            continue
        cover = sorted(
            (
                (_covered(spans, window.start, window.end), label)
                for label, spans in by_label.items()
            ),
            key=lambda c: -c[0],
        )
        best = cover[0][0] if cover else 0.0
        tied = len(cover) > 1 and math.isclose(cover[1][0], best, abs_tol=1e-6)
        if best >= 0.5 * length - 1e-9 and not tied:
            examples.append((features, cover[0][1]))
        elif background is not None and best <= 1e-9:
            examples.append((features, background))
        else:
            skipped += 1
    logger.debug("%d labelled windows, %d skipped", len(examples), skipped)
    return examples


# ---------------------------------------------------------------- the model


@functools.cache
def _head_class() -> type[nn.Module]:
    """Build the ``FusionHead`` class on first use, so importing this module needs no torch."""
    import torch
    from torch import nn
    from torch.nn import functional

    class FusionHead(nn.Module):
        """Per-modality L2 norm and projection, presence flags, then an MLP to class logits.

        Self-describing: ``modalities``, ``classes``, ``hidden``, ``width`` and ``dropout`` are
        attributes, so a bare head can be saved and rebuilt.
        """

        def __init__(
            self,
            modalities: Sequence[tuple[str, int]],
            classes: Sequence[str],
            *,
            hidden: int = 128,
            width: int = 64,
            dropout: float = 0.2,
        ) -> None:
            super().__init__()
            if not modalities:
                raise ValueError("a fusion head needs at least one modality")
            for name, dim in modalities:
                if not _MODALITY_NAME.match(name) or dim < 1:
                    raise ValueError(f"bad modality {name!r} of length {dim}")
            self.modalities = tuple((str(n), int(d)) for n, d in modalities)
            self.classes = tuple(classes)
            self.hidden, self.width, self.dropout = int(hidden), int(width), float(dropout)
            self.project = nn.ModuleDict({n: nn.Linear(d, self.width) for n, d in self.modalities})
            fused = len(self.modalities) * (self.width + 1)
            self.mlp = nn.Sequential(
                nn.Linear(fused, self.hidden),
                nn.GELU(),
                nn.Dropout(self.dropout),
                nn.Linear(self.hidden, len(self.classes)),
            )

        def forward(
            self, inputs: Mapping[str, torch.Tensor], present: torch.Tensor
        ) -> torch.Tensor:
            """``inputs[name]``: (N, dim) per modality; ``present``: (N, M) 0/1 flags."""
            parts = []
            for i, (name, _) in enumerate(self.modalities):
                x = functional.normalize(inputs[name], dim=-1)
                parts.append(self.project[name](x) * present[:, i : i + 1])
            parts.append(present)
            return self.mlp(torch.cat(parts, dim=-1))

    FusionHead.__qualname__ = "FusionHead"
    FusionHead.__module__ = __name__
    return FusionHead


def __getattr__(name: str) -> Any:
    if name == "FusionHead":
        return _head_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def build_head(
    modalities: Sequence[tuple[str, int]],
    classes: Sequence[str],
    *,
    hidden: int = 128,
    width: int = 64,
    dropout: float = 0.2,
) -> nn.Module:
    """A freshly initialised ``FusionHead``."""
    return _head_class()(modalities, classes, hidden=hidden, width=width, dropout=dropout)


def _tensors(
    rows: Sequence[Mapping[str, np.ndarray]],
    modalities: Sequence[tuple[str, int]],
    origin: str,
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Stack feature dicts into per-modality (N, dim) tensors and (N, M) presence flags."""
    import torch

    present = np.zeros((len(rows), len(modalities)), np.float32)
    inputs: dict[str, torch.Tensor] = {}
    for m, (name, dim) in enumerate(modalities):
        block = np.zeros((len(rows), dim), np.float32)
        for i, row in enumerate(rows):
            vector = row.get(name)
            if vector is None or vector.size == 0:
                continue
            if vector.size != dim:
                raise ConfigError(
                    f"{origin}: expects '{name}' vectors of length {dim}, got {vector.size} "
                    "(trained with a different model set?)"
                )
            block[i] = np.nan_to_num(np.asarray(vector, np.float32).reshape(-1))
            present[i, m] = 1.0
        inputs[name] = torch.from_numpy(block)
    return inputs, torch.from_numpy(present)


# ---------------------------------------------------------------- training


@dataclass(frozen=True)
class EpochStats:
    """Losses and accuracies after one epoch (eval mode); val_* are None without a held-out set."""

    epoch: int
    train_loss: float
    train_accuracy: float
    val_loss: float | None
    val_accuracy: float | None


@dataclass
class TrainResult:
    """A trained head (best weights, eval mode) and how training went."""

    head: nn.Module
    classes: tuple[str, ...]
    train_accuracy: float
    val_accuracy: float | None  # None when the data were too few to hold any out
    epochs: int
    history: list[EpochStats]
    best_epoch: int = 0
    n_train: int = 0
    n_val: int = 0
    class_counts: dict[str, int] = field(default_factory=dict)


def _modality_dims(
    examples: Sequence[tuple[Mapping[str, np.ndarray], str]],
) -> list[tuple[str, int]]:
    dims: dict[str, int] = {}
    for features, _ in examples:
        for name, vector in features.items():
            if vector is None or vector.size == 0:
                continue
            if not _MODALITY_NAME.match(name):
                raise FusionTrainingError(f"modality name {name!r} is not a plain identifier")
            if dims.setdefault(name, vector.size) != vector.size:
                raise FusionTrainingError(
                    f"modality '{name}' has vectors of length {dims[name]} and {vector.size}; "
                    "were the windows encoded by different models?"
                )
    if not dims:
        raise FusionTrainingError("no example has any feature vector")
    order = {"frames": 0, "audio": 1, "text": 2}
    return sorted(dims.items(), key=lambda item: (order.get(item[0], 3), item[0]))


def _split(labels: np.ndarray, n_classes: int, val_fraction: float, seed: int) -> np.ndarray:
    """Boolean validation mask, stratified: each class holds out its share, keeps >= 1."""
    rng = np.random.default_rng(seed)
    val = np.zeros(len(labels), bool)
    for c in range(n_classes):
        idx = np.flatnonzero(labels == c)
        n_val = min(int(len(idx) * val_fraction + 0.5), len(idx) - 1)
        if n_val > 0:
            val[rng.permutation(idx)[:n_val]] = True
    return val


@contextlib.contextmanager
def _torch_threads(count: int | None) -> Iterator[None]:
    import torch

    before = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def train_head(
    examples: Sequence[tuple[Mapping[str, np.ndarray], str]],
    *,
    val_fraction: float = 0.2,
    seed: int = 0,
    max_epochs: int = 200,
    patience: int = 10,
    lr: float = 1e-3,
    batch_size: int = 32,
    hidden: int = 128,
    width: int = 64,
    dropout: float = 0.2,
    weight_decay: float = 1e-4,
    modality_dropout: float = 0.1,
    balance_classes: bool = True,
    num_threads: int | None = 1,
    on_epoch: Callable[[EpochStats], None] | None = None,
) -> TrainResult:
    """Train a head with Adam and cross-entropy, early-stopped on held-out loss.

    The split is stratified by class and fixed by ``seed``; a class with a single example trains
    only. When nothing can be held out, training loss drives early stopping and
    ``val_accuracy`` is None. ``modality_dropout`` hides a present modality at random (never all
    of them) so the head copes with windows lacking one; ``balance_classes`` weights the loss by
    inverse class frequency. Same data and seed give the same head. The caller's torch RNG state
    is left untouched. ``num_threads`` caps torch's intra-op threads while training (None = as
    set): the matrices are so small that extra threads only spin, several times the CPU of one.
    """
    import torch
    from torch import nn

    if not 0 <= val_fraction < 1:
        raise ValueError("val_fraction must be in [0, 1)")
    if not examples:
        raise FusionTrainingError("no labelled examples to train on")
    classes = tuple(sorted({label for _, label in examples}))
    if len(classes) < 2:
        raise FusionTrainingError(
            f"training needs at least two classes, the labels only have '{classes[0]}'; "
            "label another class or pass a background class"
        )
    modalities = _modality_dims(examples)
    index = {c: i for i, c in enumerate(classes)}
    y_all = np.array([index[label] for _, label in examples], np.int64)
    counts = np.bincount(y_all, minlength=len(classes))
    inputs, present = _tensors([f for f, _ in examples], modalities, "training data")
    targets = torch.from_numpy(y_all)
    val_mask = torch.from_numpy(_split(y_all, len(classes), val_fraction, seed))
    train_idx = torch.nonzero(~val_mask).flatten()
    val_idx = torch.nonzero(val_mask).flatten()

    def subset(idx: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
        return {n: t[idx] for n, t in inputs.items()}, present[idx], targets[idx]

    train_x, train_p, train_y = subset(train_idx)
    val_x, val_p, val_y = subset(val_idx)
    weights = None
    if balance_classes:
        weights = torch.tensor(
            len(y_all) / (len(classes) * np.maximum(counts, 1)), dtype=torch.float32
        )
    criterion = nn.CrossEntropyLoss(weight=weights)

    with _torch_threads(num_threads), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        head = build_head(modalities, classes, hidden=hidden, width=width, dropout=dropout)
        optimizer = torch.optim.Adam(head.parameters(), lr=lr, weight_decay=weight_decay)

        def evaluate(
            x: dict[str, torch.Tensor], p: torch.Tensor, y: torch.Tensor
        ) -> tuple[float, float]:
            head.eval()
            with torch.inference_mode():
                logits = head(x, p)
                loss = criterion(logits, y).item()
                accuracy = (logits.argmax(-1) == y).float().mean().item()
            return loss, accuracy

        history: list[EpochStats] = []
        best_loss, best_epoch, best_state = math.inf, 0, copy.deepcopy(head.state_dict())
        for epoch in range(1, max_epochs + 1):
            head.train()
            order = torch.randperm(len(train_y), generator=generator)
            for start in range(0, len(order), batch_size):
                batch = order[start : start + batch_size]
                p = train_p[batch]
                if modality_dropout > 0 and p.shape[1] > 1:
                    drop = torch.rand(p.shape, generator=generator) < modality_dropout
                    kept = p * ~drop
                    p = torch.where(kept.sum(1, keepdim=True) > 0, kept, p)
                loss = criterion(head({n: t[batch] for n, t in train_x.items()}, p), train_y[batch])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            train_loss, train_acc = evaluate(train_x, train_p, train_y)
            val_loss, val_acc = evaluate(val_x, val_p, val_y) if len(val_y) else (None, None)
            stats = EpochStats(epoch, train_loss, train_acc, val_loss, val_acc)
            history.append(stats)
            if on_epoch is not None:
                on_epoch(stats)
            monitored = train_loss if val_loss is None else val_loss
            if monitored < best_loss - 1e-4:
                best_loss, best_epoch = monitored, epoch
                best_state = copy.deepcopy(head.state_dict())
            elif epoch - best_epoch >= patience:
                break

        head.load_state_dict(best_state)
        train_acc = evaluate(train_x, train_p, train_y)[1]
        val_acc = evaluate(val_x, val_p, val_y)[1] if len(val_y) else None
    logger.info(
        "fusion head: %d epochs (best %d), train accuracy %.3f, held-out accuracy %s",
        len(history),
        best_epoch,
        train_acc,
        "n/a" if val_acc is None else f"{val_acc:.3f}",
    )
    return TrainResult(
        head=head,
        classes=classes,
        train_accuracy=train_acc,
        val_accuracy=val_acc,
        epochs=len(history),
        history=history,
        best_epoch=best_epoch,
        n_train=len(train_y),
        n_val=len(val_y),
        class_counts={c: int(n) for c, n in zip(classes, counts, strict=True)},
    )


# ---------------------------------------------------------------- persistence


def save_head(result_or_head: TrainResult | LoadedHead | nn.Module, path: str | Path) -> Path:
    """Write weights and metadata to one ``.safetensors`` file (atomically)."""
    from safetensors.torch import save_file

    result = result_or_head if isinstance(result_or_head, TrainResult) else None
    if isinstance(result_or_head, TrainResult | LoadedHead):
        head = result_or_head.head
    else:
        head = result_or_head
    metadata = {
        "format": FORMAT,
        "classes": json.dumps(list(head.classes)),
        "modalities": json.dumps([{"name": n, "dim": d} for n, d in head.modalities]),
        "hidden": json.dumps(head.hidden),
        "width": json.dumps(head.width),
        "dropout": json.dumps(head.dropout),
    }
    if result is not None:
        metadata["training"] = json.dumps(
            {
                "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "train_accuracy": result.train_accuracy,
                "val_accuracy": result.val_accuracy,
                "epochs": result.epochs,
                "best_epoch": result.best_epoch,
                "n_train": result.n_train,
                "n_val": result.n_val,
                "class_counts": result.class_counts,
            }
        )
    tensors = {k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=metadata)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


@dataclass
class LoadedHead:
    """A head read back from disk, ready to classify windows."""

    path: Path
    head: nn.Module
    metadata: dict[str, Any]

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.head.classes)

    @property
    def modalities(self) -> tuple[tuple[str, int], ...]:
        return tuple(self.head.modalities)

    def scores(self, rows: Sequence[Mapping[str, np.ndarray]]) -> np.ndarray:
        """Class probabilities of shape (len(rows), len(classes)), rows summing to 1."""
        import torch

        if not rows:
            return np.zeros((0, len(self.classes)), np.float32)
        inputs, present = _tensors(rows, self.modalities, f"fusion head {self.path}")
        with torch.inference_mode():
            return torch.softmax(self.head(inputs, present), dim=-1).numpy()

    def predict_features(
        self,
        features: Mapping[str, np.ndarray],
        *,
        top_k: int | None = None,
        min_score: float = 0.0,
    ) -> list[Label]:
        """``fusion:<class>`` labels, best first, optionally cut to ``top_k`` and ``min_score``."""
        probs = self.scores([features])[0]
        labels = [
            Label(LABEL_PREFIX + c, float(s))
            for c, s in zip(self.classes, probs, strict=True)
            if s >= min_score
        ]
        labels.sort(key=lambda lab: (-lab.score, lab.label))
        return labels if top_k is None else labels[:top_k]

    def predict(
        self, window: FusedWindow, *, top_k: int | None = None, min_score: float = 0.0
    ) -> list[Label]:
        return self.predict_features(window_features(window), top_k=top_k, min_score=min_score)


def load_head(path: str | Path) -> LoadedHead:
    """Read a head written by ``save_head``; any problem is a one-line ``ConfigError``."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such fusion head file")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
            state = {key: f.get_tensor(key) for key in f.keys()}
    except Exception as exc:
        reason = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise ConfigError(f"{path}: not a readable fusion head file ({reason})") from None
    if raw.get("format") != FORMAT:
        found = raw.get("format", "none")
        raise ConfigError(f"{path}: unsupported fusion head format {found!r} (expected {FORMAT})")
    try:
        metadata = {key: json.loads(value) for key, value in raw.items() if key != "format"}
        modalities = [(m["name"], int(m["dim"])) for m in metadata["modalities"]]
        head = build_head(
            modalities,
            [str(c) for c in metadata["classes"]],
            hidden=int(metadata["hidden"]),
            width=int(metadata["width"]),
            dropout=float(metadata["dropout"]),
        )
        head.load_state_dict(state, strict=True)
    except Exception as exc:
        reason = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise ConfigError(f"{path}: inconsistent fusion head file ({reason})") from None
    head.eval()
    metadata["format"] = FORMAT
    return LoadedHead(path=path, head=head, metadata=metadata)


# ---------------------------------------------------------------- end to end


def train_fusion(
    labels_path: str | Path,
    out_path: str | Path,
    windows_for: Callable[[Path], Iterable[FusedWindow]],
    *,
    background: str | None = None,
    **train_kwargs: Any,
) -> TrainResult:
    """Labels file → windows of each video (via ``windows_for``) → examples → head on disk.

    ``windows_for`` runs decode, encoders, windowing and fusion for one video; it is called once
    per distinct video, in the order the labels file first names them, and its windows are
    consumed as they come (only their feature vectors are kept).
    """
    labels_path = Path(labels_path)
    ranges = read_labels(labels_path)
    by_video: dict[Path, list[LabelledRange]] = {}
    for r in ranges:
        by_video.setdefault(r.video, []).append(r)
    classes = {r.label for r in ranges} | ({background} if background else set())
    if len(classes) < 2:
        raise FusionTrainingError(
            f"{labels_path}: training needs at least two classes, the labels only have "
            f"'{classes.pop()}'; label another class or pass a background class"
        )
    missing = [str(v) for v in by_video if not v.is_file()]
    if missing:
        raise ConfigError(f"{labels_path}: video not found: {', '.join(missing[:3])}")
    examples: list[tuple[Features, str]] = []
    for video, video_ranges in by_video.items():
        found = examples_from_windows(windows_for(video), video_ranges, background=background)
        logger.info("%s: %d labelled windows", video, len(found))
        examples.extend(found)
    if not examples:
        raise FusionTrainingError(
            f"{labels_path}: no window is at least half covered by a labelled range "
            "(label longer ranges, or use shorter windows)"
        )
    result = train_head(examples, **train_kwargs)
    save_head(result, out_path)
    return result
