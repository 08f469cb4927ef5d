"""Forged, replayed, misaddressed and impersonating federation requests are refused
with 401 or 403 and change nothing; a domain resolving to loopback is never contacted."""

from __future__ import annotations

import asyncio
import secrets
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from tests.integration.federation.fed_kit import Home, homes
from tests.integration.server.server_kit import User, code

from emsg.proto.jsoncodec import dumps
from emsg.server.clock import FakeClock
from emsg.server.federation import signing
from emsg.server.federation.keys import SigningKeyring, new_key
from emsg.testing.process import free_port

SEND = "/_emsg/v1/federation/send"
_STATE = ("events", "held_envelopes", "contacts", "fed_txns", "fed_received", "fed_outbox")


def state(home: Home, tmp: Path) -> dict[str, list[Any]]:
    conn = sqlite3.connect(tmp / home.domain / "emsg.sqlite3")
    try:
        return {t: sorted(conn.execute(f"SELECT * FROM {t}").fetchall(), key=repr) for t in _STATE}
    finally:
        conn.close()


def envelope_txn(
    sender: str, bob: User, origin: str = "alpha.test", destination: str = "beta.test"
) -> dict[str, Any]:
    env_id = secrets.token_urlsafe(9)
    return {
        "origin": origin,
        "destination": destination,
        "events": [
            {
                "id": env_id,
                "kind": "envelope",
                "envelope": {
                    "id": env_id,
                    "sender": sender,
                    "sender_device": "DEV",
                    "recipient": bob.address,
                    "device_id": bob.device_id,
                    "sent_at": 1,
                    "ciphertext": {"type": 1, "body": "aGk", "sender_key": "A" * 43},
                },
            }
        ],
    }


