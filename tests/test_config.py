from pathlib import Path

import pytest

from mmlm_stream.config import load_config
from mmlm_stream.config.api import ApiConfig
from mmlm_stream.util.errors import ConfigError


def test_defaults_need_no_file():
    config = load_config(None, environ={})
    assert config.decode.frame_fps == 1.0
    assert config.decode.audio_chunk_s == 1.0


def test_environment_overlays_the_file(tmp_path: Path):
    path = tmp_path / "c.yaml"
    path.write_text("decode:\n  frame_fps: 2\n  audio_chunk_s: 0.5\n")
    config = load_config(path, environ={"MMLM_DECODE__FRAME_FPS": "5", "OTHER": "x"})
    assert config.decode.frame_fps == 5
    assert config.decode.audio_chunk_s == 0.5


def test_unknown_keys_are_an_error_naming_the_key(tmp_path: Path):
    path = tmp_path / "c.yaml"
    path.write_text("decode:\n  frame_fsp: 2\n")
    with pytest.raises(ConfigError, match=r"c.yaml: decode.frame_fsp"):
        load_config(path, environ={})
    with pytest.raises(ConfigError, match="nope"):
        load_config(None, environ={"MMLM_NOPE": "1"})


def test_bad_yaml_and_missing_file_are_one_line_errors(tmp_path: Path):
    path = tmp_path / "bad.yaml"
    path.write_text("decode: [unclosed\n")
    with pytest.raises(ConfigError) as bad:
        load_config(path, environ={})
    assert "\n" not in str(bad.value)
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "missing.yaml", environ={})


def test_the_configuration_page_is_generated_from_the_current_models():
    from mmlm_stream.config.reference import markdown

    page = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"
    assert page.read_text(encoding="utf-8") == markdown(), (
        "docs/configuration.md is stale: python -m mmlm_stream.config.reference > "
        "docs/configuration.md"
    )


def test_the_configuration_page_lists_every_key_rule_field_and_built_in_rule():
    from mmlm_stream.config.events import default_rules
    from mmlm_stream.config.reference import markdown, rows
    from mmlm_stream.rules.registry import RULE_TYPES
    from mmlm_stream.rules.watch_query import WatchQuery

    page = markdown()
    assert all(f"| `{key}` |" in page for key, _, _ in rows())
    for model in (*RULE_TYPES.values(), WatchQuery):
        fields = [name for name in model.model_fields if name != "type"]
        assert all(f"| `{name}` |" in page for name in fields), model.__name__
    assert all(f"| `{rule.name}` | `{rule.type}` |" in page for rule in default_rules())
    from mmlm_stream.config.sinks import MqttSinkConfig, WebhookSinkConfig

    for model in (MqttSinkConfig, WebhookSinkConfig):
        assert f"### `kind: {model.model_fields['kind'].annotation.__args__[0]}`" in page
        fields = [name for name in model.model_fields if name != "kind"]
        assert all(f"| `{name}` |" in page for name in fields), model.__name__


@pytest.mark.parametrize("value", ['""', '"   "', '"null"', '"~"'])
def test_an_empty_token_in_the_file_is_an_error_naming_the_key(tmp_path: Path, value: str):
    path = tmp_path / "c.yaml"
    path.write_text(f"api:\n  api_token: {value}\n")
    with pytest.raises(ConfigError, match=r"c.yaml: api.api_token: .*empty") as error:
        load_config(path, environ={})
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("value", ["", "   ", "null", "~", "None"])
@pytest.mark.parametrize("key", ["MMLM_API__API_TOKEN", "MMLM_API__API_TOKEN_FILE"])
def test_an_empty_token_in_the_environment_is_an_error_not_auth_off(
    tmp_path: Path, key: str, value: str
):
    path = tmp_path / "c.yaml"
    path.write_text("api:\n  api_token: from-the-file\n")
    with pytest.raises(ConfigError, match=rf"^environment {key}: empty, blank or null") as error:
        load_config(path, environ={key: value})
    assert "\n" not in str(error.value)


def test_an_explicit_null_token_means_none(tmp_path: Path):
    path = tmp_path / "c.yaml"
    path.write_text("api:\n  api_token: null\n")
    assert load_config(path, environ={}).api.token() is None


@pytest.mark.parametrize("token", ["abc #def", "12345", "a: b", "[x]", "  padded  "])
def test_an_environment_token_is_taken_literally(token: str):
    config = load_config(None, environ={"MMLM_API__API_TOKEN": token})
    assert config.api.token() == token.strip()


def test_a_blank_token_file_is_an_error(tmp_path: Path):
    token_file = tmp_path / "token"
    token_file.write_text(" \n\t\n")
    config = load_config(None, environ={"MMLM_API__API_TOKEN_FILE": str(token_file)})
    with pytest.raises(ConfigError, match="the API token file is empty"):
        config.api.token()


def test_other_empty_environment_values_still_mean_null():
    config = load_config(None, environ={"MMLM_DECODE__AUDIO_STREAM": ""})
    assert config.decode.audio_stream is None


def test_the_example_secrets_placeholder_is_not_a_token(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="placeholder"):
        ApiConfig(api_token="CHANGE-ME")
    token_file = tmp_path / "token"
    token_file.write_text("CHANGE-ME\n")
    with pytest.raises(ConfigError, match="placeholder"):
        ApiConfig(api_token_file=token_file).token()


def test_old_modality_names_in_file_and_environment_still_configure_the_new_sections(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    path = tmp_path / "c.yaml"
    path.write_text("models:\n  frames: {top_k: 3}\n")
    config = load_config(path, environ={"MMLM_MODELS__DETECTOR__THRESHOLD": "0.7"})
    assert config.models.visual.top_k == 3
    assert config.models.objects.threshold == 0.7
    assert "models.frames is now models.visual" in caplog.text
    assert "models.detector is now models.objects" in caplog.text


def test_an_old_and_a_new_name_of_one_section_together_are_an_error(tmp_path: Path):
    path = tmp_path / "c.yaml"
    path.write_text("models:\n  frames: {top_k: 3}\n  visual: {top_k: 4}\n")
    with pytest.raises(ConfigError, match=r"models.frames and models.visual"):
        load_config(path, environ={})


def test_old_deployment_names_and_user_config_keys_of_a_serve_config_are_read_as_new(
    tmp_path: Path,
):
    from mmlm_stream.deploy.serve_config import deployment_options
    from mmlm_stream.deployments.encoder import modality_batch_options
    from mmlm_stream.records.modality import Modality

    path = tmp_path / "serve.yaml"
    path.write_text(
        "applications:\n  - name: mmlm\n    import_path: x:y\n    deployments:\n"
        "      - {name: FrameEncoder, num_replicas: 2}\n"
        "      - name: Encoders\n        user_config: {detector: {max_batch_size: 3}}\n"
    )
    options = deployment_options(path)
    assert options["VisualEncoder"] == {"num_replicas": 2}
    shared = options["Encoders"]["user_config"]
    assert modality_batch_options(shared, Modality.OBJECTS) == {"max_batch_size": 3}
    assert modality_batch_options(shared, Modality.VISUAL) == {}
