"""The check of a whole transaction before anything is written: every sender on the
origin's domain, every recipient here. Addresses are parsed through a memo, so each
verdict must hold the second time too (from the memo, or, for a malformed address,
which is never memoised, parsed and refused again)."""

from __future__ import annotations

import pytest
from tests.unit.server.fed_store_kit import envelope_transaction

from emsg.proto.errors import Forbidden, InvalidRequest
from emsg.server.federation.inbound import check_transaction


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
    txn = envelope_transaction(sender=sender, recipient=recipient)
    for _ in range(3):
        if error is None:
            check_transaction(txn, "alpha.test", "beta.test")
        else:
            with pytest.raises(error):
                check_transaction(txn, "alpha.test", "beta.test")
