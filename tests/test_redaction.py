"""Credentials are masked wherever a URL can surface: URLs, free text, log records, files."""

from __future__ import annotations

import logging

import pytest

from mmlm_stream.pipeline.outputs import ErrorRecord
from mmlm_stream.util.errors import SourceError
from mmlm_stream.util.redaction import redact_text, redact_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("rtsp://admin:secret@cam:554/s", "rtsp://***@cam:554/s"),
        ("rtsp://justauser@cam/s", "rtsp://***@cam/s"),
        ("srt://h:9000?passphrase=abc&latency=20", "srt://h:9000?passphrase=***&latency=20"),
        ("https://a.example/x.m3u8?token=t0k&x=1", "https://a.example/x.m3u8?token=***&x=1"),
        ("rtsp://cam/s", "rtsp://cam/s"),
        ("/videos/clip.mp4", "/videos/clip.mp4"),
    ],
)
def test_urls_are_shown_without_credentials(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_free_text_loses_every_urls_credentials() -> None:
    text = "open rtsp://a:pw1@cam/1 failed; then http://b:pw2@10.0.0.1/x?api_key=k3 too"
    shown = redact_text(text)
    assert not any(secret in shown for secret in ("pw1", "pw2", "k3"))
    assert "rtsp://***@cam/1" in shown and "http://***@10.0.0.1/x?api_key=***" in shown


def test_a_huge_line_is_redacted_in_linear_time() -> None:
    line = "x://" * 50_000 + "a" * 100_000
    assert redact_text(line) == line


def test_log_records_are_redacted_whoever_logs_them(caplog: pytest.LogCaptureFixture) -> None:
    logging.getLogger("some.library").warning("cannot open %s", "rtsp://u:hunter2@cam/s")
    try:
        raise OSError("rtsp://u:hunter3@cam/s: refused")
    except OSError:
        logging.getLogger("another").exception("failed")
    assert "hunter2" not in caplog.text and "hunter3" not in caplog.text
    assert "rtsp://***@cam/s" in caplog.text


def test_errors_and_error_files_hold_no_password() -> None:
    error = SourceError("rtsp://u:pw@cam/s", "HTTP 401 for rtsp://u:pw@cam/s")
    assert "pw" not in str(error) and str(error).startswith("rtsp://***@cam/s: ")
    record = ErrorRecord(source="s", input="rtsp://u:pw@cam/s", reason=str(error), created_at="t")
    assert ":pw@" not in record.model_dump_json()
