"""Two accounts, alice (two devices) and bob (one)."""

from __future__ import annotations

import pytest
from crypto_helpers import Party, make_party


@pytest.fixture
def alice() -> Party:
    return make_party("alice#a.example", ["A1", "A2"])


@pytest.fixture
def bob() -> Party:
    return make_party("bob#b.example", ["B1"])
