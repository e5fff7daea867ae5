from pathlib import Path

import pytest

from mmlm_stream.config import load_config
from mmlm_stream.errors import ConfigError


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


def test_readme_documents_every_config_key():
    from mmlm_stream.config_reference import rows

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    missing = [key for key, _, _ in rows() if f"`{key}`" not in readme]
    assert not missing, f"README lacks: {missing} (python -m mmlm_stream.config_reference)"
