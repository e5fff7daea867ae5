"""The SSRF matrix: a canary HTTP server on 127.0.0.1 records every request it gets, and no
URL an API caller can hand the service may make it see one.

The allowed media server runs on 127.0.0.2 (a loopback alias) and is the only internal
address the policy lets through (``allow_internal``). Names are mapped by a test resolver
(``canary.test`` -> 127.0.0.1, ``media.test`` -> 127.0.0.2), so nothing leaves loopback.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from media import mpegts_bytes

from mmlm_stream.config.api import ApiConfig
from mmlm_stream.config.decode import DecodeConfig
from mmlm_stream.operators.decode import decode
from mmlm_stream.operators.source import resolve_source
from mmlm_stream.security.url_policy import REFUSED, UrlPolicy, api_policy, resolve_host
from mmlm_stream.service.api import create_app
from mmlm_stream.util.errors import SourceError

MEDIA_HOST = "127.0.0.2"
NAMES = {"canary.test": ["127.0.0.1"], "media.test": [MEDIA_HOST]}


def resolver(host: str, port: int | None) -> list[str]:
    return NAMES.get(host) or resolve_host(host, port)


class _Server:
    """A threaded HTTP server that records request paths and answers from ``routes``."""

    def __init__(self, host: str, routes: dict[str, tuple[int, dict[str, str], bytes]]):
        self.requests: list[str] = []
        self.routes = routes
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests.append(self.path)
                status, headers, body = server.routes.get(self.path, (404, {}, b"no"))
                start = 0
                if (wanted := self.headers.get("Range")) and status == 200:
                    start = int(wanted.removeprefix("bytes=").split("-")[0])
                    status = 206
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                self.wfile.write(body[start:])

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer((host, 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def canary() -> Iterator[_Server]:
    server = _Server("127.0.0.1", {})
    server.routes = {"/": (200, {}, b"canary"), "/seg.ts": (200, {}, mpegts_bytes(2.0))}
    yield server
    server.stop()


@pytest.fixture(scope="module")
def media(canary: _Server) -> Iterator[_Server]:
    clip = mpegts_bytes(2.0)
    c = f"http://127.0.0.1:{canary.port}"
    hls = "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n"
    routes: dict[str, tuple[int, dict[str, str], bytes]] = {
        "/ok.ts": (200, {}, clip),
        "/redirect": (302, {"Location": f"{c}/"}, b""),
        "/redirect-by-name": (302, {"Location": f"http://canary.test:{canary.port}/"}, b""),
        "/local-redirect": (302, {"Location": "/ok.ts"}, b""),
        "/seg.ts": (200, {}, clip),
        "/good.m3u8": (200, {}, (hls + "#EXTINF:2.0,\nseg.ts\n#EXT-X-ENDLIST\n").encode()),
        "/canary-segment.m3u8": (
            200,
            {},
            (hls + f"#EXTINF:2.0,\n{c}/seg.ts\n#EXT-X-ENDLIST\n").encode(),
        ),
        "/canary-key.m3u8": (
            200,
            {},
            (
                hls + f'#EXT-X-KEY:METHOD=AES-128,URI="{c}/key"\n'
                "#EXTINF:2.0,\nseg.ts\n#EXT-X-ENDLIST\n"
            ).encode(),
        ),
        "/file-segment.m3u8": (
            200,
            {},
            (hls + "#EXTINF:2.0,\nfile:///etc/hostname\n#EXT-X-ENDLIST\n").encode(),
        ),
    }
    server = _Server(MEDIA_HOST, routes)
    yield server
    server.stop()


def _policy() -> UrlPolicy:
    return api_policy(ApiConfig(allow_internal=[f"{MEDIA_HOST}/32"]), resolver)


def _run(url: str, policy: UrlPolicy) -> tuple[int, str | None]:
    """Decode ``url`` as an API caller's source: (items decoded, error reason or None)."""
    spec = replace(resolve_source(url, "src"), policy=policy)
    items = 0
    try:
        for _ in decode(spec, DecodeConfig(open_timeout_s=5, stall_timeout_s=5, live=False)):
            items += 1
    except SourceError as exc:
        return items, exc.reason
    return items, None


