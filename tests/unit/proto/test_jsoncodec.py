"""Strict JSON: every ambiguous or hostile input is refused with BadJson."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from emsg.proto.errors import BadJson
from emsg.proto.jsoncodec import canonical, dumps, loads_strict


@pytest.mark.parametrize(
    "raw",
    [
        b"", b"{", b'{"a":', b'{"a":1,"a":2}', b'{"a":{"b":1,"b":1}}', b"NaN", b"[Infinity]",
        b"[-Infinity]", b"[1e999]", b'"\\ud800"', b'{"\\udfff":1}', b"1" + b"0" * 30,
        b"-9007199254740993", b"[" * 10000 + b"]" * 10000, b"\xff\xfe", b"{'a':1}", b"[1,]",
    ],
)  # fmt: skip
def test_hostile_json_is_refused(raw: bytes) -> None:
    with pytest.raises(BadJson):
        loads_strict(raw)


def test_nesting_limit_is_exact() -> None:
    assert loads_strict(b"[" * 32 + b"]" * 32) == json.loads("[" * 32 + "]" * 32)
    with pytest.raises(BadJson):
        loads_strict(b"[" * 33 + b"]" * 33)


@pytest.mark.parametrize("escaped", [False, True])
def test_nesting_limit_counts_objects_and_arrays_alike(escaped: bool) -> None:
    """32 levels pass and 33 do not, on the fast path and on the careful one (a `\\u`
    escape anywhere sends a document there)."""
    leaf = '"\\u00e9"' if escaped else "1"
    for depth, ok in ((32, True), (33, False)):
        doc = leaf
        for level in range(depth):
            doc = f'{{"k":{doc},"n":2}}' if level % 2 else f"[{doc},3]"
        if ok:
            assert loads_strict(doc) == json.loads(doc)
        else:
            with pytest.raises(BadJson):
                loads_strict(doc)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet=st.characters(exclude_categories=["Cs"])),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=20,
)


@given(json_values)
def test_round_trip_of_valid_json(value: object) -> None:
    assert loads_strict(dumps(value)) == value


@given(st.binary(max_size=200))
def test_random_bytes_never_crash(raw: bytes) -> None:
    with contextlib.suppress(BadJson):
        loads_strict(raw)


def test_canonical_json_sorts_and_is_stable() -> None:
    assert canonical({"b": 1, "a": [True, None, "é"]}) == '{"a":[true,null,"é"],"b":1}'.encode()
