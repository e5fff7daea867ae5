"""Auth fails closed: ``serve`` refuses an open API beyond loopback, the API answers only its
own Host names (no DNS rebinding), and the local Ray the CLI starts demands its token."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from mmlm_stream.cli import main as cli
from mmlm_stream.cli import ray_driver as driver
from mmlm_stream.config.api import ApiConfig, is_loopback
from mmlm_stream.deployments.app import app_config
from mmlm_stream.security.host_header import host_name
from mmlm_stream.service.api import create_app
from mmlm_stream.util.errors import ConfigError

TOKEN = "t0ken-for-tests"


class _NoStreams:
    """Just enough backend for GET /streams and /healthz."""

    def list_streams(self) -> list[Any]:
        return []

    def healthy(self) -> bool:
        return True


class _RayStarted(Exception):
    """Raised instead of starting Ray: the command got past its checks."""


@pytest.fixture
def serve_stub(monkeypatch: pytest.MonkeyPatch) -> None:
    """``serve`` with no Redis and no Ray: reaching ``start_ray`` raises ``_RayStarted``."""

    def start_ray(address: str | None) -> None:
        raise _RayStarted

    for name in list(os.environ):
        if name.startswith("MMLM_"):
            monkeypatch.delenv(name)
    monkeypatch.setattr(cli, "_redis_url", lambda config, embedded: None)
    monkeypatch.setattr(driver, "start_ray", start_ray)


# -- serve refuses an open API beyond loopback ----------------------------------------------------


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.7", "cams.example"])
def test_serve_beyond_loopback_without_a_token_exits_2_before_ray(
    serve_stub: None, capsys: pytest.CaptureFixture[str], host: str
) -> None:
    assert cli.main(["serve", "--host", host]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"refusing to serve the API on {host} without a token" in err
    assert "api.allow_anonymous" in err


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "localhost", "::1"])
def test_serve_on_loopback_needs_no_token(serve_stub: None, host: str) -> None:
    with pytest.raises(_RayStarted):
        cli.main(["serve", "--host", host])


def test_serve_beyond_loopback_runs_with_a_token_or_allow_anonymous(
    serve_stub: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("MMLM_API__API_TOKEN", TOKEN)
    with pytest.raises(_RayStarted):
        cli.main(["serve", "--host", "0.0.0.0"])
    monkeypatch.delenv("MMLM_API__API_TOKEN")
    config = tmp_path / "open.yaml"
    config.write_text("api:\n  allow_anonymous: true\n")
    with pytest.raises(_RayStarted):
        cli.main(["--config", str(config), "serve", "--host", "0.0.0.0"])


def test_serve_checks_the_token_file_before_ray(
    serve_stub: None, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("  \n")
    config = tmp_path / "c.yaml"
    config.write_text(f"api:\n  api_token_file: {token_file}\n")
    assert cli.main(["--config", str(config), "serve", "--host", "0.0.0.0"]) == cli.EXIT_USAGE
    assert "the API token file is empty" in capsys.readouterr().err


def test_an_empty_environment_token_stops_serve_even_on_loopback(
    serve_stub: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MMLM_API__API_TOKEN", "")
    assert cli.main(["serve"]) == cli.EXIT_USAGE
    assert "MMLM_API__API_TOKEN: empty, blank or null" in capsys.readouterr().err


def test_the_service_app_is_checked_like_serve() -> None:
    """``build_app``'s config: the same refusal where the CLI's check does not run (a
    cluster, ``serve run``), and the Host allow-list resolved for the ingress replicas."""
    open_api = {"config": {}, "service": True}
    with pytest.raises(ConfigError, match="beyond loopback without a token"):
        app_config(open_api)
    with pytest.raises(ConfigError, match=r"on 0\.0\.0\.0 without a token"):
        app_config({**open_api, "http_host": "0.0.0.0"})
    local = app_config({**open_api, "http_host": "127.0.0.1"})
    assert local.api.allowed_hosts_header == ["127.0.0.1", "localhost", "::1"]
    anonymous = app_config({"config": {"api": {"allow_anonymous": True}}, "service": True})
    assert anonymous.api.allowed_hosts_header == ["*"]
    assert app_config({"config": {}}).api.allowed_hosts_header == []  # no ingress, no check


def test_loopback_means_addresses_not_names() -> None:
    assert all(map(is_loopback, ["127.0.0.1", "127.9.9.9", "::1", "[::1]", "localhost"]))
    assert not any(map(is_loopback, ["0.0.0.0", "::", "10.0.0.1", "localhost.example", "me"]))


# -- the Host header ------------------------------------------------------------------------------


def _client(bind_host: str | None = "127.0.0.1", **config: Any) -> TestClient:
    app = create_app(_NoStreams(), ApiConfig(**config), None, bind_host=bind_host)
    return TestClient(app, raise_server_exceptions=False)


@pytest.mark.parametrize(
    "host", ["127.0.0.1:8000", "localhost:8000", "localhost", "[::1]:8000", "LOCALHOST."]
)
def test_a_loopback_service_answers_its_own_names(host: str) -> None:
    with _client() as client:
        assert client.get("/healthz", headers={"Host": host}).status_code == 200


@pytest.mark.parametrize(
    "host", ["evil.example", "evil.example:8000", "127.0.0.1.evil.example", "[::1", "a:b:c"]
)
def test_a_rebinding_host_gets_400_with_one_line(host: str) -> None:
    with _client() as client:
        answer = client.get("/streams", headers={"Host": host})
    assert answer.status_code == 400
    assert answer.json()["detail"].endswith("is not allowed (api.allowed_hosts_header)")


def test_the_bind_address_and_listed_hosts_are_allowed() -> None:
    with _client("192.0.2.7", api_token=TOKEN) as client:
        assert client.get("/healthz", headers={"Host": "192.0.2.7:8000"}).status_code == 200
        assert client.get("/healthz", headers={"Host": "testserver"}).status_code == 400
    listed = ["*.cams.example", "api.example"]
    with _client(allowed_hosts_header=listed) as client:
        for host, status in [
            ("a.cams.example", 200),
            ("api.example:443", 200),
            ("cams.example", 400),
            ("127.0.0.1", 400),  # a list replaces the default
        ]:
            assert client.get("/healthz", headers={"Host": host}).status_code == status, host


def test_all_interfaces_or_an_unknown_address_answer_any_host() -> None:
    for bind_host in ("0.0.0.0", "::", None):
        with _client(bind_host, api_token=TOKEN) as client:
            assert client.get("/healthz", headers={"Host": "cam.example"}).status_code == 200


def test_host_patterns_are_checked() -> None:
    assert ApiConfig(allowed_hosts_header=[" [::1] ", "A.Example."]).allowed_hosts_header == [
        "::1",
        "a.example",
    ]
    for bad in ["", "http://a.example", "a.example:8000", "a b"]:
        with pytest.raises(ValueError):
            ApiConfig(allowed_hosts_header=[bad])


def test_host_header_parsing() -> None:
    assert host_name("Example.COM:8080") == "example.com"
    assert host_name("[::1]:8000") == "::1"
    assert host_name("[::1]") == "::1"
    assert host_name("") is None
    assert host_name("a.example:http") is None
    assert host_name("[::1]x") is None


# -- the local Ray demands its token --------------------------------------------------------------

_GCS_PROBE = r"""
import sys, grpc
from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc
port, token = sys.argv[1], sys.stdin.read().strip()
with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
    stub = gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel)
    for label, given in (("none", None), ("wrong", "0" * 64), ("right", token)):
        metadata = () if given is None else (("authorization", f"Bearer {given}"),)
        try:
            stub.GetAllNodeInfo(gcs_service_pb2.GetAllNodeInfoRequest(), metadata=metadata,
                                timeout=20)
            print(label, "OK")
        except grpc.RpcError as exc:
            print(label, exc.code().name)
"""


@pytest.mark.ray
@pytest.mark.slow
def test_the_local_ray_refuses_callers_without_its_token(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Another process on this machine reaching the GCS port without the token, or with a
    wrong one, is refused (UNAUTHENTICATED), while this run's tasks work; the right token
    (handed over on stdin here) is let in, so the refusals are the token's doing."""
    import ray

    for name in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # where Ray would persist a token of its own
    driver.start_ray(None)
    try:
        token = os.environ["RAY_AUTH_TOKEN"]
        assert ray.get(ray.remote(lambda: os.environ.get("RAY_AUTH_MODE")).remote()) == "token"
        port = ray.get_runtime_context().gcs_address.rsplit(":", 1)[1]
        other = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
        probe = subprocess.run(
            [sys.executable, "-c", _GCS_PROBE, port],
            input=token,
            capture_output=True,
            text=True,
            env=other,
            timeout=120,
        )
    finally:
        driver.shutdown()
    assert probe.returncode == 0, probe.stderr[-2000:]
    assert probe.stdout.split("\n")[:3] == [
        "none UNAUTHENTICATED",
        "wrong UNAUTHENTICATED",
        "right OK",
    ]
    assert not (tmp_path / ".ray" / "auth_token").exists()