def _refused_at_the_api(url: str, canary: _Server) -> dict[str, Any]:
    from test_api import FakeBackend

    config = ApiConfig(allow_internal=[f"{MEDIA_HOST}/32"], allowed_hosts_header=["testserver"])
    app = create_app(FakeBackend(), config, None, resolve=resolver)
    with TestClient(app, raise_server_exceptions=False) as client:
        stream = client.post("/streams", json={"id": "x", "url": url})
        job = client.post("/jobs", json={"inputs": [url]})
    assert stream.status_code == 400, stream.text
    assert job.status_code == 400, job.text
    assert stream.json()["detail"].endswith(REFUSED)
    assert job.json()["detail"].endswith(REFUSED)
    return stream.json()


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:{port}/",
        "http://127.5.6.7:{port}/",
        "http://0.0.0.0:{port}/",
        "http://2130706433:{port}/",
        "http://[::ffff:127.0.0.1]:{port}/",
        "http://localhost:{port}/",
        "http://canary.test:{port}/",
        "rtsp://127.0.0.1:{port}/cam",
        "tcp://127.0.0.1:{port}",
        "tcp://0.0.0.0:{port}?listen=1",
        "tcp://media.test:{port}?listen=1",
        "udp://0.0.0.0:{port}",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/x.ts",
        "http://192.168.1.1/x.ts",
        "file:///etc/passwd",
        "concat:/etc/passwd|/etc/hostname",
        "subfile,,start,0,end,16,,:/etc/passwd",
        "hls+http://127.0.0.1:{port}/",
        "gopher://127.0.0.1:{port}/",
    ],
)
def test_the_api_refuses_internal_and_dangerous_urls_with_one_reason(
    url: str, canary: _Server
) -> None:
    before = len(canary.requests)
    _refused_at_the_api(url.format(port=canary.port), canary)
    assert len(canary.requests) == before


@pytest.mark.parametrize(
    "path",
    ["/redirect", "/redirect-by-name", "/canary-segment.m3u8", "/canary-key.m3u8"],
)
def test_an_allowed_host_cannot_lead_the_decoder_to_the_canary(
    path: str, canary: _Server, media: _Server
) -> None:
    before = len(canary.requests)
    items, reason = _run(f"http://media.test:{media.port}{path}", _policy())
    assert len(canary.requests) == before, canary.requests
    if "redirect" in path:
        assert reason == REFUSED
    else:  # the playlist opened; what it names on the canary was refused
        assert items == 0, (items, reason)


def test_an_hls_playlist_cannot_read_local_files(media: _Server) -> None:
    items, _ = _run(f"http://media.test:{media.port}/file-segment.m3u8", _policy())
    assert items == 0


def test_allowed_urls_still_work_redirects_and_hls_included(media: _Server) -> None:
    counts = {}
    for path in ("/ok.ts", "/local-redirect", "/good.m3u8"):
        items, reason = _run(f"http://media.test:{media.port}{path}", _policy())
        assert reason is None, (path, reason)
        counts[path] = items
    assert counts["/ok.ts"] >= 4 and len(set(counts.values())) == 1, counts


def test_the_decoder_checks_again_what_the_api_let_through(canary: _Server) -> None:
    """A stream registered under a looser policy is resumed under today's."""
    before = len(canary.requests)
    items, reason = _run(f"http://127.0.0.1:{canary.port}/seg.ts", _policy())
    assert reason == REFUSED and items == 0
    assert len(canary.requests) == before
    loose = api_policy(ApiConfig(allow_internal=["127.0.0.0/8"]), resolver)
    items, reason = _run(f"http://127.0.0.1:{canary.port}/seg.ts", loose)
    assert reason is None and items >= 4
    assert len(canary.requests) > before


def test_local_files_of_callers_stay_inside_the_roots(tmp_path: Path) -> None:
    inside = tmp_path / "in"
    inside.mkdir()
    (inside / "clip.ts").write_bytes(mpegts_bytes(1.0))
    (inside / "escape.ts").symlink_to("/etc/hostname")
    policy = UrlPolicy(schemes=frozenset({"http"}), allow_local_files=True, local_roots=(inside,))
    assert _run(str(inside / "clip.ts"), policy)[1] is None
    assert _run(str(inside / "escape.ts"), policy)[1] == REFUSED
    assert _run("/etc/hostname", policy)[1] == REFUSED
    closed = UrlPolicy(schemes=frozenset({"http"}))
    assert _run(str(inside / "clip.ts"), closed)[1] == REFUSED
