"""Strict JSON in, canonical JSON out.

Inbound JSON is parsed strictly: duplicate keys, NaN/Infinity, lone surrogates,
integers beyond 2**53 and nesting deeper than `MAX_DEPTH` are refused, so the same
bytes can never mean two things to two parsers. Anything signed is serialised as
RFC 8785 canonical JSON.
"""

from __future__ import annotations

import json
from typing import Any, Final

import rfc8785

from emsg.proto.errors import BadJson

MAX_DEPTH: Final = 32
MAX_SAFE_INTEGER: Final = 2**53 - 1


def _reject_constant(name: str) -> Any:
    raise BadJson(f"{name} is not JSON")


def _parse_int(text: str) -> int:
    # Up to 15 characters is below 10**15 < 2**53: one int() in the common case.
    if len(text) > 15 and (len(text) > 17 or abs(int(text)) > MAX_SAFE_INTEGER):
        raise BadJson("integer out of range (beyond 2**53)")
    return int(text)


def _parse_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise BadJson("number out of range")
    return value


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise BadJson(f"duplicate key {key[:40]!r}")
            seen.add(key)
    return obj


_DECODER = json.JSONDecoder(
    object_pairs_hook=_unique_object,
    parse_constant=_reject_constant,
    parse_int=_parse_int,
    parse_float=_parse_float,
)


def _check(value: Any) -> None:
    """Refuse lone surrogates anywhere (they can only come from `\\u` escapes)."""
    if isinstance(value, str):
        _check_text(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_text(key)
            _check(item)
    elif isinstance(value, list):
        for item in value:
            _check(item)


def _check_text(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise BadJson("lone surrogate in string") from None


_CONTAINERS: Final = frozenset({dict, list})


def _check_depth(value: Any) -> None:
    """Refuse containers nested deeper than `MAX_DEPTH` (strings are not looked at).

    Level by level, one comprehension each: a frame of many events is walked in a
    few dozen microseconds. The decoder makes exact dicts and lists, so `type` is
    enough.
    """
    if type(value) not in _CONTAINERS:
        return
    level = [value]  # the containers at depth 1, 2, ... in turn
    for _ in range(MAX_DEPTH):
        level = [
            child
            for item in level
            for child in (item.values() if type(item) is dict else item)
            if type(child) in _CONTAINERS
        ]
        if not level:
            return
    raise BadJson(f"nesting deeper than {MAX_DEPTH}")


def _decode(text: str) -> Any:
    # The C scanner guards its own recursion: a document nested past the
    # interpreter's limit raises RecursionError instead of exhausting the stack.
    try:
        return _DECODER.decode(text)
    except BadJson:
        raise
    except RecursionError:
        raise BadJson(f"nesting deeper than {MAX_DEPTH}") from None
    except ValueError as exc:
        raise BadJson(f"malformed JSON: {exc}") from None


def loads_strict(raw: bytes | str) -> Any:
    """Parse JSON or raise `BadJson` saying what is wrong.

    Every stream frame and decrypted content passes through here, so the common
    case is fast: without a `\\u` escape (the only way to spell a lone surrogate in
    valid UTF-8) the C parser with the strict hooks decides alone, and the nesting
    is walked (containers only) when there are enough brackets to exceed
    `MAX_DEPTH`. Anything else takes the careful path; a property test checks that
    both give the same verdict on every input.
    """
    try:
        text = raw if isinstance(raw, str) else raw.decode("utf-8")
        text.encode("utf-8")  # a lone surrogate in a str: the careful path says so
    except UnicodeError:
        return _loads_careful(raw)
    if "\\u" in text:
        return _loads_careful(raw)
    value = _decode(text)
    if text.count("[") + text.count("{") > MAX_DEPTH:
        _check_depth(value)
    return value


def _loads_careful(raw: bytes | str) -> Any:
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise BadJson("body is not UTF-8") from None
    value = _decode(text)
    _check_depth(value)
    _check(value)
    return value


def canonical(value: Any) -> bytes:
    """RFC 8785 canonical bytes: what every signature in EMSG covers."""
    return bytes(rfc8785.dumps(value))


def dumps(value: Any) -> bytes:
    """Compact JSON for the wire (not canonical: only signatures need that)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
