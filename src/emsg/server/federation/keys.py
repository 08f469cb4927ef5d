"""This server's Ed25519 signing keys: kept in the data folder, rotated, published.

The current key signs every outgoing federation request. A rotated key moves to
`old_keys` with the time it stopped signing, so peers can still verify what it
signed before. The file is written atomically and readable by the owner only.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from emsg.proto import b64
from emsg.proto.federation import OldServerKey, ServerKey, ServerKeys


@dataclass(frozen=True, slots=True)
class OwnKey:
    key_id: str
    seed: bytes
    valid_from: int
    valid_until: int
    expired_at: int | None = None

    @property
    def private(self) -> Ed25519PrivateKey:
        return Ed25519PrivateKey.from_private_bytes(self.seed)

    @property
    def public_b64(self) -> str:
        raw = self.private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return b64.encode(raw)

    def to_json(self) -> dict[str, Any]:
        return {
            "key_id": self.key_id,
            "seed": b64.encode(self.seed),
            "valid_from": self.valid_from,
            "valid_until": self.valid_until,
            "expired_at": self.expired_at,
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> OwnKey:
        return cls(
            obj["key_id"], b64.decode(obj["seed"]), int(obj["valid_from"]),
            int(obj["valid_until"]), obj.get("expired_at"),
        )  # fmt: skip


def new_key(now: int, validity_ms: int) -> OwnKey:
    return OwnKey(
        key_id=f"ed25519:{secrets.token_urlsafe(6)}",
        seed=secrets.token_bytes(32),
        valid_from=now,
        valid_until=now + validity_ms,
    )


class SigningKeyring:
    """The keys in `<data>/federation/signing_keys.json`."""

    def __init__(self, path: Path, keys: list[OwnKey], validity_ms: int) -> None:
        self._path = path
        self._keys = keys
        self._validity_ms = validity_ms

    @staticmethod
    def path_in(data: Path) -> Path:
        return data / "federation" / "signing_keys.json"

    @classmethod
    def load(cls, data: Path, now: int, validity_ms: int) -> SigningKeyring:
        path = cls.path_in(data)
        keys: list[OwnKey] = []
        if path.exists():
            keys = [OwnKey.from_json(k) for k in json.loads(path.read_text())["keys"]]
        ring = cls(path, keys, validity_ms)
        if not any(k.expired_at is None for k in keys):
            ring._keys.append(new_key(now, validity_ms))
            ring._save()
        return ring

    @property
    def path(self) -> Path:
        return self._path

    def _save(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self._path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump({"keys": [k.to_json() for k in self._keys]}, fh, indent=1)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self._path)

    def current(self, now: int) -> OwnKey:
        """The signing key; its published validity is extended well before it lapses."""
        index = next(i for i, k in enumerate(self._keys) if k.expired_at is None)
        key = self._keys[index]
        if key.valid_until - now < self._validity_ms // 2:
            key = replace(key, valid_until=now + self._validity_ms)
            self._keys[index] = key
            self._save()
        return key

    def rotate(self, now: int) -> OwnKey:
        """Retire the current key (kept for verification) and start a new one."""
        self._keys = [
            replace(k, expired_at=now, valid_until=min(k.valid_until, now))
            if k.expired_at is None
            else k
            for k in self._keys
        ]
        fresh = new_key(now, self._validity_ms)
        self._keys.append(fresh)
        self._save()
        return fresh

    def document(self, domain: str, now: int) -> ServerKeys:
        self.current(now)
        live = [k for k in self._keys if k.expired_at is None]
        old = [k for k in self._keys if k.expired_at is not None]
        return ServerKeys(
            server=domain,
            keys=[
                ServerKey(key_id=k.key_id, key=k.public_b64, valid_from=k.valid_from,
                          valid_until=k.valid_until)
                for k in live
            ],
            old_keys=[
                OldServerKey(key_id=k.key_id, key=k.public_b64, expired_at=k.expired_at or 0)
                for k in old[-64:]
            ],
        )  # fmt: skip
