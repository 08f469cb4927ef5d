"""Requests built from what the caller passed: a person at the CLI, or a program.

The wire models are the one statement of what a request may hold (lengths,
patterns, valid Unicode), so the client checks a caller's values against them
before anything leaves, and reports a refusal as `InvalidInput` naming the field
and the rule. Never the value: it may be a password.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar
from urllib.parse import urlsplit

from pydantic import BaseModel, ValidationError

from emsg.client.errors import InvalidInput
from emsg.crypto.keys import login_key
from emsg.proto.errors import describe_invalid

M = TypeVar("M", bound=BaseModel)


def from_caller(model: type[M], fields: Mapping[str, Any]) -> M:
    try:
        return model.model_validate(fields)
    except ValidationError as exc:
        raise InvalidInput(describe_invalid(exc.errors(include_input=False))) from None


def with_login_key(model: type[M], fields: Mapping[str, Any], address: str) -> M:
    """`model` from the caller's fields, where the rules for a password are checked on
    the password the person chose, which then goes out as its `login_key` for
    `address` (protocol.md §4): the homeserver never sees the password itself."""
    request = from_caller(model, fields)
    return request.model_copy(update={"password": login_key(fields["password"], address)})


def server_url(url: str) -> str:
    """A homeserver URL: http or https, a host, a valid port, perhaps a path (a
    server behind a reverse proxy); without a trailing slash."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError when the port is out of range
    except ValueError as exc:
        raise InvalidInput(f"the server URL is not valid ({exc}); {_URL_EXAMPLE}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput(f"the server URL must be http:// or https:// and a host; {_URL_EXAMPLE}")
    if parts.query or parts.fragment:
        raise InvalidInput(f"the server URL takes no query or fragment; {_URL_EXAMPLE}")
    return url.rstrip("/")


_URL_EXAMPLE = "for example https://im.example.org"
