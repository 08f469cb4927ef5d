"""The spelled-out signing profile against `http-message-signatures`, the reference.

Ed25519 signatures are deterministic, so for equal inputs (and an equal nonce)
both signers must write byte-identical headers; each side's signatures must
verify on the other; and whatever the fast path does not recognise must still
be decided by the library.
"""

from __future__ import annotations

import os
import string

import httpx
import pytest
from http_message_signatures.exceptions import HTTPMessageSignaturesException
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from emsg.proto import httpsig
from emsg.proto.errors import Unauthorized
from emsg.server.federation import signing
from emsg.server.federation.keys import OwnKey

KEY = OwnKey("k1", os.urandom(32), 0, 2**62)
PUBLIC = KEY.private.public_key()
FED = "/_emsg/v1/federation/send"

_label = st.text(string.ascii_lowercase + string.digits, min_size=1, max_size=8)
hosts = st.one_of(
    st.lists(_label, min_size=1, max_size=3).map(".".join),
    st.sampled_from(["127.0.0.1", "Beta.Test", "[::1]", "xn--bcher-kva.example"]),
)
ports = st.one_of(st.none(), st.sampled_from(["443", "0443", "80", "8443", "1"]))
_segment = st.text(string.ascii_letters + string.digits + "-._~!$&'()*+,;=:@%", max_size=12)
paths = st.lists(_segment, min_size=1, max_size=4).map(lambda s: "/" + "/".join(s))
queries = st.one_of(
    st.none(), st.text(string.ascii_letters + string.digits + "=&%?/ ", max_size=16)
)
nonces = st.text(string.ascii_letters + string.digits + "-_ \"\\'", min_size=8, max_size=24)


def _request(method: str, url: str, body: bytes) -> httpx.Request:
    return httpx.Request(method, url, content=body, headers={"content-type": "application/json"})


def _url(host: str, port: str | None, path: str, query: str | None) -> str:
    url = f"https://{host}{'' if port is None else ':' + port}{path}"
    return url if query is None else f"{url}?{query}"


def _both(
    method: str, url: str, body: bytes, created: int, nonce: str
) -> tuple[httpx.Request, ...]:
    fast, library = _request(method, url, body), _request(method, url, body)
    signing.sign(fast, body, "alpha.test", KEY, created, nonce=nonce)
    signing.sign_with_library(library, body, "alpha.test/k1", KEY, created, nonce)
    return fast, library


@settings(max_examples=300, deadline=None)
@given(
    method=st.sampled_from(["PUT", "GET", "POST"]),
    host=hosts,
    port=ports,
    path=paths,
    query=queries,
    body=st.binary(max_size=64),
    created=st.integers(0, 253_402_300_799),  # to the year 9999, as datetime goes
    nonce=nonces,
)
def test_both_signers_write_the_same_headers_and_each_verifies_the_other(
    method: str,
    host: str,
    port: str | None,
    path: str,
    query: str | None,
    body: bytes,
    created: int,
    nonce: str,
) -> None:
    url = _url(host, port, path, query)
    try:
        library = _request(method, url, body)
    except httpx.InvalidURL:
        assume(False)
    try:
        signing.sign_with_library(library, body, "alpha.test/k1", KEY, created, nonce)
    except HTTPMessageSignaturesException:
        # What the library refuses, the fast path must not sign either.
        with pytest.raises(HTTPMessageSignaturesException):
            signing.sign(_request(method, url, body), body, "alpha.test", KEY, created, nonce)
        return
    fast = _request(method, url, body)
    signing.sign(fast, body, "alpha.test", KEY, created, nonce=nonce)
    for name in ("content-digest", "signature-input", "signature"):
        assert fast.headers[name] == library.headers[name]
    signing.verify_with_library(fast, body, PUBLIC)
    signing.verify(library, body, PUBLIC)


def test_the_profile_path_is_taken_for_federation_requests() -> None:
    url = f"https://beta.test:8443{FED}/1-2-abcdef"
    at = httpsig.target(url)
    assert at == httpsig.Target("beta.test:8443", f"{FED}/1-2-abcdef", "?")
    fast, library = _both("PUT", url, b'{"a":1}', 1_700_000_000, "n0nce-n0nce")
    assert httpsig.parse_input(fast.headers["signature-input"]) == httpsig.Input(
        1_700_000_000, "alpha.test/k1", "n0nce-n0nce"
    )
    assert signing._verifies_in_profile(library, b'{"a":1}', PUBLIC)


@pytest.mark.parametrize(
    "change",
    ["method", "path", "query", "authority", "body", "digest", "signature", "created", "key"],
)
def test_every_tampering_fails_on_both_paths(change: str) -> None:
    body = b'{"a":1}'
    url = f"https://beta.test{FED}/t1"
    fast, _ = _both("PUT", url, body, 1_700_000_000, "n0nce-n0nce")
    headers = dict(fast.headers)
    method, public = "PUT", PUBLIC
    if change == "method":
        method = "POST"
    elif change == "path":
        url = f"https://beta.test{FED}/t2"
    elif change == "query":
        url += "?x=1"
    elif change == "authority":
        url = f"https://gamma.test{FED}/t1"
    elif change == "body":
        body = b'{"a":2}'
    elif change == "digest":
        headers["content-digest"] = httpsig.content_digest(b"other")
    elif change == "signature":
        sig = headers["signature"]
        headers["signature"] = sig[:10] + ("A" if sig[10] != "A" else "B") + sig[11:]
    elif change == "created":
        headers["signature-input"] = headers["signature-input"].replace(
            "=1700000000", "=1700000001"
        )
    else:
        public = OwnKey("k1", os.urandom(32), 0, 2**62).private.public_key()
    tampered = httpx.Request(method, url, headers=headers)
    assert not signing._verifies_in_profile(tampered, body, public)
    with pytest.raises(Unauthorized):
        signing.verify(tampered, body, public)
    with pytest.raises(Unauthorized):
        signing.verify_with_library(tampered, body, public)


def test_other_spellings_are_left_to_the_library() -> None:
    """A second signature beside `emsg` is not the profile's shape: the library
    still finds and checks the `emsg` one."""
    body = b"{}"
    request = _request("PUT", f"https://beta.test{FED}/t1", body)
    signing.sign(request, body, "alpha.test", KEY, 1_700_000_000)
    request.headers["signature-input"] += ', other=("@method");created=1'
    request.headers["signature"] += ", other=:AAAA:"
    assert httpsig.parse_input(request.headers["signature-input"]) is None
    assert not signing._verifies_in_profile(request, body, PUBLIC)
    signing.verify(request, body, PUBLIC)
    assert signing.read_input(request.headers).nonce


@settings(max_examples=300)
@given(st.text(max_size=300))
def test_the_profile_parsers_never_raise(text: str) -> None:
    httpsig.parse_input(text)
    httpsig.parse_signature(text)
    httpsig.target(text)


@settings(max_examples=200, deadline=None)
@given(created=st.integers(0, 10**15 - 1), kid=nonces, nonce=nonces)
def test_read_input_agrees_with_the_structured_field_parser(
    created: int, kid: str, nonce: str
) -> None:
    params = httpsig.signature_params(created, f"alpha.test/{kid}", nonce)
    assume(params is not None)
    assert params is not None
    header = httpsig.input_header(params)
    fast = httpsig.parse_input(header)
    assert fast is not None
    assert (fast.keyid, fast.created, fast.nonce) == signing._read_input_with_library(header)
