"""The RFC 9421 signing profile of federation requests.

Every request is signed with the origin server's current Ed25519 key over
`@method`, `@path`, `@query`, `@authority` and `content-digest` (RFC 9530
sha-256 of the body, also for an empty one), with `created`, a random `nonce`,
`keyid="<origin domain>/<key id>"`, `alg="ed25519"` and `tag="emsg-federation"`,
under the label `emsg`. Freshness, replay and authority are checked by the
caller (`auth.py`); this module only signs and checks the signature itself.

Requests in the profile's exact shape are signed and checked by
`emsg.proto.httpsig` (a fixed template, about a tenth of the library's cost);
anything else goes through `http-message-signatures`, which remains the
reference the fast path is tested against, byte for byte.
"""

from __future__ import annotations

import datetime
import functools
import secrets
from dataclasses import dataclass
from typing import Any, Final

import http_sf
import httpx
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from http_message_signatures import (
    HTTPMessageSigner,
    HTTPMessageVerifier,
    HTTPSignatureKeyResolver,
    algorithms,
)
from http_message_signatures.exceptions import HTTPMessageSignaturesException

from emsg.proto import httpsig
from emsg.proto.errors import Unauthorized
from emsg.proto.federation import COVERED_COMPONENTS, SIGNATURE_LABEL, SIGNATURE_TAG
from emsg.server.federation.keys import OwnKey

_SIGNED: Final = tuple(c for c in COVERED_COMPONENTS if c != "content-digest")


def keyid(domain: str, key_id: str) -> str:
    return f"{domain}/{key_id}"


class _OneKey(HTTPSignatureKeyResolver):
    def __init__(self, private: Ed25519PrivateKey | None = None,
                 public: Ed25519PublicKey | None = None) -> None:  # fmt: skip
        self._private = private
        self._public = public

    def resolve_private_key(self, key_id: str) -> Ed25519PrivateKey | None:
        return self._private

    def resolve_public_key(self, key_id: str) -> Ed25519PublicKey | None:
        return self._public


class _Verifier(HTTPMessageVerifier):
    # Freshness is judged by `auth.py` against the injected clock.
    def validate_created_and_expires(self, sig_input: Any, max_age: Any = None) -> None:
        return None


@functools.lru_cache(maxsize=16)
def _private(seed: bytes) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(seed)


def sign(
    request: httpx.Request,
    body: bytes,
    origin: str,
    key: OwnKey,
    created_s: int,
    nonce: str | None = None,
) -> None:
    """Sign `request` in place (adds Content-Digest, Signature-Input and Signature).

    `nonce` is for tests, which compare both signers on equal inputs."""
    nonce = secrets.token_urlsafe(16) if nonce is None else nonce
    at = None if "content-digest" in request.headers else httpsig.target(str(request.url))
    fields = None
    if at is not None:
        fields = profile_fields(request.method, at, body, origin, key, created_s, nonce)
    if fields is None:
        sign_with_library(request, body, keyid(origin, key.key_id), key, created_s, nonce)
        return
    request.headers.update(fields)


def profile_fields(
    method: str,
    at: httpsig.Target,
    body: bytes,
    origin: str,
    key: OwnKey,
    created_s: int,
    nonce: str | None = None,
) -> dict[str, str] | None:
    """The three signature fields of a request to `at` (`httpsig.target` of its
    URL) in the profile's own spelling, or None if it needs the library (`sign`)."""
    nonce = secrets.token_urlsafe(16) if nonce is None else nonce
    params = httpsig.signature_params(created_s, keyid(origin, key.key_id), nonce)
    if params is None:
        return None
    digest = httpsig.content_digest(body)
    base = httpsig.signature_base(method, at, digest, params)
    return {
        "content-digest": digest,
        "signature-input": httpsig.input_header(params),
        "signature": httpsig.signature_header(_private(key.seed).sign(base)),
    }


