"""`loads_strict`'s fast path accepts and refuses exactly what the careful path does."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from emsg.proto.errors import BadJson
from emsg.proto.jsoncodec import _loads_careful, dumps, loads_strict


def outcome(loads: Any, raw: bytes | str) -> tuple[str, Any]:
    try:
        return ("ok", loads(raw))
    except BadJson:
        return ("bad", None)


HOSTILE = [
    b"", b"{", b'{"a":', b'{"a":1,"a":2}', b'{"a":{"b":1,"b":1}}', b"NaN", b"[Infinity]",
    b"[-Infinity]", b"[1e999]", b'"\\ud800"', b'{"\\udfff":1}', b"1" + b"0" * 30,
    b"-9007199254740993", b"[" * 10000 + b"]" * 10000, b"\xff\xfe", b"{'a':1}", b"[1,]",
    b"[" * 32 + b"]" * 32, b"[" * 33 + b"]" * 33, b"[" * 34 + b"]" * 34, b'"\\u00e9"',
    b'\xef\xbb\xbf{"a":1}', b'{"a":1} x', "\ud800", '{"a":"\udfff"}',
]  # fmt: skip


@pytest.mark.parametrize("raw", HOSTILE)
def test_same_verdict_on_hostile_input(raw: bytes | str) -> None:
    assert outcome(loads_strict, raw) == outcome(_loads_careful, raw)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**54), max_value=2**54)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=40,
)


@given(json_values)
def test_same_result_on_generated_json(value: Any) -> None:
    raw = json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")
    assert outcome(loads_strict, raw) == outcome(_loads_careful, raw)
    if b"\\u" not in raw:
        text = raw.decode("utf-8", "replace")
        assert outcome(loads_strict, text) == outcome(_loads_careful, text)


GARBAGE_ALPHABET = '{}[]",:0123456789.eE+-\\unaltrsfNI '


@given(st.binary(max_size=64) | st.text(alphabet=GARBAGE_ALPHABET, max_size=40))
def test_same_verdict_on_garbage(raw: bytes | str) -> None:
    assert outcome(loads_strict, raw) == outcome(_loads_careful, raw)


def test_duplicate_key_named() -> None:
    with pytest.raises(BadJson, match="duplicate key 'a'"):
        loads_strict(dumps({"b": 1})[:-1] + b',"a":1,"a":2}')
