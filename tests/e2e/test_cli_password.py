"""The account password never leaves the client: what the homeserver gets when a
person registers, logs in and revokes a device is its login key (protocol.md §4).
Real CLI processes talk to a real homeserver process through a proxy that keeps
every request they sent."""

from __future__ import annotations

from pathlib import Path

import httpx
from test_cli_story import ALICE, PASSWORD, run, run_json

from emsg.crypto.keys import login_key
from emsg.testing import ServerProcess
from emsg.testing.proxy import FaultyProxy


def test_the_homeserver_never_sees_the_password(
    tmp_path: Path, server: ServerProcess, proxy: FaultyProxy
) -> None:
    first, second = tmp_path / "alice-1", tmp_path / "alice-2"
    run(first, "account", "register", ALICE, "--server", proxy.url)
    run(second, "account", "login", ALICE, "--server", proxy.url)
    pending = run_json(second, "account", "whoami")["device_id"]
    assert f"revoked device {pending}" in run(first, "device", "revoke", pending).stdout

    sent = b"\n".join(proxy.requests)
    for path in (b"POST /_emsg/v1/accounts ", b"POST /_emsg/v1/login ", b"/revoke "):
        assert path in sent
    assert PASSWORD.encode() not in sent
    assert login_key(PASSWORD, ALICE).encode() in sent

    # So the password the person chose is not what logs in at the server; its key is.
    url = f"{server.url}/_emsg/v1/login"
    plain = httpx.post(url, json={"address": ALICE, "password": PASSWORD})
    assert (plain.status_code, plain.json()["error"]["code"]) == (401, "unauthorized")
    derived = httpx.post(url, json={"address": ALICE, "password": login_key(PASSWORD, ALICE)})
    assert derived.status_code == 200, derived.text
