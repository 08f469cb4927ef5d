"""Helpers for the server tests: signed keys made with `cryptography`, clients, sessions."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from emsg.proto import b64, signing
from emsg.server.app import create_app
from emsg.server.clock import Clock
from emsg.server.settings import Limits, Settings

DOMAIN = "a.test"
PASSWORD = "correct horse battery"
_counter = itertools.count(1)


def make_settings(data: Path, **overrides: Any) -> Settings:
    limits = Limits(
        account_rate=100_000, account_burst=100_000,
        ip_auth_rate_per_minute=100_000, ip_auth_burst=100_000,
    )  # fmt: skip
    # One server on its own: addresses elsewhere are `remote_unsupported`, and no
    # test reaches out to discover another domain (tests/integration/federation do).
    values: dict[str, Any] = {
        "domain": DOMAIN, "data": data, "limits": limits, "federation": {"enabled": False},
    }  # fmt: skip
    values.update(overrides)
    return Settings(**values)


@asynccontextmanager
async def running(
    settings: Settings, clock: Clock | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, clock=clock)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            client.app = app  # type: ignore[attr-defined]
            yield client


def pub(key: Ed25519PrivateKey | X25519PrivateKey) -> str:
    return b64.encode(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))


def sign(purpose: str, obj: dict[str, Any], key: Ed25519PrivateKey) -> dict[str, Any]:
    return {**obj, "signature": b64.encode(key.sign(signing.signable(purpose, obj)))}


@dataclass
class User:
    client: httpx.AsyncClient
    address: str
    device_id: str
    token: str
    device_key: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)
    identity: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)
    curve: X25519PrivateKey = field(default_factory=X25519PrivateKey.generate)

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def get(self, path: str, **kw: Any) -> httpx.Response:
        return await self.client.get(f"/_emsg/v1{path}", headers=self.auth, **kw)

    async def post(self, path: str, body: Any = None, **kw: Any) -> httpx.Response:
        return await self.client.post(f"/_emsg/v1{path}", json=body, headers=self.auth, **kw)

    async def put(self, path: str, body: Any = None, **kw: Any) -> httpx.Response:
        return await self.client.put(f"/_emsg/v1{path}", json=body, headers=self.auth, **kw)

    async def delete(self, path: str) -> httpx.Response:
        return await self.client.delete(f"/_emsg/v1{path}", headers=self.auth)

    def device_keys(self) -> dict[str, Any]:
        obj = {
            "address": self.address,
            "device_id": self.device_id,
            "curve25519": pub(self.curve),
            "ed25519": pub(self.device_key),
        }
        return sign(signing.DEVICE_KEYS, obj, self.device_key)

    def otk(self, key_id: str, fallback: bool = False) -> dict[str, Any]:
        obj = {"key_id": key_id, "key": pub(X25519PrivateKey.generate()), "fallback": fallback}
        return sign(signing.ONE_TIME_KEY, obj, self.device_key)

    def device_list(
        self, version: int, identity: Ed25519PrivateKey | None = None
    ) -> dict[str, Any]:
        ident = identity or self.identity
        obj = {
            "address": self.address,
            "identity_key": pub(ident),
            "version": version,
            "devices": [
                {
                    "device_id": self.device_id,
                    "curve25519": pub(self.curve),
                    "ed25519": pub(self.device_key),
                }
            ],
        }
        return sign(signing.DEVICE_LIST, obj, ident)

    async def send(self, txn: str, *targets: User, body: str = "aGVsbG8") -> httpx.Response:
        envelopes = [
            {
                "to": t.address,
                "device_id": t.device_id,
                "ciphertext": {"type": 1, "body": body, "sender_key": pub(self.curve)},
            }
            for t in targets
        ]
        return await self.put(f"/send/{txn}", {"envelopes": envelopes})

    async def sync(self, since: int = 0, wait_ms: int = 0) -> dict[str, Any]:
        resp = await self.get("/sync", params={"since": since, "timeout": wait_ms})
        assert resp.status_code == 200, resp.text
        body: dict[str, Any] = resp.json()
        return body


async def register(client: httpx.AsyncClient, name: str | None = None) -> User:
    local = name or f"user{next(_counter)}"
    resp = await client.post(
        "/_emsg/v1/accounts", json={"address": f"{local}#{DOMAIN}", "password": PASSWORD}
    )
    assert resp.status_code == 201, resp.text
    s = resp.json()
    return User(client, s["address"], s["device_id"], s["token"])


async def login(client: httpx.AsyncClient, user: User) -> User:
    resp = await client.post(
        "/_emsg/v1/login", json={"address": user.address, "password": PASSWORD}
    )
    assert resp.status_code == 200, resp.text
    s = resp.json()
    return User(client, s["address"], s["device_id"], s["token"], identity=user.identity)


def code(resp: httpx.Response) -> str:
    body = resp.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message"}, body
    return str(body["error"]["code"])


def snapshot(data: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table: compare before and after to prove nothing changed."""
    import sqlite3

    conn = sqlite3.connect(data / "emsg.sqlite3")
    try:
        names = [
            r[0]
            for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
            if r[0] != "alembic_version"
        ]
        return {n: sorted(conn.execute(f"SELECT * FROM {n}").fetchall(), key=repr) for n in names}
    finally:
        conn.close()
