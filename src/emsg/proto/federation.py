"""The federation API's formats and its pure rules, shared by every homeserver.

Wire models of `/_emsg/v1/federation/` (transactions, the keys document, the
well-known delegation), the retry schedule of the outbound queue, the SSRF
address classifier and the order of discovery. No I/O: callers pass `now`.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Final

from pydantic import Field, StringConstraints

from emsg.proto.wire import AddressText, Envelope, Key, Wire

FEDERATION_PREFIX: Final = "/_emsg/v1/federation"
WELL_KNOWN_PATH: Final = "/.well-known/emsg/server"
KEYS_PATH: Final = f"{FEDERATION_PREFIX}/keys"
SRV_PREFIX: Final = "_emsg._tcp."
DEFAULT_PORT: Final = 443

MAX_EVENTS_PER_TXN: Final = 100
SIGNATURE_MAX_AGE_S: Final = 300
SIGNATURE_LABEL: Final = "emsg"
SIGNATURE_TAG: Final = "emsg-federation"
# Components every federation request signs (RFC 9421 §2); `content-digest` is
# RFC 9530 sha-256 of the body (of the empty body for GET).
COVERED_COMPONENTS: Final = ("@method", "@path", "@query", "@authority", "content-digest")

FedTxnIdText = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._~-]{1,128}$")]
EventIdText = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._~-]{1,64}$")]
KeyIdText = Annotated[str, StringConstraints(pattern=r"^ed25519:[A-Za-z0-9_-]{1,32}$")]
DomainText = Annotated[str, StringConstraints(min_length=1, max_length=260)]


# --- transactions ----------------------------------------------------------------


class FedKind(StrEnum):
    ENVELOPE = "envelope"
    CONTACT_REQUEST = "contact_request"
    CONTACT_ACCEPTED = "contact_accepted"
    CONTACT_DECLINED = "contact_declined"
    CONTACT_REMOVED = "contact_removed"


class FedContact(Wire):
    """A contact action of `sender` (on the origin) towards `recipient` (here)."""

    sender: AddressText
    recipient: AddressText
    message: Annotated[str, StringConstraints(max_length=500)] = ""
    identity_key: Key | None = None


class FedEvent(Wire):
    """One item of a transaction. `id` is unique per origin: the envelope id for
    envelopes, so a receiver de-duplicates items across transactions."""

    id: EventIdText
    kind: FedKind
    envelope: Envelope | None = None
    contact: FedContact | None = None


class Transaction(Wire):
    origin: DomainText
    destination: DomainText
    events: Annotated[list[FedEvent], Field(min_length=1, max_length=MAX_EVENTS_PER_TXN)]


class EventResult(Wire):
    """The outcome of one event: no `code` means it was applied (or already had been)."""

    id: str
    code: str | None = None
    message: str | None = None


class TransactionResult(Wire):
    txn_id: str
    results: list[EventResult]


class FedClaimRequest(Wire):
    """A key claim relayed for `requester`, a user of the origin server."""

    requester: AddressText
    address: AddressText
    device_ids: (
        Annotated[list[Annotated[str, StringConstraints(max_length=64)]], Field(max_length=100)]
        | None
    ) = None


# --- keys and discovery documents ------------------------------------------------


class ServerKey(Wire):
    key_id: KeyIdText
    key: Key
    valid_from: int
    valid_until: int


class OldServerKey(Wire):
    """A retired key: still verifies requests signed before `expired_at`."""

    key_id: KeyIdText
    key: Key
    expired_at: int


class ServerKeys(Wire):
    """`GET /_emsg/v1/federation/keys`: the server's signing keys."""

    server: DomainText
    keys: Annotated[list[ServerKey], Field(max_length=16)]
    old_keys: Annotated[list[OldServerKey], Field(max_length=64)] = []


class WellKnownServer(Wire):
    """`GET https://<domain>/.well-known/emsg/server`: where the domain's server is."""

    server: Annotated[str, StringConstraints(min_length=1, max_length=260)]


