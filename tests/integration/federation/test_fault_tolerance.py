"""Real processes over TLS on loopback: the receiving server is SIGKILLed again and
again during a burst, the sending server is killed with a full queue, and a peer
that never comes back makes the messages bounce."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.integration.server.server_kit import PASSWORD

from emsg.testing.tls import TlsServer, federation

SENDERS = 4
PER_SENDER = 500  # 2,000 messages in all


@contextlib.contextmanager
def stopping(*servers: TlsServer) -> Iterator[None]:
    try:
        yield
    finally:
        for server in servers:
            server.stop()


class Api:
    def __init__(self, server: TlsServer, http: httpx.AsyncClient) -> None:
        self.server, self.http = server, http

    async def register(self, local: str) -> dict[str, str]:
        resp = await self.http.post(
            f"{self.server.url}/_emsg/v1/accounts",
            json={"address": f"{local}#{self.server.domain}", "password": PASSWORD},
        )
        assert resp.status_code == 201, resp.text
        return dict(resp.json())

    async def send(self, me: dict[str, str], txn: str, to: dict[str, str], body: str) -> Any:
        envelope = {
            "to": to["address"],
            "device_id": to["device_id"],
            "ciphertext": {"type": 1, "body": body, "sender_key": "A" * 43},
        }
        for _ in range(200):
            try:
                resp = await self.http.put(
                    f"{self.server.url}/_emsg/v1/send/{txn}",
                    json={"envelopes": [envelope]},
                    headers={"Authorization": f"Bearer {me['token']}"},
                )
                assert resp.status_code == 200, resp.text
                return resp.json()
            except httpx.TransportError:
                await asyncio.sleep(0.1)  # the server restarts; retry the same txn id
        raise AssertionError("send never succeeded")

    async def events(self, me: dict[str, str], since: int, timeout_ms: int = 1000) -> Any:
        resp = await self.http.get(
            f"{self.server.url}/_emsg/v1/sync",
            params={"since": since, "timeout": timeout_ms, "limit": 1000},
            headers={"Authorization": f"Bearer {me['token']}"},
        )
        assert resp.status_code == 200, resp.text
        return resp.json()


async def collect(api: Api, me: dict[str, str], want: int, limit: float) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    since, deadline = 0, time.monotonic() + limit
    while len([e for e in got if e["kind"] == "envelope"]) < want:
        assert time.monotonic() < deadline, f"only {len(got)} of {want} arrived"
        try:
            body = await api.events(me, since)
        except httpx.TransportError:
            await asyncio.sleep(0.1)
            continue
        got += body["events"]
        since = body["next"]
    # Nothing more trickles in afterwards (no duplicates later).
    await asyncio.sleep(0.5)
    got += (await api.events(me, since, timeout_ms=0))["events"]
    return got


def check_order(events: list[dict[str, Any]], senders: list[str], per_sender: int) -> None:
    bodies: dict[str, list[str]] = {s: [] for s in senders}
    for event in events:
        if event["kind"] == "envelope":
            bodies[event["envelope"]["sender"]].append(event["envelope"]["ciphertext"]["body"])
    for sender, seen in bodies.items():
        assert len(seen) == len(set(seen)), f"{sender}: shown twice"
        assert seen == [f"bSeq{i:05d}" for i in range(per_sender)], f"{sender}: lost or reordered"


async def test_receiver_killed_during_a_burst_loses_and_repeats_nothing(tmp_path: Path) -> None:
    alpha, beta = federation(tmp_path, ["alpha.test", "beta.test"], retry_cap="300ms")
    with stopping(alpha, beta):
        alpha.start()
        beta.start()
        async with httpx.AsyncClient(verify=alpha.pki.context(), timeout=30) as http:
            a, b = Api(alpha, http), Api(beta, http)
            bob = await b.register("bob")
            senders = [await a.register(f"s{i}") for i in range(SENDERS)]

            async def burst(me: dict[str, str]) -> None:
                for i in range(PER_SENDER):
                    await a.send(me, f"t{i}", bob, f"bSeq{i:05d}")

            async def chaos() -> None:
                for _ in range(3):
                    await asyncio.sleep(1.0)
                    beta.kill()
                    await asyncio.sleep(0.5)
                    await asyncio.to_thread(beta.start)

            await asyncio.gather(*(burst(s) for s in senders), chaos())
            events = await collect(b, bob, SENDERS * PER_SENDER, limit=120)
            check_order(events, [s["address"] for s in senders], PER_SENDER)


async def test_sender_killed_with_a_full_queue_drains_after_restart(tmp_path: Path) -> None:
    alpha, beta = federation(tmp_path, ["alpha.test", "beta.test"], retry_cap="200ms")
    with stopping(alpha, beta):
        alpha.start()
        beta.start()
        async with httpx.AsyncClient(verify=alpha.pki.context(), timeout=30) as http:
            a, b = Api(alpha, http), Api(beta, http)
            bob = await b.register("bob")
            alice = await a.register("alice")
            beta.stop()
            for i in range(200):
                await a.send(alice, f"q{i}", bob, f"bSeq{i:05d}")
            alpha.kill()
            beta.start()
            alpha.start()
            events = await collect(b, bob, 200, limit=60)
            check_order(events, [alice["address"]], 200)


async def test_a_peer_that_never_returns_bounces(tmp_path: Path) -> None:
    alpha, beta = federation(
        tmp_path, ["alpha.test", "beta.test"], retry_window="2s", retry_cap="200ms"
    )
    with stopping(alpha, beta):
        alpha.start()
        beta.start()
        async with httpx.AsyncClient(verify=alpha.pki.context(), timeout=30) as http:
            a, b = Api(alpha, http), Api(beta, http)
            bob = await b.register("bob")
            alice = await a.register("alice")
            beta.kill()
            sent = [await a.send(alice, f"x{i}", bob, f"bSeq{i:05d}") for i in range(3)]
            ids = [r["envelopes"][0]["id"] for r in sent]
            bounced: list[str] = []
            deadline = time.monotonic() + 20
            since = 0
            while len(bounced) < 3:
                assert time.monotonic() < deadline, "no bounce"
                body = await a.events(alice, since)
                since = body["next"]
                for event in body["events"]:
                    if event["kind"] == "bounce":
                        assert event["bounce"]["reason"] == "remote_unavailable"
                        assert event["bounce"]["destination"] == "beta.test"
                        bounced += [e["id"] for e in event["bounce"]["envelopes"]]
            assert bounced == ids


pytestmark = pytest.mark.timeout(400)
