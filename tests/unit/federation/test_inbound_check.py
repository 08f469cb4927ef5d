"""The check of a whole transaction before anything is written: every sender on the
origin's domain, every recipient here. Addresses are parsed through a memo, so each
verdict must hold the second time too (from the memo, or, for a malformed address,
which is never memoised, parsed and refused again)."""

from __future__ import annotations

import pytest

from emsg.proto.errors import Forbidden, InvalidRequest
from emsg.proto.federation import FedEvent, FedKind, Transaction
from emsg.proto.wire import Ciphertext, Envelope
from emsg.server.federation.inbound import check_transaction


def _txn(sender: str, recipient: str = "bob#beta.test") -> Transaction:
    envelope = Envelope(
        id="e1", sender=sender, sender_device="DA", recipient=recipient, device_id="DB",
        ciphertext=Ciphertext(type=1, body="x", sender_key="A" * 43), sent_at=0,
    )  # fmt: skip
    event = FedEvent(id="e1", kind=FedKind.ENVELOPE, envelope=envelope)
    return Transaction(origin="alpha.test", destination="beta.test", events=[event])


@pytest.mark.parametrize(
    ("sender", "recipient", "error"),
    [
        ("alice#alpha.test", "bob#beta.test", None),
        ("Alice#ALPHA.test", "BOB#beta.test", None),  # canonical forms compare equal
        ("alice#gamma.test", "bob#beta.test", Forbidden),  # speaks for another domain
        ("alice#alpha.test", "bob#gamma.test", Forbidden),  # not a user here
        ("alice#pаypal.test", "bob#beta.test", InvalidRequest),  # mixed scripts
        ("no-hash-sign", "bob#beta.test", InvalidRequest),
        ("alice#alpha.test", "bob##beta.test", InvalidRequest),
    ],
)
def test_each_verdict_holds_every_time(sender: str, recipient: str, error: type | None) -> None:
    txn = _txn(sender, recipient)
    for _ in range(3):
        if error is None:
            check_transaction(txn, "alpha.test", "beta.test")
        else:
            with pytest.raises(error):
                check_transaction(txn, "alpha.test", "beta.test")
