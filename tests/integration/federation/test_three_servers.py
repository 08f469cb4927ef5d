"""Three real homeserver processes (alpha, beta, gamma) federating over TLS on
loopback with trustme certificates, driven by real E2E clients: friends across all
three pairs, messages both ways, gamma's stranger policy refusing and then holding
a sender from alpha, a block across domains, and no plaintext on any server."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.integration.federation.client_kit import (
    assert_no_plaintext,
    befriend,
    bounced,
    eventually,
    received,
    register,
    running,
)

from emsg.testing.tls import federation

pytestmark = pytest.mark.timeout(300)


async def test_three_domains(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    alpha, beta, gamma = federation(tmp_path / "fed", ["alpha.test", "beta.test", "gamma.test"])
    monkeypatch.setenv("SSL_CERT_FILE", str(alpha.pki.ca_file))  # clients trust the test CA
    homes = tmp_path / "clients"
    texts: list[str] = []
    with running(alpha, beta, gamma):
        alice = await register(alpha, homes, "alice")
        mallory = await register(alpha, homes, "mallory")
        bob = await register(beta, homes, "bob")
        gus = await register(gamma, homes, "gus")
        clients = [alice, mallory, bob, gus]
        try:
            # Friends across every pair of domains; each client talks only to its own
            # server, which fetches device lists and claims keys over federation.
            await befriend(alice, bob)
            await befriend(bob, gus)
            await befriend(gus, alice)

            # Messages both ways on every pair, in order.
            for a, b in ((alice, bob), (bob, gus), (gus, alice)):
                for sender, recipient in ((a, b), (b, a)):
                    sent = [f"{sender.address} to {recipient.address} #{i}" for i in range(3)]
                    texts += sent
                    for text in sent:
                        await sender.send_text(str(recipient.address), text)
                    got = await received(recipient, 3, str(sender.address))
                    assert got == sent

            # gamma's stranger policy applies to mallory on alpha: first refused...
            await gus.set_stranger_policy("contacts-only")
            await mallory.send_text(str(gus.address), "refused by policy")
            assert await bounced(mallory, str(gus.address)) == [
                ("refused by policy", "recipient_refuses")
            ]

            # ...then held as a message request until Gus accepts, then delivered.
            await gus.set_stranger_policy("requests")
            await mallory.send_text(str(gus.address), "held for gus")

            async def held() -> bool:
                requests = await gus.contact_requests()
                return any(
                    r.address == str(mallory.address) and r.state == "message_request"
                    for r in requests
                )

            assert await eventually(held)
            assert [m.body for m in await gus.fetch()] == []
            await gus.accept_contact(str(mallory.address))
            assert await received(gus, 1, str(mallory.address)) == ["held for gus"]
            texts += ["refused by policy", "held for gus"]

            # A block across domains: Bob (beta) blocks his friend Alice (alpha).
            await bob.block(str(alice.address))
            await alice.send_text(str(bob.address), "blocked on beta")
            outcome = await bounced(alice, str(bob.address))
            assert ("blocked on beta", "recipient_refuses") in outcome
            assert all(reason is None for text, reason in outcome if text != "blocked on beta")
            # Gus, on gamma, still hears from Alice: the block is Bob's alone.
            await alice.send_text(str(gus.address), "gus still hears alice")
            assert await received(gus, 1, str(alice.address)) == ["gus still hears alice"]
            assert [m.body for m in await bob.fetch()] == []
            texts += ["blocked on beta", "gus still hears alice"]
        finally:
            for client in clients:
                await client.aclose()
    assert_no_plaintext([alpha, beta, gamma], texts)
