"""Credentials the service must keep but never show: sealed (encrypted) for Redis.

Why: the stream registry in Redis is what a restarted service resumes from, so it must hold
each stream's URL, password included; but Redis is readable by more people and tools than
the service (dumps, monitors, replicas). The registry keeps the redacted URL in the clear and
the full one sealed with Fernet (AES-128-CBC + HMAC-SHA256, from ``cryptography``). The key
comes from the API token when one is set (every ingress of a deployment shares it), else
from a key file created once in the service's data folder, readable by its owner only.
"""

from __future__ import annotations

import base64
import os
import secrets
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from mmlm_stream.util.errors import MmlmError

KEY_FILE = ".registry.key"
_INFO = b"mmlm-stream registry sealing v1"


class Unsealable(MmlmError):
    """A sealed value that this key cannot open (another deployment's, or a rotated key)."""


class Sealer:
    """Seals and opens short secrets with one key."""

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("a sealing key is 32 bytes")
        self._fernet = Fernet(base64.urlsafe_b64encode(key))

    @classmethod
    def from_secret(cls, secret: str) -> Sealer:
        """A key derived (HKDF-SHA256) from a secret such as the API token."""
        hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO)
        return cls(hkdf.derive(secret.encode("utf-8")))

    @classmethod
    def from_folder(cls, folder: Path) -> Sealer:
        """The key in ``folder``'s key file, created (mode 0600) when absent."""
        path = folder / KEY_FILE
        folder.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return cls(base64.urlsafe_b64decode(path.read_bytes().strip()))
        with os.fdopen(fd, "wb") as out:
            key = secrets.token_bytes(32)
            out.write(base64.urlsafe_b64encode(key) + b"\n")
        return cls(key)

    def seal(self, text: str) -> str:
        return self._fernet.encrypt(text.encode("utf-8")).decode("ascii")

    def open(self, sealed: str) -> str:
        try:
            return self._fernet.decrypt(sealed.encode("ascii")).decode("utf-8")
        except (InvalidToken, ValueError, UnicodeError):
            raise Unsealable(
                "a sealed stream URL cannot be opened with this service's key "
                "(was the API token or the registry key file changed?)"
            ) from None
