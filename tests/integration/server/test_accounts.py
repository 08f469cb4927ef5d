"""Registration rules, sessions and tokens (protocol section 4)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from server_kit import PASSWORD, User, code, login, make_settings, register, running, snapshot

from emsg.server.clock import FakeClock

REG = "/_emsg/v1/accounts"


async def test_address_is_normalised(client: httpx.AsyncClient) -> None:
    resp = await client.post(REG, json={"address": "ALICE#A.Test", "password": PASSWORD})
    assert resp.status_code == 201
    assert resp.json()["address"] == "alice#a.test"
    again = await client.post(REG, json={"address": "alice#a.test", "password": PASSWORD})
    assert (again.status_code, code(again)) == (409, "address_taken")


@pytest.mark.parametrize(
    ("address", "status", "error"),
    [
        ("a#b#c", 400, "invalid_address"),
        ("#a.test", 400, "invalid_address"),
        ("u#", 400, "invalid_address"),
        ("", 400, "invalid_address"),
        ("uu#", 400, "invalid_address"),
        ("noatsign", 400, "invalid_address"),
        ("аlice#a.test", 400, "invalid_address"),  # a Cyrillic letter a
        ("al ice#a.test", 400, "invalid_address"),
        ("a..b#a.test", 400, "invalid_address"),
        ("bob#pаypal.com", 400, "invalid_address"),  # mixed-script domain
        ("admin#a.test", 400, "reserved_address"),
        ("Postmaster#a.test", 400, "reserved_address"),
        ("bob#b.test", 400, "wrong_domain"),
        ("bob#a.test:8080", 400, "invalid_address"),
    ],
)
async def test_registration_refusals(
    client: httpx.AsyncClient, tmp_path: Path, address: str, status: int, error: str
) -> None:
    before = snapshot(tmp_path)
    resp = await client.post(REG, json={"address": address, "password": PASSWORD})
    assert (resp.status_code, code(resp)) == (status, error)
    assert snapshot(tmp_path) == before


async def test_port_in_domain_only_when_allowed(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, domain="a.test:8080", allow_port_in_domain=True)
    async with running(settings) as client:
        resp = await client.post(REG, json={"address": "bob#a.test:8080", "password": PASSWORD})
        assert resp.status_code == 201, resp.text
        assert resp.json()["address"] == "bob#a.test:8080"


async def test_short_password_refused(client: httpx.AsyncClient, tmp_path: Path) -> None:
    before = snapshot(tmp_path)
    resp = await client.post(REG, json={"address": "bob#a.test", "password": "short"})
    assert (resp.status_code, code(resp)) == (400, "invalid_request")
    assert snapshot(tmp_path) == before


async def test_login_whoami_logout(client: httpx.AsyncClient) -> None:
    alice = await register(client, "alice")
    second = await login(client, alice)
    assert second.device_id != alice.device_id
    assert (await second.get("/whoami")).json()["device_id"] == second.device_id
    resp = await second.post("/logout")
    assert resp.json() == {"ok": True}
    resp = await second.get("/whoami")
    assert (resp.status_code, code(resp)) == (401, "unauthorized")
    assert (await alice.get("/whoami")).status_code == 200


async def test_wrong_password_and_unknown_address_look_alike(client: httpx.AsyncClient) -> None:
    await register(client, "alice")
    wrong = await client.post(
        "/_emsg/v1/login", json={"address": "alice#a.test", "password": "not the password"}
    )
    unknown = await client.post(
        "/_emsg/v1/login", json={"address": "nobody#a.test", "password": PASSWORD}
    )
    assert (wrong.status_code, code(wrong)) == (401, "unauthorized")
    assert (unknown.status_code, code(unknown)) == (401, "unauthorized")
    assert wrong.json()["error"]["message"] == unknown.json()["error"]["message"]


async def test_forged_and_missing_tokens(client: httpx.AsyncClient) -> None:
    for headers in ({}, {"Authorization": "Bearer forged"}, {"Authorization": "Basic eDp5"}):
        resp = await client.get("/_emsg/v1/whoami", headers=headers)
        assert (resp.status_code, code(resp)) == (401, "unauthorized")


async def test_expired_token(tmp_path: Path) -> None:
    clock = FakeClock()
    async with running(make_settings(tmp_path, token_ttl="2s"), clock) as client:
        alice = await register(client, "alice")
        assert (await alice.get("/whoami")).status_code == 200
        clock.advance(3)
        resp = await alice.get("/whoami")
        assert (resp.status_code, code(resp)) == (401, "token_expired")


async def test_a_device_whose_token_expired_logs_in_again_as_itself(tmp_path: Path) -> None:
    clock = FakeClock()
    async with running(make_settings(tmp_path, token_ttl="2s"), clock) as client:
        alice = await register(client, "alice")
        clock.advance(3)
        assert code(await alice.get("/whoami")) == "token_expired"
        body = {"address": alice.address, "password": PASSWORD, "device_id": alice.device_id}
        resp = await client.post("/_emsg/v1/login", json=body)
        assert resp.status_code == 200, resp.text
        session = resp.json()
        assert session["device_id"] == alice.device_id
        again = User(client, alice.address, alice.device_id, session["token"])
        assert (await again.get("/whoami")).json() == {
            "address": "alice#a.test",
            "device_id": alice.device_id,
        }
        devices = (await again.get("/devices")).json()["devices"]
        assert [d["device_id"] for d in devices] == [alice.device_id]  # no new device
        # The expired token is gone: it is not kept for ever.
        assert code(await alice.get("/whoami")) == "unauthorized"


async def test_logging_in_again_as_a_device_that_is_not_there_changes_nothing(
    tmp_path: Path,
) -> None:
    async with running(make_settings(tmp_path), FakeClock()) as client:
        alice = await register(client, "alice")
        bob = await register(client, "bob")
        gone = await login(client, alice)
        assert (await gone.post("/logout")).status_code == 200
        before = snapshot(tmp_path)
        cases = [
            ({"device_id": alice.device_id, "password": "not the password"}, 401, "unauthorized"),
            ({"device_id": bob.device_id}, 404, "unknown_device"),
            ({"device_id": "NoSuchDevice"}, 404, "unknown_device"),
            ({"device_id": gone.device_id}, 403, "forbidden"),
            ({"device_id": "not/a device"}, 400, "invalid_request"),
        ]
        for fields, status, error in cases:
            body = {"address": alice.address, "password": PASSWORD, **fields}
            resp = await client.post("/_emsg/v1/login", json=body)
            assert (resp.status_code, code(resp)) == (status, error), fields
        assert snapshot(tmp_path) == before


async def test_ip_rate_limit_on_register(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    settings.limits.ip_auth_burst = 2
    settings.limits.ip_auth_rate_per_minute = 1
    async with running(settings, FakeClock()) as client:
        await register(client)
        await register(client)
        resp = await client.post(REG, json={"address": "x#a.test", "password": PASSWORD})
        assert (resp.status_code, code(resp)) == (429, "rate_limited")
        assert int(resp.headers["Retry-After"]) >= 1


async def test_account_rate_limit(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    settings.limits.account_burst = 3
    settings.limits.account_rate = 1
    clock = FakeClock()
    async with running(settings, clock) as client:
        alice = await register(client)
        statuses = [(await alice.get("/whoami")).status_code for _ in range(5)]
        assert statuses == [200, 200, 200, 429, 429]
        clock.advance(1.0)
        assert (await alice.get("/whoami")).status_code == 200
