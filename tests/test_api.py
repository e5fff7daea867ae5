"""The HTTP API over a fake in-memory backend (the pipeline is tested elsewhere); /events
against a real Redis server and a real uvicorn on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import ipaddress
import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args

import httpx2 as httpx
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from redis_fixtures import FAST, KEYS, RedisServer, event, free_port, redis_server  # noqa: F401

from mmlm_stream.bus.redis_bus import RedisPublisher
from mmlm_stream.config.api import ApiConfig
from mmlm_stream.config.bus import RedisConfig
from mmlm_stream.records.schema import EventType
from mmlm_stream.service.api import check_source, create_app
from mmlm_stream.service.metrics import PipelineMetrics, window_latency_s
from mmlm_stream.service.protocol import (
    Conflict,
    JobInfo,
    JobInput,
    JobRequest,
    NotFound,
    SearchHit,
    ServiceBackend,
    StreamInfo,
    StreamSpec,
)
from mmlm_stream.util.errors import ConfigError, MmlmError

TOKEN = "s3cret-token"


class FakeBackend:
    """In memory, synchronous (the API calls it on its event loop)."""

    def __init__(self) -> None:
        self.streams: dict[str, StreamInfo] = {}
        self.specs: dict[str, StreamSpec] = {}
        self.jobs: dict[str, JobInfo] = {}
        self.is_healthy = True
        self.fail_with: Exception | None = None
        self.metrics = PipelineMetrics()

    def _maybe_fail(self) -> None:
        if self.fail_with is not None:
            raise self.fail_with

    def add_stream(self, spec: StreamSpec) -> StreamInfo:
        self._maybe_fail()
        stream_id = spec.id or spec.url.rsplit("/", 1)[-1] or "stream"
        if stream_id in self.streams:
            raise Conflict(f"stream '{stream_id}' already exists")
        info = StreamInfo(
            id=stream_id, url=spec.url, state="connecting", name=spec.name, labels=spec.labels
        )
        self.streams[stream_id] = info
        self.specs[stream_id] = spec
        self.metrics.set_stream(stream_id, input_fps=1.0, lag_s=0.4, state="connecting")
        return info

    def list_streams(self) -> list[StreamInfo]:
        self._maybe_fail()
        return [self.streams[key] for key in sorted(self.streams)]

    def get_stream(self, stream_id: str) -> StreamInfo:
        self._maybe_fail()
        if stream_id not in self.streams:
            raise NotFound(f"no stream '{stream_id}'")
        return self.streams[stream_id]

    def remove_stream(self, stream_id: str) -> None:
        self.get_stream(stream_id)
        del self.streams[stream_id]
        self.metrics.remove_stream(stream_id)

    def submit_job(self, request: JobRequest) -> JobInfo:
        self._maybe_fail()
        job = JobInfo(
            id=f"job-{len(self.jobs) + 1}",
            state="queued",
            inputs=[JobInput(input=value) for value in request.inputs],
        )
        self.jobs[job.id] = job
        return job

    def get_job(self, job_id: str) -> JobInfo:
        if job_id not in self.jobs:
            raise NotFound(f"no job '{job_id}'")
        return self.jobs[job_id]

    def search(self, query: str, top_k: int, source: str | None) -> list[SearchHit]:
        hits = [
            SearchHit(
                window_id=f"{name}:2000",
                source=name,
                start=2.0,
                end=6.0,
                description=f"A cat near {name}.",
                score=0.9 - index / 10,
            )
            for index, name in enumerate(["cam1", "cam2", "cam3"])
            if source in (None, name)
        ]
        return hits[:top_k]

    def metrics_text(self) -> str:
        return self.metrics.exposition()

    def healthy(self) -> bool:
        return self.is_healthy


class AsyncBackend(FakeBackend):
    """The same with coroutine methods, and a sync one that starts a task (as a real backend
    does when it accepts a job): both run on the event loop."""

    async def list_streams(self) -> list[StreamInfo]:  # type: ignore[override]
        await asyncio.sleep(0)
        return FakeBackend.list_streams(self)

    def submit_job(self, request: JobRequest) -> JobInfo:
        job = FakeBackend.submit_job(self, request)
        self.task = asyncio.get_running_loop().create_task(asyncio.sleep(0))
        return job

    async def healthy(self) -> bool:  # type: ignore[override]
        return self.is_healthy


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend()


PUBLIC_ADDRESS = "93.184.215.14"  # any global address: the fake backend connects nowhere


def public_names(host: str, port: int | None) -> list[str]:
    """Test resolver: IP literals as they are, every name a public address."""
    try:
        return [str(ipaddress.ip_address(host.strip("[]")))]
    except ValueError:
        return [PUBLIC_ADDRESS]


def make_client(backend: Any, redis_url: str | None = None, **config: Any) -> TestClient:
    config.setdefault("allowed_hosts_header", ["testserver"])  # the Host TestClient sends
    return TestClient(
        create_app(backend, ApiConfig(**config), redis_url, resolve=public_names),
        raise_server_exceptions=False,
    )


@pytest.fixture
def client(backend: FakeBackend) -> Iterator[TestClient]:
    with make_client(backend) as test_client:
        yield test_client


def auth(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# -- streams ---------------------------------------------------------------------------------------


def test_backend_satisfies_the_protocol(backend: FakeBackend) -> None:
    assert isinstance(backend, ServiceBackend)


def test_streams_are_added_listed_fetched_and_removed(
    client: TestClient, backend: FakeBackend
) -> None:
    created = client.post(
        "/streams", json={"id": "dock", "url": " rtsp://cam.local:8554/dock ", "name": "Dock"}
    )
    assert created.status_code == 201, created.text
    assert created.json()["id"] == "dock"
    assert created.json()["state"] == "connecting"
    assert created.headers["location"] == "streams/dock"
    assert backend.specs["dock"].url == "rtsp://cam.local:8554/dock"  # stripped
    assert (
        client.post("/streams", json={"url": "srt://203.0.113.0.example:9000"}).status_code == 201
    )

    listed = client.get("/streams")
    assert [s["id"] for s in listed.json()] == ["203.0.113.0.example:9000", "dock"]
    assert client.get("/streams/dock").json()["name"] == "Dock"

    removed = client.delete("/streams/dock")
    assert removed.status_code == 204
    assert removed.content == b""
    assert client.get("/streams/dock").status_code == 404
    assert client.delete("/streams/dock").json() == {"detail": "no stream 'dock'"}


def test_async_backend_methods_are_awaited() -> None:
    backend = AsyncBackend()
    with make_client(backend) as client:
        client.post("/streams", json={"id": "a", "url": "udp://stream.example:1234"})
        assert [s["id"] for s in client.get("/streams").json()] == ["a"]
        assert client.get("/healthz").json() == {"ok": True}
        assert client.post("/jobs", json={"inputs": ["https://a.example/x.mp4"]}).is_success


def test_a_duplicate_stream_id_is_409(client: TestClient) -> None:
    body = {"id": "cam", "url": "rtmp://media.local/live/cam"}
    assert client.post("/streams", json=body).status_code == 201
    again = client.post("/streams", json=body)
    assert again.status_code == 409
    assert again.json() == {"detail": "stream 'cam' already exists"}


@pytest.mark.parametrize(
    ("url", "logged"),
    [
        ("file:///etc/passwd", "local files are not allowed"),
        ("/srv/video/clip.mp4", "local files are not allowed"),
        ("/dev/video0", "local files are not allowed"),
        ("ftp://files.local/clip.mp4", "scheme 'ftp' is not allowed"),
        ("concat:/a.ts|/b.ts", "scheme 'concat' is not allowed"),
        ("rtsp:///nohost", "names no host"),
        ("http://cam.local:99999/x", "not a valid URL"),
        ("rtsp://cam.local/a b", "contains spaces"),
    ],
)
def test_stream_urls_outside_the_policy_are_400_with_one_reason_and_the_detail_logged(
    client: TestClient, url: str, logged: str, caplog: pytest.LogCaptureFixture
) -> None:
    answer = client.post("/streams", json={"url": url})
    assert answer.status_code == 400, answer.text
    assert answer.json()["detail"].endswith(": refused by the URL policy")
    assert "\n" not in answer.json()["detail"]
    assert logged in caplog.text


@pytest.mark.parametrize(
    "body",
    [
        {"id": "bad id", "url": "rtsp://cam.local/x"},
        {"id": "x" * 65, "url": "rtsp://cam.local/x"},
        {"id": "../etc", "url": "rtsp://cam.local/x"},
        {"url": "rtsp://cam.local/x", "unknown": 1},
        {"id": "cam"},
    ],
)
def test_malformed_stream_bodies_are_422_with_one_line(client: TestClient, body: dict) -> None:
    answer = client.post("/streams", json=body)
    assert answer.status_code == 422
    detail = answer.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail


def test_the_bad_id_is_named(client: TestClient) -> None:
    answer = client.post("/streams", json={"id": "no/slash", "url": "rtsp://cam.local/x"})
    assert answer.json()["detail"].startswith("id: String should match pattern")


def test_oversized_bodies_are_413(client: TestClient) -> None:
    big = {"url": "rtsp://cam.local/x", "name": "n", "labels": {"a": "x" * 70_000}}
    answer = client.post("/streams", json=big)
    assert answer.status_code == 413
    assert answer.json()["detail"] == "request body larger than 65536 bytes"


def test_oversized_chunked_bodies_are_413(client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"url": "rtsp://cam.local/x", "name": "'
        for _ in range(80):
            yield b"x" * 1024
        yield b'"}'

    answer = client.post("/streams", content=chunks(), headers={"Content-Type": "application/json"})
    assert answer.status_code == 413


def test_local_files_need_allow_local_files_and_stay_inside_the_roots(
    backend: FakeBackend, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / "clip.mp4").write_bytes(b"")
    (videos / "escape.mp4").symlink_to("/etc/hostname")
    with make_client(backend, allow_local_files=True, local_roots=[videos]) as client:
        ok = client.post(
            "/streams", json={"id": "a", "url": str(videos / "clip.mp4"), "loop": True}
        )
        assert ok.status_code == 201, ok.text
        as_url = client.post("/streams", json={"id": "b", "url": f"file://{videos}/clip.mp4"})
        assert as_url.status_code == 201, as_url.text
        for url, reason in [
            (f"{videos}/../secret.mp4", "must not contain '..'"),
            (str(videos / "escape.mp4"), "outside api.local_roots"),
            ("/etc/hostname", "outside api.local_roots"),
            ("clip.mp4", "scheme 'none' is not allowed"),
            ("file://otherhost/x.mp4", "must not name a host"),
        ]:
            caplog.clear()
            answer = client.post("/streams", json={"url": url})
            assert answer.status_code == 400, url
            assert answer.json()["detail"].endswith("refused by the URL policy"), answer.json()
            assert reason in caplog.text, (url, caplog.text)
        looping = client.post("/streams", json={"url": "rtsp://cam.local/x", "loop": True})
        assert looping.json()["detail"] == "loop applies to local files only"


def test_allowed_hosts_take_names_and_networks(caplog: pytest.LogCaptureFixture) -> None:
    config = ApiConfig(allowed_hosts=["*.cams.example", "93.184.1.0/24"])
    assert check_source("rtsp://dock.cams.example/a", config, resolve=public_names)
    assert check_source("rtsp://93.184.1.2:554/a", config, resolve=public_names)
    for url in ("rtsp://evil.example/a", "http://169.254.169.254/latest", "rtsp://11.0.0.1/a"):
        with pytest.raises(ValueError, match=r"refused by the URL policy$"):
            check_source(url, config, resolve=public_names)
    assert caplog.text.count("is not in api.allowed_hosts") == 3
    with pytest.raises(ValueError, match="not a network"):
        ApiConfig(allowed_hosts=["10.0.0.0/99"])
    with pytest.raises(ValueError, match="use allow_local_files"):
        ApiConfig(allowed_schemes=["rtsp", "file"])


def test_passwords_in_stream_urls_are_not_shown(client: TestClient, backend: FakeBackend) -> None:
    answer = client.post("/streams", json={"id": "c", "url": "rtsp://admin:hunter2@cam.local/s"})
    assert answer.json()["url"] == "rtsp://***@cam.local/s"
    assert backend.specs["c"].url == "rtsp://admin:hunter2@cam.local/s"
    assert "hunter2" not in client.get("/streams").text


# -- errors ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (ConfigError("decode.frame_fps: must be positive"), 400),
        (NotFound("no such thing"), 404),
        (MmlmError("Ray: the Decoder deployment is not running"), 502),
        (RuntimeError("boom"), 500),
    ],
)
def test_backend_errors_map_to_statuses(
    client: TestClient, backend: FakeBackend, error: Exception, status: int
) -> None:
    backend.fail_with = error
    answer = client.get("/streams")
    assert answer.status_code == status
    detail = answer.json()["detail"]
    assert detail == (str(error) if status != 500 else "internal error (RuntimeError)")


def test_unknown_routes_answer_json(client: TestClient) -> None:
    assert client.get("/nowhere").json() == {"detail": "Not Found"}
    assert client.put("/streams").status_code == 405


# -- jobs and search -------------------------------------------------------------------------------


def test_jobs_are_accepted_and_followed(client: TestClient) -> None:
    answer = client.post(
        "/jobs", json={"inputs": ["https://archive.example/a.mp4", "rtsp://cam/x"], "force": True}
    )
    assert answer.status_code == 202, answer.text
    job = answer.json()
    assert answer.headers["location"] == f"jobs/{job['id']}"
    assert [i["input"] for i in job["inputs"]] == ["https://archive.example/a.mp4", "rtsp://cam/x"]
    assert client.get(f"/jobs/{job['id']}").json()["state"] == "queued"
    assert client.get("/jobs/job-99").status_code == 404


def test_job_inputs_follow_the_policy(backend: FakeBackend) -> None:
    with make_client(backend, max_job_inputs=2) as client:
        refused = client.post("/jobs", json={"inputs": ["/data/*.mp4"]})
        assert refused.status_code == 400
        assert refused.json()["detail"] == "/data/*.mp4: refused by the URL policy"
        many = client.post("/jobs", json={"inputs": ["http://a/1", "http://a/2", "http://a/3"]})
        assert many.json()["detail"] == "more than 2 inputs in one job"
        assert client.post("/jobs", json={"inputs": []}).status_code == 422
    with make_client(backend, allow_local_files=True) as client:
        ok = client.post("/jobs", json={"inputs": ["/data/**/*.mp4"]})
        assert ok.status_code == 202
        assert ok.json()["inputs"][0]["input"] == "/data/**/*.mp4"


def test_search_ranks_and_filters(client: TestClient) -> None:
    answer = client.get("/search", params={"q": "a cat", "top_k": 2})
    assert answer.status_code == 200
    result = answer.json()
    assert result["query"] == "a cat"
    assert [hit["source"] for hit in result["hits"]] == ["cam1", "cam2"]
    only = client.get("/search", params={"q": "cat", "source": "cam3"}).json()["hits"]
    assert [hit["window_id"] for hit in only] == ["cam3:2000"]
    too_many = client.get("/search", params={"q": "cat", "top_k": 1000})
    assert too_many.json() == {"detail": "top_k must be at most 100"}
    assert client.get("/search").status_code == 422


# -- auth ------------------------------------------------------------------------------------------


def test_every_route_but_healthz_needs_the_token(backend: FakeBackend) -> None:
    with make_client(backend, api_token=TOKEN) as client:
        routes = [
            ("GET", "/streams"),
            ("POST", "/streams"),
            ("GET", "/streams/x"),
            ("DELETE", "/streams/x"),
            ("POST", "/jobs"),
            ("GET", "/jobs/x"),
            ("GET", "/events"),
            ("GET", "/search?q=x"),
            ("GET", "/metrics"),
            ("GET", "/docs"),
            ("GET", "/openapi.json"),
            ("GET", "/"),
            ("GET", "/nowhere"),
        ]
        for method, path in routes:
            answer = client.request(method, path)
            assert answer.status_code == 401, (method, path)
            assert answer.headers["www-authenticate"] == 'Bearer realm="mmlm-stream"'
            wrong = client.request(method, path, headers=auth("wrong"))
            assert wrong.status_code == 401
            assert 'error="invalid_token"' in wrong.headers["www-authenticate"]
        assert client.get("/streams", headers=auth()).status_code == 200
        assert client.get("/streams", headers={"Authorization": f"bearer {TOKEN}"}).is_success
        assert (
            client.get("/streams", headers={"Authorization": f"Basic {TOKEN}"}).status_code == 401
        )
        assert client.get("/healthz").json() == {"ok": True}
        assert client.get("/metrics", headers=auth()).status_code == 200


def test_only_events_take_the_token_as_a_query_parameter(backend: FakeBackend) -> None:
    # No Redis configured: an authorised /events request gets 503, an unauthorised one 401.
    with make_client(backend, api_token=TOKEN) as client:
        assert client.get("/events", params={"token": TOKEN}).status_code == 503
        assert client.get("/events", params={"token": "nope"}).status_code == 401
        assert client.get("/streams", params={"token": TOKEN}).status_code == 401


def test_the_dashboard_signs_in_without_leaking_data(backend: FakeBackend) -> None:
    with make_client(backend, api_token=TOKEN) as client:
        page = client.get("/")
        assert page.status_code == 401
        assert page.headers["content-type"].startswith("text/html")
        assert "EventSource" in page.text and "sessionStorage" in page.text
        assert client.get("/", headers=auth()).status_code == 200


def test_token_file_and_open_docs(backend: FakeBackend, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(f"  {TOKEN}\n")
    with make_client(backend, api_token_file=token_file, open_docs=True) as client:
        assert client.get("/streams").status_code == 401
        assert client.get("/streams", headers=auth()).status_code == 200
        schema = client.get("/openapi.json").json()
        assert schema["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
        assert schema["paths"]["/streams"]["get"]["security"] == [{"bearer": []}]
        assert "security" not in schema["paths"]["/healthz"]["get"]
        assert client.get("/docs").status_code == 200
    with pytest.raises(ConfigError, match="cannot read the API token"):
        create_app(FakeBackend(), ApiConfig(api_token_file=tmp_path / "missing"), None)
    with pytest.raises(ValueError, match="not both"):
        ApiConfig(api_token=TOKEN, api_token_file=token_file)


def test_the_token_survives_a_json_round_trip_but_not_repr() -> None:
    config = ApiConfig(api_token=TOKEN)
    assert ApiConfig.model_validate(config.model_dump(mode="json")).token() == TOKEN
    assert ApiConfig.model_validate_json(config.model_dump_json()).token() == TOKEN
    assert TOKEN not in repr(config)


# -- health, metrics, docs, dashboard --------------------------------------------------------------


def test_healthz_reports_the_pipeline(client: TestClient, backend: FakeBackend) -> None:
    assert client.get("/healthz").json() == {"ok": True}
    backend.is_healthy = False
    answer = client.get("/healthz")
    assert answer.status_code == 503
    assert answer.json() == {"ok": False}


def test_healthz_gives_up_on_a_stuck_pipeline(backend: FakeBackend) -> None:
    async def stuck() -> bool:
        await asyncio.sleep(10)
        return True

    backend.healthy = stuck  # type: ignore[method-assign]
    with make_client(backend, health_timeout_s=0.2) as client:
        began = time.monotonic()
        answer = client.get("/healthz")
    assert answer.status_code == 503
    assert answer.json() == {"ok": False, "detail": "pipeline did not answer"}
    assert time.monotonic() - began < 2


def test_metrics_expose_pipeline_and_api_series(client: TestClient, backend: FakeBackend) -> None:
    client.post("/streams", json={"id": "cam1", "url": "rtsp://cam.local/1"})
    backend.metrics.set_frames_dropped("cam1", 5)
    backend.metrics.set_frames_dropped("cam1", 8)
    backend.metrics.window_published("cam1", 2.5)
    backend.metrics.encoder_batch("visual", 4)
    backend.metrics.set_queue_depth("speech", 3)
    backend.metrics.set_publisher_counts({"published": 10, "errors": 2, "buffered": 1})
    client.get("/streams/cam1")
    answer = client.get("/metrics")
    assert answer.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    text = answer.text
    for line in [
        'mmlm_stream_input_fps{stream="cam1"} 1.0',
        'mmlm_stream_lag_seconds{stream="cam1"} 0.4',
        'mmlm_stream_frames_dropped_total{stream="cam1"} 8.0',
        'mmlm_stream_state{state="connecting",stream="cam1"} 1.0',
        'mmlm_window_latency_seconds_bucket{le="3.0",stream="cam1"} 1.0',
        'mmlm_encoder_batch_size_count{modality="visual"} 1.0',
        'mmlm_encoder_queue_depth{modality="speech"} 3.0',
        "mmlm_redis_publish_errors_total 2.0",
        "mmlm_redis_published_total 10.0",
        'mmlm_api_requests_total{method="GET",route="/streams/{stream_id}",status="200"} 1.0',
        "mmlm_api_sse_clients 0.0",
        "mmlm_api_backend_metrics_up 1.0",
    ]:
        assert line in text, line
    client.delete("/streams/cam1")
    assert 'stream="cam1"' not in client.get("/metrics").text


def test_metrics_survive_a_failing_pipeline(client: TestClient, backend: FakeBackend) -> None:
    backend.metrics_text = lambda: (_ for _ in ()).throw(MmlmError("down"))  # type: ignore[method-assign]
    answer = client.get("/metrics")
    assert answer.status_code == 200
    assert "mmlm_api_backend_metrics_up 0.0" in answer.text


def test_cumulative_counts_restart_from_zero_and_latency_uses_wall_time() -> None:
    metrics = PipelineMetrics()
    metrics.set_publisher_counts({"errors": 5})
    metrics.set_publisher_counts({"errors": 2})  # the publisher restarted
    assert "mmlm_redis_publish_errors_total 7.0" in metrics.exposition()
    record = {
        "source": "cam",
        "start": 10.0,
        "end": 14.0,
        "wall_start": "2026-01-01T12:00:00.000Z",
        "published_at": "2026-01-01T12:00:05.250Z",
    }
    assert window_latency_s(record) == pytest.approx(1.25)
    assert window_latency_s({**record, "wall_start": None}) is None
    metrics.observe_window(record)
    assert 'mmlm_window_latency_seconds_count{stream="cam"} 1.0' in metrics.exposition()


def test_docs_openapi_and_dashboard_are_served(client: TestClient) -> None:
    assert "swagger" in client.get("/docs").text.lower()
    schema = client.get("/openapi.json").json()
    for path in ["/healthz", "/metrics", "/streams", "/streams/{stream_id}", "/jobs", "/events"]:
        assert path in schema["paths"]
    assert "StreamSpec" in schema["components"]["schemas"]
    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "<title>mmlm-stream</title>" in page.text
    assert page.headers["x-content-type-options"] == "nosniff"


def test_the_dashboard_policy_allows_exactly_its_own_script(client: TestClient) -> None:
    page = client.get("/")
    script = re.search(r"<script>(.*?)</script>", page.text, flags=re.DOTALL)
    assert script is not None
    digest = base64.b64encode(hashlib.sha256(script.group(1).encode()).digest()).decode()
    policy = page.headers["content-security-policy"]
    assert f"script-src 'sha256-{digest}'" in policy
    assert "connect-src 'self'" in policy
    assert "unsafe-inline" not in policy


def test_the_dashboard_listens_for_every_event_type_of_the_record_schema(client: TestClient):
    script = re.search(r"<script>(.*?)</script>", client.get("/").text, flags=re.DOTALL)
    assert script is not None and "__EVENT_TYPES__" not in script.group(1)
    listed = re.search(r"const EVENT_TYPES = \[\.\.\.(\[.*?\]), \"message\"\];", script.group(1))
    assert listed is not None
    assert set(json.loads(listed.group(1))) == set(get_args(EventType))


# -- server-sent events against a real Redis -------------------------------------------------------


class LiveServer:
    """The app on a real uvicorn in a thread, so disconnects are real ones."""

    def __init__(self, app: FastAPI) -> None:
        self.port = free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class Sse:
    """An SSE connection read line by line; the server's heartbeats keep reads short."""

    def __init__(self, url: str, **kwargs: Any) -> None:
        self.client = httpx.Client(timeout=httpx.Timeout(5.0))
        self.response = self.client.send(
            self.client.build_request("GET", url, **kwargs), stream=True
        )
        self.lines = self.response.iter_lines()

    def next_block(self) -> list[str]:
        block: list[str] = []
        for line in self.lines:
            if line == "":
                if block:
                    return block
                continue
            block.append(line)
        raise AssertionError("the stream ended")

    def messages(self, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        """The next ``count`` messages (comments skipped)."""
        found: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while len(found) < count:
            assert time.monotonic() < deadline, f"only {len(found)} of {count} messages"
            fields: dict[str, Any] = {}
            for line in self.next_block():
                if line.startswith(":"):
                    continue
                name, _, value = line.partition(": ")
                fields[name] = value
            if "data" in fields:
                fields["data"] = json.loads(fields["data"])
                found.append(fields)
        return found

    def quiet(self, heartbeats: int = 2) -> None:
        """Only heartbeats follow (nothing else was queued for this client)."""
        seen = 0
        while seen < heartbeats:
            block = self.next_block()
            assert all(line.startswith(":") for line in block), block
            seen += 1

    def wait_connected(self) -> None:
        block = self.next_block()
        assert block[0].startswith("retry: ") and ": connected" in block, block

    def close(self) -> None:
        self.response.close()
        self.client.close()


SSE_CONFIG = {"sse_heartbeat_s": 0.3, "api_token": TOKEN}


@pytest.fixture
def live(redis_server: RedisServer, backend: FakeBackend) -> Iterator[LiveServer]:
    app = create_app(backend, ApiConfig(**SSE_CONFIG), redis_server.url)
    with LiveServer(app) as server:
        yield server


@pytest.fixture
def publisher(redis_server: RedisServer) -> Iterator[RedisPublisher]:
    with RedisPublisher(redis_server.url, RedisConfig(**FAST)) as bus:
        yield bus


def publish(bus: RedisPublisher, *events: Any) -> None:
    for record in events:
        bus.publish_event(record)
    assert bus.flush(5)


def entry_ids(redis_server: RedisServer, key: str) -> list[str]:
    client = redis_server.client(decode_responses=True)
    try:
        return [entry_id for entry_id, _ in client.xrange(key)]
    finally:
        client.close()


@pytest.mark.redis
def test_sse_delivers_events_as_they_are_published_and_resumes(
    live: LiveServer,
    publisher: RedisPublisher,
    redis_server: RedisServer,
) -> None:
    publish(publisher, event(0.0))  # before the client: not part of a fresh feed
    feed = Sse(f"{live.url}/events", headers=auth())
    try:
        assert feed.response.status_code == 200
        assert feed.response.headers["content-type"].startswith("text/event-stream")
        assert feed.response.headers["cache-control"] == "no-cache"
        feed.wait_connected()
        first = time.monotonic()
        publish(publisher, event(10.0))
        [message] = feed.messages(1)
        assert time.monotonic() - first < 2.0
        ids = entry_ids(redis_server, KEYS.events())
        assert message["id"] == ids[1]
        assert message["event"] == "sound"
        assert message["data"]["start"] == 10.0
        assert message["data"]["published_at"]
        publish(publisher, event(20.0, type_="speech", key="speech"), event(30.0))
        later = feed.messages(2)
        assert [m["data"]["start"] for m in later] == [20.0, 30.0]
        assert [m["event"] for m in later] == ["speech", "sound"]
        feed.quiet()
    finally:
        feed.close()

    ids = entry_ids(redis_server, KEYS.events())
    resumed = Sse(f"{live.url}/events", headers={**auth(), "Last-Event-ID": ids[2]})
    try:
        assert [m["id"] for m in resumed.messages(1)] == [ids[3]]
        resumed.quiet()
    finally:
        resumed.close()
    # The header (sent by a browser on reconnect) wins over the query parameter.
    both = Sse(
        f"{live.url}/events",
        params={"last_event_id": ids[0], "token": TOKEN},
        headers={"Last-Event-ID": ids[1]},
    )
    try:
        assert [m["id"] for m in both.messages(2)] == ids[2:]
    finally:
        both.close()
    everything = Sse(f"{live.url}/events", params={"from_start": 1}, headers=auth())
    try:
        assert [m["id"] for m in everything.messages(4)] == ids
    finally:
        everything.close()


@pytest.mark.redis
def test_sse_filters_by_source_and_type(
    live: LiveServer,
    publisher: RedisPublisher,
    redis_server: RedisServer,
) -> None:
    by_source = Sse(f"{live.url}/events", params={"source": "cam2"}, headers=auth())
    by_type = Sse(f"{live.url}/events", params={"type": "speech,label"}, headers=auth())
    try:
        by_source.wait_connected()
        by_type.wait_connected()
        publish(
            publisher,
            event(0.0, source="cam1"),
            event(0.0, source="cam2", type_="speech", key="speech"),
            event(2.0, source="cam2"),
            event(4.0, source="cam1", type_="label", key="cat"),
        )
        from_cam2 = by_source.messages(2)
        assert [(m["data"]["source"], m["event"]) for m in from_cam2] == [
            ("cam2", "speech"),
            ("cam2", "sound"),
        ]
        assert [m["id"] for m in from_cam2] == entry_ids(redis_server, KEYS.events("cam2"))
        typed = by_type.messages(2)
        assert [(m["data"]["source"], m["event"]) for m in typed] == [
            ("cam2", "speech"),
            ("cam1", "label"),
        ]
        by_source.quiet()
        by_type.quiet()
    finally:
        by_source.close()
        by_type.close()


@pytest.mark.redis
def test_sse_rejects_bad_parameters_and_redis_down(live: LiveServer, backend: FakeBackend) -> None:
    with httpx.Client(base_url=live.url, headers=auth(), timeout=5) as client:
        bad_type = client.get("/events", params={"type": "explosion"})
        assert bad_type.status_code == 400
        assert bad_type.json()["detail"].startswith("unknown event type 'explosion'")
        bad_id = client.get("/events", headers={"Last-Event-ID": "yesterday"})
        assert bad_id.json()["detail"] == "'yesterday' is not a Redis stream entry id"
    nothing = f"redis://127.0.0.1:{free_port()}/0"
    with TestClient(
        create_app(backend, ApiConfig(allowed_hosts_header=["testserver"]), nothing)
    ) as client:
        down = client.get("/events")
        assert down.status_code == 503
        assert "connection refused" in down.json()["detail"]
        assert down.headers["retry-after"] == "5"


@pytest.mark.redis
def test_sse_closes_its_redis_connection_when_the_client_goes(
    redis_server: RedisServer,
    backend: FakeBackend,
) -> None:
    app = create_app(backend, ApiConfig(sse_heartbeat_s=30.0, sse_max_clients=1), redis_server.url)
    watcher = redis_server.client(decode_responses=True)

    def sse_connections() -> int:
        return sum(c.get("name") == "mmlm-stream-sse" for c in watcher.client_list())

    try:
        with LiveServer(app) as server:
            feed = Sse(f"{server.url}/events")
            feed.wait_connected()
            assert sse_connections() == 1
            with httpx.Client(timeout=5) as other:
                full = other.get(f"{server.url}/events")
                assert full.status_code == 503
                assert full.json()["detail"].startswith("too many event clients (1)")
                assert "mmlm_api_sse_clients 1.0" in other.get(f"{server.url}/metrics").text
            feed.close()  # long before the next 30 s heartbeat
            deadline = time.monotonic() + 5
            while sse_connections():
                assert time.monotonic() < deadline, "the SSE connection was not closed"
                time.sleep(0.05)
            with httpx.Client(timeout=5) as other:
                assert "mmlm_api_sse_clients 0.0" in other.get(f"{server.url}/metrics").text
    finally:
        watcher.close()


@pytest.mark.redis
def test_sse_rides_out_a_redis_restart(
    live: LiveServer,
    publisher: RedisPublisher,
    redis_server: RedisServer,
) -> None:
    feed = Sse(f"{live.url}/events", headers=auth())
    try:
        feed.wait_connected()
        publish(publisher, event(0.0))
        assert feed.messages(1)[0]["data"]["start"] == 0.0
        redis_server.restart()
        publish(publisher, event(2.0))
        [after] = feed.messages(1, timeout=10)
        assert after["data"]["start"] == 2.0
        assert after["id"] == entry_ids(redis_server, KEYS.events())[0]
    finally:
        feed.close()


def test_a_stream_posted_with_its_own_rules_and_zones_keeps_them(
    client: TestClient, backend: FakeBackend
) -> None:
    body = {
        "id": "door",
        "url": "rtsp://cam.example/door",
        "rules": [{"type": "label", "name": "at_door", "label": "person",
                   "modality": "objects", "zones": ["porch"], "min_box_area": 0.01}],
        "zones": {"porch": [[0.6, 0.0], [1.0, 0.0], [1.0, 0.4]]},
    }  # fmt: skip
    assert client.post("/streams", json=body).status_code == 201
    spec = backend.specs["door"]
    assert spec.rules is not None and spec.rules[0].zones == ["porch"]
    assert spec.zones == {"porch": ((0.6, 0.0), (1.0, 0.0), (1.0, 0.4))}


def test_a_stream_whose_rules_name_a_missing_zone_is_400_naming_it(
    client: TestClient, backend: FakeBackend
) -> None:
    from mmlm_stream.service.protocol import Invalid

    backend.fail_with = Invalid("door: rule at_door: unknown zone porch (zones: none)")
    answer = client.post("/streams", json={"id": "door", "url": "rtsp://cam.example/door"})
    assert answer.status_code == 400
    assert answer.json() == {"detail": "door: rule at_door: unknown zone porch (zones: none)"}
    backend.fail_with = None
    assert (
        client.post(
            "/streams", json={"url": "rtsp://cam.example/x", "zones": {"line": [[0, 0], [1, 1]]}}
        ).status_code
        == 422
    )


def test_sink_counters_are_in_the_metrics(client: TestClient, backend: FakeBackend) -> None:
    backend.metrics.set_sink_counts({"ha": {"delivered": 5, "dead": 1, "retries": 2, "down": True}})
    backend.metrics.set_sink_counts(
        {"ha": {"delivered": 7, "dead": 1, "retries": 2, "down": False}}
    )
    text = client.get("/metrics").text
    assert 'mmlm_sink_delivered_total{sink="ha"} 7.0' in text
    assert 'mmlm_sink_dead_letters_total{sink="ha"} 1.0' in text
    assert 'mmlm_sink_down{sink="ha"} 0.0' in text
