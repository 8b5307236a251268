"""Secrets kept at rest sealed: destination credentials, webhook signing secrets.

Sealed with Fernet (AES-128-CBC + HMAC-SHA256, `cryptography`) under a key derived from the
`secrets_key` setting, or from `HOME/secrets.key` (random, mode 0600, made on first use) when
the setting is empty. The catalog holds only sealed text: a copy of the database alone does
not give the credentials away.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from rawexport.errors import PermanentError

KEY_FILE = "secrets.key"


class SecretsKeyError(PermanentError):
    """A sealed secret does not open with this node's key (another `secrets_key`)."""


class SecretBox:
    """Seals and opens text under one key."""

    def __init__(self, key: str) -> None:
        digest = hashlib.sha256(b"rawexport secrets v1\0" + key.encode()).digest()
        self._fernet = Fernet(base64.urlsafe_b64encode(digest))

    def seal(self, text: str) -> str:
        return self._fernet.encrypt(text.encode()).decode("ascii")

    def open(self, sealed: str) -> str:
        try:
            return self._fernet.decrypt(sealed.encode("ascii")).decode()
        except (InvalidToken, ValueError):
            raise SecretsKeyError(
                "a stored secret does not open with this node's secrets key: set "
                "secrets_key (RAWEXPORT_SECRETS_KEY) to the key it was sealed with"
            ) from None


def key_file_key(home: Path) -> str:
    """The key in HOME/secrets.key, made (random, mode 0600) if there is none."""
    path = Path(home) / KEY_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_urlsafe(32) + "\n")
        f.flush()
        os.fsync(f.fileno())
    return path.read_text().strip()


def open_box(secrets_key: str, home: Path) -> SecretBox:
    """The node's box: secrets_key when set, else the key file in home."""
    return SecretBox(secrets_key or key_file_key(home))
