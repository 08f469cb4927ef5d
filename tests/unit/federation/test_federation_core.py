"""The sans-I/O federation core: retry schedule, SSRF classifier, server locations."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from emsg.proto.federation import (
    DISCOVERY_ORDER,
    Backoff,
    DiscoveryStep,
    RetryPolicy,
    Target,
    Transaction,
    address_forbidden,
    parse_server,
)

POLICY = RetryPolicy(base_ms=2_000, cap_ms=3_600_000, window_ms=3 * 86_400_000)


def test_backoff_doubles_then_caps_near_an_hour() -> None:
    state, now, delays = Backoff(), 0, []
    for _ in range(20):
        nxt = POLICY.after_failure(state, now)
        delays.append(nxt.retry_at - now)
        state = nxt
    assert delays[:4] == [2_000, 4_000, 8_000, 16_000]
    assert max(delays) == 3_600_000
    assert delays[-1] == 3_600_000
    assert POLICY.after_success() == Backoff()


@given(st.integers(0, 10_000), st.integers(0, 2**40))
def test_backoff_is_monotone_and_bounded(failures: int, now: int) -> None:
    nxt = POLICY.after_failure(Backoff(failures, 0), now)
    assert nxt.failures == failures + 1
    assert now < nxt.retry_at <= now + POLICY.cap_ms


def test_retry_window() -> None:
    assert not POLICY.expired(0, 3 * 86_400_000)
    assert POLICY.expired(0, 3 * 86_400_000 + 1)


@pytest.mark.parametrize(
    "ip",
    [
        "127.0.0.1", "127.8.9.10", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254",
        "100.64.0.1", "224.0.0.1", "0.0.0.0", "255.255.255.255", "::1", "::", "fe80::1",
        "fc00::1", "fd12:3456::1", "ff02::1", "::ffff:127.0.0.1", "::ffff:8.8.8.8",
        "::127.0.0.1", "2002:7f00:1::1", "2002:0808:0808::1", "64:ff9b::7f00:1",
        "2001:db8::1", "not-an-ip",
    ],
)  # fmt: skip
def test_ssrf_guard_refuses_non_public_addresses(ip: str) -> None:
    assert address_forbidden(ip) is not None


@pytest.mark.parametrize("ip", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "93.184.216.34"])
def test_ssrf_guard_allows_public_addresses(ip: str) -> None:
    assert address_forbidden(ip) is None


def test_discovery_order_is_documented() -> None:
    assert DISCOVERY_ORDER == (
        DiscoveryStep.STATIC, DiscoveryStep.WELL_KNOWN, DiscoveryStep.SRV, DiscoveryStep.DIRECT
    )  # fmt: skip


@pytest.mark.parametrize(
    ("value", "target"),
    [
        ("https://127.0.0.1:8442", Target("127.0.0.1", 8442, "beta.example")),
        ("fed.beta.example:8448", Target("fed.beta.example", 8448, "fed.beta.example")),
        ("fed.beta.example", Target("fed.beta.example", 443, "fed.beta.example")),
        ("https://[::1]:9000/", Target("::1", 9000, "beta.example")),
    ],
)
def test_parse_server(value: str, target: Target) -> None:
    assert parse_server(value, "beta.example") == target


def test_plain_http_only_where_the_caller_allows_it() -> None:
    """The operator's static map may name a plain-text server (LAN, tests); a
    domain's well-known delegation may not downgrade federation to it."""
    plain = Target("127.0.0.1", 80, "beta.example", "http")
    assert parse_server("http://127.0.0.1:80", "beta.example", plain_http=True) == plain
    with pytest.raises(ValueError, match="scheme"):
        parse_server("http://127.0.0.1:80", "beta.example")


@pytest.mark.parametrize("value", ["", "ftp://x", "host:0", "host:99999", "host/path", "a:b:c"])
def test_parse_server_refuses_nonsense(value: str) -> None:
    with pytest.raises(ValueError, match=r"(?i)port|scheme|host|server"):
        parse_server(value, "beta.example")


def test_transaction_bounds() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Transaction(origin="a.test", destination="b.test", events=[])
