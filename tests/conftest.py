"""Shared fixtures. The whole suite runs offline: hub access is off and any socket
connection to a non-loopback address fails, so nothing can quietly download weights."""

from __future__ import annotations

import ipaddress
import os
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from mmlm_stream.config.models import ModelsConfig

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
# Snapshots of services the tests start go to a folder of this run, not the user's data dir.
os.environ.setdefault("XDG_DATA_HOME", tempfile.mkdtemp(prefix="mmlm-test-data-"))


class NetworkBlocked(OSError):
    """Raised for any connection that would leave this machine."""


def _loopback(address: object) -> bool:
    if isinstance(address, tuple) and address:
        host = str(address[0])
    elif isinstance(address, str | bytes):
        return True  # AF_UNIX path
    else:
        return False
    if host in {"localhost", ""}:
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False  # a host name other than localhost would need DNS: refuse


_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


def _guarded_connect(self: socket.socket, address: object) -> None:
    if self.family in (socket.AF_INET, socket.AF_INET6) and not _loopback(address):
        raise NetworkBlocked(f"tests run offline: connection to {address!r} refused")
    return _real_connect(self, address)


def _guarded_connect_ex(self: socket.socket, address: object) -> int:
    if self.family in (socket.AF_INET, socket.AF_INET6) and not _loopback(address):
        raise NetworkBlocked(f"tests run offline: connection to {address!r} refused")
    return _real_connect_ex(self, address)


@pytest.fixture(autouse=True, scope="session")
def offline() -> Iterator[None]:
    socket.socket.connect = _guarded_connect  # type: ignore[method-assign]
    socket.socket.connect_ex = _guarded_connect_ex  # type: ignore[method-assign]
    yield
    socket.socket.connect = _real_connect  # type: ignore[method-assign]
    socket.socket.connect_ex = _real_connect_ex  # type: ignore[method-assign]


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache dir per test session for assembled weights and tiny models."""
    return tmp_path_factory.mktemp("model-cache")


@pytest.fixture(scope="session")
def default_models(model_cache: Path) -> ModelsConfig:
    return ModelsConfig(set="default", device="cpu", cache_dir=model_cache)


@pytest.fixture(scope="session")
def tiny_models(model_cache: Path) -> ModelsConfig:
    return ModelsConfig(set="tiny", device="cpu", cache_dir=model_cache)
