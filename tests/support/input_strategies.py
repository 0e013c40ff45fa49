"""Hypothesis strategies that build request messages from their descriptors (fuzz suite, limit tests):
strings with the stores' separators, NUL, non-ASCII, given real ids and lengths around each limit; integer
extremes; unknown enum values; out-of-range timestamps."""

from __future__ import annotations

from typing import Any

from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from inplay import limits

SEPARATORS = [":", "|", "/", "{", "}", "\x00", "é", "\u2028", "😀", ".", "-", "_", " ", "%", "\\"]
# Page tokens are signed (inplay.pagetoken): generated requests carry arbitrary page tokens too.
PAGE_TOKENS_FIXED = True

INT_RANGES = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
}


def text(field: FieldDescriptor, ids: list[str]) -> st.SearchStrategy[str]:
    limit = limits.max_bytes(field)
    real = st.sampled_from(ids)
    return st.one_of(
        st.text(alphabet=st.sampled_from([*SEPARATORS, "a", "b", "1"]), max_size=12),
        real,
        st.tuples(real, st.sampled_from(SEPARATORS), st.text(max_size=6)).map("".join),
        st.text(max_size=30),
        st.integers(limit - 1, limit + 2).map(lambda n: "x" * n),
    )


def scalar(field: FieldDescriptor, ids: list[str], page_tokens: bool = PAGE_TOKENS_FIXED) -> st.SearchStrategy[Any]:
    kind = field.type
    if kind == FieldDescriptor.TYPE_STRING:
        if field.name == "page_token" and not page_tokens:
            return st.just("")  # fuzzed in test_forged_page_tokens (xfail until the lead's fix)
        return text(field, ids)
    if kind == FieldDescriptor.TYPE_BYTES:
        limit = limits.max_bytes(field)
        return st.one_of(
            st.binary(max_size=64),
            st.sampled_from([b"{}", b"[]", b'{"a":1}', b"null", b"\xff\xfe", b'{"type":"odds"}']),
            st.integers(limit - 1, limit + 1).map(lambda n: b"{" * n),
        )
    if kind == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if kind == FieldDescriptor.TYPE_ENUM:
        return st.integers(-3, 12)
    if kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return st.floats(allow_nan=True)
    lo, hi = INT_RANGES.get(kind, (-(2**31), 2**31 - 1))
    return st.one_of(
        st.integers(lo, hi), st.sampled_from([0, 1, -1, lo, hi, 100, 10**6]).filter(lambda v: lo <= v <= hi)
    )


def messages(
    descriptor: Descriptor, ids: list[str], depth: int = 0, page_tokens: bool = PAGE_TOKENS_FIXED
) -> st.SearchStrategy[Message]:
    cls = message_factory.GetMessageClass(descriptor)
    if descriptor.full_name == "google.protobuf.Timestamp":
        return st.builds(
            lambda s, n: cls(seconds=s, nanos=n),
            st.one_of(st.integers(0, 2_000_000_000), st.integers(-(2**63), 2**63 - 1)),
            st.integers(-1, 10**9),
        )
    optional: dict[str, st.SearchStrategy[Any]] = {}
    for f in descriptor.fields:
        entry = f.message_type
        if entry is not None and entry.GetOptions().map_entry:
            key = scalar(entry.fields_by_name["key"], ids, page_tokens)
            value = scalar(entry.fields_by_name["value"], ids, page_tokens)
            optional[f.name] = st.dictionaries(key, value, max_size=3)
        elif entry is not None:
            if depth > 3:
                continue
            sub = messages(entry, ids, depth + 1, page_tokens)
            optional[f.name] = st.lists(sub, max_size=3) if f.is_repeated else sub
        else:
            value = scalar(f, ids, page_tokens)
            optional[f.name] = st.lists(value, max_size=4) if f.is_repeated else value

    def build(values: dict[str, Any]) -> Message:
        msg = cls()
        for name, v in values.items():
            target = getattr(msg, name)
            f = descriptor.fields_by_name[name]
            if isinstance(v, dict):
                for k, item in v.items():
                    target[k] = item
            elif f.is_repeated and f.message_type is not None:
                for item in v:
                    target.add().CopyFrom(item)
            elif f.is_repeated:
                target.extend(v)
            elif f.message_type is not None:
                target.CopyFrom(v)
            else:
                setattr(msg, name, v)
        return msg

    return st.fixed_dictionaries({}, optional=optional).map(build)


def generate(strategy: st.SearchStrategy[Any], n: int, at: int) -> list[Any]:
    """``n`` examples drawn by hypothesis's engine (generation only: the calls are async, made afterwards)."""
    out: list[Any] = []

    @settings(
        max_examples=n,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @seed(at)
    @given(strategy)
    def collect(value: Any) -> None:
        out.append(value)

    collect()
    return out
