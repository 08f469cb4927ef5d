"""Strict input: every malformed body gets its error code and changes nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from server_kit import PASSWORD, code, register, snapshot

JSON = {"Content-Type": "application/json"}
GOOD = b'{"address": "carol#a.test", "password": "%s"}' % PASSWORD.encode()

BAD_BODIES = [
    (b'{"address": "carol#a.test", "password": ', "bad_json"),  # truncated
    (b"{address: 1}", "bad_json"),  # malformed
    (b'{"address": "carol#a.test", "address": "x#a.test", "password": "12345678"}', "bad_json"),
    (b'{"address": "carol#a.test", "password": NaN}', "bad_json"),
    (b'{"address": "carol#a.test", "password": Infinity}', "bad_json"),
    (b'{"address": "carol#a.test", "password": -Infinity}', "bad_json"),
    (b'{"address": "carol#a.test", "password": "\\ud800xxxxxxxx"}', "bad_json"),
    (b'{"address": "carol#a.test", "password": 1000000000000000000000000000000}', "bad_json"),
    (b'{"address": "carol#a.test", "password": 1e400}', "bad_json"),
    (b"[" * 10000 + b"]" * 10000, "bad_json"),
    (b'{"address": "carol#a.test", "password": "\xff\xfe"}', "bad_json"),  # not UTF-8
    (b'{"address": "carol#a.test", "password": "12345678", "admin": true}', "invalid_request"),
    (b'{"address": "carol#a.test"}', "invalid_request"),
    (b"[]", "invalid_request"),
    (b'"just a string"', "invalid_request"),
]


@pytest.mark.parametrize(("raw", "error"), BAD_BODIES)
async def test_bad_bodies(
    client: httpx.AsyncClient, tmp_path: Path, raw: bytes, error: str
) -> None:
    await register(client, "alice")
    before = snapshot(tmp_path)
    resp = await client.post("/_emsg/v1/accounts", content=raw, headers=JSON)
    assert (resp.status_code, code(resp)) == (400, error)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize(("raw", "error"), BAD_BODIES[:11])
async def test_bad_send_bodies(
    client: httpx.AsyncClient, tmp_path: Path, raw: bytes, error: str
) -> None:
    alice = await register(client, "alice")
    before = snapshot(tmp_path)
    resp = await client.put("/_emsg/v1/send/t1", content=raw, headers={**JSON, **alice.auth})
    assert (resp.status_code, code(resp)) == (400, error)
    assert snapshot(tmp_path) == before


async def test_the_good_body_passes(client: httpx.AsyncClient) -> None:
    resp = await client.post("/_emsg/v1/accounts", content=GOOD, headers=JSON)
    assert resp.status_code == 201


@pytest.mark.parametrize("ctype", ["text/plain", "application/x-www-form-urlencoded", None])
async def test_wrong_content_type(
    client: httpx.AsyncClient, tmp_path: Path, ctype: str | None
) -> None:
    headers = {"Content-Type": ctype} if ctype else {}
    before = snapshot(tmp_path)
    resp = await client.post("/_emsg/v1/accounts", content=GOOD, headers=headers)
    assert (resp.status_code, code(resp)) == (415, "unsupported_media_type")
    assert snapshot(tmp_path) == before


async def test_json_with_charset_is_fine(client: httpx.AsyncClient) -> None:
    headers = {"Content-Type": "application/json; charset=utf-8"}
    resp = await client.post("/_emsg/v1/accounts", content=GOOD, headers=headers)
    assert resp.status_code == 201


async def test_oversize_by_content_length(client: httpx.AsyncClient, tmp_path: Path) -> None:
    before = snapshot(tmp_path)
    raw = b'{"address": "' + b"a" * (1024 * 1024) + b'"}'
    resp = await client.post("/_emsg/v1/accounts", content=raw, headers=JSON)
    assert (resp.status_code, code(resp)) == (413, "payload_too_large")
    assert snapshot(tmp_path) == before


async def test_oversize_chunked_is_cut_off_early(client: httpx.AsyncClient, tmp_path: Path) -> None:
    sent = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal sent
        yield b'{"address": "'
        for _ in range(10 * 16):  # 10 MiB in 64 KiB chunks, if it were all read
            sent += 64 * 1024
            yield b"a" * (64 * 1024)

    before = snapshot(tmp_path)
    resp = await client.post("/_emsg/v1/accounts", content=body(), headers=JSON)
    assert (resp.status_code, code(resp)) == (413, "payload_too_large")
    assert sent <= 1024 * 1024 + 64 * 1024
    assert snapshot(tmp_path) == before


async def test_unknown_path_and_method(client: httpx.AsyncClient) -> None:
    resp = await client.get("/_emsg/v1/nope")
    assert (resp.status_code, code(resp)) == (404, "not_found")
    resp = await client.delete("/_emsg/v1/whoami")
    assert (resp.status_code, code(resp)) == (405, "method_not_allowed")
    assert resp.headers["allow"] == "GET"  # RFC 9110: a 405 names what the path allows


async def test_bad_query(client: httpx.AsyncClient) -> None:
    alice = await register(client, "alice")
    for params in ({"since": "x"}, {"limit": 0}, {"timeout": 30001}, {"since": -1}):
        resp = await alice.get("/sync", params=params)
        assert (resp.status_code, code(resp)) == (400, "invalid_request"), params
