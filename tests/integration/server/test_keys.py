"""Key upload, claim and the signed device list (protocol section 5)."""

from __future__ import annotations

from pathlib import Path

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from server_kit import code, register, snapshot

from emsg.proto import signing


async def test_upload_and_claim_then_fallback(client: httpx.AsyncClient) -> None:
    bob = await register(client, "bob")
    alice = await register(client, "alice")
    body = {
        "device_keys": bob.device_keys(),
        "one_time_keys": [bob.otk("k1"), bob.otk("k2")],
        "fallback_key": bob.otk("fb", fallback=True),
    }
    resp = await bob.post("/keys/upload", body)
    assert resp.json() == {"one_time_keys": 2, "has_fallback_key": True}
    claimed = []
    for _ in range(3):
        resp = await alice.post("/keys/claim", {"address": "bob#a.test"})
        assert resp.status_code == 200, resp.text
        (device,) = resp.json()["devices"]
        assert device["device_keys"] == bob.device_keys()
        claimed.append(device["one_time_key"]["key_id"])
    assert claimed == ["k1", "k2", "fb"]
    resp = await bob.post("/keys/upload", {})
    assert resp.json() == {"one_time_keys": 0, "has_fallback_key": True}


async def test_claim_without_keys_and_unknown(client: httpx.AsyncClient) -> None:
    bob = await register(client, "bob")
    await bob.post("/keys/upload", {"device_keys": bob.device_keys()})
    resp = await bob.post("/keys/claim", {"address": "bob#a.test"})
    assert resp.json()["devices"][0]["one_time_key"] is None
    resp = await bob.post("/keys/claim", {"address": "nobody#a.test"})
    assert (resp.status_code, code(resp)) == (404, "unknown_recipient")
    resp = await bob.post("/keys/claim", {"address": "bob#a.test", "device_ids": ["NOPE"]})
    assert (resp.status_code, code(resp)) == (404, "unknown_device")
    resp = await bob.post("/keys/claim", {"address": "bob#elsewhere.test"})
    assert (resp.status_code, code(resp)) == (400, "remote_unsupported")


async def test_bad_signatures_store_nothing(client: httpx.AsyncClient, tmp_path: Path) -> None:
    bob = await register(client, "bob")
    other = Ed25519PrivateKey.generate()
    forged_dk = signing_swap(bob.device_keys(), bob.otk("x")["signature"])
    bad_otk = bob.otk("k2")
    bad_otk["key"] = bob.otk("k3")["key"]
    cases = [
        {"device_keys": forged_dk},
        {"device_keys": bob.device_keys(), "one_time_keys": [bob.otk("k1"), bad_otk]},
        {"device_keys": bob.device_keys(), "fallback_key": {**bob.otk("f", True), "fallback": True,
                                                            "signature": bad_otk["signature"]}},
    ]  # fmt: skip
    for body in cases:
        before = snapshot(tmp_path)
        resp = await bob.post("/keys/upload", body)
        assert (resp.status_code, code(resp)) == (400, "bad_signature"), body
        assert snapshot(tmp_path) == before
    del other


def signing_swap(obj: dict[str, object], signature: object) -> dict[str, object]:
    return {**obj, "signature": signature}


async def test_device_keys_cannot_change_or_name_others(client: httpx.AsyncClient) -> None:
    bob = await register(client, "bob")
    alice = await register(client, "alice")
    resp = await alice.post("/keys/upload", {"device_keys": bob.device_keys()})
    assert (resp.status_code, code(resp)) == (403, "forbidden")
    assert (await bob.post("/keys/upload", {"device_keys": bob.device_keys()})).status_code == 200
    bob.device_key = Ed25519PrivateKey.generate()
    resp = await bob.post("/keys/upload", {"device_keys": bob.device_keys()})
    assert (resp.status_code, code(resp)) == (403, "forbidden")


async def test_device_list(client: httpx.AsyncClient, tmp_path: Path) -> None:
    bob = await register(client, "bob")
    resp = await bob.get("/keys/device-list/bob%23a.test")
    assert (resp.status_code, code(resp)) == (404, "not_found")
    resp = await bob.get("/keys/device-list/nobody%23a.test")
    assert (resp.status_code, code(resp)) == (404, "unknown_recipient")
    assert (await bob.put("/keys/device-list", bob.device_list(1))).json() == {"ok": True}
    resp = await bob.get("/keys/device-list/bob%23a.test")
    assert resp.json() == bob.device_list(1)
    before = snapshot(tmp_path)
    resp = await bob.put("/keys/device-list", bob.device_list(1))
    assert (resp.status_code, code(resp)) == (400, "invalid_request")
    resp = await bob.put("/keys/device-list", bob.device_list(2, Ed25519PrivateKey.generate()))
    assert (resp.status_code, code(resp)) == (409, "identity_key_changed")
    forged = bob.device_list(2)
    forged["version"] = 3
    resp = await bob.put("/keys/device-list", forged)
    assert (resp.status_code, code(resp)) == (400, "bad_signature")
    alice = await register(client, "alice")
    resp = await alice.put("/keys/device-list", bob.device_list(5))
    assert (resp.status_code, code(resp)) == (403, "forbidden")
    assert snapshot(tmp_path)["accounts"] != before["accounts"]  # alice was added
    assert (await bob.put("/keys/device-list", bob.device_list(2))).status_code == 200
    assert signing.DEVICE_LIST
