"""Parseable SDK batches of any shape are never refused and never a 500 (hypothesis): every
field of either family may hold any JSON value."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.ingest.test_collectors import Site

VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=6,
)
CDP_KEYS = [
    "deviceId", "sessionId", "userId", "timestamp", "path", "query", "attributes", "eventName",
    "pageShowTimestamp", "index", "platform", "referralPage", "screenHeight", "latitude",
    "hyperlink", "textValue", "xpath", "deviceType", "orientation", "userKey", "resourceItem",
]  # fmt: skip
SAAS_KEYS = [
    "u", "s", "tm", "p", "q", "d", "cs1", "ptm", "n", "num", "var", "e", "ai", "sh", "lat",
    "ph", "rf", "rp", "o", "pg", "link_id", "ui", "sdk_type", "os", "ua",
]  # fmt: skip
CDP_TYPES = st.sampled_from(
    [
        "VISIT",
        "PAGE",
        "VIEW_CLICK",
        "VIEW_CHANGE",
        "FORM_SUBMIT",
        "CUSTOM",
        "PAGE_ATTRIBUTES",
        "CONVERSION_VARIABLES",
        "VISITOR_ATTRIBUTES",
        "LOGIN_USER_ATTRIBUTES",
        "ACTIVATE",
        "APP_CLOSED",
        "X",
    ]  # fmt: skip
)
SAAS_TYPES = st.sampled_from(
    [
        "vst",
        "page",
        "clck",
        "chng",
        "sbmt",
        "cstm",
        "pvar",
        "evar",
        "vstr",
        "ppl",
        "activate",
        "imp",
        "cls",
        "reengage",
        "zz",
    ]  # fmt: skip
)


def events(keys: list[str], kinds: st.SearchStrategy[str], type_key: str) -> Any:
    one = st.fixed_dictionaries({type_key: kinds | VALUES}, optional={k: VALUES for k in keys})
    return st.lists(one | VALUES, max_size=4)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(cdp=events(CDP_KEYS, CDP_TYPES, "eventType"), saas=events(SAAS_KEYS, SAAS_TYPES, "t"))
def test_any_parseable_batch_is_taken(site: Site, cdp: list[Any], saas: list[Any]) -> None:
    for path, batch in (("/v3/projects/{ai}/collect", cdp), ("/v3/{ai}/android/pv", saas)):
        try:
            body = json.dumps(batch, allow_nan=False)
        except ValueError:  # NaN is no JSON
            continue
        r = site.client.post(path.format(ai=site.project.ai), content=body)
        assert r.status_code in (200, 204), (r.status_code, r.text, body)
        accepted = int(r.headers["x-rawexport-accepted"])
        rejected = int(r.headers["x-rawexport-rejected"])
        assert accepted + rejected == len(batch)


# what a parsed body can hold (orjson reads integers of at most 64 bits)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=6,
)


@given(
    st.dictionaries(st.text(max_size=4), st.text(max_size=4) | JSON_VALUES, max_size=5),
    st.booleans(),
)
@settings(max_examples=300, deadline=None)
def test_map_text_of_any_object_is_its_values_as_text(value: dict[str, Any], extra: bool) -> None:
    """map_text writes an object of text values as it is (its fast path) and any other
    object with each value as its text (`text`): the same JSON either way, or refused as
    text that is not UTF-8."""
    import orjson

    from rawexport.ingest.sdkvalues import Invalid, map_text, text

    added = {"$loginUserId": "u"} if extra else None
    texts = {k: text(v) for k, v in value.items()}
    want = {k: t for k, t in texts.items() if t is not None} | (added or {})
    try:
        expected: str | None = orjson.dumps(want).decode() if want else None
    except orjson.JSONEncodeError:
        expected = "refused"
    try:
        got = map_text("attributes", value, added)
    except Invalid as e:
        assert e.reason == "not valid UTF-8 text"
        got = "refused"
    assert got == expected