# --- the retry schedule ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Backoff:
    """Per-destination retry state; times in milliseconds."""

    failures: int = 0
    retry_at: int = 0


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    base_ms: int = 2_000
    cap_ms: int = 3_600_000  # exponential, capped near one hour (like SMTP)
    window_ms: int = 3 * 86_400_000  # past this, undelivered items bounce

    def after_failure(self, state: Backoff, now: int) -> Backoff:
        delay = min(self.base_ms * 2 ** min(state.failures, 40), self.cap_ms)
        return Backoff(state.failures + 1, now + delay)

    @staticmethod
    def after_success() -> Backoff:
        return Backoff()

    def expired(self, first_queued_at: int, now: int) -> bool:
        return now - first_queued_at > self.window_ms


# --- the SSRF guard: which addresses a server may connect to ----------------------

_SPECIAL: Final = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
        "172.16.0.0/12", "192.0.0.0/24", "192.0.2.0/24", "192.168.0.0/16",
        "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4",
        "240.0.0.0/4", "255.255.255.255/32",
        "::/128", "::1/128", "::ffff:0:0/96", "::/96", "64:ff9b::/96", "100::/64",
        "2001:db8::/32", "2002::/16", "fc00::/7", "fe80::/10", "fec0::/10", "ff00::/8",
    )
)  # fmt: skip


def address_forbidden(ip: str) -> str | None:
    """Why a connection to `ip` must be refused, or None if it is a public address.

    Refused: loopback, private, link-local, CGNAT, multicast, unique-local,
    documentation, unspecified, IPv4-mapped or -compatible IPv6 and 6to4.
    """
    try:
        addr = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return "not an IP address"
    for net in _SPECIAL:
        if addr.version == net.version and addr in net:
            return f"{addr} is in the non-public range {net}"
    if not addr.is_global:
        return f"{addr} is not a public address"
    return None


# --- discovery -------------------------------------------------------------------


class DiscoveryStep(StrEnum):
    STATIC = "static"  # the configuration's `federation.resolve` map
    WELL_KNOWN = "well-known"  # https://<domain>/.well-known/emsg/server
    SRV = "srv"  # DNS SRV _emsg._tcp.<domain>
    DIRECT = "direct"  # <domain>:443


DISCOVERY_ORDER: Final = (
    DiscoveryStep.STATIC,
    DiscoveryStep.WELL_KNOWN,
    DiscoveryStep.SRV,
    DiscoveryStep.DIRECT,
)


@dataclass(frozen=True, slots=True)
class Target:
    """Where a domain's federation API is: connect to `host:port`, speak TLS for
    `tls_name` (also the SNI), and send `Host: <the domain>`."""

    host: str
    port: int
    tls_name: str
    scheme: str = "https"

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


_HOST: Final = re.compile(
    r"(?i)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*"
)


def parse_server(value: str, domain_host: str, *, plain_http: bool = False) -> Target:
    """A delegation or static-map value: `https://host:port`, `host:port` or `host`.

    `http://` only with `plain_http`: the operator's own static map may name a
    server on a LAN or in a test so, but a domain's well-known document must not
    downgrade federation to plain text (§12).
    """
    text = value.strip()
    scheme = "https"
    if "://" in text:
        scheme, _, text = text.partition("://")
        if scheme not in ("https", "http") or (scheme == "http" and not plain_http):
            raise ValueError(f"unsupported scheme {scheme!r}")
    text = text.rstrip("/")
    if "/" in text or not text:
        raise ValueError(f"not a server location: {value!r}")
    host, port = text, DEFAULT_PORT if scheme == "https" else 80
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest.startswith(":"):
            port = int(rest[1:])
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
        port = int(port_text)
    if not 0 < port < 65536:
        raise ValueError(f"bad port in {value!r}")
    try:
        ipaddress.ip_address(host)
        tls_name = domain_host  # an IP literal: the certificate names the domain
    except ValueError:
        if not _HOST.fullmatch(host):
            raise ValueError(f"not a host name: {host!r}") from None
        tls_name = host.lower()
    return Target(host.lower(), port, tls_name, scheme)
