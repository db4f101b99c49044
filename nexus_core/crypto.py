"""Encryption at rest for credentials: an AES-256-GCM key ring with rotation.

* ``NEXUS_ENCRYPTION_KEYS`` is a comma-separated list of base64url keys (32 bytes each). The
  first key encrypts; every key decrypts. Rotation: prepend a new key, run ``nexus keys rotate``
  (re-encrypts everything under the first key), then drop the old key.
* Every ciphertext is bound to its tenant and installation through AES-GCM associated data, so a
  ciphertext copied into another tenant's row does not decrypt.
* No key configured: in development a key file (``NEXUS_KEY_FILE``) is generated with 0600
  permissions and a warning is logged; with ``NEXUS_ENV=production`` this is a ConfigError.

Ciphertext format (text, safe for any column type): ``nx1.<key id>.<base64url(nonce|ct|tag)>``.
The key id is a short hash of the key, never the key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import secrets
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from loguru import logger

from nexus_core.errors import ConfigError, NexusError

if TYPE_CHECKING:
    from nexus_core.config import Settings

KEYS_ENV = "NEXUS_ENCRYPTION_KEYS"
_PREFIX = "nx1"
_NONCE_BYTES = 12
_GENERATE_HINT = (
    "generate one with `nexus keys generate` and set NEXUS_ENCRYPTION_KEYS=<key> "
    "(comma-separate several keys during rotation: new first)"
)


class DecryptionError(NexusError):
    """A ciphertext did not decrypt: wrong key ring, tampered data, or bound to another
    tenant/installation."""


def generate_key() -> str:
    """A new random AES-256 key, base64url-encoded (the format NEXUS_ENCRYPTION_KEYS takes)."""
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode("ascii").rstrip("=")


def _decode_key(text: str, where: str) -> bytes:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32:
        raise ConfigError(
            f"{where} must hold base64url-encoded 32-byte keys; one entry is not "
            f"(length {len(text)} characters)",
            hint=_GENERATE_HINT,
        )
    return raw


def key_id(key: bytes) -> str:
    return hashlib.sha256(b"nexus-key-id:" + key).hexdigest()[:12]


def associated_data(tenant_id: str, install_id: str, purpose: str = "credentials") -> bytes:
    # JSON keeps the binding unambiguous ("a:b"+"c" never equals "a"+"b:c").
    return json.dumps(["nexus", purpose, tenant_id, install_id], separators=(",", ":")).encode()


class KeyRing:
    """Ordered AES-256-GCM keys: the first encrypts, all decrypt."""

    def __init__(self, keys: Sequence[bytes], *, source: str = KEYS_ENV) -> None:
        if not keys:
            raise ConfigError(f"{source} holds no key", hint=_GENERATE_HINT)
        self._keys = {key_id(k): k for k in keys}
        self.primary_id = key_id(keys[0])
        self.source = source

    @classmethod
    def from_string(cls, value: str, *, source: str = KEYS_ENV) -> KeyRing:
        parts = [p.strip() for p in value.split(",") if p.strip()]
        return cls([_decode_key(p, source) for p in parts], source=source)

    @property
    def key_ids(self) -> list[str]:
        return list(self._keys)

    def encrypt(self, plaintext: bytes, aad: bytes) -> str:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        nonce = os.urandom(_NONCE_BYTES)
        sealed = AESGCM(self._keys[self.primary_id]).encrypt(nonce, plaintext, aad)
        body = base64.urlsafe_b64encode(nonce + sealed).decode("ascii")
        return f"{_PREFIX}.{self.primary_id}.{body}"

    @staticmethod
    def key_id_of(token: str) -> str | None:
        parts = token.split(".", 2)
        return parts[1] if len(parts) == 3 and parts[0] == _PREFIX else None

    def decrypt(self, token: str, aad: bytes) -> bytes:
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        kid = self.key_id_of(token)
        if kid is None:
            raise DecryptionError("stored ciphertext is not in the nx1 format (corrupted row?)")
        key = self._keys.get(kid)
        if key is None:
            raise DecryptionError(
                f"ciphertext was encrypted under key id {kid}, which is not in {self.source} "
                f"(configured key ids: {', '.join(self._keys)})",
                hint="add the old key back (after the new one) and run `nexus keys rotate`",
            )
        try:
            blob = base64.urlsafe_b64decode(token.split(".", 2)[2])
            return AESGCM(key).decrypt(blob[:_NONCE_BYTES], blob[_NONCE_BYTES:], aad)
        except (InvalidTag, binascii.Error, ValueError):
            raise DecryptionError(
                "ciphertext failed authentication: it was tampered with or belongs to another "
                "tenant/installation"
            ) from None

    def needs_rotation(self, token: str) -> bool:
        return self.key_id_of(token) != self.primary_id


def _read_or_create_key_file(path: Path) -> str:
    if path.exists():
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            logger.warning(
                "encryption key file {} is readable by other users (mode {:o}); "
                "run `chmod 600 {}`", path, mode, path,
            )
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    key = generate_key()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process created it first: use theirs
        return path.read_text().strip()
    with os.fdopen(fd, "w") as fh:
        fh.write(key + "\n")
    logger.warning(
        "no NEXUS_ENCRYPTION_KEYS set: generated a development key in {} (mode 600). "
        "Back it up — credentials encrypted with it are unreadable without it. "
        "Production refuses to start without NEXUS_ENCRYPTION_KEYS.",
        path,
    )
    return key


def keyring_from_settings(settings: Settings | None = None) -> KeyRing:
    """The key ring from NEXUS_ENCRYPTION_KEYS, or the development key file."""
    if settings is None:
        from nexus_core.config import get_settings

        settings = get_settings()
    configured = settings.encryption_keys
    if configured and configured.strip():
        return KeyRing.from_string(configured)
    if settings.env == "production":
        raise ConfigError(
            "NEXUS_ENCRYPTION_KEYS is not set and NEXUS_ENV=production: refusing to start "
            "without an encryption key for credentials",
            hint=_GENERATE_HINT,
        )
    path = Path(settings.key_file).expanduser()
    return KeyRing.from_string(_read_or_create_key_file(path), source=str(path))