def sign_with_library(
    request: httpx.Request, body: bytes, kid: str, key: OwnKey, created_s: int, nonce: str
) -> None:
    signer = HTTPMessageSigner(
        signature_algorithm=algorithms.ED25519, key_resolver=_OneKey(private=_private(key.seed))
    )
    signer.sign(
        request,
        key_id=kid,
        created=datetime.datetime.fromtimestamp(created_s, tz=datetime.UTC),
        nonce=nonce,
        label=SIGNATURE_LABEL,
        tag=SIGNATURE_TAG,
        covered_component_ids=_SIGNED,
        body=body,
    )


@dataclass(frozen=True, slots=True)
class SignatureInput:
    origin: str
    key_id: str
    created: int
    nonce: str


def read_input(headers: httpx.Headers) -> SignatureInput:
    """The signature parameters, before the key is known (to look it up)."""
    raw = headers.get("signature-input")
    if raw is None or headers.get("signature") is None:
        raise Unauthorized("federation requests must be signed (RFC 9421)")
    fast = httpsig.parse_input(raw)
    if fast is not None:
        kid, created, nonce = fast.keyid, fast.created, fast.nonce
    else:
        kid, created, nonce = _read_input_with_library(raw)
    if not 8 <= len(nonce) <= 128:
        raise Unauthorized("the nonce must be 8-128 characters")
    origin, sep, key_id = kid.partition("/")
    if not sep or not origin or not key_id:
        raise Unauthorized("keyid must be <domain>/<key id>")
    return SignatureInput(origin, key_id, created, nonce)


def _read_input_with_library(raw: str) -> tuple[str, int, str]:
    try:
        parsed: Any = http_sf.parse(raw.encode(), tltype="dictionary")
        params: dict[str, Any] = dict(parsed[SIGNATURE_LABEL][1])
    except Exception:
        raise Unauthorized(f"no signature labelled {SIGNATURE_LABEL!r}") from None
    kid, created, nonce = params.get("keyid"), params.get("created"), params.get("nonce")
    if not isinstance(kid, str) or not isinstance(created, int) or not isinstance(nonce, str):
        raise Unauthorized("the signature needs keyid, created and nonce")
    if params.get("tag") != SIGNATURE_TAG or params.get("alg") != "ed25519":
        raise Unauthorized("wrong signature tag or algorithm")
    return kid, created, nonce


def verify(request: httpx.Request, body: bytes, public: Ed25519PublicKey) -> None:
    """Raise `Unauthorized` unless the `emsg` signature covers the profile and verifies."""
    if not _verifies_in_profile(request, body, public):
        verify_with_library(request, body, public)


def _verifies_in_profile(request: httpx.Request, body: bytes, public: Ed25519PublicKey) -> bool:
    """True if the request is signed in the profile's exact shape and verifies.
    False means "ask the library", never "forged": the library decides those."""
    fields = request.headers
    parsed = httpsig.parse_input(fields.get("signature-input", ""))
    signature = httpsig.parse_signature(fields.get("signature", ""))
    at = httpsig.target(str(request.url))
    if parsed is None or signature is None or at is None:
        return False
    digest = httpsig.content_digest(body)
    params = httpsig.signature_params(parsed.created, parsed.keyid, parsed.nonce)
    if params is None or fields.get("content-digest") != digest:
        return False
    try:
        public.verify(signature, httpsig.signature_base(request.method, at, digest, params))
    except InvalidSignature:
        return False
    return True


def verify_with_library(request: httpx.Request, body: bytes, public: Ed25519PublicKey) -> None:
    verifier = _Verifier(
        signature_algorithm=algorithms.ED25519, key_resolver=_OneKey(public=public)
    )
    try:
        verifier.verify(
            request,
            max_age=None,
            expect_tag=SIGNATURE_TAG,
            require_components=COVERED_COMPONENTS,
            body=body,
        )
    except HTTPMessageSignaturesException as exc:
        raise Unauthorized(f"the request signature does not verify: {exc}") from None
