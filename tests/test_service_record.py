"""The service record: which running `serve` a `describe` may reuse, and which it must not."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from redis_fixtures import free_port

from mmlm_stream.cli import ray_driver as driver
from mmlm_stream.config import Config
from mmlm_stream.config.decode import DecodeConfig
from mmlm_stream.config.models import ModelsConfig
from mmlm_stream.config.paths import absolute_paths
from mmlm_stream.config.window import WindowConfig
from mmlm_stream.service import record as service_record
from mmlm_stream.service.record import ServiceRecord

TOKEN = "0123456789abcdef-ray-token"
FINGERPRINT = "f" * 64


def record(pid: int | None = None, started: float | None = None, **fields) -> ServiceRecord:
    pid = os.getpid() if pid is None else pid
    if started is None:
        started = service_record.process_started(pid) or 0.0
    values = {
        "gcs_address": "127.0.0.1:6379",
        "app": "mmlm",
        "fingerprint": FINGERPRINT,
        "url": "http://127.0.0.1:8000",
        "token": TOKEN,
        **fields,
    }
    return ServiceRecord(pid=pid, started=started, **values)


def gone_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_live_record_of_the_same_fingerprint_is_found_and_its_file_is_private(tmp_path):
    path = service_record.write(record(), tmp_path / "run")
    assert (path.stat().st_mode & 0o777, path.parent.stat().st_mode & 0o777) == (0o600, 0o700)
    found = service_record.find(FINGERPRINT, tmp_path / "run")
    assert found.record == record() and found.notes == []
    assert TOKEN not in repr(found.record)


def test_a_record_of_a_process_that_is_gone_is_stale_and_removed(tmp_path):
    path = service_record.write(record(pid=gone_pid(), started=1.0), tmp_path)
    found = service_record.find(FINGERPRINT, tmp_path)
    assert found.record is None
    assert found.notes and "is gone" in found.notes[0]
    assert not path.exists()


def test_a_pid_now_held_by_another_process_is_stale(tmp_path):
    actual = service_record.process_started(os.getpid())
    assert actual is not None
    path = service_record.write(record(started=actual - 3600), tmp_path)
    found = service_record.find(FINGERPRINT, tmp_path)
    assert found.record is None and "is gone" in found.notes[0] and not path.exists()


def test_a_service_with_another_fingerprint_is_passed_over_and_kept(tmp_path):
    path = service_record.write(record(fingerprint="0" * 64), tmp_path)
    found = service_record.find(FINGERPRINT, tmp_path)
    assert found.record is None
    assert "runs another configuration" in found.notes[0] and path.exists()


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o620])
def test_a_record_other_users_can_read_or_write_is_ignored(tmp_path, mode: int):
    path = service_record.write(record(), tmp_path)
    path.chmod(mode)
    found = service_record.find(FINGERPRINT, tmp_path)
    assert found.record is None
    assert found.notes == [f"ignored {path}: open to other users (mode {mode:04o})"]


def test_a_symlink_or_a_file_that_is_not_a_record_is_ignored(tmp_path):
    real = service_record.write(record(), tmp_path / "elsewhere")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "serve-1.json").symlink_to(real)
    junk = tmp_path / "run" / "serve-2.json"
    junk.write_text('{"schema": "mmlm.service-record/1", "pid": "x"}')
    junk.chmod(0o600)
    found = service_record.find(FINGERPRINT, tmp_path / "run")
    assert found.record is None
    assert sorted(note.split(": ", 1)[1] for note in found.notes) == [
        "not a service record",
        "unreadable (Too many levels of symbolic links)",
    ]


def test_the_newest_fitting_record_wins_over_others(tmp_path):
    service_record.write(record(pid=gone_pid(), started=1.0), tmp_path)
    service_record.write(record(), tmp_path)
    assert service_record.find(FINGERPRINT, tmp_path).record == record()


def test_fingerprint_covers_what_is_bound_at_deploy_time_and_nothing_else(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    base = Config(models=ModelsConfig(cache_dir=Path("models")))
    options = {"Decoder": {"num_replicas": 1}}
    same = service_record.fingerprint(base, "redis://127.0.0.1:1/0", options)
    per_input = base.model_copy(
        update={"window": WindowConfig(window_s=2.0, hop_s=1.0), "decode": DecodeConfig()}
    )
    assert service_record.fingerprint(per_input, "redis://127.0.0.1:1/0", options) == same
    other_models = base.model_copy(update={"models": ModelsConfig(set="tiny")})
    assert service_record.fingerprint(other_models, "redis://127.0.0.1:1/0", options) != same
    assert service_record.fingerprint(base, "redis://127.0.0.1:2/0", options) != same
    assert service_record.fingerprint(base, None, options) != same
    assert service_record.fingerprint(base, "redis://127.0.0.1:1/0", {}) != same
    (tmp_path / "other").mkdir()
    monkeypatch.chdir(tmp_path / "other")  # one relative cache_dir, another folder
    assert service_record.fingerprint(base, "redis://127.0.0.1:1/0", options) != same


def test_runtime_dir_is_the_users_runtime_folder_or_the_cache(tmp_path):
    assert service_record.runtime_dir({"XDG_RUNTIME_DIR": str(tmp_path)}) == (
        tmp_path / "mmlm-stream"
    )
    missing = {"XDG_RUNTIME_DIR": str(tmp_path / "none"), "XDG_CACHE_HOME": str(tmp_path)}
    assert service_record.runtime_dir(missing) == tmp_path / "mmlm-stream" / "run"


def test_config_paths_become_absolute_in_every_section(tmp_path):
    config = Config(
        decode=DecodeConfig(subtitle_files=[Path("subs/a.srt"), tmp_path / "b.srt"]),
        models=ModelsConfig(cache_dir=Path("~/models")),
    )
    fixed = absolute_paths(config, base=tmp_path)
    assert fixed.decode.subtitle_files == [tmp_path / "subs/a.srt", tmp_path / "b.srt"]
    assert fixed.models.cache_dir == Path.home() / "models"
    assert fixed.window == config.window and fixed.decode.frame_fps == config.decode.frame_fps
    assert config.decode.subtitle_files[0] == Path("subs/a.srt")  # the original is unchanged


def test_joining_a_service_whose_ray_is_gone_fails_in_one_line_without_the_token(monkeypatch):
    monkeypatch.setenv("RAY_AUTH_TOKEN", "the-users-own")
    dead = record(gcs_address=f"127.0.0.1:{free_port()}")
    with pytest.raises(driver._ServiceUnusable) as failure:
        driver.join_service(dead)
    assert "does not answer" in str(failure.value) and TOKEN not in str(failure.value)
    assert os.environ["RAY_AUTH_TOKEN"] == "the-users-own"
    assert driver._JOINED is None
