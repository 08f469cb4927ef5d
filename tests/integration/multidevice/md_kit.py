"""Accounts with several devices against a real homeserver process, and a test that
plays the malicious homeserver by rewriting the server's own database (the server
is stopped first: its caches would otherwise hide the change)."""

from __future__ import annotations

import json
import secrets
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from emsg.client import Client
from emsg.crypto.keys import FAST_KDF_FOR_TESTS, login_key
from emsg.testing import ServerProcess

PASSWORD = "correct horse battery"


def login_key_of(address: object) -> str:
    """What these clients send their homeserver for PASSWORD (protocol.md §4)."""
    return login_key(PASSWORD, str(address))


class Homes:
    """Profile folders under one tmp path, one per device."""

    def __init__(self, root: Path, server: ServerProcess) -> None:
        self.root = root
        self.server = server
        self.suffix = secrets.token_hex(3)

    def address(self, local: str) -> str:
        return f"{local}{self.suffix}#{self.server.domain}"

    async def register(self, local: str, device: str = "1") -> Client:
        return await Client.register(
            self.root / f"{local}-{device}",
            self.address(local),
            PASSWORD,
            self.server.url,
            kdf=FAST_KDF_FOR_TESTS,
        )

    async def login(self, local: str, device: str) -> Client:
        return await Client.login(
            self.root / f"{local}-{device}",
            self.address(local),
            PASSWORD,
            self.server.url,
            kdf=FAST_KDF_FOR_TESTS,
        )

    async def reopen(self, client: Client, local: str, device: str) -> Client:
        await client.aclose()
        return await Client.open(self.root / f"{local}-{device}", PASSWORD)


async def befriend(a: Client, b: Client) -> None:
    await a.add_contact(str(b.address))
    await b.accept_contact(str(a.address))


@contextmanager
def server_db(server: ServerProcess) -> Iterator[sqlite3.Connection]:
    """The stopped server's database, for a test that plays a malicious operator."""
    server.stop()
    conn = sqlite3.connect(server.data / "emsg.sqlite3")
    try:
        with conn:
            yield conn
    finally:
        conn.close()
        server.start()


def device_list(conn: sqlite3.Connection, address: str) -> dict[str, Any]:
    row = conn.execute("SELECT device_list FROM accounts WHERE address = ?", (address,)).fetchone()
    return dict(json.loads(row[0]))


def put_device_list(conn: sqlite3.Connection, address: str, body: dict[str, Any]) -> None:
    conn.execute(
        "UPDATE accounts SET device_list = ?, identity_key = ?, device_list_version = ?"
        " WHERE address = ?",
        (json.dumps(body), body["identity_key"], body["version"], address),
    )


def _read_one(server: ServerProcess, query: str, arg: str) -> int:
    """One number from the server's database, read while it runs."""
    conn = sqlite3.connect(server.data / "emsg.sqlite3")
    try:
        (value,) = conn.execute(query, (arg,)).fetchone()
        return int(value)
    finally:
        conn.close()


def queued_for(server: ServerProcess, device_id: str) -> int:
    """Envelopes queued at the server for one device."""
    return _read_one(
        server, "SELECT COUNT(*) FROM events WHERE device_id = ? AND kind = 'envelope'", device_id
    )


def device_list_version(server: ServerProcess, address: str) -> int:
    """The version of the account's device list the server holds."""
    return _read_one(server, "SELECT device_list_version FROM accounts WHERE address = ?", address)
