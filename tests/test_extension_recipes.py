"""docs/architecture.md's extension recipes, each followed once with a toy in one file.

The toy frame model (tests/extensions/toy_visual.py) joins a model set by one registry line
and its labels reach the windows of a real analysis; the toy rule type
(tests/extensions/toy_rule.py) is accepted in the config and its events come out of that
analysis; the toy transport (tests/extensions/toy_publisher.py) receives every window and
event of it.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from extensions.toy_publisher import ListPublisher
from extensions.toy_rule import LevelRule
from in_process import describe_source
from media import write_video

from mmlm_stream.bus.redis_bus import republish
from mmlm_stream.config import Config, load_config
from mmlm_stream.config.models import ModelsConfig
from mmlm_stream.models import registry
from mmlm_stream.models.registry import MODEL_SETS, load_encoder
from mmlm_stream.operators.source import resolve_source
from mmlm_stream.pipeline.encoding import LocalEncoders
from mmlm_stream.pipeline.outputs import read_windows
from mmlm_stream.records.modality import Modality
from mmlm_stream.rules import registry as rules
from mmlm_stream.util.errors import ConfigError

pytestmark = [pytest.mark.models, pytest.mark.slow]


@pytest.fixture(scope="module")
def toy_set(model_cache: Path):
    """The one registry line: the tiny set with the toy frame model (and the default set's
    text model: the tiny CLIP text tower follows a tiny CLIP frame tower)."""
    MODEL_SETS["toy"] = {
        **MODEL_SETS["tiny"],
        Modality.VISUAL: "extensions.toy_visual:SPEC",
        Modality.TEXT: MODEL_SETS["default"][Modality.TEXT],
    }
    yield ModelsConfig(set="toy", device="cpu", cache_dir=model_cache)
    del MODEL_SETS["toy"]
    registry._cache.clear()


@pytest.fixture(scope="module")
def level_rule():
    """The one registry line of a rule type."""
    rules.register(LevelRule)
    yield
    del rules.RULE_TYPES["level"]


@pytest.fixture(scope="module")
def described(toy_set: ModelsConfig, level_rule, tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("recipes")
    clip = write_video(folder / "clip.mp4", duration_s=6.0)
    config = Config.model_validate(
        {
            "models": toy_set.model_dump(),
            "events": {
                "include_defaults": True,
                "rules": [{"type": "level", "name": "any_audio", "above_dbfs": -90.0}],
            },
        }
    )
    summary = describe_source(
        resolve_source(str(clip)), folder / "out", config, LocalEncoders(config.models)
    )
    return summary, folder / "out"


def test_a_model_in_one_file_fills_its_role_through_the_registry(toy_set: ModelsConfig):
    encoder = load_encoder(Modality.VISUAL, toy_set)
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


def test_the_config_hands_the_publisher_deployment_to_a_transport_in_one_file(described):
    from mmlm_stream.bus.outbox import Outgoing
    from mmlm_stream.deployments.publisher import Publisher

    _, out = described
    config = load_config(
        None,
        environ={
            "MMLM_TRANSPORT__PUBLISHER": "extensions.toy_publisher:ListPublisher",
            "MMLM_TRANSPORT__OPTIONS": "{name: lab}",
        },
    )
    replica = Publisher.func_or_class("redis://unused", config.redis, config.transport)
    transport = replica.bus
    assert isinstance(transport, ListPublisher) and transport.name == "lab"
    windows = read_windows(out / "clip.mp4.windows.jsonl")
    items = [Outgoing("window", w.source, record=w) for w in windows]
    items.append(Outgoing("state", "clip.mp4", state={"state": "up"}))
    assert asyncio.run(replica.deliver(items)) == len(items)
    assert [w.window_id for w in transport.windows] == [w.window_id for w in windows]
    assert transport.states == [("clip.mp4", {"state": "up"})]


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        ("extensions.no_such_module:X", "cannot be imported"),
        ("extensions.toy_publisher:Nope", "has no class Nope"),
        ("redis-ish", "is not redis or"),
    ],
)
def test_a_transport_that_cannot_be_loaded_is_a_config_error_before_anything_starts(
    target: str, reason: str
):
    with pytest.raises(ConfigError, match=reason):
        load_config(None, environ={"MMLM_TRANSPORT__PUBLISHER": target})


def test_a_class_that_is_not_a_publisher_is_refused_by_name():
    from mmlm_stream.bus.transport import open_publisher
    from mmlm_stream.config.bus import RedisConfig
    from mmlm_stream.config.transport import TransportConfig

    transport = TransportConfig(publisher="extensions.toy_rule:LevelRule")
    with pytest.raises(ConfigError, match=r"is not a bus\.transport\.Publisher"):
        open_publisher(transport, None, RedisConfig())


def test_a_rule_type_in_one_file_is_read_from_the_config_and_gives_its_events(described):
    _, out = described
    events = [json.loads(line) for line in (out / "clip.mp4.events.jsonl").read_text().splitlines()]
    mine = [e for e in events if e["type"] == "sound" and e["key"] == "level"]
    assert len(mine) == 1  # one condition, held through the clip, closed at its end
    assert mine[0]["start"] == 0.0 and mine[0]["end"] >= 4.0 and not mine[0]["ongoing"]
    assert mine[0]["description"].startswith("The level is")


def test_an_unregistered_rule_type_is_a_config_error_naming_the_known_ones(tmp_path: Path):
    path = tmp_path / "c.yaml"
    path.write_text("events:\n  rules:\n    - {type: tock, name: x}\n")
    with pytest.raises(ConfigError, match=r"events.rules.0: .*unknown rule type 'tock'.*label"):
        load_config(path, environ={})