def forge(
    ring: SigningKeyring | None,
    clock: FakeClock,
    body: dict[str, Any],
    *,
    url: str = "https://beta.test" + SEND + "/t1",
    key: Any = None,
    origin: str = "alpha.test",
) -> httpx.Request:
    raw = dumps(body)
    request = httpx.Request("PUT", url, content=raw, headers={"content-type": "application/json"})
    own = key or (ring.current(clock.now_ms()) if ring else None)
    signing.sign(request, raw, origin, own, clock.now_ms() // 1000)
    return request


async def deliver(routes: Any, request: httpx.Request, host: str | None = None) -> httpx.Response:
    target = host or request.url.host
    response = await routes.apps[target].handle_async_request(request)
    await response.aread()
    return response


@pytest.fixture
def clock() -> FakeClock:
    import time

    return FakeClock(time.time_ns() // 1_000_000)


async def test_attacks_are_refused_with_no_side_effect(tmp_path: Path, clock: FakeClock) -> None:
    async with homes(tmp_path, "alpha.test", "beta.test", "gamma.test", clock=clock) as (
        routes,
        (alpha, beta, gamma),
    ):
        bob = await beta.register("bob")
        await gamma.register("gus")
        ring = alpha.services.federation.keyring
        good = forge(ring, clock, envelope_txn("alice#alpha.test", bob))
        before = state(beta, tmp_path)

        async def refused(request: httpx.Request, status: int, host: str | None = None) -> None:
            response = await deliver(routes, request, host)
            assert response.status_code == status, response.content
            assert state(beta, tmp_path) == before

        # A flipped bit in the signature.
        sig = good.headers["signature"]
        flipped = sig[:10] + ("A" if sig[10] != "A" else "B") + sig[11:]
        await refused(
            httpx.Request(
                "PUT",
                good.url,
                content=good.content,
                headers={**good.headers, "signature": flipped},
            ),
            401,
        )
        # A key alpha never published.
        await refused(
            forge(
                None,
                clock,
                envelope_txn("alice#alpha.test", bob),
                key=new_key(clock.now_ms(), 86_400_000),
            ),
            401,
        )
        # The path changed after signing.
        await refused(
            httpx.Request(
                "PUT",
                "https://beta.test" + SEND + "/t2",
                content=good.content,
                headers=good.headers,
            ),
            401,
        )
        # Replayed to another destination, with its own Host or with beta's.
        await refused(
            httpx.Request(
                "PUT",
                "https://gamma.test" + SEND + "/t1",
                content=good.content,
                headers=good.headers,
            ),
            401,
        )
        await refused(good, 401, host="gamma.test")
        # alpha speaking for a user of beta, or of gamma.
        for sender in ("mallory#beta.test", "gus#gamma.test"):
            response = await deliver(routes, forge(ring, clock, envelope_txn(sender, bob)))
            assert response.status_code == 403
            assert state(beta, tmp_path) == before
        # A transaction addressed to someone else in its body.
        response = await deliver(
            routes,
            forge(ring, clock, envelope_txn("alice#alpha.test", bob, destination="gamma.test")),
        )
        assert response.status_code == 403
        # Unsigned.
        await refused(
            httpx.Request(
                "PUT", good.url, content=good.content, headers={"content-type": "application/json"}
            ),
            401,
        )

        # The genuine request is accepted once; replays after 1 s and 10 min are not.
        response = await deliver(routes, good)
        assert response.status_code == 200, response.content
        after = state(beta, tmp_path)
        assert len(after["events"]) == len(before["events"]) + 1
        before = after
        clock.advance(1)
        await refused(good, 401)
        clock.advance(599)
        await refused(good, 401)

        # An expired key: alpha rotated it out; once the validity beta cached has
        # passed, beta refetches, sees it retired, and refuses it.
        old = ring.current(clock.now_ms())
        ring.rotate(clock.now_ms())
        clock.advance(8 * 86_400)
        await refused(forge(None, clock, envelope_txn("alice#alpha.test", bob), key=old), 401)
        fresh = forge(
            ring,
            clock,
            envelope_txn("alice#alpha.test", bob),
            url="https://beta.test" + SEND + "/t3",
        )
        assert (await deliver(routes, fresh)).status_code == 200


async def test_transaction_ids_are_idempotent(tmp_path: Path, clock: FakeClock) -> None:
    async with homes(tmp_path, "alpha.test", "beta.test", clock=clock) as (routes, (alpha, beta)):
        bob = await beta.register("bob")
        ring = alpha.services.federation.keyring
        body = envelope_txn("alice#alpha.test", bob)
        first = await deliver(routes, forge(ring, clock, body))
        again = await deliver(routes, forge(ring, clock, body))
        assert first.status_code == again.status_code == 200
        assert first.json() == again.json()
        before = state(beta, tmp_path)
        other = await deliver(routes, forge(ring, clock, envelope_txn("alice#alpha.test", bob)))
        assert other.status_code == 409
        assert code(other) == "txn_conflict"
        assert state(beta, tmp_path) == before
        assert len((await bob.sync())["events"]) == 1


async def test_a_domain_on_loopback_is_refused_without_connecting(tmp_path: Path) -> None:
    connections = 0

    async def canary(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        writer.close()

    port = free_port()
    server = await asyncio.start_server(canary, "127.0.0.1", port)
    from tests.integration.federation.fed_kit import fed_settings

    from emsg.server.app import create_app

    settings = fed_settings(
        "alpha.test", tmp_path / "alpha", resolve={"evil.test": f"https://127.0.0.1:{port}"}
    )
    app = create_app(settings)
    async with server, app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="https://alpha.test") as c:
            home = Home("alpha.test", app, c)
            alice = await home.register("alice")
            resp = await alice.get("/keys/device-list/bob%23evil.test")
            assert resp.status_code == 502
            assert code(resp) == "remote_unavailable"
            resp = await alice.post("/keys/claim", {"address": "bob#evil.test"})
            assert resp.status_code == 502
            victim = User(c, "bob#evil.test", "DEV", alice.token)
            assert (await alice.send("e1", victim)).status_code == 200
            await asyncio.sleep(0.3)  # a few retry rounds of the queue
    assert connections == 0


async def test_the_fast_path_answers_as_the_route_does(tmp_path: Path, clock: FakeClock) -> None:
    """`HomeserverApp` serves a valid transaction before FastAPI's stack; every other
    request must get the very answer the route gives (its order: signature, then
    body), and be counted under the route's label."""
    async with homes(tmp_path, "alpha.test", "beta.test", clock=clock) as (routes, (alpha, beta)):
        bob = await beta.register("bob")
        ring = alpha.services.federation.keyring
        app = beta.app

        async def route_only(scope: Any, receive: Any, send: Any) -> None:
            scope["app"] = app
            await FastAPI.__call__(app, scope, receive, send)

        behind = httpx.ASGITransport(app=route_only)
        good = envelope_txn("alice#alpha.test", bob)
        bad_body = {**good, "events": "not a list"}
        cases = {
            "bad body": lambda: forge(ring, clock, bad_body),
            "bad signature and bad body": lambda: forge(
                None, clock, bad_body, key=new_key(clock.now_ms(), 86_400_000)
            ),
            "bad transaction id": lambda: forge(
                ring, clock, good, url="https://beta.test" + SEND + "/" + "x" * 300
            ),
            "unsigned": lambda: httpx.Request("PUT", "https://beta.test" + SEND + "/t9", json=good),
        }
        before = state(beta, tmp_path)
        for name, make in cases.items():
            fast = await deliver(routes, make())
            slow = await behind.handle_async_request(make())
            await slow.aread()
            assert (fast.status_code, code(fast)) == (slow.status_code, code(slow)), name
            assert fast.status_code in (400, 401), name
        assert state(beta, tmp_path) == before

        served = await deliver(routes, forge(ring, clock, good, url=good_url(clock)))
        assert served.status_code == 200, served.content
        assert [r["id"] for r in served.json()["results"]] == [good["events"][0]["id"]]
        metrics = (await beta.client.get("/metrics")).text
        label = 'route="/_emsg/v1/federation/send/{txn_id}"'
        counted = [
            line for line in metrics.splitlines() if line.startswith("emsg_http_requests_total")
        ]
        for status in ("200", "400", "401"):
            assert any(label in line and f'status="{status}"' in line for line in counted), status


def good_url(clock: FakeClock) -> str:
    return f"https://beta.test{SEND}/t{clock.now_ms()}"
