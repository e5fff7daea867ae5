"""The command line: probe, decode, sample; one-line errors and exit codes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from media import Cue, write_random_bytes, write_srt, write_video

from mmlm_stream.cli.main import main
from mmlm_stream.cli.sample import write_sample
from mmlm_stream.operators.decode import decode
from mmlm_stream.records.channels import SubtitleCue


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("cli")
    path = write_video(folder / "clip.mkv", duration_s=3.0, subtitles=[Cue(0.5, 1.5, "Hi")])
    write_srt(folder / "clip.de.srt", [Cue(1.0, 2.0, "Hallo"), Cue(2.0, 2.5, "Welt")])
    return path


def test_probe_lists_streams_cues_and_sidecars(clip: Path, capsys):
    assert main(["probe", str(clip)]) == 0
    out = capsys.readouterr().out
    assert "* #0 video    h264  320x240 25.0 fps" in out
    assert "* #1 audio    aac  44100 Hz 2 ch" in out
    assert "* #2 subtitle srt  1 cues  [eng]" in out
    assert "clip.de.srt [de]: 2 cues" in out


def test_probe_json_is_machine_readable(clip: Path, capsys):
    assert main(["probe", str(clip), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["container"] == "matroska,webm"
    assert data["channels"] == {"video": 0, "audio": 1, "subtitles": [2], "sidecars": 1}
    assert [s["type"] for s in data["streams"]] == ["video", "audio", "subtitle"]
    assert data["streams"][1]["sample_rate"] == 44100
    assert data["sidecars"][0]["cues"] == 2


def test_decode_summary_counts_every_channel(clip: Path, capsys):
    assert main(["decode", str(clip), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["frames"] == 3
    assert summary["subtitle_cues"] == 3
    assert abs(summary["audio_seconds"] - 3.0) < 1.0


def test_bad_input_is_one_line_with_exit_code_1(tmp_path: Path, capsys):
    path = write_random_bytes(tmp_path / "noise.mp4")
    assert main(["probe", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(path) in err and "Traceback" not in err


def test_bad_config_is_exit_code_2(tmp_path: Path, clip: Path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text("decode:\n  frame_fps: -1\n")
    assert main(["--config", str(config), "probe", str(clip)]) == 2
    err = capsys.readouterr().err
    assert "bad.yaml: decode.frame_fps" in err and err.count("\n") == 1


def test_console_script_prints_no_traceback_unless_debug(tmp_path: Path):
    exe = shutil.which("mmlm-stream", path=str(Path(sys.executable).parent))
    assert exe is not None
    missing = str(tmp_path / "nope.mkv")
    plain = subprocess.run([exe, "decode", missing], capture_output=True, text=True)
    assert plain.returncode == 1
    assert plain.stderr.strip() == f"mmlm-stream: {missing}: no such file"
    debug = subprocess.run([exe, "--debug", "decode", missing], capture_output=True, text=True)
    assert "Traceback" in debug.stderr


@pytest.mark.slow
def test_sample_has_three_channels_matching_its_script(tmp_path: Path, capsys):
    info = write_sample(tmp_path / "sample.mkv")
    assert 29.5 <= info.duration <= 30.5 and len(info.segments) >= 5
    assert main(["probe", str(info.path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    kinds = {s["type"]: s for s in data["streams"]}
    assert set(kinds) == {"video", "audio", "subtitle"}
    assert kinds["subtitle"]["cues"] == len(info.cues)
    assert kinds["subtitle"]["language"] == "eng"
    cues = [i for i in decode(str(info.path)) if isinstance(i, SubtitleCue)]
    assert [c.text for c in cues] == [
        c.text.replace("<i>", "").replace("</i>", "") for c in info.cues
    ]
    for got, want in zip(cues, info.cues, strict=True):
        assert abs(got.start - want.start) < 0.01 and abs(got.end - want.end) < 0.01


def test_a_local_ray_slow_to_start_is_tried_again_and_other_failures_are_not():
    from mmlm_stream.cli.ray_driver import _slow_start

    gcs = RuntimeError(
        "Timed out waiting for file /tmp/ray/session_x/gcs_server_port_8499156ea6efc560d4"
    )
    raylet = Exception("The current node timed out during startup. This could happen ...")
    assert _slow_start(gcs) and _slow_start(raylet)
    assert not _slow_start(RuntimeError("Permission denied: /tmp/ray"))
    assert not _slow_start(ValueError("address must be local"))
