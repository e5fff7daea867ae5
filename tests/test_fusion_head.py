"""The trainable fusion head: features, labels file, training, persistence, prediction."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from mmlm_stream.config.fusion import FusionConfig
from mmlm_stream.models import fusion_head as fh
from mmlm_stream.records.evidence import FusedWindow, WindowContents
from mmlm_stream.util.errors import ConfigError

DIMS = {"frames": 64, "audio": 32, "text": 16}
CLASSES = ("delivery", "empty", "forklift", "meeting")


def _window(
    start: float,
    end: float,
    *,
    frames: np.ndarray | None = None,
    audio: np.ndarray | None = None,
    text: np.ndarray | None = None,
) -> FusedWindow:
    contents = WindowContents("clip.mp4", start, end, items={}, present=frozenset())
    half = None if frames is None else len(frames) // 2
    return FusedWindow(
        contents,
        frame_mean=None if frames is None else frames[:half],
        frame_max=None if frames is None else frames[half:],
        audio_mean=audio,
        text_mean=text,
    )


def _centres(seed: int = 1) -> dict[str, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return {c: {m: rng.normal(size=d) for m, d in DIMS.items()} for c in CLASSES}


def _sample(
    rng: np.random.Generator, centre: dict[str, np.ndarray], *, noise: float = 0.6
) -> dict[str, np.ndarray]:
    """A noisy draw around a class centre; audio missing 10%, text (no speech) 30% of the time."""
    features = {
        m: (v + rng.normal(scale=noise, size=v.shape)).astype(np.float32) for m, v in centre.items()
    }
    if rng.random() < 0.1:
        del features["audio"]
    if rng.random() < 0.3:
        del features["text"]
    return features


def _dataset(n_per_class: int, seed: int = 0) -> list[tuple[dict[str, np.ndarray], str]]:
    rng = np.random.default_rng(seed)
    centres = _centres()
    return [(_sample(rng, centres[c]), c) for c in CLASSES for _ in range(n_per_class)]


@pytest.fixture(scope="module")
def trained() -> tuple[fh.TrainResult, float]:
    started = time.process_time()
    result = fh.train_head(_dataset(60), seed=0)
    return result, time.process_time() - started


def test_separable_synthetic_set_reaches_high_held_out_accuracy_in_little_cpu_time(
    trained: tuple[fh.TrainResult, float],
) -> None:
    result, cpu_s = trained
    assert cpu_s < 30, f"training took {cpu_s:.1f}s of CPU"
    assert result.classes == CLASSES
    assert result.n_val == 4 * 12 and result.n_train == 4 * 48  # stratified 20%
    assert result.val_accuracy is not None and result.val_accuracy >= 0.9
    assert result.train_accuracy >= 0.9
    assert 1 <= result.best_epoch <= result.epochs == len(result.history)
    assert isinstance(result.head, fh.FusionHead) and isinstance(result.head, torch.nn.Module)
    assert not result.head.training


def test_windows_with_only_frames_still_classify(trained: tuple[fh.TrainResult, float]) -> None:
    result, _ = trained
    rng = np.random.default_rng(7)
    centres = _centres()
    rows, truth = [], []
    for c in CLASSES:
        for _ in range(10):
            rows.append({"frames": _sample(rng, centres[c])["frames"]})
            truth.append(c)
    loaded = fh.LoadedHead(Path("memory"), result.head, {})
    predicted = [result.classes[i] for i in loaded.scores(rows).argmax(1)]
    assert np.mean([p == t for p, t in zip(predicted, truth, strict=True)]) >= 0.9


def test_saved_head_loads_back_with_identical_outputs_and_metadata(
    trained: tuple[fh.TrainResult, float], tmp_path: Path
) -> None:
    result, _ = trained
    path = fh.save_head(result, tmp_path / "sub" / "head.safetensors")
    assert [p.name for p in path.parent.iterdir()] == ["head.safetensors"]
    loaded = fh.load_head(path)

    rows = [features for features, _ in _dataset(5, seed=3)]
    expected = fh.LoadedHead(Path("trained"), result.head, {}).scores(rows)
    assert np.array_equal(loaded.scores(rows), expected)
    assert loaded.classes == CLASSES
    assert loaded.modalities == (("frames", 64), ("audio", 32), ("text", 16))
    assert loaded.metadata["format"] == fh.FORMAT
    assert loaded.metadata["hidden"] == 128 and loaded.metadata["width"] == 64
    training = loaded.metadata["training"]
    assert training["val_accuracy"] == result.val_accuracy and training["n_train"] == 192
    assert training["class_counts"] == dict.fromkeys(CLASSES, 60)

    again = fh.save_head(loaded, tmp_path / "copy.safetensors")
    assert fh.load_head(again).scores(rows).tolist() == loaded.scores(rows).tolist()


def test_predict_on_a_window_gives_sorted_fusion_labels(
    trained: tuple[fh.TrainResult, float], tmp_path: Path
) -> None:
    result, _ = trained
    loaded = fh.load_head(fh.save_head(result, tmp_path / "head.safetensors"))
    centre = _centres()["forklift"]
    window = _window(0.0, 4.0, frames=centre["frames"], audio=centre["audio"])

    labels = loaded.predict(window)
    assert labels[0].label == "fusion:forklift"
    assert sorted(lab.label for lab in labels) == [f"fusion:{c}" for c in CLASSES]
    assert [lab.score for lab in labels] == sorted((lab.score for lab in labels), reverse=True)
    assert all(0.0 <= lab.score <= 1.0 for lab in labels)
    assert sum(lab.score for lab in labels) == pytest.approx(1.0, abs=1e-5)
    assert loaded.predict(window, top_k=1) == labels[:1]
    assert loaded.predict(window, min_score=labels[0].score) == labels[:1]
    assert loaded.predict_features(fh.window_features(window)) == labels


def test_window_features_concatenates_frame_pools_and_leaves_out_absent_modalities() -> None:
    window = _window(0.0, 4.0, frames=np.arange(8, dtype=np.float32), text=np.ones(3, np.float32))
    features = fh.window_features(window)
    assert set(features) == {"frames", "text"}
    assert features["frames"].tolist() == list(range(8))
    only_mean = FusedWindow(window.contents, frame_mean=np.ones(4, np.float32))
    assert fh.window_features(only_mean)["frames"].tolist() == [1.0] * 8
    assert fh.window_features(FusedWindow(window.contents)) == {}


def test_vectors_of_another_length_at_prediction_are_a_clear_error(
    trained: tuple[fh.TrainResult, float], tmp_path: Path
) -> None:
    loaded = fh.load_head(fh.save_head(trained[0], tmp_path / "head.safetensors"))
    with pytest.raises(
        ConfigError, match=r"head\.safetensors: expects 'audio' vectors of length 32, got 7"
    ):
        loaded.predict_features({"audio": np.ones(7, np.float32)})


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"not a safetensors file at all", "not a readable fusion head file"),
        (b"", "not a readable fusion head file"),
    ],
)
def test_corrupt_head_file_is_a_one_line_error_naming_the_path(
    tmp_path: Path, content: bytes, reason: str
) -> None:
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as info:
        fh.load_head(path)
    message = str(info.value)
    assert message.startswith(f"{path}: {reason}") and "\n" not in message


def test_truncated_foreign_or_missing_head_files_are_one_line_errors(
    trained: tuple[fh.TrainResult, float], tmp_path: Path
) -> None:
    from safetensors.torch import save_file

    good = fh.save_head(trained[0], tmp_path / "head.safetensors").read_bytes()
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good[: len(good) // 2])
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign), metadata={"format": "pt"})
    tampered = tmp_path / "tampered.safetensors"
    save_file({"w": torch.zeros(2)}, str(tampered), metadata={"format": fh.FORMAT})
    for path, reason in (
        (truncated, "not a readable fusion head file"),
        (foreign, "unsupported fusion head format 'pt'"),
        (tampered, "inconsistent fusion head file"),
        (tmp_path / "missing.safetensors", "no such fusion head file"),
    ):
        with pytest.raises(ConfigError) as info:
            fh.load_head(path)
        assert str(info.value).startswith(f"{path}: {reason}"), str(info.value)
        assert "\n" not in str(info.value)


def test_one_class_or_no_examples_is_a_clear_error() -> None:
    one_class = [({"frames": np.ones(4, np.float32)}, "delivery")] * 5
    with pytest.raises(fh.FusionTrainingError, match=r"at least two classes.*'delivery'"):
        fh.train_head(one_class)
    with pytest.raises(fh.FusionTrainingError, match="no labelled examples"):
        fh.train_head([])


def test_vectors_of_changing_length_in_training_are_a_clear_error() -> None:
    examples = [({"audio": np.ones(4, np.float32)}, "a"), ({"audio": np.ones(5, np.float32)}, "b")]
    with pytest.raises(fh.FusionTrainingError, match="'audio' has vectors of length 4 and 5"):
        fh.train_head(examples)


def test_training_is_deterministic_for_a_seed_and_leaves_the_global_rng_alone() -> None:
    data = _dataset(8)
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    first = fh.train_head(data, seed=5, max_epochs=15)
    assert torch.rand(1) == before
    second = fh.train_head(data, seed=5, max_epochs=15)
    assert first.history == second.history
    for (k, a), (_, b) in zip(
        first.head.state_dict().items(), second.head.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), k
    other = fh.train_head(data, seed=6, max_epochs=15)
    assert other.history != first.history


def test_tiny_sets_train_and_single_example_classes_stay_in_training() -> None:
    rng = np.random.default_rng(0)
    centres = _centres()
    data = [(_sample(rng, centres["delivery"]), "delivery") for _ in range(5)]
    data.append((_sample(rng, centres["empty"]), "empty"))
    result = fh.train_head(data, max_epochs=20)
    assert result.n_val == 1 and result.n_train == 5  # delivery holds out 1, empty none
    assert result.class_counts == {"delivery": 5, "empty": 1}

    pair = [(_sample(rng, centres[c]), c) for c in ("delivery", "empty")]
    result = fh.train_head(pair, max_epochs=20)
    assert result.n_val == 0 and result.val_accuracy is None
    assert result.epochs >= 1 and result.history[0].val_loss is None


def test_on_epoch_reports_every_epoch() -> None:
    seen: list[fh.EpochStats] = []
    result = fh.train_head(_dataset(5), max_epochs=4, patience=100, on_epoch=seen.append)
    assert [s.epoch for s in seen] == [1, 2, 3, 4] and seen == result.history


# ---------------------------------------------------------------- labels file


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_read_labels_resolves_videos_next_to_the_file_and_reads_clock_times(tmp_path: Path) -> None:
    labels = _write(
        tmp_path / "labels.jsonl",
        [
            json.dumps(
                {"video": "clips/dock.mp4", "start": 12.0, "end": 20.5, "label": "delivery"}
            ),
            "",
            json.dumps(
                {
                    "video": "/data/yard.mkv",
                    "start": "1:05",
                    "end": "1:02:03.5",
                    "label": " forklift ",
                }
            ),
        ],
    )
    first, second = fh.read_labels(labels)
    assert first.video == tmp_path / "clips" / "dock.mp4"
    assert (first.start, first.end, first.label) == (12.0, 20.5, "delivery")
    assert second.video == Path("/data/yard.mkv")
    assert (second.start, second.end, second.label) == (65.0, 3723.5, "forklift")


@pytest.mark.parametrize(
    ("bad_line", "reason"),
    [
        ('{"video": "a.mp4", "start": 1', "not valid JSON"),
        ("[1, 2]", "expected a JSON object, got list"),
        (
            '{"video": "a.mp4", "start": 5, "end": 2, "label": "x"}',
            "end (2) must be after start (5)",
        ),
        ('{"video": "a.mp4", "start": 0, "end": 2}', "label: Field required"),
        ('{"video": "a.mp4", "start": 0, "end": 2, "label": "x", "colour": 1}', "colour: Extra"),
        ('{"video": "a.mp4", "start": "1:xx", "end": 2, "label": "x"}', "start: time '1:xx'"),
        (
            '{"video": "a.mp4", "start": -1, "end": 2, "label": "x"}',
            "start: Input should be greater",
        ),
    ],
)
def test_a_bad_labels_line_is_an_error_naming_file_and_line(
    tmp_path: Path, bad_line: str, reason: str
) -> None:
    good = json.dumps({"video": "a.mp4", "start": 0, "end": 4, "label": "x"})
    labels = _write(tmp_path / "labels.jsonl", [good, "", bad_line])
    with pytest.raises(ConfigError) as info:
        fh.read_labels(labels)
    assert str(info.value).startswith(f"{labels}:3: {reason}"), str(info.value)
    assert "\n" not in str(info.value)


def test_missing_or_empty_labels_files_are_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such labels file"):
        fh.read_labels(tmp_path / "nope.jsonl")
    with pytest.raises(ConfigError, match="no labelled ranges"):
        fh.read_labels(_write(tmp_path / "empty.jsonl", ["", "  "]))


def _range(start: float, end: float, label: str) -> fh.LabelledRange:
    return fh.LabelledRange(video=Path("clip.mp4"), start=start, end=end, label=label)


def _windows(starts: list[float], length: float = 4.0) -> Iterator[FusedWindow]:
    for s in starts:
        yield _window(s, s + length, audio=np.full(4, s + 1, np.float32))


def test_examples_from_windows_take_the_label_covering_at_least_half() -> None:
    ranges = [_range(0, 5, "a"), _range(5, 12, "b"), _range(20, 22, "a"), _range(21, 23, "a")]
    got = fh.examples_from_windows(_windows([0, 2, 4, 8, 10, 14, 18, 20]), ranges)
    # window start -> label: 0-4 a, 2-6 a (3 s), 4-8 b (3 s), 8-12 b, 10-14 b (exactly half),
    # 14-18 nothing, 18-22 a (2 s of overlapping ranges counted once), 20-24 a (3 s)
    assert [(f["audio"][0] - 1, label) for f, label in got] == [
        (0, "a"),
        (2, "a"),
        (4, "b"),
        (8, "b"),
        (10, "b"),
        (18, "a"),
        (20, "a"),
    ]


def test_examples_from_windows_skip_ties_and_optionally_add_background() -> None:
    ranges = [_range(0, 2, "a"), _range(2, 4, "b"), _range(9, 10, "a")]
    windows = [*_windows([0, 4, 8, 16]), _window(20, 24)]  # the last has no vectors
    assert fh.examples_from_windows(windows, ranges) == []
    got = fh.examples_from_windows(
        [*_windows([0, 4, 8, 16]), _window(20, 24)], ranges, background="idle"
    )
    # 0-4 tie: skipped; 4-8 untouched: idle; 8-12 a covers 1/4: ambiguous, skipped; 16-20 idle
    assert [(f["audio"][0] - 1, label) for f, label in got] == [(4, "idle"), (16, "idle")]


def test_train_fusion_reads_labels_trains_and_saves(tmp_path: Path) -> None:
    for name in ("one.mp4", "two.mp4"):
        (tmp_path / name).write_bytes(b"")
    lines = []
    for name in ("one.mp4", "two.mp4"):
        for i, label in enumerate(CLASSES * 3):
            lines.append(
                json.dumps({"video": name, "start": i * 8, "end": i * 8 + 8, "label": label})
            )
    labels = _write(tmp_path / "labels.jsonl", lines)
    rng = np.random.default_rng(0)
    centres = _centres()
    asked: list[Path] = []

    def windows_for(video: Path) -> Iterator[FusedWindow]:
        asked.append(video)
        for i in range(len(CLASSES) * 3 * 2):
            f = _sample(rng, centres[CLASSES[(i // 2) % len(CLASSES)]])
            yield _window(
                i * 4, i * 4 + 4, frames=f["frames"], audio=f.get("audio"), text=f.get("text")
            )

    out = tmp_path / "heads" / "head.safetensors"
    result = fh.train_fusion(labels, out, windows_for, max_epochs=60)
    assert asked == [tmp_path / "one.mp4", tmp_path / "two.mp4"]
    assert sum(result.class_counts.values()) == 48 and result.classes == CLASSES
    assert fh.load_head(out).classes == CLASSES


def test_train_fusion_names_a_missing_video_or_a_single_class_before_any_work(
    tmp_path: Path,
) -> None:
    lines = [
        json.dumps({"video": "gone.mp4", "start": 0, "end": 4, "label": "x"}),
        json.dumps({"video": "gone.mp4", "start": 4, "end": 8, "label": "y"}),
    ]
    labels = _write(tmp_path / "labels.jsonl", lines)

    def windows_for(video: Path) -> Iterator[FusedWindow]:
        raise AssertionError("must not be called")

    with pytest.raises(ConfigError, match=r"labels\.jsonl: video not found: .*gone\.mp4"):
        fh.train_fusion(labels, tmp_path / "h.safetensors", windows_for)
    (tmp_path / "gone.mp4").write_bytes(b"")
    one_class = _write(tmp_path / "one.jsonl", lines[:1])
    with pytest.raises(fh.FusionTrainingError, match=r"one\.jsonl: .*only have 'x'"):
        fh.train_fusion(one_class, tmp_path / "h.safetensors", windows_for)


def test_fusion_config_has_defaults_and_forbids_unknown_keys() -> None:
    config = FusionConfig()
    assert (config.head, config.min_score, config.top_k) == (None, 0.5, 3)
    assert FusionConfig(head="h.safetensors").head == Path("h.safetensors")
    with pytest.raises(ValidationError):
        FusionConfig(threshold=0.3)
    with pytest.raises(ValidationError):
        FusionConfig(min_score=1.5)


def test_importing_the_module_does_not_import_torch() -> None:
    code = "import sys, mmlm_stream.models.fusion_head; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
