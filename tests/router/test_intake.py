"""Reading a request body: the router's JSON object parse agrees with `json.loads` on every
input, its shortcut for the common case included."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from testsupport.spec_strategies import examples, fuzz_settings

from inferops.router.errors import RouterError
from inferops.router.proxy import parse_object

SETTINGS = fuzz_settings(max_examples=examples(300))

VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=10,
)


def expected(raw: bytes) -> dict[str, Any] | None:
    """What json.loads makes of `raw` if it is an object; None if the router must refuse."""
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    return doc if isinstance(doc, dict) else None


def check(raw: bytes) -> None:
    want = expected(raw)
    if want is None:
        with pytest.raises(RouterError) as caught:
            parse_object(raw)
        assert caught.value.status == 400
    else:
        assert parse_object(raw) == want


@SETTINGS
@given(
    doc=st.dictionaries(st.text(), VALUES, max_size=4),
    ascii_only=st.booleans(),
    before=st.sampled_from(["", " ", "\n"]),
    after=st.sampled_from(["", " \r\n", "x", "}"]),
)
def test_objects_parse_as_json_loads_does(
    doc: dict[str, Any], ascii_only: bool, before: str, after: str
) -> None:
    text = before + json.dumps(doc, ensure_ascii=ascii_only) + after
    check(text.encode("utf-8", "surrogatepass"))


@SETTINGS
@given(raw=st.binary(max_size=40))
def test_any_bytes_parse_as_json_loads_does(raw: bytes) -> None:
    check(b"{" + raw)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"model": "m"}',
        b'{"model": "\\ud800"}',  # a lone surrogate: valid JSON, no UTF-8 form
        b'{"model": NaN}',
        b'{"a": 1} {"b": 2}',
        b'{"a": [' + b"[" * 100_000 + b"]" * 100_000 + b"]}",
        json.dumps({"model": "m"}).encode("utf-16"),
        b"\xef\xbb\xbf" + b'{"model": "m"}',  # a UTF-8 byte order mark
        b'{"model": "\xff"}',
        b"{",
        b"{}",
        b"[]",
    ],
)
def test_edge_cases_parse_as_json_loads_does(raw: bytes) -> None:
    check(raw)
