"""docs/architecture.md's extension recipes, each followed once with a toy in one file.

The toy frame model (tests/extensions/toy_frames.py) joins a model set by one registry line
and its labels reach the windows of a real analysis; the toy transport
(tests/extensions/toy_publisher.py) receives every window and event of that analysis.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from extensions.toy_publisher import ListPublisher
from in_process import describe_source
from media import write_video

from mmlm_stream.bus.redis_bus import republish
from mmlm_stream.config import Config, ModelsConfig
from mmlm_stream.models import registry
from mmlm_stream.models.registry import MODEL_SETS, load_encoder
from mmlm_stream.operators.source import resolve_source
from mmlm_stream.pipeline.encoding import LocalEncoders
from mmlm_stream.pipeline.outputs import read_windows
from mmlm_stream.records.results import Role

pytestmark = [pytest.mark.models, pytest.mark.slow]


@pytest.fixture(scope="module")
def toy_set(model_cache: Path):
    """The one registry line: the tiny set with the toy frame model (and the default set's
    text model: the tiny CLIP text tower follows a tiny CLIP frame tower)."""
    MODEL_SETS["toy"] = {
        **MODEL_SETS["tiny"],
        Role.FRAMES: "extensions.toy_frames:SPEC",
        Role.TEXT: MODEL_SETS["default"][Role.TEXT],
    }
    yield ModelsConfig(set="toy", device="cpu", cache_dir=model_cache)
    del MODEL_SETS["toy"]
    registry._cache.clear()


@pytest.fixture(scope="module")
def described(toy_set: ModelsConfig, tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("recipes")
    clip = write_video(folder / "clip.mp4", duration_s=6.0)
    config = Config(models=toy_set)
    summary = describe_source(
        resolve_source(str(clip)), folder / "out", config, LocalEncoders(config.models)
    )
    return summary, folder / "out"


def test_a_model_in_one_file_fills_its_role_through_the_registry(toy_set: ModelsConfig):
    encoder = load_encoder(Role.FRAMES, toy_set)
    assert encoder is not None and encoder.model_id == "toy/brightness"


def test_the_toy_models_labels_reach_the_windows(described):
    summary, out = described
    windows = read_windows(out / "clip.mp4.windows.jsonl")
    assert windows and summary.windows == len(windows)
    assert all(w.models["visual"] == "toy/brightness" for w in windows)
    labels = {label.label for w in windows for label in w.visual}
    assert labels and labels <= {"bright", "dark"}


def test_a_transport_in_one_file_receives_every_record(described):
    summary, out = described
    transport = ListPublisher()
    result = republish(out, "clip.mp4", transport)
    assert len(transport.windows) == summary.windows == result.windows
    assert [w.window_id for w in transport.windows] == [
        w.window_id for w in read_windows(out / "clip.mp4.windows.jsonl")
    ]
    assert len(transport.events) == result.events
